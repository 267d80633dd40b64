package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kyomi/collector/internal/leakcheck"
)

// TestAppendAllAllOrNothing: records that do not fit together are refused together, even when
// the first one would fit alone, and a bad record refuses the whole call.
func TestAppendAllAllOrNothing(t *testing.T) {
	leakcheck.Register(t)
	const seg = 4 << 20
	s, _ := openSpool(t, Config{Dir: t.TempDir(), SegmentBytes: seg, MaxBytes: 2 * seg})
	fill := bytes.Repeat([]byte("f"), 64<<10)
	n := 0
	for ; s.Append(fill) == nil; n++ {
	}
	s.mu.Lock()
	free := s.cfg.MaxBytes - s.total
	s.mu.Unlock()
	// One frame of this size fits in what is left; two do not.
	size := int(free/2) + 100 - headerSize
	if size < 1 || int64(size+headerSize) > free {
		t.Fatalf("%d bytes free after %d records: cannot size the test records", free, n)
	}
	a, b := bytes.Repeat([]byte("a"), size), bytes.Repeat([]byte("b"), size)
	if err := s.AppendAll([][]byte{a, b}); !errors.Is(err, ErrFull) {
		t.Fatalf("AppendAll over the limit: %v, want ErrFull", err)
	}
	if err := s.AppendAll([][]byte{[]byte("ok"), nil}); err == nil {
		t.Fatal("AppendAll with an empty record: nil error")
	}
	got, _ := readAll(t, s, s.Checkpoint())
	if len(got) != n {
		t.Fatalf("%d records stored after two refused calls, want the %d appended before", len(got), n)
	}
	if err := s.Append(a); err != nil {
		t.Fatalf("the first record alone: %v, want it to fit", err)
	}
}

// TestAppendAllStartsNextSegment: a call whose records do not fit in the current segment goes
// whole into the next one, and every record is there, in order, after a restart.
func TestAppendAllStartsNextSegment(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	s := threeBigRecords(t, dir)
	// 3.6 MiB would fit in what is left of the first segment; the call's 2.7 MiB do not.
	if err := s.AppendAll([][]byte{bigRecord(3), bigRecord(4), bigRecord(5)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	counts := segmentRecords(t, dir)
	if len(counts) != 2 || counts[0] != 3 || counts[1] != 3 {
		t.Fatalf("records per segment %v, want [3 3]: the call kept in one segment", counts)
	}
	s2, _ := openSpool(t, Config{Dir: dir, SegmentBytes: bigSeg})
	got, _ := readAll(t, s2, s2.Checkpoint())
	if len(got) != 6 {
		t.Fatalf("read %d records after restart, want 6", len(got))
	}
	for i, r := range got {
		if want := fmt.Sprintf("r%d-", i); r[:len(want)] != want {
			t.Fatalf("record %d starts %q, want %q", i, r[:8], want)
		}
	}
}

// TestAppendAllFailedRotationStoresNone: when the next segment cannot be started, none of the
// call's records is stored, although the first would have fitted in the current segment. The
// client that is told so retries, and nothing is stored twice.
func TestAppendAllFailedRotationStoresNone(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	s := threeBigRecords(t, dir)
	// The next segment's name is taken, so the rotation fails.
	s.mu.Lock()
	next := filepath.Join(dir, segName(s.segs[len(s.segs)-1].id+1))
	s.mu.Unlock()
	if err := os.Mkdir(next, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAll([][]byte{bigRecord(3), bigRecord(4)}); err == nil {
		t.Fatal("AppendAll with the next segment blocked: nil error")
	}
	if err := os.Remove(next); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := openSpool(t, Config{Dir: dir, SegmentBytes: bigSeg})
	got, _ := readAll(t, s2, s2.Checkpoint())
	if len(got) != 3 {
		t.Fatalf("read %d records after the refused call, want the 3 appended before it", len(got))
	}
}

// TestAppendAllOverSegmentRefused: records that together exceed a segment are refused with an
// error that says so, and nothing is stored.
func TestAppendAllOverSegmentRefused(t *testing.T) {
	leakcheck.Register(t)
	s, _ := openSpool(t, Config{Dir: t.TempDir(), SegmentBytes: bigSeg})
	recs := make([][]byte, 5)
	for i := range recs {
		recs[i] = bigRecord(i)
	}
	err := s.AppendAll(recs)
	if err == nil || !strings.Contains(err.Error(), "more than a segment") {
		t.Fatalf("AppendAll of 4.5 MiB into 4 MiB segments: %v, want a more-than-a-segment error", err)
	}
	if got, _ := readAll(t, s, s.Checkpoint()); len(got) != 0 {
		t.Fatalf("%d records stored after the refused call, want 0", len(got))
	}
}

// bigSeg is the segment size of the tests that use bigRecord: four of them fit in one segment.
const bigSeg = 4 << 20

// threeBigRecords opens a spool in dir with bigSeg segments and appends bigRecord 0, 1 and 2,
// leaving room in the first segment for one more.
func threeBigRecords(t *testing.T, dir string) *Spool {
	t.Helper()
	s, _ := openSpool(t, Config{Dir: dir, SegmentBytes: bigSeg})
	for i := range 3 {
		if err := s.Append(bigRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// bigRecord is a 900 KiB record that starts "r<i>-".
func bigRecord(i int) []byte {
	return append([]byte(fmt.Sprintf("r%d-", i)), bytes.Repeat([]byte("x"), 900<<10)...)
}

// segmentRecords counts the frames in each segment file of dir, in segment order.
func segmentRecords(t *testing.T, dir string) []int {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(segs)
	var counts []int
	for _, p := range segs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for off := 0; off+headerSize <= len(b); n++ {
			size := int(binary.LittleEndian.Uint32(b[off:]))
			if size == 0 {
				break // the zero tail of a preallocated segment
			}
			off += headerSize + size
		}
		counts = append(counts, n)
	}
	return counts
}
