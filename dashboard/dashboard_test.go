package dashboard

import (
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/valyala/fasthttp"
)

func serve(method, path string, header map[string]string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	for k, v := range header {
		ctx.Request.Header.Set(k, v)
	}
	Serve(&ctx)
	return &ctx
}

func TestServe(t *testing.T) {
	page, _ := static.ReadFile("static/index.html")
	tests := []struct {
		name, method, path, accept string
		status                     int
		ctype, coding              string
	}{
		{"page", "GET", "/", "", 200, "text/html; charset=utf-8", ""},
		{"page, brotli first", "GET", "/", "gzip, deflate, br", 200, "text/html; charset=utf-8", "br"},
		{"page, gzip", "GET", "/", "gzip", 200, "text/html; charset=utf-8", "gzip"},
		{"brotli refused with q=0", "GET", "/", "br;q=0, gzip", 200, "text/html; charset=utf-8", "gzip"},
		{"script", "GET", "/dashboard/app.js", "br", 200, "text/javascript; charset=utf-8", "br"},
		{"chart library", "HEAD", "/dashboard/vendor/uPlot.iife.min.js", "", 200, "text/javascript; charset=utf-8", ""},
		{"style", "GET", "/dashboard/app.css", "", 200, "text/css; charset=utf-8", ""},
		{"the licence text is not served", "GET", "/dashboard/vendor/LICENSE.uPlot", "", 404, "", ""},
		{"index.html is served at / only", "GET", "/dashboard/index.html", "", 404, "", ""},
		{"unknown path", "GET", "/nope", "", 404, "", ""},
		{"no directory listing", "GET", "/dashboard/", "", 404, "", ""},
		{"POST", "POST", "/", "", 405, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := serve(tc.method, tc.path, map[string]string{"Accept-Encoding": tc.accept})
			r := &ctx.Response
			if r.StatusCode() != tc.status {
				t.Fatalf("status %d, want %d", r.StatusCode(), tc.status)
			}
			if tc.status != 200 {
				return
			}
			if got := string(r.Header.ContentType()); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := string(r.Header.Peek("Content-Encoding")); got != tc.coding {
				t.Errorf("Content-Encoding %q, want %q", got, tc.coding)
			}
			if string(r.Header.Peek("Cache-Control")) != "no-cache" || len(r.Header.Peek("ETag")) == 0 || string(r.Header.Peek("Vary")) != "Accept-Encoding" {
				t.Errorf("caching headers: %s", r.Header.String())
			}
			csp := string(r.Header.Peek("Content-Security-Policy"))
			if strings.HasPrefix(tc.ctype, "text/html") != (csp != "") {
				t.Errorf("Content-Security-Policy %q on %s", csp, tc.ctype)
			}
			if tc.path == "/" && tc.method == "GET" {
				body := r.Body()
				var rd io.Reader = bytes.NewReader(body)
				switch tc.coding {
				case "gzip":
					zr, err := gzip.NewReader(rd)
					if err != nil {
						t.Fatal(err)
					}
					rd = zr
				case "br":
					rd = brotli.NewReader(rd)
				}
				plain, err := io.ReadAll(rd)
				if err != nil || !bytes.Equal(plain, page) {
					t.Fatalf("body does not decode to the page (%v)", err)
				}
			}
		})
	}
}

func TestServeNotModified(t *testing.T) {
	for _, accept := range []string{"", "gzip", "br"} {
		first := serve("GET", "/dashboard/app.js", map[string]string{"Accept-Encoding": accept})
		etag := string(first.Response.Header.Peek("ETag"))
		again := serve("GET", "/dashboard/app.js", map[string]string{"Accept-Encoding": accept, "If-None-Match": etag})
		if again.Response.StatusCode() != 304 || len(again.Response.Body()) != 0 {
			t.Errorf("%q: If-None-Match %s: status %d, %d bytes", accept, etag, again.Response.StatusCode(), len(again.Response.Body()))
		}
		stale := serve("GET", "/dashboard/app.js", map[string]string{"Accept-Encoding": accept, "If-None-Match": `"other"`})
		if stale.Response.StatusCode() != 200 {
			t.Errorf("%q: a stale ETag got %d", accept, stale.Response.StatusCode())
		}
	}
}

// TestPageNeedsNoOtherOrigin: every script and style the page loads is its own, so the page
// works offline and under its Content-Security-Policy ('self' only).
func TestPageNeedsNoOtherOrigin(t *testing.T) {
	page, _ := static.ReadFile("static/index.html")
	// The tags only: the embed snippet shown as text (&lt;script ...) is not loaded.
	loads := 0
	for _, tag := range strings.Split(string(page), "<")[1:] {
		if !strings.HasPrefix(tag, "script ") && !strings.HasPrefix(tag, "link ") {
			continue
		}
		for _, attr := range []string{`src="`, `href="`} {
			if _, rest, ok := strings.Cut(tag, attr); ok {
				ref := rest[:strings.IndexByte(rest, '"')]
				loads++
				if _, ok := files()[ref]; !ok {
					t.Errorf("the page loads %s, which the dashboard does not serve", ref)
				}
			}
		}
	}
	if loads != 4 {
		t.Errorf("the page loads %d scripts and styles, want 4", loads)
	}
	if strings.Contains(string(page), "<script>") || strings.Contains(string(page), "style=") {
		t.Error("inline script or style: the page's CSP forbids both")
	}
}
