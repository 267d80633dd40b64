package spool

import (
	"bytes"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAppendParallel compares durable acks (fsync before Append
// returns, group commit) with a 100ms sync interval, with 64 concurrent
// appenders of 200-byte records, and durable acks with 256 appenders:
// durable throughput is about appenders / fsync latency; cpu-ns/op is the
// process CPU per append, where fsyncs show up.
func BenchmarkAppendParallel(b *testing.B) {
	for _, bc := range []struct {
		name      string
		interval  time.Duration
		appenders int
	}{
		{"durable/appenders=64", 0, 64},
		{"interval100ms/appenders=64", 100 * time.Millisecond, 64},
		{"durable/appenders=256", 0, 256},
		{"interval100ms/appenders=256", 100 * time.Millisecond, 256},
		{"durable/appenders=1024", 0, 1024},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(Config{Dir: b.TempDir(), SyncInterval: bc.interval, MaxBytes: 8 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			rec := bytes.Repeat([]byte("e"), 200)
			b.ReportAllocs()
			b.SetBytes(int64(len(rec)))
			b.SetParallelism(max(1, bc.appenders/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			cpu0 := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Append(rec); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the user and system CPU time of the process in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
