// Package leakcheck fails a test whose goroutines outlive it.
//
// It wraps go.uber.org/goleak, which reads every goroutine's stack and retries
// while goroutines wind down. Counting goroutines instead is flaky: the
// runtime's finalizer goroutine shows up in stack dumps only while it runs a
// finalizer, and fasthttp starts one process-wide clock goroutine on first use.
package leakcheck

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Register makes t fail, after its other cleanups have run, if goroutines that
// were not running when Register was called are still running. Call it first
// in a test (or in a helper the test calls first): cleanups run last-in
// first-out, so the check runs after every later cleanup has stopped its work.
func Register(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	opts = append([]goleak.Option{
		goleak.IgnoreCurrent(),
		// fasthttp's Date header clock: started once per process, never stopped.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// A stopped fasthttp server's idle-worker cleaner: it sleeps MaxIdleWorkerDuration (10 s by
		// default) before it sees the stop. A server left running is still caught by its Serve loop.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	}, opts...)
	t.Cleanup(func() {
		// Find retries for about 0.4 s; a loaded CI machine under -race gets up to 5 s to let
		// servers and workers wind down.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := goleak.Find(opts...)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines outlived the test: %v", err)
				return
			}
		}
	})
}
