package spool

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reg     prometheus.Registerer
	all     []prometheus.Collector
	corrupt prometheus.Counter
	full    prometheus.Counter
	fsync   prometheus.Histogram
}

func newMetrics(s *Spool) *metrics {
	m := &metrics{
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_spool_corrupt_records_total",
			Help: "Damaged spool records found (torn tail cut at open, or checksum mismatch while reading).",
		}),
		full: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_spool_full_total",
			Help: "Appends refused because the spool was at its size limit (answered 503).",
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "collector_spool_fsync_duration_seconds",
			Help:    "Duration of one spool fdatasync: a group commit (write and fdatasync) with -spool-sync-interval 0, the interval's fdatasync of the live segment otherwise.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	// Read from the count that appends keep under the spool's mutex anyway: a counter of its own
	// was an atomic add on a cache line that both CPUs wrote, for every event.
	appended := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "collector_spool_records_appended_total",
		Help: "Records appended to the spool.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.appended)
	})
	bytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "collector_spool_bytes",
		Help: "Bytes of spool segments on disk, including records not yet written.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.total)
	})
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "collector_spool_oldest_unflushed_seconds",
		Help: "Age of the oldest spool record not yet committed to the store; 0 when none.",
	}, func() float64 {
		s.mu.Lock()
		o := s.oldest
		s.mu.Unlock()
		if o == 0 {
			return 0
		}
		return max(0, time.Since(time.Unix(0, o)).Seconds())
	})
	maxBytes := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "collector_spool_max_bytes",
		Help: "Configured spool size limit in bytes.",
	})
	maxBytes.Set(float64(s.cfg.withDefaults().MaxBytes))
	m.all = []prometheus.Collector{appended, m.corrupt, m.full, m.fsync, bytes, oldest, maxBytes}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	for i, c := range m.all {
		if err := r.Register(c); err != nil {
			for _, d := range m.all[:i] {
				r.Unregister(d)
			}
			return err
		}
	}
	m.reg = r
	return nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all {
		m.reg.Unregister(c)
	}
	m.reg = nil
}
