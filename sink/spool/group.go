package spool

import (
	"runtime"
	"slices"
	"sync"
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

// groupCommit is the acknowledger of SyncInterval 0: appends buffer their frames in buf and
// wait for the group commit, one write and fdatasync shared by the appends that arrived
// meanwhile, which loop starts when an append kicks it. Its fields are guarded by the
// spool's mu.
type groupCommit struct {
	s      *Spool
	kick   chan struct{}
	group  *group // the appends in buf
	spareG *group // the other group, reused by the next flush
	buf    []byte // frames appended but not yet written
	spare  []byte // the other buffer, reused by the next flush
}

func newGroupCommit(s *Spool) *groupCommit {
	return &groupCommit{s: s, kick: make(chan struct{}, 1), group: new(group), spareG: new(group)}
}

// room: the buffer grows as needed.
func (a *groupCommit) room(int64) (bool, error) { return false, nil }

// place appends the frame of rec to the buffer, which ends at off.
func (a *groupCommit) place(_ int64, rec []byte, now int64) error {
	start := len(a.buf)
	a.buf = slices.Grow(a.buf, headerSize+len(rec))[:start+headerSize+len(rec)]
	putFrame(a.buf[start:], rec, now)
	return nil
}

// wait joins the frames just placed to the current group, releases mu and waits for the write
// and fdatasync of that group.
func (a *groupCommit) wait() error {
	w := waiters.Get().(*waiter)
	a.group.waiters = append(a.group.waiters, w)
	a.s.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default: // the committer is already due to run
	}
	err := <-w.c
	waiters.Put(w)
	return err
}

// sync takes the buffer and its group for one write and fdatasync, starts the next group in the
// spare buffer, and wakes the group it took with the outcome. The frames end at the spool's
// tail. On an error the group that filled meanwhile fails too: no append joins a group once the
// spool has failed.
func (a *groupCommit) sync() (bool, error) {
	if len(a.buf) == 0 {
		return false, nil
	}
	buf, g := a.buf, a.group
	a.group, a.spareG = a.spareG, nil
	a.buf, a.spare = a.spare[:0], nil
	if a.buf == nil {
		// Size the next buffer like this one, so appends under mu do not
		// copy a growing buffer.
		a.buf = make([]byte, 0, min(cap(buf), 16<<20))
	}
	err := a.s.writeSyncLocked(buf, a.s.tail) // releases mu: the next group fills meanwhile
	if err != nil {
		a.group.done(err)
		g.done(err)
		a.spareG = g
		return true, err
	}
	if cap(buf) <= 16<<20 { // double buffering: the next flush fills this one
		a.spare = buf[:0]
	}
	g.done(nil)
	a.spareG = g
	return true, nil
}

// rotated: the buffer is empty when a segment is sealed.
func (a *groupCommit) rotated(uint64) {}

// busy: only a sync writes, and the spool tracks it.
func (a *groupCommit) busy() bool { return false }

// close: nothing of its own to release.
func (a *groupCommit) close(bool) error { return nil }

// loop is the group committer: woken by appends, it
// writes and fdatasyncs what they buffered, and wakes them. Commits run
// back to back: spacing them (a commit delay, measured three times on
// BenchmarkAppendParallel) saved CPU per append only by cutting throughput
// to a third, so the option was removed. It runs until Close.
func (a *groupCommit) loop() {
	s := a.s
	for {
		select {
		case <-s.stop:
			return
		case <-a.kick:
		}
		a.gather()
		s.mu.Lock()
		for s.ioBusy {
			s.cond.Wait()
		}
		_, _ = s.syncLocked() // a failure is logged and fails the waiting groups
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
func (a *groupCommit) gather() {
	s := a.s
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
