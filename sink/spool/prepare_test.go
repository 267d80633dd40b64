package spool

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/testkit"
)

// waitPrepared waits until the background preparation of dir's next
// segment has finished.
func waitPrepared(t *testing.T, s *Spool) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "a prepared segment", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.prepared
	})
}

// frameEnd returns where the frames of a segment file end and its size.
func frameEnd(t *testing.T, path string) (end, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(framesEnd(b)), int64(len(b))
}

// copyDir copies the files and directories of src into a new directory: the state
// a crash would leave, since every acknowledged append is synced.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	copyTree(t, src, dst)
	return dst
}

// copyTree copies the files of src into dst, and its directories (mode 0700) with theirs.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := os.Mkdir(filepath.Join(dst, e.Name()), 0o700); err != nil {
				t.Fatal(err)
			}
			copyTree(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			// The preparing goroutine renamed or removed it since ReadDir: a crash
			// at this moment would not have left it either.
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRotationUsesPreparedSegment(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	const seg = 4 << 20
	s, reg := openSpool(t, Config{Dir: dir, SegmentBytes: seg})
	waitPrepared(t, s)
	rec := bytes.Repeat([]byte("p"), 100<<10)
	for range 45 { // ~4.5 MiB: one rotation
		if err := s.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	first, second := s.OpenEnd().Segment, s.OpenEnd().Segment+1
	// The sealed segment was cut to its last frame; the live one is the
	// prepared file: full size, frames then zeros.
	if end, size := frameEnd(t, filepath.Join(dir, segName(first))); end != size || end == 0 {
		t.Errorf("sealed segment: frames end at %d, file is %d bytes; want equal", end, size)
	}
	end, size := frameEnd(t, filepath.Join(dir, segName(second)))
	if size != seg || end == 0 || end >= size {
		t.Errorf("live segment: frames end at %d of %d bytes; want a preallocated file of %d", end, size, seg)
	}
	if got, _ := readAll(t, s, s.Checkpoint()); len(got) != 45 {
		t.Errorf("read %d records, want 45", len(got))
	}

	// A crash now leaves the zero tail; the next open cuts it silently.
	crashed := copyDir(t, dir)
	s2, reg2 := openSpool(t, Config{Dir: crashed, SegmentBytes: seg})
	if got, _ := readAll(t, s2, s2.Checkpoint()); len(got) != 45 {
		t.Errorf("after crash read %d records, want 45", len(got))
	}
	if c := testkit.Metric(t, reg2, "collector_spool_corrupt_records_total"); c != 0 {
		t.Errorf("corrupt records after a crash with a zero tail: %v, want 0", c)
	}
	if end, size := frameEnd(t, filepath.Join(crashed, segName(second))); end != size {
		t.Errorf("recovered segment: frames end at %d, file is %d bytes", end, size)
	}
	if c := testkit.Metric(t, reg, "collector_spool_corrupt_records_total"); c != 0 {
		t.Errorf("corrupt records %v, want 0", c)
	}

	// A clean close cuts the live segment too.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if end, size := frameEnd(t, filepath.Join(dir, segName(second))); end != size {
		t.Errorf("after Close: frames end at %d, file is %d bytes", end, size)
	}
}

func TestPreparedSegmentLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir, SegmentBytes: 4 << 20})
	waitPrepared(t, s)
	if err := s.Append([]byte("one")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// An unfinished preparation and a prepared file of another segment
	// size: neither is used as a segment.
	if err := os.WriteFile(filepath.Join(dir, preparedTmp), []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, reg := openSpool(t, Config{Dir: dir, SegmentBytes: 8 << 20})
	if _, err := os.Stat(filepath.Join(dir, preparedTmp)); err == nil {
		// It may have been rewritten by the new preparation; it must not
		// be the 3-byte leftover.
		if st, _ := os.Stat(filepath.Join(dir, preparedTmp)); st.Size() == 3 {
			t.Error("unfinished prepared file left in place")
		}
	}
	if err := s2.Append([]byte("two")); err != nil {
		t.Fatal(err)
	}
	end, size := frameEnd(t, filepath.Join(dir, segName(s2.OpenEnd().Segment)))
	if size == 4<<20 {
		t.Errorf("the 4 MiB prepared file became a segment of an 8 MiB spool (frames end %d)", end)
	}
	if got, _ := readAll(t, s2, s2.Checkpoint()); len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("read %q, want [one two]", got)
	}
	if c := testkit.Metric(t, reg, "collector_spool_corrupt_records_total"); c != 0 {
		t.Errorf("corrupt %v, want 0", c)
	}
	waitPrepared(t, s2)
	if st, err := os.Stat(filepath.Join(dir, preparedName)); err != nil || st.Size() != 8<<20 {
		t.Errorf("prepared file after reopen: %v, %v; want 8 MiB", st, err)
	}
}
