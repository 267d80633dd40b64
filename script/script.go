// Package script serves the Kyomi tracking script under /js/: every Plausible variant name
// (script.js plus any set of Plausible's ten extensions and our engagement, in any order),
// embedded in the binary.
//
// dist/ holds, per subset of the prebuilt extensions (hash, outbound-links, file-downloads), a
// minified variant (*.min.js, compressed once at start-up, gzip and brotli at their best level)
// and a template (*.tmpl.js) that keeps the code of the other extensions between markers. A
// variant naming one of those is cut from its template and compressed on its first request,
// then cached.
//
// The readable source is src/script.js; `go generate ./script` rebuilds dist/ with esbuild and
// a test fails when dist/ is stale. See README.md for the embed snippet, data attributes and
// variants.
package script

//go:generate go run ./internal/gen -src src/script.js -dist dist

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/internal/precompress"
	"github.com/kyomi/collector/script/internal/segments"
)

// PathPrefix is the URL path under which Handler serves the variants, for example
// /js/script.js and /js/script.outbound-links.file-downloads.js.
const PathPrefix = "/js/"

// cacheControl lets browsers and CDNs keep the script for a day and serve a stale copy for a
// week while revalidating in the background. It is not "immutable" because the URL is not
// versioned: a customer's page keeps the same src across collector releases, so a fix must
// reach visitors within a day. Revalidation is cheap: the strong ETag answers 304.
const cacheControl = "public, max-age=86400, stale-while-revalidate=604800"

//go:embed dist/*.js
var dist embed.FS

// segmentExtensions are the extensions (Plausible's, and engagement) whose code is cut from a
// template per request (see script/internal/minify); the others (hash, outbound-links,
// file-downloads) are prebuilt.
// TestExtensions checks the list against the build's.
var segmentExtensions = []string{"compat", "engagement", "exclusions", "local", "manual", "pageview-props", "revenue", "tagged-events"}

// encoding is one stored representation of an asset.
type encoding struct {
	body []byte
	etag string // quoted strong validator, distinct per content coding
}

// asset is one script variant in its three representations.
type asset struct {
	name             string // canonical base name, e.g. "script.hash"
	identity, gz, br encoding
}

// catalog holds every variant the handler can serve. It is safe for concurrent use: prebuilt and
// templates are read-only after load, and assembled fills itself once per key.
type catalog struct {
	// prebuilt maps the key of a variant without segment extensions (its sorted extension set,
	// see variantKey) to its asset.
	prebuilt map[string]*asset
	// templates maps the same keys to the template that the variants with segment extensions
	// are cut from.
	templates map[string][]byte
	// assembled caches, per key, the variants cut from a template on first request: at most one
	// per subset of the eleven extensions (2040), a few kilobytes each.
	assembled sync.Map // key → *lazyAsset
}

// lazyAsset is a variant assembled and compressed by the first request that needs it.
type lazyAsset struct {
	once sync.Once
	a    *asset
	err  error
}

// assets returns the catalog of the embedded dist/, loaded and the prebuilt variants compressed
// on first use (Register does it at start). Not at package init: that costs about 140 ms and
// 280 MB of allocations, which every run of the binary would pay, `collector engine` (the managed
// ClickHouse, whose memory stays higher by what the runtime keeps of it), `sql` and `token`
// included.
var assets = sync.OnceValue(mustLoad)

func mustLoad() *catalog {
	c, err := load(dist)
	if err != nil {
		panic(err)
	}
	return c
}

func load(fsys fs.FS) (*catalog, error) {
	c := &catalog{prebuilt: map[string]*asset{}, templates: map[string][]byte{}}
	for _, kind := range []string{".min.js", ".tmpl.js"} {
		files, err := fs.Glob(fsys, "dist/*"+kind)
		if err != nil {
			return nil, fmt.Errorf("cannot list embedded scripts: %w", err)
		}
		for _, file := range files {
			raw, err := fs.ReadFile(fsys, file)
			if err != nil {
				return nil, fmt.Errorf("cannot read embedded %s: %w", file, err)
			}
			name := strings.TrimSuffix(path.Base(file), kind)
			key, ok := variantKey(name)
			if !ok || hasSegment(key) {
				return nil, fmt.Errorf("cannot use embedded script with name %q", name)
			}
			if kind == ".tmpl.js" {
				if _, err := segments.Names(raw); err != nil {
					return nil, fmt.Errorf("cannot use embedded template %s: %w", file, err)
				}
				c.templates[key] = raw
				continue
			}
			if c.prebuilt[key], err = newAsset(name, raw); err != nil {
				return nil, fmt.Errorf("cannot compress %s: %w", file, err)
			}
		}
	}
	if _, ok := c.prebuilt["script"]; !ok {
		return nil, errors.New("cannot find the default script among the embedded files")
	}
	for key := range c.prebuilt {
		if c.templates[key] == nil {
			return nil, fmt.Errorf("cannot find the template of %s among the embedded files", key)
		}
	}
	return c, nil
}

// newAsset compresses raw once with gzip and brotli at their best levels.
func newAsset(name string, raw []byte) (*asset, error) {
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
	return &asset{
		name:     name,
		identity: encoding{body: raw, etag: `"` + tag + `"`},
		gz:       encoding{body: gz, etag: `"` + tag + `-gz"`},
		br:       encoding{body: br, etag: `"` + tag + `-br"`},
	}, nil
}

// lookup returns the asset of the variant with the given key, assembling it on first use, or
// nil when no such variant exists.
func (c *catalog) lookup(key string) (*asset, error) {
	if a := c.prebuilt[key]; a != nil || !hasSegment(key) {
		return a, nil
	}
	if base, _ := splitKey(key); c.templates[base] == nil {
		return nil, nil // an unknown extension
	}
	v, ok := c.assembled.Load(key)
	if !ok {
		v, _ = c.assembled.LoadOrStore(key, &lazyAsset{})
	}
	l := v.(*lazyAsset)
	l.once.Do(func() {
		raw, err := c.cut(key)
		if err == nil {
			l.a, err = newAsset(key, raw)
		}
		if err != nil {
			l.err = fmt.Errorf("cannot assemble script variant %s: %w", key, err)
		}
	})
	return l.a, l.err
}

// cut returns the script of the variant with the given key, which names a segment extension
// and whose template exists, cut from its template.
func (c *catalog) cut(key string) ([]byte, error) {
	base, on := splitKey(key)
	return segments.Cut(c.templates[base], func(name string) bool { return slices.Contains(on, name) })
}

// hasSegment reports whether the variant key names a segment extension.
func hasSegment(key string) bool {
	for _, ext := range strings.Split(key, ".")[1:] {
		if slices.Contains(segmentExtensions, ext) {
			return true
		}
	}
	return false
}

// splitKey splits a variant key into the key of its template (the other extensions) and its
// segment extensions.
func splitKey(key string) (base string, on []string) {
	base = "script"
	for _, ext := range strings.Split(key, ".")[1:] {
		if slices.Contains(segmentExtensions, ext) {
			on = append(on, ext)
		} else {
			base += "." + ext
		}
	}
	return base, on
}

// variantKey turns a base name such as "script.outbound-links.hash" into a key that does not
// depend on the order of the extensions ("script.hash.outbound-links"), as Plausible accepts
// them in any order. It reports false for names that do not start with "script" or repeat an
// extension.
func variantKey(name string) (string, bool) {
	parts := strings.Split(name, ".")
	if parts[0] != "script" {
		return "", false
	}
	ext := parts[1:]
	sort.Strings(ext)
	for i, e := range ext {
		if e == "" || (i > 0 && ext[i-1] == e) {
			return "", false
		}
	}
	return strings.Join(append([]string{"script"}, ext...), "."), true
}

// Register adds Serve to routes as the prefix route PathPrefix, which answers every path under
// it: the extensions of a variant come in any order and in any subset, far more paths than an
// exact-match table can hold. The router must treat a key ending in "/" as a prefix (as
// collector.Server does).
func Register(routes map[string]fasthttp.RequestHandler) {
	routes[PathPrefix] = Serve
	assets() // load now, not on the first request
}

// Handler returns the fasthttp handler for GET and HEAD under PathPrefix. Mount it for paths
// starting with PathPrefix; it answers 404 for unknown variants and 405 for other methods.
// It is safe for concurrent use: the assets are built once and never modified.
func Handler() fasthttp.RequestHandler {
	return Serve
}

// Serve answers one request for a script variant: text/javascript with long-lived caching,
// a strong ETag per content coding (304 on If-None-Match), the best encoding the client
// accepts (br, then gzip, then identity) with Vary: Accept-Encoding, and
// Cross-Origin-Resource-Policy: cross-origin so any site may embed it.
func Serve(ctx *fasthttp.RequestCtx) {
	p := ctx.Path()
	if !bytes.HasPrefix(p, []byte(PathPrefix)) || !bytes.HasSuffix(p, []byte(".js")) {
		ctx.Error("not found", fasthttp.StatusNotFound)
		return
	}
	key, ok := variantKey(string(p[len(PathPrefix) : len(p)-len(".js")]))
	if !ok {
		ctx.Error("not found", fasthttp.StatusNotFound)
		return
	}
	a, err := assets().lookup(key)
	if err != nil {
		ctx.Error("cannot assemble the script", fasthttp.StatusInternalServerError) // tests rule it out
		return
	}
	if a == nil {
		ctx.Error("not found", fasthttp.StatusNotFound)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed) // resets headers: Allow after
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		return
	}
	h := &ctx.Response.Header
	enc, coding := a.negotiate(ctx.Request.Header.Peek("Accept-Encoding"))
	h.Set("Vary", "Accept-Encoding")
	h.Set("Cache-Control", cacheControl)
	h.Set("ETag", enc.etag)
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	// Lets pages load the script with crossorigin + integrity (SRI); it carries no credentials.
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatch(ctx.Request.Header.Peek("If-None-Match"), enc.etag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	h.SetContentType("text/javascript; charset=utf-8")
	if coding != "" {
		h.Set("Content-Encoding", coding)
	}
	ctx.SetBody(enc.body)
}

// negotiate picks br, then gzip, then identity, skipping codings the client refuses (q=0).
// Identity is served even when refused: a script is better than a 406.
func (a *asset) negotiate(acceptEncoding []byte) (*encoding, string) {
	var br, gz bool
	for _, item := range strings.Split(string(acceptEncoding), ",") {
		coding, params, _ := strings.Cut(item, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if refused(params) {
			continue
		}
		switch coding {
		case "br":
			br = true
		case "gzip", "x-gzip":
			gz = true
		case "*":
			br, gz = true, true
		}
	}
	switch {
	case br:
		return &a.br, "br"
	case gz:
		return &a.gz, "gzip"
	default:
		return &a.identity, ""
	}
}

// refused reports whether the parameters of one Accept-Encoding item set q to zero.
func refused(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			v = strings.TrimRight(strings.TrimSpace(v), "0")
			return v == "" || v == "." || v == "0."
		}
	}
	return false
}

// etagMatch applies the weak comparison RFC 9110 prescribes for If-None-Match.
func etagMatch(ifNoneMatch []byte, etag string) bool {
	for _, tag := range strings.Split(string(ifNoneMatch), ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || tag == etag {
			return true
		}
	}
	return false
}
