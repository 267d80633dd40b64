package precompress

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/andybalholm/brotli"
)

// asset is n bytes of script-like text: repetitive enough to compress, not trivially.
func asset(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"function", "return", "document", "window", "var ", "=", ";", "(", ")", "{", "}", "location", "href", "plausible", "props"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

// TestRoundTrip: both encodings give back the input, for sizes around the window's steps.
func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1000, 1 << 14, 1<<16 - 16, 1<<16 - 15, 100_000} {
		raw := asset(n)
		gz, err := Gzip(raw)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(zr); err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("gzip of %d bytes: %d bytes back, %v", n, len(got), err)
		}
		br, err := Brotli(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(brotli.NewReader(bytes.NewReader(br))); err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("brotli of %d bytes: %d bytes back, %v", n, len(got), err)
		}
		if n >= 1000 && len(br) >= n/2 {
			t.Errorf("brotli of %d bytes gave %d", n, len(br))
		}
	}
}

// TestBrotliWindowFits: the window holds the whole input (so compression loses nothing to it),
// and no more than twice that.
func TestBrotliWindowFits(t *testing.T) {
	for _, n := range []int{0, 1000, 1<<16 - 16, 1<<16 - 15, 100_000, 1 << 30} {
		w := window(n)
		if w < 10 || w > 24 {
			t.Fatalf("window(%d) = %d, outside brotli's 10..24", n, w)
		}
		if hold := 1<<w - 16; hold < n && w < 24 {
			t.Errorf("window(%d) = %d holds only %d bytes", n, w, hold)
		}
		if w > 10 && 1<<(w-1)-16 >= n {
			t.Errorf("window(%d) = %d, one smaller would hold it", n, w)
		}
	}
}

// TestBrotliMemory: compressing a 60 KB asset (the dashboard's script is of that order)
// allocates a few MiB, not the 32 MiB of the default window.
func TestBrotliMemory(t *testing.T) {
	raw := asset(60_000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Brotli(raw); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Fatalf("brotli of 60 KB allocated %d MiB", got>>20)
	}
}
