package spool

import (
	"runtime"
	"sync"
	"time"
)

// group is one group commit: the appends whose frames sit in the same
// buffer and become durable with the same write (and fsync). Each waits on
// its own waiter, which receives the outcome; only the members of a group
// are woken when it completes (a shared condition variable woke every
// waiter at every fsync, a herd of futex calls per group at hundreds of
// appenders). Two groups alternate, like the buffers, so that a commit
// allocates nothing.
type group struct {
	waiters []*waiter
}

// done hands every member of g the outcome of its commit and empties g.
func (g *group) done(err error) {
	for i, w := range g.waiters {
		w.c <- err // buffered: never blocks
		g.waiters[i] = nil
	}
	g.waiters = g.waiters[:0]
}

// waiter is one AppendAll call waiting for its group; it is reused through
// waiters, so an append allocates nothing.
type waiter struct{ c chan error }

var waiters = sync.Pool{New: func() any { return &waiter{c: make(chan error, 1)} }}

// commitLoop is the group committer (SyncInterval 0): woken by appends, it
// writes and fdatasyncs what they buffered, spacing commits by CommitDelay,
// and wakes them. It runs until Close.
func (s *Spool) commitLoop() {
	var timer *time.Timer
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		s.gather()
		s.mu.Lock()
		wait := s.cfg.CommitDelay - time.Since(s.lastIO)
		s.mu.Unlock()
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-s.stop:
				timer.Stop()
				return // Close flushes what is buffered
			case <-timer.C:
			}
		}
		s.mu.Lock()
		for s.ioBusy {
			s.cond.Wait()
		}
		_ = s.syncLocked() // a failure is logged and fails the waiting groups
		s.mu.Unlock()
	}
}

// maxGatherYields bounds the yields of gather: a group is cut after at most
// this many rounds of the run queue.
const maxGatherYields = 8

// gather lets the appenders that are ready to run join the group before it
// is cut. The appender that kicks the committer makes it the next goroutine
// its P runs, ahead of the handlers already runnable, so under load a group
// held one or two appends and each paid a write (and fsync) of its own.
// Each yield puts the committer behind the goroutines waiting to run; gather
// stops at the first yield that brought no append, so a lone append is
// committed at once.
func (s *Spool) gather() {
	s.mu.Lock()
	n := s.appended
	s.mu.Unlock()
	for range maxGatherYields {
		runtime.Gosched()
		s.mu.Lock()
		m := s.appended
		s.mu.Unlock()
		if m == n {
			return
		}
		n = m
	}
}
