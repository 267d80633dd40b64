package leakcheck

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder runs Register's cleanup on demand and keeps what it reports.
type recorder struct {
	*testing.T
	cleanups []func()
	errs     []string
}

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func blockedForever(stop chan struct{}) { <-stop }

func TestReportsLeak(t *testing.T) {
	r := &recorder{T: t}
	Register(r)
	stop := make(chan struct{})
	defer close(stop)
	go blockedForever(stop)
	r.end()
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "blockedForever") {
		t.Fatalf("reported %q, want the leaked goroutine's stack", r.errs)
	}
}

func TestWaitsForWindDown(t *testing.T) {
	r := &recorder{T: t}
	Register(r)
	stop := make(chan struct{})
	go blockedForever(stop)
	time.AfterFunc(800*time.Millisecond, func() { close(stop) }) // longer than one goleak.Find
	r.end()
	if len(r.errs) != 0 {
		t.Fatalf("reported %q for a goroutine that ended", r.errs)
	}
}

func TestIgnoresEarlierGoroutines(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go blockedForever(stop)
	r := &recorder{T: t}
	Register(r)
	r.end()
	if len(r.errs) != 0 {
		t.Fatalf("reported %q for a goroutine started before Register", r.errs)
	}
}
