// Package dashboard serves the collector's built-in dashboard: the page at GET / and its script,
// style and chart library under /dashboard/, all embedded in the binary and compressed once at
// start (gzip and brotli). Nothing comes from a CDN.
//
// The page reads data only through the query path (POST /api/query, ops report and
// execute_query) with a token the user gives in the URL fragment (/#token=...). A fragment never
// reaches the server or its logs; the page keeps the token in sessionStorage and sends it only
// as the Authorization header. Without a token the page says how to get one and shows the
// tracking script's tag.
//
// The chart library is uPlot (MIT), vendored minified in static/vendor at the version the
// Makefile pins (`make dashboard-vendor` fetches it again and checks it). See README.md,
// "Dashboard", for why uPlot and not Arrow's JavaScript library, and for the page's size.
package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/kyomi/collector/internal/precompress"
	"github.com/valyala/fasthttp"
)

// PathPrefix is the URL path of the page's assets: /dashboard/app.js and the like.
const PathPrefix = "/dashboard/"

// pageCSP lets the page run its own script and style and talk to its own origin, nothing else:
// no inline script, no third-party origin, no framing.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

// file is one asset in its three representations.
type file struct {
	ctype            string
	identity, gz, br []byte
	etag             [3]string // identity, gzip, br: quoted strong validators
}

// files returns the map of URL paths ("/", "/dashboard/app.js", ...) to their assets, built on
// first use (Register does it at start) and read-only after: a broken embed is a build bug,
// found by every test. Not at package init: that costs about 500 ms and 185 MB of allocations,
// which every run of the binary would pay, `collector engine` (the managed ClickHouse) included.
var files = sync.OnceValue(mustLoad)

func mustLoad() map[string]*file {
	m, err := load(static)
	if err != nil {
		panic(err)
	}
	return m
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

func load(fsys fs.FS) (map[string]*file, error) {
	out := map[string]*file{}
	err := fs.WalkDir(fsys, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil // licence texts and the like ship in the source, not on the wire
		}
		raw, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("cannot read embedded %s: %w", p, err)
		}
		f, err := newFile(ctype, raw)
		if err != nil {
			return fmt.Errorf("cannot compress embedded %s: %w", p, err)
		}
		rel := strings.TrimPrefix(p, "static/")
		if rel == "index.html" {
			out["/"] = f
		} else {
			out[PathPrefix+rel] = f
		}
		return nil
	})
	return out, err
}

func newFile(ctype string, raw []byte) (*file, error) {
	gz, err := precompress.Gzip(raw)
	if err != nil {
		return nil, err
	}
	br, err := precompress.Brotli(raw)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	tag := hex.EncodeToString(sum[:12])
	return &file{ctype: ctype, identity: raw, gz: gz, br: br,
		etag: [3]string{`"` + tag + `"`, `"` + tag + `-gz"`, `"` + tag + `-br"`}}, nil
}

// Register mounts the dashboard: the page at "/" (that path only) and its assets under
// PathPrefix.
func Register(routes map[string]fasthttp.RequestHandler) {
	routes["/"] = Serve
	routes[PathPrefix] = Serve
	files() // build now, not on the first request
}

// Serve answers GET and HEAD of the page and its assets: 404 for any other path, 405 for other
// methods. Answers are revalidated on every load (no-cache with a strong ETag, so an unchanged
// asset costs a 304) so that a new collector release shows at once.
func Serve(ctx *fasthttp.RequestCtx) {
	f, ok := files()[string(ctx.Path())]
	if !ok {
		ctx.Error("not found", fasthttp.StatusNotFound)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
		return
	}
	h := &ctx.Response.Header
	body, etag, coding := f.negotiate(ctx.Request.Header.Peek("Accept-Encoding"))
	h.Set("Vary", "Accept-Encoding")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag)
	if f.ctype == contentTypes[".html"] {
		h.Set("Content-Security-Policy", pageCSP)
	}
	if match(ctx.Request.Header.Peek("If-None-Match"), etag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	h.SetContentType(f.ctype)
	if coding != "" {
		h.Set("Content-Encoding", coding)
	}
	ctx.SetBody(body)
}

// negotiate picks brotli, then gzip, then identity, by what the client accepts (a q=0 refuses).
func (f *file) negotiate(accept []byte) (body []byte, etag, coding string) {
	ok := func(name string) bool {
		for _, part := range strings.Split(string(accept), ",") {
			fields := strings.Split(part, ";")
			if strings.TrimSpace(fields[0]) != name {
				continue
			}
			for _, p := range fields[1:] {
				if q, found := strings.CutPrefix(strings.TrimSpace(p), "q="); found && strings.Trim(q, "0.") == "" {
					return false
				}
			}
			return true
		}
		return false
	}
	switch {
	case ok("br"):
		return f.br, f.etag[2], "br"
	case ok("gzip"):
		return f.gz, f.etag[1], "gzip"
	}
	return f.identity, f.etag[0], ""
}

func match(ifNoneMatch []byte, etag string) bool {
	for _, t := range strings.Split(string(ifNoneMatch), ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// Size is one asset's size on the wire, in bytes, by content coding.
type Size struct {
	Path                 string
	Identity, Gzip, Brot int
}

// Sizes lists every asset the page loads with its sizes, in path order, for the README's figure
// and the test that keeps the page small.
func Sizes() []Size {
	var out []Size
	for p, f := range files() {
		out = append(out, Size{Path: p, Identity: len(f.identity), Gzip: len(f.gz), Brot: len(f.br)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
