// Package testkit holds the small helpers that tests of several packages
// share: waiting for a condition, reading a metric from a registry or another process's
// /metrics, writing a fixture file or a self-signed TLS certificate, signing query tokens with a
// key published in a JWKS file. It is imported by tests only.
package testkit

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Eventually checks cond at once and then after waits that double from firstPoll up to maxPoll:
// a condition that turns true soon is seen soon, and a long wait costs little, even when cond
// scrapes another process's metrics.
const (
	firstPoll = time.Millisecond
	maxPoll   = 100 * time.Millisecond
)

// Eventually calls cond until it returns true and fails the test, naming what it waited for,
// when within passes first. Use it to wait for a positive signal (a counter moving, a file
// appearing) instead of sleeping. cond may fail the test itself (t.Fatal) when it sees that the
// signal can no longer come.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for wait := firstPoll; !cond(); wait = min(2*wait, maxPoll) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(wait)
	}
}

// Metric returns the value of the series of metric name in g whose labels include every
// name/value pair in labels (none: the family's first series): the value of a counter, gauge or
// untyped metric, the sample count of a histogram or summary. It fails the test when g has no
// such series.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metric(t, g, name, labels)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return v
}

// MetricOrZero is Metric but returns 0 when g has no such series, as for a counter vector whose
// series appears only once it first moves.
func MetricOrZero(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, _ := metric(t, g, name, labels)
	return v
}

func metric(t testing.TB, g prometheus.Gatherer, name string, labels []string) (float64, bool) {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: labels %v are not name/value pairs", name, labels)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("cannot gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			case m.Summary != nil:
				return float64(m.GetSummary().GetSampleCount()), true
			}
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// WriteFile writes data to path, replacing the file by a rename so that a watcher never reads
// it half written, and fails the test when it cannot. The file is readable by its owner only.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatalf("cannot write %s: %v", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("cannot write %s: %v", path, err)
	}
}
