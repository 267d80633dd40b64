package spool

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func (s *Spool) load() error {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("cannot list spool dir: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			continue
		}
		st, err := e.Info()
		if err != nil {
			return fmt.Errorf("cannot stat spool segment %s: %w", name, err)
		}
		s.segs = append(s.segs, segment{id: id, size: st.Size()})
	}
	slices.SortFunc(s.segs, func(a, b segment) int { return cmp.Compare(a.id, b.id) })
	if err := s.loadCheckpoint(); err != nil {
		return err
	}
	// The ring is read whatever SyncInterval is now: it may hold acknowledged frames of a run
	// with another setting.
	if err := s.recoverRing(); err != nil {
		return err
	}
	if n := len(s.segs); n > 0 {
		good, err := s.recoverTail(s.segs[n-1].id)
		if err != nil {
			return err
		}
		s.segs[n-1].size = good
	}
	// The new segment comes after every segment and every position the
	// checkpoint names, even if segment files were removed by hand.
	next := s.commit.Segment + 1
	if s.pending != nil {
		next = max(next, s.pending.Segment+1)
	}
	if n := len(s.segs); n > 0 {
		next = max(next, s.segs[n-1].id+1)
	}
	if err := os.Remove(filepath.Join(s.cfg.Dir, preparedTmp)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove unfinished prepared spool segment: %w", err)
	}
	if st, err := os.Stat(filepath.Join(s.cfg.Dir, preparedName)); err == nil {
		// A prepared file of another segment size (the flag changed) is
		// not used.
		s.prepared = st.Size() == s.cfg.SegmentBytes
		if !s.prepared {
			_ = os.Remove(filepath.Join(s.cfg.Dir, preparedName))
		}
	}
	f, err := s.newSegmentFile(next)
	if err != nil {
		return err
	}
	// The one place the durability mode is chosen: the acknowledger.
	if s.cfg.SyncInterval > 0 {
		r, err := openRing(s.cfg.RingDir, s.id, ringSize(s.cfg.SegmentBytes), next)
		if err != nil && mayFallBack(err) && s.ringDefaulted && s.cfg.RingDir != s.cfg.Dir {
			// The default (/dev/shm) cannot take the ring here: full, read-only or not a
			// directory.
			s.cfg.Logger.Warn("spool ring falls back to the spool directory", "err", err)
			s.cfg.RingDir = s.cfg.Dir
			r, err = openRing(s.cfg.RingDir, s.id, ringSize(s.cfg.SegmentBytes), next)
		}
		if err != nil {
			f.Close()
			return err
		}
		s.ack, s.stageBytes = newRingStager(s, r), int64(len(r.data))
	} else {
		s.ack, s.stageBytes = newGroupCommit(s), s.cfg.SegmentBytes
		for _, dir := range s.ringDirs() {
			if err := removeRing(dir, s.id); err != nil {
				s.cfg.Logger.Warn("cannot remove the spool ring", "err", err)
			}
		}
	}
	s.file = f
	s.segs = append(s.segs, segment{id: next})
	s.openEnd = Position{Segment: next}
	s.durable = s.openEnd
	for _, sg := range s.segs {
		s.total += sg.size
	}
	// The checkpoint stays as recorded when its segment is gone: Commit
	// deletes a sealed segment once the checkpoint reaches its end, and the
	// reader goes on at the next segment. The end of segment N and the
	// start of segment N+1 are one place under two names, and the shipper
	// names a batch by its start: moved to the other name here, a pending
	// batch was replayed under another token than its first insert and
	// stored twice. Only a checkpoint past a cut tail is clamped: the
	// records it passed are gone.
	if i := s.segIndex(s.commit.Segment); i >= 0 && s.commit.Offset > s.segs[i].size {
		s.commit.Offset = s.segs[i].size
	}
	if s.pending != nil && !s.commit.Less(*s.pending) {
		s.pending = nil
	}
	if s.commit.Less(s.openEnd) {
		s.oldest = s.appendTimeAt(s.commit)
	}
	return nil
}

// recoverTail scans segment id, truncates it after its last valid frame and
// returns the valid length. Zeros after the last frame are the unwritten
// part of a preallocated segment; anything else there is damage, counted
// and logged.
func (s *Spool) recoverTail(id uint64) (int64, error) {
	path := filepath.Join(s.cfg.Dir, segName(id))
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("cannot read spool segment %s: %w", segName(id), err)
	}
	off := framesEnd(data)
	if off == len(data) {
		return int64(off), nil
	}
	if !allZero(data[off:]) {
		s.metrics.corrupt.Inc()
		s.cfg.Logger.Warn("spool tail damaged, cut", "segment", id, "offset", off, "bytes_cut", len(data)-off)
	}
	if err := os.Truncate(path, int64(off)); err != nil {
		return 0, fmt.Errorf("cannot cut damaged spool tail: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("cannot open spool segment: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("cannot sync spool segment: %w", err)
	}
	return int64(off), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// framesEnd returns the length of the run of valid frames at the start of b.
func framesEnd(b []byte) int {
	off := 0
	for off < len(b) {
		n, ok := checkFrame(b[off:])
		if !ok {
			break
		}
		off += n
	}
	return off
}

// checkFrame validates the frame at the start of b and returns its length.
func checkFrame(b []byte) (int, bool) {
	if len(b) < headerSize {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || n > MaxRecordBytes || int(n) > len(b)-headerSize {
		return 0, false
	}
	if crc32.Checksum(b[8:headerSize+int(n)], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, false
	}
	return headerSize + int(n), true
}

// appendTimeAt reads the append time of the frame at p, 0 if unreadable.
func (s *Spool) appendTimeAt(p Position) int64 {
	if s.segIndex(p.Segment) < 0 {
		// A deleted segment (the checkpoint can name the end of one): the
		// next frame is the first of the next segment.
		i := slices.IndexFunc(s.segs, func(sg segment) bool { return sg.id > p.Segment })
		if i < 0 {
			return 0
		}
		p = Position{Segment: s.segs[i].id}
	}
	f, err := os.Open(filepath.Join(s.cfg.Dir, segName(p.Segment)))
	if err != nil {
		return 0
	}
	defer f.Close()
	var h [headerSize]byte
	if _, err := f.ReadAt(h[:], p.Offset); err != nil {
		// Past the end of a sealed segment: the next segment's first record.
		if i := s.segIndex(p.Segment); i >= 0 && i+1 < len(s.segs) && s.segs[i+1].size > 0 {
			return s.appendTimeAt(Position{Segment: s.segs[i+1].id})
		}
		return 0
	}
	return int64(binary.LittleEndian.Uint64(h[8:]))
}

// recoverRing writes the frames that the ring of this spool holds and its segment file may lack
// (a crash of the process between an append and the next copy) into that segment, and
// fdatasyncs it. It runs at Open, before the last segment's tail is checked, so a frame torn by
// the crash is cut there as usual. A ring of another spool, or none, is left alone; a ring path
// that fails the checks (see openRingDir) refuses the start.
func (s *Spool) recoverRing() error {
	for _, dir := range s.ringDirs() {
		if err := s.recoverRingIn(dir); err != nil {
			return err
		}
		if err := s.recoverLegacyRing(dir); err != nil {
			return err
		}
	}
	return nil
}

// ringDirs are the directories a ring of this spool may be in: RingDir, and Dir too when RingDir
// was defaulted (an earlier run may have fallen back to it).
func (s *Spool) ringDirs() []string {
	if s.ringDefaulted && s.cfg.RingDir != s.cfg.Dir {
		return []string{s.cfg.RingDir, s.cfg.Dir}
	}
	return []string{s.cfg.RingDir}
}

// recoverRingIn recovers from the ring in the private directory in ringDir, if there is one.
func (s *Spool) recoverRingIn(ringDir string) error {
	dirFD, err := openRingDir(ringDir, s.id, false)
	if err != nil || dirFD < 0 {
		return err
	}
	defer unix.Close(dirFD)
	path := ringPath(ringDir, s.id)
	f, _, err := openRingFile(dirFD, path, s.id, false)
	if err != nil || f == nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(f) // checkRingFile bounded its size
	if err != nil {
		return fmt.Errorf("cannot read spool ring %s: %w", path, err)
	}
	return s.recoverRingBytes(path, b)
}

// recoverLegacyRing recovers from a ring that an earlier version kept right in ringDir
// (legacyRingName), then removes it. Only a regular file of this user with mode 0600 is read;
// anything else at that name is not ours to read or remove, and is left alone (logged): this
// version never writes there.
func (s *Spool) recoverLegacyRing(ringDir string) error {
	parent, err := unix.Open(ringDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // no ring dir, no ring in it
	}
	defer unix.Close(parent)
	name := legacyRingName(s.id)
	path := filepath.Join(ringDir, name)
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err == unix.ENOENT {
		return nil
	}
	var b []byte
	if err == nil {
		f := os.NewFile(uintptr(fd), path)
		defer f.Close()
		var st os.FileInfo
		if st, err = f.Stat(); err == nil {
			if !st.Mode().IsRegular() || st.Size() > ringHeader+ringMaxBytes {
				err = errors.New("not a spool ring")
			} else if err = checkOwned(fd, "spool ring", path, 0o600); err == nil {
				b, err = io.ReadAll(f)
			}
		}
	}
	if err != nil {
		s.cfg.Logger.Warn("spool ring of an earlier version not read", "path", path, "err", err)
		return nil
	}
	if err := s.recoverRingBytes(path, b); err != nil {
		return err
	}
	if err := unix.Unlinkat(parent, name, 0); err != nil {
		s.cfg.Logger.Warn("cannot remove the spool ring of an earlier version", "path", path, "err", err)
	}
	return nil
}

// recoverRingBytes recovers from b, the content of the ring file at path.
func (s *Spool) recoverRingBytes(path string, b []byte) error {
	if len(b) < ringHeader || string(b[:len(ringMagic)]) != ringMagic || string(b[hdrID:hdrID+16]) != s.id {
		if slices.ContainsFunc(b[:min(len(b), ringHeader)], func(c byte) bool { return c != 0 }) { // else: never set up
			s.cfg.Logger.Warn("spool ring unreadable, ignored", "path", path)
		}
		return nil
	}
	seg := binary.LittleEndian.Uint64(b[hdrSegment:])
	from := int64(binary.LittleEndian.Uint64(b[hdrCopied:]))
	to := int64(binary.LittleEndian.Uint64(b[hdrTail:]))
	size := int64(binary.LittleEndian.Uint64(b[hdrSize:]))
	if to == from {
		return nil
	}
	if size <= 0 || int64(len(b)) != ringHeader+size || from < 0 || to < from || to-from > size {
		s.cfg.Logger.Warn("spool ring header damaged, ignored", "path", path)
		return nil
	}
	if s.segIndex(seg) < 0 {
		s.cfg.Logger.Warn("spool ring names a missing segment, ignored", "segment", seg)
		return nil
	}
	f, err := os.OpenFile(filepath.Join(s.cfg.Dir, segName(seg)), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot open spool segment to recover the ring: %w", err)
	}
	defer f.Close()
	if err := writeRing(f, b[ringHeader:], from, to); err != nil {
		return err
	}
	if err := datasync(f); err != nil {
		return fmt.Errorf("cannot sync spool segment after recovering the ring: %w", err)
	}
	if st, err := f.Stat(); err == nil {
		s.segs[s.segIndex(seg)].size = max(s.segs[s.segIndex(seg)].size, st.Size())
	}
	s.cfg.Logger.Info("spool ring recovered", "segment", seg, "bytes", to-from)
	return nil
}
