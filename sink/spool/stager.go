package spool

import (
	"fmt"
	"runtime/debug"
	"slices"
	"time"
)

// ringStager is the acknowledger of SyncInterval > 0: an append stores its frames in the
// ring (ring.go) under the spool's mu and returns, with no system call and no wait, since a
// crash of the process does not touch the ring. loop copies the ring's new frames into the live
// segment every copyInterval, which makes them readable, and fdatasyncs the segment every
// SyncInterval. Its fields are guarded by the spool's mu.
type ringStager struct {
	s         *Spool
	ring      *ring
	copied    int64         // offset in the live segment up to which the ring's frames are in the file
	copyBusy  bool          // one goroutine copies the ring into the segment at a time
	unsynced  bool          // frames stored since the last fdatasync
	scratch   []byte        // a frame that wraps around the ring's end is built here
	copyEvery time.Duration // copyInterval when Open ran
}

func newRingStager(s *Spool, r *ring) *ringStager {
	return &ringStager{s: s, ring: r, copyEvery: copyInterval}
}

// room reports whether frames more fit in the ring without overwriting frames that are not yet
// in the segment file; when not, it frees room: it waits for the copy that runs, or copies the
// frames not yet copied itself, releasing mu meanwhile, and the caller checks again. A copy
// does not wait for an fdatasync in flight.
func (a *ringStager) room(frames int64) (bool, error) {
	if a.s.tail+frames-a.copied <= int64(len(a.ring.data)) {
		return false, nil
	}
	if a.copyBusy {
		a.s.cond.Wait()
		return true, nil
	}
	if err := a.copyLocked(); err != nil {
		return true, fmt.Errorf("cannot append to spool: %w", err)
	}
	return true, nil
}

// place stores the frame of rec in the ring at off; a fault of its mapping fails the spool.
func (a *ringStager) place(off int64, rec []byte, now int64) error {
	if err := a.store(off, rec, now); err != nil {
		a.s.failLocked(err)
		return err
	}
	return nil
}

// wait: the frames are in the ring, where a crash of the process cannot reach them: they are
// acknowledged now. loop copies them into the segment, and fdatasyncs it.
func (a *ringStager) wait() error {
	a.unsynced = true
	a.ring.setTail(a.s.tail)
	a.s.mu.Unlock()
	return nil
}

// sync copies the frames the segment file lacks into it and has it fdatasynced; there is nothing
// for writeSyncLocked to write.
func (a *ringStager) sync() (bool, error) {
	if !a.unsynced && a.copied == a.s.tail {
		return false, nil
	}
	if err := a.copyLocked(); err != nil {
		return true, err
	}
	a.unsynced = false
	return true, a.s.writeSyncLocked(nil, a.copied)
}

// rotated empties the ring for segment next: every frame of the sealed segment is in its file.
func (a *ringStager) rotated(next uint64) {
	a.copied = 0
	a.ring.reset(next)
}

func (a *ringStager) busy() bool { return a.copyBusy }

// close unmaps the ring and removes it when clean: the segment holds all of its frames.
func (a *ringStager) close(clean bool) error { return a.ring.close(clean) }

// store writes the frame of rec into the ring at segment offset off. It is
// called with mu held. A fault of the ring's mapping (its file was cut, or
// a memory file system without fallocate ran out of space) is returned as
// an error, not a crash of the process; a partial frame is cut at the next
// Open.
func (a *ringStager) store(off int64, rec []byte, now int64) (err error) {
	s := a.s
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = fmt.Errorf("cannot store spool frame for segment %s: memory fault in the ring", segName(s.segs[len(s.segs)-1].id))
		}
	}()
	n := headerSize + int64(len(rec))
	if f := a.ring.slot(off, n); f != nil {
		putFrame(f, rec, now)
	} else { // the frame wraps around the ring's end
		a.scratch = slices.Grow(a.scratch[:0], int(n))[:n]
		putFrame(a.scratch, rec, now)
		a.ring.put(off, a.scratch)
	}
	return nil
}

// copyInterval spaces the copies of the ring into the segment. The shipper
// reads the segment, so a record becomes readable up to this much later.
// Each copy and each read of it costs a system call with a fixed part:
// under load at c=64, copies every 10 ms took 0.42 µs of CPU per event in
// pwrite and pread, every 50 ms 0.12 µs. Tests set it to an hour, so that
// acknowledged records stay in the ring only.
var copyInterval = 50 * time.Millisecond

// copyLocked writes the ring's frames that the segment file lacks into it
// and makes them readable. It is called with mu held and releases it
// during the write; appends go on meanwhile, behind the copied frames.
func (a *ringStager) copyLocked() error {
	s := a.s
	for a.copyBusy {
		s.cond.Wait()
	}
	if s.failed != nil {
		return fmt.Errorf("cannot copy spool ring: %w", s.failed)
	}
	from, to, f := a.copied, s.tail, s.file
	if to == from {
		return nil
	}
	seg := s.segs[len(s.segs)-1].id
	a.copyBusy = true
	s.mu.Unlock()
	err := a.ring.writeTo(f, from, to)
	s.mu.Lock()
	a.copyBusy = false
	s.cond.Broadcast()
	if err != nil {
		s.failLocked(err)
		return err
	}
	a.copied = to
	a.ring.setCopied(to)
	if p := (Position{Segment: seg, Offset: to}); s.durable.Less(p) {
		s.durable = p
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// loop copies the ring into the segment every copyInterval and fdatasyncs
// the segment every SyncInterval. It runs until Close.
func (a *ringStager) loop() {
	s := a.s
	sync := time.NewTicker(s.cfg.SyncInterval)
	defer sync.Stop()
	cp := time.NewTicker(a.copyEvery)
	defer cp.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-cp.C:
			s.mu.Lock()
			err := a.copyLocked()
			s.mu.Unlock()
			if err != nil {
				s.cfg.Logger.Error("spool copy failed", "err", err)
			}
		case <-sync.C:
			if err := s.Sync(); err != nil {
				s.cfg.Logger.Error("spool sync failed", "err", err)
			}
		}
	}
}
