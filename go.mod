module github.com/kyomi/collector

go 1.26.8

// Linked into the collector binary.
require (
	// Parses the ClickHouse DSN and asks a server for its HTTP port over the native protocol; queries
	// and inserts go over the HTTP interface (sink/server.go).
	github.com/ClickHouse/clickhouse-go/v2 v2.50.0
	// Brotli answers for the tracking script and the dashboard.
	github.com/andybalholm/brotli v1.2.8
	// SipHash-2-4, the keyed hash of the visitor id (DESIGN 5).
	github.com/dchest/siphash v1.2.3
	// Loads libchdb.so without cgo, so the binary builds with CGO_ENABLED=0.
	github.com/ebitengine/purego v0.11.3
	github.com/fasthttp/websocket v1.5.12
	// zstd for insert bodies sent to a remote ClickHouse (sink/server.go); already linked
	// through clickhouse-go and fasthttp.
	github.com/klauspost/compress v1.20.3
	github.com/mssola/useragent v1.0.0
	// Reads both .mmdb layouts DESIGN 4 asks for: GeoIP2/GeoLite2 and DB-IP's flat records.
	github.com/oschwald/maxminddb-golang/v2 v2.1.1
	github.com/prometheus/client_golang v1.25.0
	// client_golang's metric data model, linked through it; the tests read scraped metrics into it
	// (internal/testkit).
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.72.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/valyala/fasthttp v1.78.0
	// openat, mkdirat, fstat: the spool ring is opened relative to its checked private directory
	golang.org/x/sys v0.49.0
	gopkg.in/yaml.v3 v3.0.1
)

// Tests and build tools only: none of these is linked into the collector binary
// (check with `go version -m bin/collector`).
require (
	// Headless Chromium for the script, tracker and dashboard tests.
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	// Minifies the tracking script (`go generate ./script`).
	github.com/evanw/esbuild v0.28.2
	// Writes the small GeoIP databases of the tests (collector/enrich/geotest).
	github.com/maxmind/mmdbwriter v1.2.0
	// Goroutine leak checks (internal/leakcheck).
	go.uber.org/goleak v1.3.0
)

require (
	github.com/ClickHouse/ch-go v0.74.0 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-faster/city v1.0.1 // indirect
	github.com/go-faster/errors v0.7.1 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/paulmach/orb v0.13.0 // indirect
	github.com/pierrec/lz4/v4 v4.1.27 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/savsgio/gotils v0.0.0-20240704082632-aef3928b8a38 // indirect
	github.com/segmentio/asm v1.2.1 // indirect
	github.com/shopspring/decimal v1.5.0 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	go.opentelemetry.io/otel v1.47.0 // indirect
	go.opentelemetry.io/otel/trace v1.47.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	go4.org/netipx v0.0.0-20231129151722-fdeea329fbba // indirect
	golang.org/x/net v0.62.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
