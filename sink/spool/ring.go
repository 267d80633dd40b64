package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// The staging ring of SyncInterval mode. Appends store their frames in a file on a memory file
// system (tmpfs), mapped shared, and return: a crash of the process leaves the file and its bytes
// in memory. Every copyInterval the frames are written (pwrite) into the live segment at the same
// offsets, and the segment is fdatasynced every SyncInterval.
//
// Why not map the segment itself: on a virtual machine with shadow page tables every page that is
// new to the mapping, or write-protected again by writeback after an fdatasync, costs a page fault
// of 6 to 15 µs; that was a page per 20 events, about 1 µs of CPU per event under load. The ring's
// pages are mapped once and stay writable (tmpfs has no writeback), so a store costs a memory copy,
// and the segment takes the bytes by pwrite, about 0.5 µs per page (BENCHMARKS.md, "Stop 24").
//
// Layout: a header page, then the data. Segment offset o is at data[o % len(data)]. The header
// holds ringMagic, the spool id, the live segment's id, copied (the segment offset up to which
// the frames are in the segment file) and tail (up to which frames are stored in the ring). An
// append stores tail after its frames, so after a crash [copied, tail) are the acknowledged frames
// that the segment file may lack; Open writes them there again before anything else (the same
// bytes at the same offsets: a repeat is harmless).
const (
	ringMagic    = "kyomiRG1"
	ringHeader   = 4096
	ringMaxBytes = 8 << 20 // data bytes, at most: at 10 MB/s of events, 0.8 s of copies
	hdrID        = 8       // 16 bytes, the spool id in hex
	hdrSegment   = 24
	hdrCopied    = 32
	hdrTail      = 40
	hdrSize      = 48 // the data size, so a ring of another size is read right
)

// ring is the mapped staging file.
type ring struct {
	path string
	f    *os.File
	mem  []byte
	data []byte
}

// ringName is the file name of the ring of spool id.
func ringName(id string) string { return "kyomi-spool-" + id + ".ring" }

// ringSize is the data size of the ring of a spool with segments of segBytes.
func ringSize(segBytes int64) int64 { return min(segBytes, ringMaxBytes) }

// openRing creates or reuses the ring file at path with size data bytes, allocates its memory
// (so that a full tmpfs fails here, not with a fault in an append), maps it, and starts it empty
// for segment seg.
func openRing(path, id string, size int64, seg uint64) (*ring, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot create spool ring: %w", err)
	}
	err = f.Truncate(ringHeader + size)
	if err == nil {
		err = allocate(f, ringHeader+size)
	}
	var mem []byte
	if err == nil {
		mem, err = syscall.Mmap(int(f.Fd()), 0, int(ringHeader+size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	}
	if err != nil {
		f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("cannot map spool ring %s: %w", path, err)
	}
	r := &ring{path: path, f: f, mem: mem, data: mem[ringHeader:]}
	copy(mem, ringMagic)
	copy(mem[hdrID:hdrID+16], id)
	binary.LittleEndian.PutUint64(mem[hdrSize:], uint64(size))
	r.reset(seg)
	return r, nil
}

// reset empties the ring for segment seg, which starts at offset 0.
func (r *ring) reset(seg uint64) {
	binary.LittleEndian.PutUint64(r.mem[hdrCopied:], 0)
	binary.LittleEndian.PutUint64(r.mem[hdrTail:], 0)
	binary.LittleEndian.PutUint64(r.mem[hdrSegment:], seg)
}

// setTail records that the frames up to segment offset tail are stored.
func (r *ring) setTail(tail int64) { binary.LittleEndian.PutUint64(r.mem[hdrTail:], uint64(tail)) }

// setCopied records that the frames up to segment offset copied are in the segment file.
func (r *ring) setCopied(copied int64) {
	binary.LittleEndian.PutUint64(r.mem[hdrCopied:], uint64(copied))
}

// put stores frame at segment offset off, in two pieces when it wraps around the end.
func (r *ring) put(off int64, frame []byte) {
	at := off % int64(len(r.data))
	n := copy(r.data[at:], frame)
	copy(r.data, frame[n:])
}

// slot returns the ring memory for the n bytes at segment offset off when they do not wrap, so
// that a frame can be built in place; nil when they wrap.
func (r *ring) slot(off, n int64) []byte {
	at := off % int64(len(r.data))
	if at+n > int64(len(r.data)) {
		return nil
	}
	return r.data[at : at+n]
}

// writeTo writes the ring's bytes for segment offsets [from, to) into f at the same offsets.
func (r *ring) writeTo(f *os.File, from, to int64) error {
	return writeRing(f, r.data, from, to)
}

func writeRing(f *os.File, data []byte, from, to int64) error {
	size := int64(len(data))
	for from < to {
		at := from % size
		n := min(to-from, size-at)
		if _, err := f.WriteAt(data[at:at+n], from); err != nil {
			return fmt.Errorf("cannot copy spool ring to segment: %w", err)
		}
		from += n
	}
	return nil
}

// close unmaps and closes the ring, and removes its file when remove is set (after a clean
// Close, when the segment holds every frame).
func (r *ring) close(remove bool) error {
	err := syscall.Munmap(r.mem)
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if remove {
		if rerr := os.Remove(r.path); err == nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("cannot close spool ring: %w", err)
	}
	return nil
}

// recoverRing writes the frames that the ring of this spool holds and its segment file may lack
// (a crash of the process between an append and the next copy) into that segment, and
// fdatasyncs it. It runs at Open, before the last segment's tail is checked, so a frame torn by
// the crash is cut there as usual. A ring of another spool, or none, is left alone.
func (s *Spool) recoverRing() error {
	for _, dir := range s.ringDirs() {
		if err := s.recoverRingAt(filepath.Join(dir, ringName(s.id))); err != nil {
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

// recoverRingAt recovers from the ring file at path, if there is one.
func (s *Spool) recoverRingAt(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) { // no ring there
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read spool ring: %w", err)
	}
	if len(b) < ringHeader || string(b[:len(ringMagic)]) != ringMagic || string(b[hdrID:hdrID+16]) != s.id {
		s.cfg.Logger.Warn("spool ring unreadable, ignored", "path", path)
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
