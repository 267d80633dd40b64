// Package precompress compresses static assets once, at the highest levels of gzip and brotli,
// for handlers that serve them as they are (the tracking script's variants, the dashboard).
package precompress

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math/bits"

	"github.com/andybalholm/brotli"
)

// Gzip returns raw compressed with gzip at its best compression.
func Gzip(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("cannot gzip an asset: %w", err)
	}
	if _, err := w.Write(raw); err != nil {
		return nil, fmt.Errorf("cannot gzip an asset: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("cannot gzip an asset: %w", err)
	}
	return buf.Bytes(), nil
}

// Brotli returns raw compressed with brotli at its best quality, with the smallest window that
// holds all of raw. The window decides the encoder's memory: at quality 11 its hasher keeps two
// uint32 per window position, so the default window (2^22) made every asset allocate 32 MiB, and
// the collector's start-up, which compresses a dozen assets, peaked at about 100 MiB of heap
// (BENCHMARKS.md, issue 23). A window as large as the input compresses it exactly as well.
func Brotli(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	w := brotli.NewWriterOptions(&buf, brotli.WriterOptions{Quality: brotli.BestCompression, LGWin: window(len(raw))})
	if _, err := w.Write(raw); err != nil {
		return nil, fmt.Errorf("cannot compress an asset with brotli: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("cannot compress an asset with brotli: %w", err)
	}
	return buf.Bytes(), nil
}

// window is the base-2 logarithm of the smallest brotli window that holds n bytes (a window of
// 2^w holds 2^w-16), within brotli's range 10 to 24.
func window(n int) int {
	return min(max(bits.Len(uint(n+15)), 10), 24) // 2^w-16 >= n: 2^w >= n+16
}
