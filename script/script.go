// Package script serves the Kyomi tracking script: the minified variants in dist/, embedded in
// the binary and compressed once at start-up (gzip and brotli, best level), under /js/.
//
// The readable source is src/script.js; `go generate ./script` rebuilds dist/ with esbuild and
// a test fails when dist/ is stale. See README.md for the embed snippet, data attributes and
// variants.
package script

//go:generate go run ./internal/gen -src src/script.js -dist dist

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/valyala/fasthttp"
)

// PathPrefix is the URL path under which Handler serves the variants, for example
// /js/script.js and /js/script.outbound-links.file-downloads.js.
const PathPrefix = "/js/"

// cacheControl lets browsers and CDNs keep the script for a day and serve a stale copy for a
// week while revalidating in the background. It is not "immutable" because the URL is not
// versioned: a customer's page keeps the same src across collector releases, so a fix must
// reach visitors within a day. Revalidation is cheap: the strong ETag answers 304.
const cacheControl = "public, max-age=86400, stale-while-revalidate=604800"

//go:embed dist/*.min.js
var dist embed.FS

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

// assets maps the key of a variant (its sorted extension set, see variantKey) to the asset.
// It is built once by init and read-only afterwards, so Handler needs no locking.
var assets = mustLoad()

func mustLoad() map[string]*asset {
	m, err := load(dist)
	if err != nil {
		panic(err)
	}
	return m
}

func load(fsys fs.FS) (map[string]*asset, error) {
	files, err := fs.Glob(fsys, "dist/*.min.js")
	if err != nil {
		return nil, fmt.Errorf("cannot list embedded scripts: %w", err)
	}
	m := make(map[string]*asset, len(files))
	for _, file := range files {
		raw, err := fs.ReadFile(fsys, file)
		if err != nil {
			return nil, fmt.Errorf("cannot read embedded %s: %w", file, err)
		}
		name := strings.TrimSuffix(path.Base(file), ".min.js")
		key, ok := variantKey(name)
		if !ok {
			return nil, fmt.Errorf("cannot use embedded script with name %q", name)
		}
		gz, err := gzipBest(raw)
		if err != nil {
			return nil, fmt.Errorf("cannot gzip %s: %w", file, err)
		}
		br, err := brotliBest(raw)
		if err != nil {
			return nil, fmt.Errorf("cannot brotli-compress %s: %w", file, err)
		}
		sum := sha256.Sum256(raw)
		tag := hex.EncodeToString(sum[:12])
		m[key] = &asset{
			name:     name,
			identity: encoding{body: raw, etag: `"` + tag + `"`},
			gz:       encoding{body: gz, etag: `"` + tag + `-gz"`},
			br:       encoding{body: br, etag: `"` + tag + `-br"`},
		}
	}
	if _, ok := m["script"]; !ok {
		return nil, fmt.Errorf("cannot find the default script among %d embedded files", len(files))
	}
	return m, nil
}

func gzipBest(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(raw); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func brotliBest(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	w := brotli.NewWriterLevel(&buf, brotli.BestCompression)
	if _, err := w.Write(raw); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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

// Register adds Serve to routes under every path it answers with 200: each variant with its
// extensions in any order, for example "/js/script.js" and both
// "/js/script.hash.outbound-links.js" and "/js/script.outbound-links.hash.js". It suits a
// router that matches exact paths; a prefix router can mount Handler at PathPrefix instead.
func Register(routes map[string]fasthttp.RequestHandler) {
	for _, p := range Paths() {
		routes[p] = Serve
	}
}

// Paths returns, sorted, every URL path Serve answers with 200 (see Register). The result is a
// new slice on each call.
func Paths() []string {
	var out []string
	for _, a := range assets {
		ext := strings.Split(a.name, ".")[1:]
		permute(ext, 0, func(order []string) {
			out = append(out, PathPrefix+strings.Join(append([]string{"script"}, order...), ".")+".js")
		})
	}
	sort.Strings(out)
	return out
}

// permute calls visit with every ordering of s[k:] after the fixed prefix s[:k]. It reorders s
// in place and restores it before returning.
func permute(s []string, k int, visit func([]string)) {
	if k >= len(s) {
		visit(s)
		return
	}
	for i := k; i < len(s); i++ {
		s[k], s[i] = s[i], s[k]
		permute(s, k+1, visit)
		s[k], s[i] = s[i], s[k]
	}
}

// Handler returns the fasthttp handler for GET and HEAD under PathPrefix. Mount it for paths
// starting with PathPrefix; it answers 404 for unknown variants and 405 for other methods.
// It is safe for concurrent use: the assets are built once at init and never modified.
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
	a := assets[key]
	if !ok || a == nil {
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
