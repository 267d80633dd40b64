package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func segName(id uint64) string { return fmt.Sprintf("%09d.seg", id) }

func (s *Spool) segIndex(id uint64) int {
	for i, sg := range s.segs {
		if sg.id == id {
			return i
		}
	}
	return -1
}

// newSegmentFile makes segment id the new last segment: the prepared file
// renamed when there is one, else a new empty file. With SyncInterval > 0
// the file is allocated to SegmentBytes, so that copying the ring into it
// never needs a block the disk no longer has (acknowledged frames would
// then be stuck in the ring). It is called with mu held or before Open
// returns.
func (s *Spool) newSegmentFile(id uint64) (*os.File, error) {
	path := filepath.Join(s.cfg.Dir, segName(id))
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("cannot create spool segment %s: it exists", segName(id))
	}
	if s.prepared {
		s.prepared = false
		if err := os.Rename(filepath.Join(s.cfg.Dir, preparedName), path); err != nil {
			s.cfg.Logger.Warn("cannot use the prepared spool segment", "err", err)
		}
	}
	select {
	case s.prepKick <- struct{}{}:
	default:
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot create spool segment: %w", err)
	}
	err = syncDir(s.cfg.Dir)
	if err == nil && s.cfg.SyncInterval > 0 {
		err = allocate(f, s.cfg.SegmentBytes) // a prepared file already has its size
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// closeSegment closes the last segment's file.
func (s *Spool) closeSegment() error {
	if err := s.file.Close(); err != nil {
		return fmt.Errorf("cannot close spool segment: %w", err)
	}
	return nil
}

// prepareLoop zero-fills and syncs the next segment file whenever the last
// one was used, until Close.
func (s *Spool) prepareLoop() {
	defer close(s.prepDone)
	for {
		select {
		case <-s.stop:
			return
		case <-s.prepKick:
		}
		s.mu.Lock()
		ready := s.prepared
		s.mu.Unlock()
		if ready {
			continue
		}
		if err := s.prepare(); err != nil {
			// Segments are then created empty: slower commits, same safety.
			s.cfg.Logger.Warn("cannot prepare the next spool segment", "err", err)
			continue
		}
		s.mu.Lock()
		s.prepared = true
		s.mu.Unlock()
	}
}

// prepPause spaces the synced MiB writes of a preparation.
const prepPause = 10 * time.Millisecond

// errStopped ends a preparation cut short by Close.
var errStopped = errors.New("spool closing")

// prepare writes the prepared file: SegmentBytes of zeros, synced, then
// renamed into place, so a prepared file is always whole.
func (s *Spool) prepare() error {
	tmp := filepath.Join(s.cfg.Dir, preparedTmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create prepared spool segment: %w", err)
	}
	// Paced: one synced MiB at a time, so that group commits never queue
	// behind a large writeback (64 MiB at once held a lone commit for
	// 40ms). A 64 MiB segment takes about a second to prepare; at 20k
	// events/s it lasts over ten.
	zero := make([]byte, 1<<20)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for n := int64(0); n < s.cfg.SegmentBytes && err == nil; n += int64(len(zero)) {
		select {
		case <-s.stop:
			err = errStopped
		case <-pause.C:
			if _, err = f.Write(zero[:min(int64(len(zero)), s.cfg.SegmentBytes-n)]); err == nil {
				err = datasync(f)
			}
			pause.Reset(prepPause)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.cfg.Dir, preparedName))
	}
	if err != nil {
		_ = os.Remove(tmp)
		if errors.Is(err, errStopped) {
			return nil
		}
		return fmt.Errorf("cannot write prepared spool segment: %w", err)
	}
	return nil
}

// rotateLocked seals the current segment and starts the next one, unless
// another caller did so while this one waited. Every frame of the old
// segment is fdatasynced first: syncLocked releases mu, so frames can be
// added meanwhile, hence the loop.
func (s *Spool) rotateLocked(frame int64) error {
	for {
		for s.ioBusy || s.ack.busy() {
			s.cond.Wait()
		}
		if s.closed {
			return ErrClosed
		}
		if s.tail+frame <= s.cfg.SegmentBytes {
			return nil
		}
		synced, err := s.syncLocked()
		if err != nil {
			return err
		}
		if !synced {
			break
		}
	}
	// Seal: cut the preallocated tail so that a sealed segment's size is
	// where its frames end, durably, before the next segment exists.
	if err := sealFile(s.file, s.tail); err != nil {
		return err
	}
	next := s.segs[len(s.segs)-1].id + 1
	f, err := s.newSegmentFile(next)
	if err != nil {
		return err
	}
	if err := s.closeSegment(); err != nil {
		s.cfg.Logger.Warn("cannot close sealed spool segment", "err", err)
	}
	s.file = f
	s.segs = append(s.segs, segment{id: next})
	s.tail = 0
	s.ack.rotated(next)
	return nil
}

// sealFile cuts f to size and syncs it.
func sealFile(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("cannot seal spool segment: %w", err)
	}
	if err := datasync(f); err != nil {
		return fmt.Errorf("cannot seal spool segment: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open spool dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync spool dir: %w", err)
	}
	return nil
}
