package script

import (
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/serving"
	"github.com/valyala/fasthttp"
)

// serve starts a real fasthttp server with handler on a free loopback port and returns its
// base URL ("http://127.0.0.1:PORT"). The server stops when the test ends.
func serve(t testing.TB, handler fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %v", err)
	}
	// A short idle duration lets the worker pool's cleaner goroutine exit soon after Shutdown.
	srv := &fasthttp.Server{Handler: handler, ReadTimeout: 10 * time.Second, MaxIdleWorkerDuration: 50 * time.Millisecond}
	stop := serving.Start(srv, ln)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// rawClient never asks for or decodes compression by itself, so tests see the wire bytes.
func rawClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestServe(t *testing.T) {
	leakcheck.Register(t)
	base := serve(t, Handler())
	client := rawClient(t)
	def := assets().prebuilt["script"]
	full := assets().prebuilt["script.file-downloads.hash.outbound-links"]
	if full == nil {
		t.Fatal("full variant missing")
	}
	tagged, err := assets().lookup("script.hash.manual.tagged-events")
	if err != nil || tagged == nil {
		t.Fatalf("assembled variant: %v", err)
	}
	tests := []struct {
		name     string
		method   string
		path     string
		header   map[string]string
		status   int
		encoding string
		body     []byte
		etag     string
	}{
		{name: "identity", method: "GET", path: "/js/script.js", status: 200, body: def.identity.body, etag: def.identity.etag},
		{name: "gzip", method: "GET", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "gzip, deflate"}, status: 200, encoding: "gzip", body: def.gz.body, etag: def.gz.etag},
		{name: "brotli preferred", method: "GET", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "gzip, deflate, br, zstd"}, status: 200, encoding: "br", body: def.br.body, etag: def.br.etag},
		{name: "brotli refused", method: "GET", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "br;q=0, gzip;q=0.5"}, status: 200, encoding: "gzip", body: def.gz.body, etag: def.gz.etag},
		{name: "star", method: "GET", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "*"}, status: 200, encoding: "br", body: def.br.body, etag: def.br.etag},
		{name: "all refused falls back to identity", method: "GET", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "gzip;q=0, br;q=0.000"}, status: 200, body: def.identity.body, etag: def.identity.etag},
		{name: "variant in any order", method: "GET", path: "/js/script.outbound-links.hash.file-downloads.js", status: 200, body: full.identity.body, etag: full.identity.etag},
		{name: "head", method: "HEAD", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "br"}, status: 200, encoding: "br", body: []byte{}, etag: def.br.etag},
		{name: "not modified", method: "GET", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "br", "If-None-Match": `"x", ` + def.br.etag}, status: 304, encoding: "", body: []byte{}, etag: def.br.etag},
		{name: "not modified weak", method: "GET", path: "/js/script.js", header: map[string]string{"If-None-Match": "W/" + def.identity.etag}, status: 304, body: []byte{}, etag: def.identity.etag},
		{name: "other coding's etag does not match", method: "GET", path: "/js/script.js", header: map[string]string{"Accept-Encoding": "gzip", "If-None-Match": def.br.etag}, status: 200, encoding: "gzip", body: def.gz.body, etag: def.gz.etag},
		{name: "assembled variant in any order", method: "GET", path: "/js/script.tagged-events.hash.manual.js", status: 200, body: tagged.identity.body, etag: tagged.identity.etag},
		{name: "assembled variant brotli", method: "GET", path: "/js/script.manual.tagged-events.hash.js", header: map[string]string{"Accept-Encoding": "gzip, br"}, status: 200, encoding: "br", body: tagged.br.body, etag: tagged.br.etag},
		{name: "assembled variant gzip", method: "GET", path: "/js/script.hash.manual.tagged-events.js", header: map[string]string{"Accept-Encoding": "gzip"}, status: 200, encoding: "gzip", body: tagged.gz.body, etag: tagged.gz.etag},
		{name: "assembled variant not modified", method: "GET", path: "/js/script.manual.hash.tagged-events.js", header: map[string]string{"Accept-Encoding": "br", "If-None-Match": tagged.br.etag}, status: 304, body: []byte{}, etag: tagged.br.etag},
		{name: "unknown variant", method: "GET", path: "/js/script.bogus.js", status: 404},
		{name: "unknown extension with a segment one", method: "GET", path: "/js/script.manual.bogus.js", status: 404},
		{name: "unknown extension with a prebuilt one", method: "GET", path: "/js/script.hash.bogus.js", status: 404},
		{name: "repeated extension", method: "GET", path: "/js/script.hash.hash.js", status: 404},
		{name: "repeated segment extension", method: "GET", path: "/js/script.manual.hash.manual.js", status: 404},
		{name: "extension case", method: "GET", path: "/js/script.Manual.js", status: 404},
		{name: "empty extension", method: "GET", path: "/js/script..js", status: 404},
		{name: "other file", method: "GET", path: "/js/other.js", status: 404},
		{name: "outside prefix", method: "GET", path: "/script.js", status: 404},
		{name: "post", method: "POST", path: "/js/script.js", status: 405},
		{name: "options", method: "OPTIONS", path: "/js/script.js", status: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(context.Background(), tc.method, base+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("cannot %s %s: %v", tc.method, tc.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("cannot read body: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			switch tc.status {
			case 405:
				if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
					t.Errorf("Allow %q", got)
				}
				return
			case 404:
				return
			}
			want := map[string]string{
				"Cache-Control":                "public, max-age=86400, stale-while-revalidate=604800",
				"Vary":                         "Accept-Encoding",
				"Cross-Origin-Resource-Policy": "cross-origin",
				"ETag":                         tc.etag,
				"Content-Encoding":             tc.encoding,
			}
			if tc.status == 200 {
				want["Content-Type"] = "text/javascript; charset=utf-8"
			}
			for k, v := range want {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if tc.method == "HEAD" && resp.ContentLength != int64(len(def.br.body)) {
				t.Errorf("HEAD Content-Length %d, want %d", resp.ContentLength, len(def.br.body))
			}
			if string(body) != string(tc.body) {
				t.Errorf("body differs: %d bytes, want %d", len(body), len(tc.body))
			}
			if !strings.HasPrefix(tc.etag, `"`) || !strings.HasSuffix(tc.etag, `"`) {
				t.Errorf("etag %s is not a quoted strong validator", tc.etag)
			}
		})
	}
}

// TestVariants requests every extension alone and several combinations in several orders: each
// answers 200 with the variant of its sorted extension set, whatever the order.
func TestVariants(t *testing.T) {
	leakcheck.Register(t)
	base := serve(t, Handler())
	client := rawClient(t)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("cannot GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("cannot read %s: %v", path, err)
		}
		return resp.StatusCode, string(body)
	}
	exts := []string{"hash", "outbound-links", "file-downloads", "compat", "exclusions", "local", "manual", "pageview-props", "revenue", "tagged-events"}
	for _, ext := range exts {
		if code, body := get("/js/script." + ext + ".js"); code != 200 || !strings.HasPrefix(body, "(function(){") {
			t.Errorf("%s: status %d, body %.20q", ext, code, body)
		}
	}
	combos := [][]string{
		{"tagged-events", "outbound-links", "file-downloads"},
		{"manual", "hash", "local"},
		{"revenue", "tagged-events", "pageview-props", "exclusions", "compat"},
		exts,
	}
	for _, combo := range combos {
		var want string
		// The sorted order, the given order and the reversed order answer the same script.
		orders := [][]string{slices.Sorted(slices.Values(combo)), combo, slices.Clone(combo)}
		slices.Reverse(orders[2])
		for _, order := range orders {
			path := "/js/script." + strings.Join(order, ".") + ".js"
			code, body := get(path)
			if code != 200 || (want != "" && body != want) {
				t.Errorf("%s: status %d, differs from the sorted order: %v", path, code, want != "" && body != want)
			}
			want = body
		}
	}
}

// TestRegister checks that Register mounts Serve as the prefix route and that a prefix router
// answers any order through it.
func TestRegister(t *testing.T) {
	routes := map[string]fasthttp.RequestHandler{}
	Register(routes)
	if len(routes) != 1 || routes[PathPrefix] == nil {
		t.Fatalf("registered %d routes, want %s only", len(routes), PathPrefix)
	}
	base := serve(t, func(ctx *fasthttp.RequestCtx) {
		if strings.HasPrefix(string(ctx.Path()), PathPrefix) {
			routes[PathPrefix](ctx)
			return
		}
		ctx.Error("no route", fasthttp.StatusTeapot)
	})
	client := rawClient(t)
	for _, p := range []string{"/js/script.js", "/js/script.file-downloads.hash.js", "/js/script.outbound-links.tagged-events.revenue.js"} {
		resp, err := client.Get(base + p)
		if err != nil {
			t.Fatalf("cannot GET %s: %v", p, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "(function(){") {
			t.Errorf("GET %s: status %d, body %.20q, err %v", p, resp.StatusCode, body, err)
		}
	}
}
