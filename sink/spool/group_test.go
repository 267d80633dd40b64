package spool

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/leakcheck"
)

// TestFailedWriteFailsEveryWaiter breaks the segment file under concurrent durable appends: every
// Append must return an error (none may hang, none may claim durability) and later appends fail.
func TestFailedWriteFailsEveryWaiter(t *testing.T) {
	leakcheck.Register(t)
	s, _ := openSpool(t, Config{Dir: t.TempDir()})
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
