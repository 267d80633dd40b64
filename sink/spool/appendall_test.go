package spool

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
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

// TestAppendAllAcrossRotation: a call whose records do not fit in the current segment is spread
// over two, and every record is there, in order, after a restart.
func TestAppendAllAcrossRotation(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	const seg = 4 << 20
	s, _ := openSpool(t, Config{Dir: dir, SegmentBytes: seg})
	rec := func(i int) []byte {
		return append([]byte(fmt.Sprintf("r%d-", i)), bytes.Repeat([]byte("x"), 900<<10)...)
	}
	for i := range 3 {
		if err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendAll([][]byte{rec(3), rec(4), rec(5)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 2 {
		t.Fatalf("%d segment files, want the call spread over 2", len(segs))
	}
	s2, _ := openSpool(t, Config{Dir: dir, SegmentBytes: seg})
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
