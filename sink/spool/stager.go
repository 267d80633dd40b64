package spool

import (
	"fmt"
	"runtime/debug"
	"slices"
	"time"
)

// store writes the frames of recs into the ring at the tail. It is called
// with mu held. A fault of the ring's mapping (its file was cut, or a
// memory file system without fallocate ran out of space) is returned as
// an error, not a crash of the process; a partial frame is cut at the next
// Open.
func (s *Spool) store(recs [][]byte, now int64) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = fmt.Errorf("cannot store spool frame for segment %s: memory fault in the ring", segName(s.segs[len(s.segs)-1].id))
		}
	}()
	off := s.tail
	for _, rec := range recs {
		n := headerSize + int64(len(rec))
		if f := s.ring.slot(off, n); f != nil {
			putFrame(f, rec, now)
		} else { // the frame wraps around the ring's end
			s.scratch = slices.Grow(s.scratch[:0], int(n))[:n]
			putFrame(s.scratch, rec, now)
			s.ring.put(off, s.scratch)
		}
		off += n
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

// ringRoomLocked frees the ring's room: it waits for the copy that runs,
// or copies the frames not yet copied itself. It is called with mu held and
// releases it meanwhile.
func (s *Spool) ringRoomLocked() error {
	if s.copyBusy {
		s.cond.Wait()
		return nil
	}
	if err := s.copyLocked(); err != nil {
		return fmt.Errorf("cannot append to spool: %w", err)
	}
	return nil
}

// copyLocked writes the ring's frames that the segment file lacks into it
// and makes them readable. It is called with mu held and releases it
// during the write; appends go on meanwhile, behind the copied frames.
func (s *Spool) copyLocked() error {
	for s.copyBusy {
		s.cond.Wait()
	}
	if s.failed != nil {
		return fmt.Errorf("cannot copy spool ring: %w", s.failed)
	}
	from, to, f := s.copied, s.tail, s.file
	if to == from {
		return nil
	}
	seg := s.segs[len(s.segs)-1].id
	s.copyBusy = true
	s.mu.Unlock()
	err := s.ring.writeTo(f, from, to)
	s.mu.Lock()
	s.copyBusy = false
	s.cond.Broadcast()
	if err != nil {
		s.failLocked(err)
		return err
	}
	s.copied = to
	s.ring.setCopied(to)
	if p := (Position{Segment: seg, Offset: to}); s.durable.Less(p) {
		s.durable = p
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// syncLoop copies the ring into the segment every copyInterval and
// fdatasyncs the segment every SyncInterval (SyncInterval mode only). It
// runs until Close.
func (s *Spool) syncLoop() {
	sync := time.NewTicker(s.cfg.SyncInterval)
	defer sync.Stop()
	cp := time.NewTicker(s.copyEvery)
	defer cp.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-cp.C:
			s.mu.Lock()
			err := s.copyLocked()
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
