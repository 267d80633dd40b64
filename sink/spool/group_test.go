package spool

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/leakcheck"
)

// TestCommitDelaySpacesFsyncs checks that durable appends under load share fsyncs spaced by
// CommitDelay, that a lone append is not delayed by it, and that every append is still durable
// (readable) when Append returns.
func TestCommitDelaySpacesFsyncs(t *testing.T) {
	leakcheck.Register(t)
	const delay = 20 * time.Millisecond
	s, reg := openSpool(t, Config{Dir: t.TempDir(), CommitDelay: delay})

	// A lone append after a quiet period does not wait for the delay.
	time.Sleep(delay)
	start := time.Now()
	if err := s.Append([]byte("lone")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= delay {
		t.Errorf("a lone append took %s, want no commit delay (< %s)", d, delay)
	}

	const writers, each = 32, 10
	var wg sync.WaitGroup
	began := time.Now()
	for w := range writers {
		wg.Go(func() {
			for range each {
				if err := s.Append(bytes.Repeat([]byte{'a' + byte(w%26)}, 50)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	syncs := metricValue(t, reg, "collector_spool_fsync_duration_seconds")
	// Fsyncs start at least delay apart: at most elapsed/delay+2 of them (the lone one included).
	if limit := float64(elapsed/delay) + 2; syncs > limit {
		t.Errorf("%v fsyncs in %s, want at most %v with a %s commit delay", syncs, elapsed, limit, delay)
	}
	got, _ := readAll(t, s, s.Checkpoint())
	if len(got) != 1+writers*each {
		t.Fatalf("read %d durable records, want %d", len(got), 1+writers*each)
	}
}

// TestFailedWriteFailsEveryWaiter breaks the segment file under concurrent durable appends: every
// Append must return an error (none may hang, none may claim durability) and later appends fail.
func TestFailedWriteFailsEveryWaiter(t *testing.T) {
	leakcheck.Register(t)
	s, _ := openSpool(t, Config{Dir: t.TempDir(), CommitDelay: 5 * time.Millisecond})
	if err := s.Append([]byte("before")); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	if err := s.file.Close(); err != nil { // every later write fails with os.ErrClosed
		t.Fatal(err)
	}
	s.mu.Unlock()
	const writers = 16
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() { errs <- s.Append([]byte("after")) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("appenders still waiting 10s after the write failed")
	}
	close(errs)
	for err := range errs {
		if err == nil {
			t.Error("an append after a failed write reported success")
		}
	}
	if s.Ready() {
		t.Error("spool still ready after a failed write")
	}
	if err := s.Append([]byte("later")); err == nil || !(errors.Is(err, ErrClosed) || errors.Is(err, s.failed)) {
		t.Errorf("append after failure: %v, want an error", err)
	}
}
