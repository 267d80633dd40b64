package collector

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHotCountsSumStripes counts requests into every stripe from several goroutines and checks
// what a scrape reports: the sums, and the duration histogram's cumulative buckets, count and sum.
func TestHotCountsSumStripes(t *testing.T) {
	m, err := newMetrics(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	durations := []time.Duration{30 * time.Microsecond, 50 * time.Microsecond, 700 * time.Microsecond, 2 * time.Millisecond, time.Second}
	const goroutines, rounds = 4, 100
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range rounds {
				st := m.hot.stripe()
				st.received.Add(1)
				st.accepted.Add(2)
				for _, d := range durations {
					st.observe(d)
				}
			}
		})
	}
	wg.Wait()

	reg := prometheus.NewRegistry()
	if err := reg.Register(&m.hot); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	const n = goroutines * rounds
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			switch {
			case mt.GetCounter() != nil:
				got[f.GetName()] = mt.GetCounter().GetValue()
			case mt.GetHistogram() != nil:
				h := mt.GetHistogram()
				got["count"] = float64(h.GetSampleCount())
				got["sum"] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					got[time.Duration(b.GetUpperBound()*float64(time.Second)).String()] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	want := map[string]float64{
		"collector_events_received_total": n,
		"collector_events_accepted_total": 2 * n,
		"count":                           5 * n,
		"50µs":                            2 * n, // 30µs and 50µs: a bound is inclusive
		"100µs":                           2 * n,
		"1ms":                             3 * n,
		"2.5ms":                           4 * n,
		"500ms":                           4 * n, // 1s is above every bound: counted only in count
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	wantSum := float64(n) * (30e-6 + 50e-6 + 700e-6 + 2e-3 + 1)
	if s := got["sum"]; s < wantSum*0.999999 || s > wantSum*1.000001 {
		t.Errorf("sum = %v, want %v", s, wantSum)
	}
	used := 0
	for i := range m.hot.stripes {
		if m.hot.stripes[i].received.Load() > 0 {
			used++
		}
	}
	if used != hotStripes {
		t.Errorf("%d of %d stripes used by %d requests taking stripes in turn", used, hotStripes, n)
	}
}
