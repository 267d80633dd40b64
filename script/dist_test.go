package script

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/script/internal/minify"
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
	want := minify.Variants()
	var got []string
	for _, a := range assets {
		got = append(got, a.name)
	}
	sort.Strings(got)
	sort.Strings(want)
	if len(got) != len(want) {
		t.Fatalf("dist holds %v, want %v: run go generate ./script", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("dist holds %v, want %v: run go generate ./script", got, want)
		}
	}
	for _, variant := range want {
		t.Run(variant, func(t *testing.T) {
			code, err := minify.Build(src, variant)
			if err != nil {
				t.Fatal(err)
			}
			again, err := minify.Build(src, variant)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(code, again) {
				t.Fatal("two builds of the same source differ")
			}
			committed, err := os.ReadFile(filepath.Join("dist", variant+".min.js"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(code, committed) {
				t.Fatalf("dist/%s.min.js is stale: run go generate ./script", variant)
			}
		})
	}
}

func TestBuildRejectsUnknownVariant(t *testing.T) {
	for _, name := range []string{"script.tagged-events", "other.hash", "script.hash.bogus"} {
		t.Run(name, func(t *testing.T) {
			if _, err := minify.Build([]byte("1"), name); err == nil {
				t.Fatalf("Build(%q) succeeded", name)
			}
		})
	}
}

// TestSizes enforces the budget and logs every variant's size (go test -v -run TestSizes).
func TestSizes(t *testing.T) {
	names := minify.Variants()
	for _, name := range names {
		key, ok := variantKey(name)
		if !ok {
			t.Fatalf("variantKey(%q) rejected a canonical name", name)
		}
		a := assets[key]
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
	if n := len(assets["script"].gz.body); n > gzipBudget {
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
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/js/script.js")
	ctx.Request.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		Serve(&ctx)
	}
}
