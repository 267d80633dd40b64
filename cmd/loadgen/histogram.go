package main

import (
	"math/bits"
	"time"
)

// histogram records latencies in nanoseconds in log-linear buckets, HDR style: exact below
// 128 ns, then 64 sub-buckets per power of two, so any recorded value is reported within 1.6%.
// Each worker owns one (no locks on the hot path); they are merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	max    uint64
}

const (
	histLinear  = 128
	histSub     = 64
	histBuckets = histLinear + 58*histSub
)

func histIndex(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	shift := bits.Len64(v) - 7 // v>>shift is in [64, 127]
	return histLinear + (shift-1)*histSub + int(v>>shift) - histSub
}

// histUpper is the largest value that falls in bucket i.
func histUpper(i int) uint64 {
	if i < histLinear {
		return uint64(i)
	}
	i -= histLinear
	shift := i/histSub + 1
	m := uint64(i%histSub + histSub)
	return (m+1)<<shift - 1
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[histIndex(v)]++
	h.n++
	h.sum += v
	h.max = max(h.max, v)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0..1): the upper bound of the bucket holding the
// ceil(q*n)-th smallest value, capped at the exact maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++
	}
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(histUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}
