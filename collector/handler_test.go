package collector

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/internal/rawhttp"
	"github.com/kyomi/collector/sink/spool"
)

func TestEventStored(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	body := `{"name":"signup","url":"https://acme.example/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=launch&gclid=abc&secret=1#plans",` +
		`"domain":"acme.example","referrer":"https://www.google.com/search?q=x","props":{"plan":"pro","seats":12,"trial":true,"gone":null},` +
		`"revenue":{"amount":"19.90","currency":"eur"},"interactive":false}`
	sent := time.Now().UTC().Truncate(time.Millisecond)
	code, hdr, resp := h.do(request{body: body, ip: "203.0.113.7", origin: "https://acme.example"})
	answered := time.Now().UTC()
	if code != 202 || resp != "ok" {
		t.Fatalf("status %d %q", code, resp)
	}
	if hdr.Get("Access-Control-Allow-Origin") != "https://acme.example" || hdr.Get("Vary") != "Origin" {
		t.Fatalf("CORS headers %v", hdr)
	}
	if hdr.Get("Set-Cookie") != "" || hdr.Get("X-Collector-Dropped") != "" || hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("headers %v", hdr)
	}
	evs := h.events()
	if len(evs) != 1 {
		t.Fatalf("%d events stored", len(evs))
	}
	ev := evs[0]
	checks := []struct{ field, got, want string }{
		{"WorkspaceID", ev.WorkspaceID, "ws_acme"},
		{"Domain", ev.Domain, "acme.example"},
		{"Name", ev.Name, "signup"},
		{"Hostname", ev.Hostname, "acme.example"},
		{"Pathname", ev.Pathname, "/pricing"},
		{"Referrer", ev.Referrer, "google.com/search"},
		{"ReferrerSource", ev.ReferrerSource, "newsletter"}, // utm_source wins over the referrer
		{"UTMSource", ev.UTMSource, "newsletter"},
		{"UTMMedium", ev.UTMMedium, "email"},
		{"UTMCampaign", ev.UTMCampaign, "launch"},
		{"ClickIDParam", ev.ClickIDParam, "gclid"},
		{"CountryCode", ev.CountryCode, "NZ"},
		{"City", ev.City, "Auckland"},
		{"Browser", ev.Browser, "Chrome"},
		{"OS", ev.OS, "Windows"},
		{"Device", ev.Device, "Desktop"},
		{"RevenueCurrency", ev.RevenueCurrency, "EUR"},
		{"props", fmt.Sprint(ev.PropKeys, ev.PropValues), "[plan seats trial] [pro 12 true]"},
		{"revenue", fmt.Sprint(ev.RevenueAmount), "19.9"},
		{"interactive", fmt.Sprint(ev.Interactive), "false"},
		{"retention", fmt.Sprint(ev.RetentionDays), "395"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if ev.VisitorID == 0 || ev.TS.IsZero() || ev.TS.Location().String() != "UTC" {
		t.Errorf("visitor %d ts %v", ev.VisitorID, ev.TS)
	}
	// The event is stamped with its request's time (the server's clock read for the request),
	// in whole milliseconds.
	if ev.TS.Before(sent) || ev.TS.After(answered) || !ev.TS.Equal(ev.TS.Truncate(time.Millisecond)) {
		t.Errorf("ts %v, want within [%v, %v] in whole milliseconds", ev.TS, sent, answered)
	}

	// Same client again: same visitor id. Another client: another id.
	h.do(request{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`, ip: "203.0.113.7"})
	h.do(request{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`, ip: "203.0.113.8"})
	evs = h.events()
	if len(evs) != 3 || evs[1].VisitorID != ev.VisitorID || evs[2].VisitorID == ev.VisitorID {
		t.Fatalf("visitor ids %d %d %d", evs[0].VisitorID, evs[1].VisitorID, evs[2].VisitorID)
	}
	if !evs[1].Interactive || evs[1].ReferrerSource != "" {
		t.Fatalf("defaults: %+v", evs[1])
	}
	if got := h.metric("collector_events_accepted_total"); got != 3 {
		t.Fatalf("accepted %v", got)
	}
	if got := h.metric("collector_http_requests_total", "handler", "event", "code", "202"); got != 3 {
		t.Fatalf("requests{event,202} %v", got)
	}
	if got := h.metric("collector_event_duration_seconds"); got != 3 {
		t.Fatalf("duration samples %v", got)
	}
}

func TestEventVariants(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cases := []struct {
		name    string
		req     request
		domains []string // stored events' Domain, in order
		check   func(t *testing.T, path, source string)
	}{
		{"application/json with charset", request{ctype: "application/json; charset=utf-8",
			body: `{"n":"pageview","u":"https://acme.example/a","d":"acme.example"}`}, []string{"acme.example"}, nil},
		{"no content type", request{ctype: "-",
			body: `{"n":"pageview","u":"https://acme.example/a","d":"acme.example"}`}, []string{"acme.example"}, nil},
		{"www page of configured bare domain", request{
			body: `{"n":"pageview","u":"https://www.acme.example/a","d":"www.acme.example"}`, origin: "https://www.acme.example"}, []string{"acme.example"}, nil},
		{"multi-domain same workspace", request{
			body: `{"n":"pageview","u":"https://shop.acme.example/cart","d":"shop.acme.example, acme.example,acme.example"}`}, []string{"shop.acme.example", "acme.example"}, nil},
		{"hash mode keeps fragment", request{
			body: `{"n":"pageview","u":"https://acme.example/app#/settings","d":"acme.example","h":1}`}, []string{"acme.example"},
			func(t *testing.T, path, _ string) {
				if path != "/app#/settings" {
					t.Errorf("pathname %q", path)
				}
			}},
		{"utm source without referrer is the source", request{
			body: `{"n":"pageview","u":"https://acme.example/?utm_source=newsletter","d":"acme.example","r":null}`}, []string{"acme.example"},
			func(t *testing.T, _, source string) {
				if source != "newsletter" {
					t.Errorf("source %q", source)
				}
			}},
		{"own site referrer is direct", request{
			body: `{"n":"pageview","u":"https://acme.example/b","d":"acme.example","r":"https://acme.example/a"}`}, []string{"acme.example"},
			func(t *testing.T, _, source string) {
				if source != "" {
					t.Errorf("source %q", source)
				}
			}},
		{"escaped strings", request{
			body: `{"n":"page\u0076iew","u":"https:\/\/acme.example\/caf\u00e9","d":"acme.example","p":{"emoji":"\ud83d\ude00"}}`}, []string{"acme.example"}, nil},
		{"ipv6 client", request{ip: "2001:db8::1",
			body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`}, []string{"acme.example"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.events())
			code, hdr, body := h.do(tc.req)
			if code != 202 || hdr.Get("X-Collector-Dropped") != "" {
				t.Fatalf("status %d %s dropped %q", code, body, hdr.Get("X-Collector-Dropped"))
			}
			evs := h.events()[before:]
			if len(evs) != len(tc.domains) {
				t.Fatalf("stored %d events, want %d", len(evs), len(tc.domains))
			}
			for i, ev := range evs {
				if ev.Domain != tc.domains[i] || ev.WorkspaceID != "ws_acme" {
					t.Errorf("event %d: %s %s", i, ev.WorkspaceID, ev.Domain)
				}
				if tc.check != nil {
					tc.check(t, ev.Pathname, ev.ReferrerSource)
				}
			}
			if len(evs) == 2 && evs[0].VisitorID == evs[1].VisitorID {
				t.Error("visitor id does not depend on the domain")
			}
		})
	}
}

// TestEventPropsPlausibleShapes sends the props shapes Plausible accepts (lib/plausible/ingestion/
// request.ex) and checks what is stored.
func TestEventPropsPlausibleShapes(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const ev = `"n":"signup","u":"https://acme.example/app#/settings","d":"acme.example"`
	cases := []struct {
		name, fields, props, path string
	}{
		{"props as a JSON string", `"p":"{\"plan\":\"pro\",\"seats\":12}"`, "[plan seats] [pro 12]", "/app"},
		{"nested values dropped", `"p":{"a":{"b":1},"c":[1],"d":"e"}`, "[d] [e]", "/app"},
		{"m", `"m":{"plan":"pro"}`, "[plan] [pro]", "/app"},
		{"meta as a JSON string", `"meta":"{\"plan\":\"pro\"}"`, "[plan] [pro]", "/app"},
		{"m wins over p", `"p":{"from":"p"},"m":{"from":"m"}`, "[from] [m]", "/app"},
		{"meta wins over props", `"props":{"from":"props"},"meta":{"from":"meta"}`, "[from] [meta]", "/app"},
		{"null m passed over", `"m":null,"props":{"from":"props"}`, "[from] [props]", "/app"},
		{"hashMode", `"hashMode":1`, "[] []", "/app#/settings"},
		{"h wins over hashMode", `"h":0,"hashMode":1`, "[] []", "/app"},
		{"props not an object", `"p":["a"]`, "[] []", "/app"},
		{"empty name and value dropped, repeat ignored", `"p":{"":"x","a":"","b":"1","b":"2"}`, "[b] [1]", "/app"},
		{"31st prop dropped", `"p":{` + manyProps(MaxProps+1) + `}`, fmt.Sprint(MaxProps), "/app"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.events())
			code, hdr, body := h.do(request{body: `{` + ev + `,` + tc.fields + `}`})
			if code != 202 || hdr.Get("X-Collector-Dropped") != "" {
				t.Fatalf("status %d %s dropped %q", code, body, hdr.Get("X-Collector-Dropped"))
			}
			evs := h.events()[before:]
			if len(evs) != 1 {
				t.Fatalf("stored %d events", len(evs))
			}
			got := fmt.Sprint(evs[0].PropKeys, evs[0].PropValues)
			if tc.props == fmt.Sprint(MaxProps) {
				got = fmt.Sprint(len(evs[0].PropKeys)) // only the count
			}
			if got != tc.props || evs[0].Pathname != tc.path {
				t.Fatalf("props %s pathname %q, want %s %q", got, evs[0].Pathname, tc.props, tc.path)
			}
		})
	}
}

func TestDropped(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	pv := `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`
	cases := []struct {
		name, reason string
		req          request
	}{
		{"crawler", "bot_ua", request{body: pv, ua: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}},
		{"library", "bot_ua", request{body: pv, ua: "curl/8.5.0"}},
		{"empty UA", "empty_ua", request{body: pv, ua: "-"}},
		{"headless", "headless", request{body: pv, ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36"}},
		{"prefetch", "prefetch", request{body: pv, headers: map[string]string{"Sec-Purpose": "prefetch"}}},
		{"spam referrer", "spam_referrer", request{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example","r":"https://semalt.com/"}`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, _ := h.do(tc.req)
			if code != 202 || hdr.Get("X-Collector-Dropped") != tc.reason {
				t.Fatalf("status %d, dropped %q; want 202 %q", code, hdr.Get("X-Collector-Dropped"), tc.reason)
			}
			if got := h.metric("collector_events_dropped_total", "reason", tc.reason); got < 1 {
				t.Fatalf("dropped{%s} = %v", tc.reason, got)
			}
		})
	}
	if n := len(h.events()); n != 0 {
		t.Fatalf("%d dropped events stored", n)
	}
}

// TestDroppedPrefetchHeaderNames sends each prefetch hint the handler reads, with its name in
// lower case on the wire (the server canonicalizes names before the handler looks them up), and
// a page view with none of them, which must be stored.
func TestDroppedPrefetchHeaderNames(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const body = `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`
	head := func(extra string) string {
		return "POST /api/event HTTP/1.1\r\nHost: collector\r\nContent-Type: text/plain\r\n" +
			"User-Agent: " + chromeUA + "\r\naccept-language: en-GB\r\norigin: https://acme.example\r\n" +
			extra + fmt.Sprintf("Content-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	}
	for _, hint := range []string{"sec-purpose: prefetch;prerender", "purpose: prefetch", "x-purpose: preview", "x-moz: prefetch"} {
		status, hdr, _ := rawhttp.Answer(t, h.addr, head(hint+"\r\n"), body)
		if status != 202 || hdr.Get("X-Collector-Dropped") != "prefetch" {
			t.Errorf("%s: status %d, dropped %q; want 202 prefetch", hint, status, hdr.Get("X-Collector-Dropped"))
		}
	}
	status, hdr, _ := rawhttp.Answer(t, h.addr, head(""), body)
	if status != 202 || hdr.Get("X-Collector-Dropped") != "" || hdr.Get("Access-Control-Allow-Origin") != "https://acme.example" {
		t.Fatalf("no hint: status %d, dropped %q, allowed origin %q; want 202, stored, https://acme.example",
			status, hdr.Get("X-Collector-Dropped"), hdr.Get("Access-Control-Allow-Origin"))
	}
	if n := len(h.events()); n != 1 {
		t.Fatalf("%d events stored, want the one without a hint", n)
	}
}

func TestCORS(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	cases := []struct {
		name, origin string
		code         int
		allow        string
	}{
		{"configured origin", "https://acme.example", 204, "https://acme.example"},
		{"configured origin with port", "http://globex.example:8080", 204, "http://globex.example:8080"},
		{"www origin", "https://www.acme.example", 204, "https://www.acme.example"},
		{"unconfigured origin", "https://evil.example", 403, ""},
		{"null origin", "null", 403, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, _ := h.do(request{method: "OPTIONS", origin: tc.origin, headers: map[string]string{
				"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}})
			if code != tc.code || hdr.Get("Access-Control-Allow-Origin") != tc.allow {
				t.Fatalf("status %d ACAO %q", code, hdr.Get("Access-Control-Allow-Origin"))
			}
			if tc.allow != "" && (hdr.Get("Access-Control-Allow-Methods") != "POST" ||
				hdr.Get("Access-Control-Allow-Headers") != "Content-Type" || hdr.Get("Access-Control-Max-Age") == "") {
				t.Fatalf("preflight headers %v", hdr)
			}
			if hdr.Get("Vary") != "Origin" || hdr.Get("Set-Cookie") != "" {
				t.Fatalf("headers %v", hdr)
			}
		})
	}
}

func TestNotDurable(t *testing.T) {
	pv := request{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`, ip: "203.0.113.9"}
	t.Run("spool full", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		h.errorsExpected = true
		h.faults.setFail(fmt.Errorf("cannot append: %w", spool.ErrFull))
		if code, _, body := h.do(pv); code != 503 || !strings.Contains(body, `"error"`) {
			t.Fatalf("status %d %s", code, body)
		}
		h.faults.setFail(nil)
		if code, _, _ := h.do(pv); code != 202 {
			t.Fatalf("after recovery: %d", code)
		}
		if n := len(h.events()); n != 1 {
			t.Fatalf("%d events stored", n)
		}
		if got := h.metric("collector_events_rejected_total", "reason", "spool_unavailable"); got != 1 {
			t.Fatalf("rejected{spool_unavailable} %v", got)
		}
		if strings.Contains(h.logs.String(), "203.0.113.9") {
			t.Fatal("the client address was logged")
		}
	})
	t.Run("no salt", func(t *testing.T) {
		h := newHarness(t, harnessOptions{salts: failingSalt{}})
		h.errorsExpected = true
		if code, _, _ := h.do(pv); code != 503 {
			t.Fatalf("status %d", code)
		}
		if n := len(h.events()); n != 0 {
			t.Fatalf("%d events stored without a salt", n)
		}
	})
}

func TestRateLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{clientRate: 5})
	pv := `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`
	limited := 0
	for i := 0; i < 30; i++ {
		code, _, _ := h.do(request{body: pv, ip: "203.0.113.50"})
		if code == 429 {
			limited++
		} else if code != 202 {
			t.Fatalf("status %d", code)
		}
	}
	if limited < 20 {
		t.Fatalf("only %d of 30 flood requests limited", limited)
	}
	if code, _, _ := h.do(request{body: pv, ip: "203.0.113.51"}); code != 202 {
		t.Fatalf("another client got %d", code)
	}
	// IPv6 is grouped by /64.
	for i := 0; i < 10; i++ {
		h.do(request{body: pv, ip: fmt.Sprintf("2001:db8:1:2::%x", i+1)})
	}
	if code, _, _ := h.do(request{body: pv, ip: "2001:db8:1:2::ffff"}); code != 429 {
		t.Fatalf("same /64 got %d", code)
	}
	if got := h.metric("collector_events_rejected_total", "reason", "rate_limited"); got < 21 {
		t.Fatalf("rejected{rate_limited} %v", got)
	}
}

func TestPrivacy(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ips := []string{"203.0.113.77", "2001:db8:1234:5678::99", "198.51.100.23"}
	ua := chromeUA + " PrivacyMarker/7"
	for _, ip := range ips {
		for _, body := range []string{
			`{"n":"pageview","u":"https://acme.example/a?x=1","d":"acme.example"}`,
			`{"n":"pageview","u":"https://nope.example/","d":"nope.example"}`,
			`{"n":"pageview","u":`,
		} {
			h.do(request{body: body, ip: ip, ua: ua})
		}
	}
	if n := len(h.events()); n != len(ips) {
		t.Fatalf("%d events stored", n)
	}
	if err := h.spool.Sync(); err != nil {
		t.Fatal(err)
	}
	var needles [][]byte
	for _, s := range ips {
		a := mustAddr(s)
		a16 := a.As16()
		needles = append(needles, []byte(s), a.AsSlice(), a16[:], []byte(a.StringExpanded()))
	}
	needles = append(needles, []byte("PrivacyMarker"), []byte(chromeUA))
	files := 0
	err := filepath.Walk(h.dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() || strings.HasSuffix(path, ".mmdb") {
			return err // the GeoIP test database holds networks, not clients
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(data, n) {
				t.Errorf("%s contains %q", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 {
		t.Fatalf("only %d files searched", files)
	}
	logs := h.logs.String()
	for _, n := range needles {
		if bytes.Contains([]byte(logs), n) {
			t.Errorf("logs contain %q", n)
		}
	}
	_, _, metrics := h.do(request{method: "GET", path: "/metrics"})
	for _, n := range needles {
		if strings.Contains(metrics, string(n)) {
			t.Errorf("metrics contain %q", n)
		}
	}
}

func TestRoutes(t *testing.T) {
	notReady := errors.New("salt unavailable")
	var ready error
	h := newHarness(t, harnessOptions{
		routes: map[string]fasthttp.RequestHandler{
			"/js/script.js": func(ctx *fasthttp.RequestCtx) {
				var c fasthttp.Cookie
				c.SetKey("track")
				c.SetValue("1")
				ctx.Response.Header.SetCookie(&c)
				ctx.SetContentType("text/javascript")
				ctx.SetBodyString("/* script */")
			},
			"/js/": func(ctx *fasthttp.RequestCtx) {
				ctx.SetContentType("text/javascript")
				ctx.SetBodyString("/* variant " + string(ctx.Path()) + " */")
			},
		},
		ready: []func() error{func() error { return ready }},
	})
	cases := []struct {
		name, method, path string
		code               int
		contains           string
		setup              func()
	}{
		{"healthz", "GET", "/healthz", 200, "ok", nil},
		{"readyz ok", "GET", "/readyz", 200, "ready", nil},
		{"readyz failing", "GET", "/readyz", 503, "not ready", func() { ready = notReady }},
		{"metrics", "GET", "/metrics", 200, "collector_events_received_total", nil},
		{"injected route", "GET", "/js/script.js", 200, "/* script */", nil},
		{"prefix route", "GET", "/js/script.manual.hash.js", 200, "/* variant /js/script.manual.hash.js */", nil},
		{"outside every prefix", "GET", "/jsx/script.js", 404, "", nil},
		{"unknown path", "GET", "/nope", 404, "", nil},
		{"GET on event", "GET", "/api/event", 405, "method must be POST", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			code, hdr, body := h.do(request{method: tc.method, path: tc.path})
			if code != tc.code || !strings.Contains(body, tc.contains) {
				t.Fatalf("status %d body %.200q", code, body)
			}
			for _, k := range []string{"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy"} {
				if hdr.Get(k) == "" {
					t.Errorf("missing %s", k)
				}
			}
			if hdr.Get("Set-Cookie") != "" {
				t.Error("a cookie was set")
			}
		})
	}
	if got := h.metric("collector_http_requests_total", "handler", "/js/script.js", "code", "200"); got != 1 {
		t.Fatalf("requests{script} %v", got)
	}
	if got := h.metric("collector_http_requests_total", "handler", "/js/", "code", "200"); got != 1 {
		t.Fatalf("requests{/js/} %v", got)
	}
	h.errorsExpected = false
}

// routeSink keeps the result of routeFor alive in TestRouteForDoesNotAllocate.
var routeSink route

// TestRouteForDoesNotAllocate: finding the handler of an exact or a prefix route (the tracking
// script is fetched on every page view) allocates nothing.
func TestRouteForDoesNotAllocate(t *testing.T) {
	noop := func(*fasthttp.RequestCtx) {}
	h := newHarness(t, harnessOptions{routes: map[string]fasthttp.RequestHandler{"/js/script.js": noop, "/js/": noop}})
	for _, tc := range []struct{ path, key string }{{"/js/script.js", "/js/script.js"}, {"/js/script.hash.js", "/js/"}} {
		path := []byte(tc.path)
		if r, ok := h.srv.routeFor(path); !ok || r.key != tc.key {
			t.Fatalf("routeFor(%s) = %q, %v; want %q", tc.path, r.key, ok, tc.key)
		}
		if n := testing.AllocsPerRun(100, func() { routeSink, _ = h.srv.routeFor(path) }); n != 0 {
			t.Errorf("routeFor(%s): %v allocations", tc.path, n)
		}
	}
}
