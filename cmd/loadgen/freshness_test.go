package main

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestFreshnessBetween(t *testing.T) {
	const name = visibleMetric
	text := func(counts ...int) string {
		les := []string{"0.5", "1", "2", "+Inf"}
		var b strings.Builder
		b.WriteString("# HELP " + name + " x\n# TYPE " + name + " histogram\n")
		for i, le := range les {
			b.WriteString(name + `_bucket{le="` + le + `"} ` + itoa(counts[i]) + "\n")
		}
		b.WriteString(name + "_sum 1\n" + name + "_count " + itoa(counts[len(counts)-1]) + "\n")
		return b.String()
	}
	before, err := parseHistogram(strings.NewReader(text(10, 10, 10, 10)), name)
	if err != nil {
		t.Fatal(err)
	}
	// The run adds 100 events: 50 at or below 0.5 s, 40 in (0.5, 1], 8 in (1, 2], 2 above 2 s.
	after, err := parseHistogram(strings.NewReader(text(60, 100, 108, 110)), name)
	if err != nil {
		t.Fatal(err)
	}
	f := freshnessBetween(before, after)
	if f.Events != 100 {
		t.Fatalf("events %d, want 100", f.Events)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"p50", f.P50, 0.5},
		{"p99", f.P99, 2}, // the 99th event is in the +Inf bucket: the highest bound
		{"share over 2s", f.Over2s, 0.02},
	} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if _, err := parseHistogram(strings.NewReader("other_metric 1\n"), name); err == nil {
		t.Error("a scrape without the histogram was accepted")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
