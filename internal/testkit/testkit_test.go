package testkit

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_requests_total", Help: "h"}, []string{"code", "op"})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "t_seconds", Help: "h"})
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "t_up", Help: "h"})
	reg.MustRegister(reqs, lat, up)
	reqs.WithLabelValues("ok", "read").Add(3)
	reqs.WithLabelValues("refused", "read").Add(5)
	lat.Observe(1)
	lat.Observe(2)
	up.Set(7)
	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"counter by one label", "t_requests_total", []string{"code", "refused"}, 5},
		{"counter by both labels", "t_requests_total", []string{"op", "read", "code", "ok"}, 3},
		{"histogram sample count", "t_seconds", nil, 2},
		{"gauge", "t_up", nil, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Metric(t, reg, tc.metric, tc.labels...); got != tc.want {
				t.Errorf("Metric(%s%v) = %v, want %v", tc.metric, tc.labels, got, tc.want)
			}
		})
	}
	if got := MetricOrZero(t, reg, "t_requests_total", "code", "never"); got != 0 {
		t.Errorf("MetricOrZero of a series that never moved = %v, want 0", got)
	}
	if _, ok := metric(t, reg, "t_requests_total", []string{"code", "never"}); ok {
		t.Error("a series that never moved was found")
	}
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			time.Sleep(time.Millisecond)
			n.Add(1)
		}
	}()
	Eventually(t, 10*time.Second, "three increments", func() bool { return n.Load() == 3 })
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.yaml")
	WriteFile(t, path, []byte("one"))
	WriteFile(t, path, []byte("two"))
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "two" {
		t.Fatalf("ReadFile = %q, %v; want two", got, err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 1 {
		t.Errorf("%d files in the directory, want only the fixture", len(left))
	}
}
