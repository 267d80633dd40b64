package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Record is one record read from the spool. Data is valid until the next
// call to Next.
type Record struct {
	Data     []byte
	Pos      Position  // where the record's frame starts
	Next     Position  // where the next frame starts
	Appended time.Time // when Append stored it
}

// Reader reads durable records in order from a starting position. It is not
// safe for concurrent use; a spool has one reader (the shipper).
type Reader struct {
	s   *Spool
	pos Position
	f   *os.File
	fID uint64
	buf []byte // bytes of the segment from bufOff
	off int64  // segment offset of buf[0]

	// The last limit of segment pos.Segment: readable data ends at
	// lim.end, which only grows. Next asks the spool again (taking its
	// lock, which appenders share) only when pos reaches it, not once per
	// record.
	lim segLimit
}

// segLimit is where the readable data of segment seg ends (see Spool.limit).
type segLimit struct {
	seg    uint64
	end    int64  // readable data of seg ends here
	sealed bool   // seg is complete: end is final and the reader moves on to next
	next   uint64 // the segment after seg, when sealed
	ok     bool   // false when no segment at or after seg exists
}

// NewReader returns a Reader positioned at from (usually Checkpoint()).
func (s *Spool) NewReader(from Position) *Reader {
	return &Reader{s: s, pos: from}
}

// Position returns where the next record will be read.
func (r *Reader) Position() Position { return r.pos }

// Next returns the next durable record, or io.EOF when the reader has
// caught up with the durable end (more may come: wait on Spool.Notify).
// A damaged frame in a sealed segment is counted, logged, and the rest of
// that segment skipped, since frames cannot be resynchronised.
func (r *Reader) Next() (Record, error) {
	for {
		if l := r.lim; !l.ok || l.seg != r.pos.Segment || (r.pos.Offset >= l.end && !l.sealed) {
			r.lim = r.s.limit(r.pos.Segment)
		}
		end, sealed, next := r.lim.end, r.lim.sealed, r.lim.next
		if !r.lim.ok {
			return Record{}, io.EOF
		}
		if r.pos.Offset >= end {
			if !sealed {
				return Record{}, io.EOF
			}
			r.pos = Position{Segment: next}
			continue
		}
		rec, err := r.read(end)
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, errDamaged) {
			return Record{}, err
		}
		r.s.metrics.corrupt.Inc()
		r.s.cfg.Logger.Error("damaged spool record, rest of segment skipped",
			"segment", r.pos.Segment, "offset", r.pos.Offset, "bytes_skipped", end-r.pos.Offset)
		if !sealed {
			// Cannot happen for data this process wrote and synced; stop
			// rather than spin.
			return Record{}, fmt.Errorf("cannot read spool at %s: %w", r.pos, err)
		}
		r.pos = Position{Segment: next}
	}
}

var errDamaged = errors.New("damaged spool record")

// need returns n segment bytes starting at r.pos.Offset, reading ahead up
// to the durable end. The slice is valid until the next call.
func (r *Reader) need(n int64, end int64) ([]byte, error) {
	if r.f == nil || r.fID != r.pos.Segment {
		if r.f != nil {
			r.f.Close()
		}
		f, err := os.Open(filepath.Join(r.s.cfg.Dir, segName(r.pos.Segment)))
		if err != nil {
			r.f = nil
			return nil, fmt.Errorf("cannot open spool segment: %w", err)
		}
		r.f, r.fID, r.buf, r.off = f, r.pos.Segment, r.buf[:0], r.pos.Offset
	}
	if r.pos.Offset < r.off || r.pos.Offset > r.off+int64(len(r.buf)) {
		r.buf, r.off = r.buf[:0], r.pos.Offset
	}
	d := r.pos.Offset - r.off
	if int64(len(r.buf))-d >= n {
		return r.buf[d : d+n], nil
	}
	if r.pos.Offset+n > end {
		return nil, errDamaged
	}
	// Compact, then read ahead up to 256 KiB, never past the durable end.
	r.buf = r.buf[:copy(r.buf, r.buf[d:])]
	r.off = r.pos.Offset
	want := min(max(n, 256<<10), end-r.pos.Offset)
	if int64(cap(r.buf)) < want {
		nb := make([]byte, len(r.buf), want)
		copy(nb, r.buf)
		r.buf = nb
	}
	have := int64(len(r.buf))
	m, err := r.f.ReadAt(r.buf[have:want], r.off+have)
	r.buf = r.buf[:have+int64(m)]
	if int64(len(r.buf)) < n {
		if err == nil || err == io.EOF {
			return nil, errDamaged
		}
		return nil, fmt.Errorf("cannot read spool segment: %w", err)
	}
	return r.buf[:n], nil
}

func (r *Reader) read(end int64) (Record, error) {
	h, err := r.need(headerSize, end)
	if err != nil {
		return Record{}, err
	}
	n := int64(binary.LittleEndian.Uint32(h))
	if n == 0 || n > MaxRecordBytes {
		return Record{}, errDamaged
	}
	b, err := r.need(headerSize+n, end)
	if err != nil {
		return Record{}, err
	}
	if crc32.Checksum(b[8:], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return Record{}, errDamaged
	}
	rec := Record{
		Data:     b[headerSize:],
		Pos:      r.pos,
		Next:     Position{Segment: r.pos.Segment, Offset: r.pos.Offset + headerSize + n},
		Appended: time.Unix(0, int64(binary.LittleEndian.Uint64(b[8:]))),
	}
	r.pos = rec.Next
	return rec, nil
}

// Close releases the reader's file.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// limit returns where readable (durable) data ends in segment id, whether
// the segment is sealed (a later segment exists), the next segment id, and
// ok false when no segment at or after id exists.
func (s *Spool) limit(id uint64) segLimit {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := -1
	for j, sg := range s.segs {
		if sg.id >= id {
			i = j
			break
		}
	}
	switch {
	case i < 0:
		return segLimit{seg: id}
	case s.segs[i].id != id: // id was deleted or never existed: go to the next
		return segLimit{seg: id, sealed: true, next: s.segs[i].id, ok: true}
	case i < len(s.segs)-1:
		return segLimit{seg: id, end: s.segs[i].size, sealed: true, next: s.segs[i+1].id, ok: true}
	case s.durable.Segment == id:
		return segLimit{seg: id, end: s.durable.Offset, ok: true}
	}
	return segLimit{seg: id, ok: true}
}
