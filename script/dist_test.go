package script

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/evanw/esbuild/pkg/api"
	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/script/internal/minify"
	"github.com/kyomi/collector/script/internal/segments"
)

// gzipBudget is the size budget for the default script, gzip at best compression.
const gzipBudget = 1000

// TestDistUpToDate re-minifies the source and fails when the committed dist/ differs: run
// `go generate ./script` after editing src/script.js.
func TestDistUpToDate(t *testing.T) {
	src, err := os.ReadFile("src/script.js")
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, variant := range minify.Variants() {
		want = append(want, variant+".min.js", variant+".tmpl.js")
	}
	files, err := filepath.Glob("dist/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("dist holds %v, want %v: run go generate ./script", got, want)
	}
	if len(assets().prebuilt) != len(minify.Variants()) || len(assets().templates) != len(minify.Variants()) {
		t.Fatalf("loaded %d variants and %d templates, want %d each", len(assets().prebuilt), len(assets().templates), len(minify.Variants()))
	}
	for _, variant := range minify.Variants() {
		for _, kind := range []struct {
			suffix string
			build  func([]byte, string) ([]byte, error)
		}{{".min.js", minify.Build}, {".tmpl.js", minify.Template}} {
			t.Run(variant+kind.suffix, func(t *testing.T) {
				code, err := kind.build(src, variant)
				if err != nil {
					t.Fatal(err)
				}
				again, err := kind.build(src, variant)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(code, again) {
					t.Fatal("two builds of the same source differ")
				}
				committed, err := os.ReadFile(filepath.Join("dist", variant+kind.suffix))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(code, committed) {
					t.Fatalf("dist/%s%s is stale: run go generate ./script", variant, kind.suffix)
				}
			})
		}
	}
}

// TestExtensions checks that the server knows the build's segment extensions.
func TestExtensions(t *testing.T) {
	var want []string
	for _, ext := range minify.Extensions {
		if ext.Constant == "" {
			want = append(want, ext.Name)
		}
	}
	if !slices.Equal(segmentExtensions, want) {
		t.Fatalf("segmentExtensions %v, build's %v", segmentExtensions, want)
	}
	// Every template carries the markers of every segment extension.
	for key, tmpl := range assets().templates {
		names, err := segments.Names(tmpl)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		sort.Strings(names)
		if !slices.Equal(names, want) {
			t.Errorf("template %s has markers %v, want %v", key, names, want)
		}
	}
}

// everyVariant returns the canonical base name of every variant: one per subset of the
// extensions, 2048 in all.
func everyVariant() []string {
	var names []string
	for mask := 0; mask < 1<<len(minify.Extensions); mask++ {
		name := "script"
		for i, ext := range minify.Extensions {
			if mask&(1<<i) != 0 {
				name += "." + ext.Name
			}
		}
		names = append(names, name)
	}
	return names
}

// TestEveryVariant assembles all 2048 variants and has esbuild parse each: cutting segments must
// always leave a valid script without markers, never larger than its template. (Cut only:
// compressing them all at best level would take most of a minute.)
func TestEveryVariant(t *testing.T) {
	names := everyVariant()
	if len(names) != 2048 {
		t.Fatalf("%d variants", len(names))
	}
	var err error
	for _, name := range names {
		key, ok := variantKey(name)
		if !ok {
			t.Fatalf("variantKey(%q) rejected a canonical name", name)
		}
		base, on := splitKey(key)
		var code []byte
		if len(on) == 0 {
			code = assets().prebuilt[key].identity.body
		} else if code, err = assets().cut(key); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bytes.Contains(code, []byte("/*")) || !bytes.HasPrefix(code, []byte("(function(){")) {
			t.Errorf("%s: marker left or unexpected start: %.40q", name, code)
		}
		if r := api.Transform(string(code), api.TransformOptions{Loader: api.LoaderJS}); len(r.Errors) > 0 {
			t.Errorf("%s does not parse: %v", name, r.Errors[0].Text)
		}
		if len(code) > len(assets().templates[base]) {
			t.Errorf("%s is larger than its template", name)
		}
	}
}

func TestBuildRejectsUnknownVariant(t *testing.T) {
	for _, name := range []string{"script.bogus", "other.hash", "script.hash.bogus", "script.manual.manual"} {
		t.Run(name, func(t *testing.T) {
			if _, err := minify.Build([]byte("1"), name); err == nil {
				t.Fatalf("Build(%q) succeeded", name)
			}
		})
	}
	if _, err := minify.Template([]byte("1"), "script.manual"); err == nil {
		t.Fatal("Template of a segment extension succeeded")
	}
}

// sizeVariants are the variants whose sizes TestSizes logs: the prebuilt ones, each segment
// extension alone and everything at once.
func sizeVariants() []string {
	names := minify.Variants()
	for _, ext := range segmentExtensions {
		names = append(names, "script."+ext)
	}
	return append(names, "script.hash.outbound-links.file-downloads."+strings.Join(segmentExtensions, "."))
}

// TestSizes enforces the budget and logs every variant's size (go test -v -run TestSizes).
func TestSizes(t *testing.T) {
	for _, name := range sizeVariants() {
		key, ok := variantKey(name)
		if !ok {
			t.Fatalf("variantKey(%q) rejected a canonical name", name)
		}
		a, err := assets().lookup(key)
		if err != nil || a == nil {
			t.Fatalf("%s: asset %v, err %v", name, a, err)
		}
		t.Logf("%-45s raw %5d  gzip %4d  brotli %4d", name+".js", len(a.identity.body), len(a.gz.body), len(a.br.body))
		// The compressed forms must decode to the raw script.
		zr, err := gzip.NewReader(bytes.NewReader(a.gz.body))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(plain, a.identity.body) {
			t.Fatalf("%s: gzip form does not decode to the script (err %v)", name, err)
		}
		plain, err = io.ReadAll(brotli.NewReader(bytes.NewReader(a.br.body)))
		if err != nil || !bytes.Equal(plain, a.identity.body) {
			t.Fatalf("%s: brotli form does not decode to the script (err %v)", name, err)
		}
	}
	if n := len(assets().prebuilt["script"].gz.body); n > gzipBudget {
		t.Errorf("default script is %d bytes gzipped, budget %d", n, gzipBudget)
	}
}

func TestVariantKey(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{name: "default", in: "script", want: "script", ok: true},
		{name: "sorted", in: "script.outbound-links.hash", want: "script.hash.outbound-links", ok: true},
		{name: "repeat", in: "script.hash.hash", ok: false},
		{name: "empty part", in: "script..hash", ok: false},
		{name: "trailing dot", in: "script.", ok: false},
		{name: "other base", in: "plausible.hash", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := variantKey(tc.in)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("variantKey(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func BenchmarkServe(b *testing.B) {
	for _, path := range []string{"/js/script.js", "/js/script.tagged-events.manual.js"} {
		b.Run(path, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			ctx.Request.SetRequestURI(path)
			ctx.Request.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				Serve(&ctx)
			}
		})
	}
}
