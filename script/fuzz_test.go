package script

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/valyala/fasthttp"
)

// FuzzServe feeds arbitrary paths, Accept-Encoding and If-None-Match values to Serve: it must
// never panic, answer only 200/304/404/405, and a 200 body must be exactly the representation
// its Content-Encoding and ETag name.
func FuzzServe(f *testing.F) {
	f.Add("/js/script.js", "gzip, deflate, br", `"x"`)
	f.Add("/js/script.hash.outbound-links.js", "br;q=0, gzip;q=0.5", "W/\"a\", *")
	f.Add("/js/script..js", "*;q=0", "")
	f.Add("/js/script.tagged-events.manual.hash.js", "gzip", "")
	f.Add("/js/script.manual.bogus.js", "br", "")
	f.Add("/js/.js", ";;;q=,", ",,")
	f.Fuzz(func(t *testing.T, path, acceptEncoding, ifNoneMatch string) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetRequestURI(path)
		ctx.Request.Header.Set("Accept-Encoding", acceptEncoding)
		ctx.Request.Header.Set("If-None-Match", ifNoneMatch)
		Serve(&ctx)
		switch code := ctx.Response.StatusCode(); code {
		case 304, 404, 405:
			return
		case 200:
		default:
			t.Fatalf("status %d", code)
		}
		body := ctx.Response.Body()
		etag := string(ctx.Response.Header.Peek("ETag"))
		// A 200 answers a valid variant name, whose asset exists by now.
		key, _ := variantKey(strings.TrimSuffix(strings.TrimPrefix(string(ctx.Path()), PathPrefix), ".js"))
		if a, err := assets().lookup(key); err == nil && a != nil {
			var enc *encoding
			switch etag {
			case a.identity.etag:
				enc = &a.identity
			case a.gz.etag:
				enc = &a.gz
			case a.br.etag:
				enc = &a.br
			}
			if enc == nil {
				t.Fatalf("200 with ETag %q, not one of %s", etag, a.name)
			}
			if !bytes.Equal(enc.body, body) {
				t.Fatalf("body does not match ETag %s", etag)
			}
			if ce := string(ctx.Response.Header.Peek("Content-Encoding")); ce == "br" {
				plain, err := io.ReadAll(brotli.NewReader(bytes.NewReader(body)))
				if err != nil || !bytes.Equal(plain, a.identity.body) {
					t.Fatalf("br body does not decode to the script: %v", err)
				}
			}
			return
		}
		t.Fatalf("200 with unknown ETag %q", etag)
	})
}
