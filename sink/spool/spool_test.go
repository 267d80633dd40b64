package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/testkit"
)

// openSpool opens a spool in dir with a fresh registry and closes it at
// the end of the test.
func openSpool(t testing.TB, cfg Config) (*Spool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, reg
}

// readAll reads every durable record from pos.
func readAll(t testing.TB, s *Spool, from Position) ([]string, Position) {
	t.Helper()
	r := s.NewReader(from)
	defer r.Close()
	var out []string
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, r.Position()
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(rec.Data))
	}
}

func TestAppendReadRestart(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir})
	for i := range 100 {
		if err := s.Append([]byte(fmt.Sprintf("rec-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	got, end := readAll(t, s, s.Checkpoint())
	if len(got) != 100 || got[0] != "rec-0" || got[99] != "rec-99" {
		t.Fatalf("read %d records: %q...", len(got), got[:min(3, len(got))])
	}
	if err := s.Commit(Position{Segment: end.Segment, Offset: 0}); err != nil {
		t.Fatal(err)
	}
	// Commit the first 40 records, then restart: 60 remain.
	r := s.NewReader(s.Checkpoint())
	var p Position
	for range 40 {
		rec, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		p = rec.Next
	}
	r.Close()
	if err := s.Commit(p); err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := openSpool(t, Config{Dir: dir})
	if s2.ID() != id {
		t.Errorf("spool id changed across restart: %s -> %s", id, s2.ID())
	}
	if s2.Checkpoint() != p {
		t.Errorf("checkpoint %s, want %s", s2.Checkpoint(), p)
	}
	got, _ = readAll(t, s2, s2.Checkpoint())
	if len(got) != 60 || got[0] != "rec-40" {
		t.Fatalf("after restart read %d records starting %q, want 60 from rec-40", len(got), got[0])
	}
	if !s2.Checkpoint().Less(s2.OpenEnd()) {
		t.Errorf("OpenEnd %s not after checkpoint %s", s2.OpenEnd(), s2.Checkpoint())
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	leakcheck.Register(t)
	s, reg := openSpool(t, Config{Dir: t.TempDir()})
	const writers, each = 64, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Append([]byte(fmt.Sprintf("w%d-%d", w, i))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, _ := readAll(t, s, s.Checkpoint())
	if len(got) != writers*each {
		t.Fatalf("read %d records, want %d", len(got), writers*each)
	}
	seen := map[string]bool{}
	for _, g := range got {
		if seen[g] {
			t.Fatalf("record %s twice", g)
		}
		seen[g] = true
	}
	syncs := testkit.Metric(t, reg, "collector_spool_fsync_duration_seconds")
	if syncs == 0 || syncs > writers*each/4 {
		t.Errorf("%v fsyncs for %d appends: group commit is not grouping", syncs, writers*each)
	}
	t.Logf("%d appends, %v fsyncs", writers*each, syncs)
	if n := testkit.Metric(t, reg, "collector_spool_records_appended_total"); n != writers*each {
		t.Errorf("appended metric %v", n)
	}
}

func TestTornTail(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
	}{
		{"truncated mid record", func(t *testing.T, path string, size int64) {
			if err := os.Truncate(path, size-7); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated mid header", func(t *testing.T, path string, size int64) {
			if err := os.Truncate(path, size-int64(len("last-record"))-headerSize+5); err != nil {
				t.Fatal(err)
			}
		}},
		{"flipped payload byte", func(t *testing.T, path string, size int64) {
			flip(t, path, size-3)
		}},
		{"flipped length byte", func(t *testing.T, path string, size int64) {
			flip(t, path, size-int64(len("last-record"))-headerSize)
		}},
		{"zeroes appended", func(t *testing.T, path string, size int64) {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(make([]byte, 4096))
			f.Close()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := openSpool(t, Config{Dir: dir})
			for i := range 10 {
				s.Append([]byte(fmt.Sprintf("record-%d", i)))
			}
			s.Append([]byte("last-record"))
			seg := s.OpenEnd().Segment
			s.Close()
			path := filepath.Join(dir, segName(seg))
			st, _ := os.Stat(path)
			tc.damage(t, path, st.Size())

			s2, reg := openSpool(t, Config{Dir: dir})
			wantCorrupt := 1.0
			if tc.name == "zeroes appended" {
				wantCorrupt = 0 // the unwritten tail of a preallocated segment
			}
			if c := testkit.Metric(t, reg, "collector_spool_corrupt_records_total"); c != wantCorrupt {
				t.Errorf("corrupt records %v, want %v", c, wantCorrupt)
			}
			if err := s2.Append([]byte("after-recovery")); err != nil {
				t.Fatal(err)
			}
			got, _ := readAll(t, s2, s2.Checkpoint())
			want := 11
			if tc.name == "zeroes appended" {
				want = 12 // last-record itself was intact
			}
			if len(got) != want || got[9] != "record-9" || got[len(got)-1] != "after-recovery" {
				t.Fatalf("read %d records %q, want %d ending in after-recovery", len(got), got, want)
			}
			// The cut is durable: a third open finds nothing to repair.
			s2.Close()
			_, reg3 := openSpool(t, Config{Dir: dir})
			if c := testkit.Metric(t, reg3, "collector_spool_corrupt_records_total"); c != 0 {
				t.Errorf("corrupt records on third open %v, want 0", c)
			}
		})
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFullThenFreed(t *testing.T) {
	const seg = 4 << 20
	s, reg := openSpool(t, Config{Dir: t.TempDir(), SegmentBytes: seg, MaxBytes: 2 * seg})
	rec := bytes.Repeat([]byte("x"), 64<<10)
	var appended int
	var err error
	for range 1000 {
		if err = s.Append(rec); err != nil {
			break
		}
		appended++
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("append after %d records: %v, want ErrFull", appended, err)
	}
	if s.Ready() {
		t.Error("Ready() true on a full spool")
	}
	if n := testkit.Metric(t, reg, "collector_spool_full_total"); n != 1 {
		t.Errorf("full metric %v", n)
	}
	if b := testkit.Metric(t, reg, "collector_spool_bytes"); b > 2*seg || b < seg {
		t.Errorf("spool bytes %v", b)
	}
	// Nothing appended before ErrFull is lost.
	got, end := readAll(t, s, s.Checkpoint())
	if len(got) != appended {
		t.Fatalf("read %d, appended %d", len(got), appended)
	}
	// Consuming everything frees whole segments and appends work again.
	if err := s.Commit(end); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(rec); err != nil {
		t.Fatalf("append after commit: %v", err)
	}
	if b := testkit.Metric(t, reg, "collector_spool_bytes"); b > seg {
		t.Errorf("spool bytes after commit %v, want <= one segment", b)
	}
	segs, _ := filepath.Glob(filepath.Join(s.cfg.Dir, "*.seg"))
	if len(segs) != 1 {
		t.Errorf("%d segment files after full commit, want 1", len(segs))
	}
}

func TestPendingSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir})
	s.Append([]byte("a"))
	s.Append([]byte("b"))
	_, end := readAll(t, s, s.Checkpoint())
	if err := s.MarkPending(end); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, _ := openSpool(t, Config{Dir: dir})
	p, ok := s2.Pending()
	if !ok || p != end {
		t.Fatalf("pending %v %v, want %s", p, ok, end)
	}
	if err := s2.Commit(end); err != nil {
		t.Fatal(err)
	}
	if _, ok := s2.Pending(); ok {
		t.Error("pending survives commit")
	}
}

func TestOldestUnflushed(t *testing.T) {
	s, reg := openSpool(t, Config{Dir: t.TempDir()})
	if v := testkit.Metric(t, reg, "collector_spool_oldest_unflushed_seconds"); v != 0 {
		t.Errorf("empty spool oldest %v", v)
	}
	before := time.Now()
	s.Append([]byte("a"))
	// The age grows with the record's: it passes 50ms, and never the time since before the append.
	testkit.Eventually(t, 5*time.Second, "the oldest record's age to pass 50ms", func() bool {
		v := testkit.Metric(t, reg, "collector_spool_oldest_unflushed_seconds")
		if limit := time.Since(before).Seconds(); v > limit {
			t.Fatalf("oldest %v, more than the %v since the append", v, limit)
		}
		return v >= 0.05
	})
	_, end := readAll(t, s, s.Checkpoint())
	s.Commit(end)
	if v := testkit.Metric(t, reg, "collector_spool_oldest_unflushed_seconds"); v != 0 {
		t.Errorf("oldest after commit %v, want 0", v)
	}
}

// TestSyncInterval checks SyncInterval mode: an acknowledged record is
// already in the ring file (a crash of the process loses nothing), it is
// in the segment file within a few copy intervals, and the fsyncs come
// from the interval, MarkPending and Close, not from appends.
func TestSyncInterval(t *testing.T) {
	leakcheck.Register(t)
	dir, ringDir := t.TempDir(), t.TempDir()
	s, reg := openSpool(t, Config{Dir: dir, SyncInterval: time.Hour, RingDir: ringDir})
	ring := ringPath(ringDir, s.ID())
	for i := range 100 {
		rec := fmt.Sprintf("record-%03d", i)
		if err := s.Append([]byte(rec)); err != nil {
			t.Fatal(err)
		}
		// What a SIGKILL leaves: the file's bytes, read by another handle (the records are
		// at the start of the ring, after its header page).
		if b, err := readHead(ring, 16<<10); err != nil || !bytes.Contains(b, []byte(rec)) {
			t.Fatalf("acknowledged %s is not in the ring file (err %v)", rec, err)
		}
	}
	seg := filepath.Join(dir, segName(s.OpenEnd().Segment))
	testkit.Eventually(t, 5*time.Second, "the records in the segment file", func() bool {
		b, _ := readHead(seg, 16<<10)
		return bytes.Contains(b, []byte("record-099"))
	})
	if n := testkit.Metric(t, reg, "collector_spool_fsync_duration_seconds"); n != 0 {
		t.Errorf("%v fsyncs for 100 appends with a one-hour interval, want 0", n)
	}
	got, end := readAll(t, s, s.Checkpoint())
	if len(got) != 100 {
		t.Fatalf("read %d written records, want 100", len(got))
	}
	// A checkpoint must never point past what a machine crash keeps.
	if err := s.MarkPending(end); err != nil {
		t.Fatal(err)
	}
	if n := testkit.Metric(t, reg, "collector_spool_fsync_duration_seconds"); n != 1 {
		t.Errorf("%v fsyncs after MarkPending, want 1", n)
	}
	if err := s.Append([]byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: %v", err)
	}
	s2, _ := openSpool(t, Config{Dir: dir})
	if got, _ := readAll(t, s2, s2.Checkpoint()); len(got) != 101 {
		t.Fatalf("read %d after reopen, want 101", len(got))
	}
}

// readHead returns the first n bytes of the file at path (fewer when it is shorter).
func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := f.ReadAt(b, 0)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return b[:m], err
}

// TestSyncIntervalTicks checks that written records are fsynced within the
// interval when nothing else syncs them, and only then.
func TestSyncIntervalTicks(t *testing.T) {
	leakcheck.Register(t)
	s, reg := openSpool(t, Config{Dir: t.TempDir(), SyncInterval: 20 * time.Millisecond})
	fsyncs := func() float64 { return testkit.Metric(t, reg, "collector_spool_fsync_duration_seconds") }
	for i, rec := range []string{"one", "two"} {
		if err := s.Append([]byte(rec)); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 5*time.Second, "an fsync after an append with a 20ms interval", func() bool {
			return fsyncs() >= float64(i+1)
		})
		// Nothing new written: a tick, which is a call of Sync, must not fsync again.
		for range 5 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if n := fsyncs(); n != float64(i+1) {
			t.Errorf("%v fsyncs for %d appends, each synced, and 5 more syncs, want %d", n, i+1, i+1)
		}
	}
}

func TestRotationAndSkipDamagedSealed(t *testing.T) {
	dir := t.TempDir()
	const seg = 4 << 20
	s, reg := openSpool(t, Config{Dir: dir, SegmentBytes: seg})
	rec := bytes.Repeat([]byte("y"), 100<<10)
	for range 100 { // ~10 MiB: three segments
		if err := s.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want >= 3", len(segs))
	}
	if got, _ := readAll(t, s, s.Checkpoint()); len(got) != 100 {
		t.Fatalf("read %d across segments, want 100", len(got))
	}
	// A bit flip inside a sealed segment: its rest is skipped and counted,
	// the reader goes on with the next segment.
	flip(t, segs[0], 5*(100<<10))
	got, _ := readAll(t, s, s.Checkpoint())
	if len(got) >= 100 || len(got) < 50 {
		t.Errorf("read %d with a damaged sealed segment", len(got))
	}
	if c := testkit.Metric(t, reg, "collector_spool_corrupt_records_total"); c != 1 {
		t.Errorf("corrupt %v, want 1", c)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Dir: "x"}, true},
		{"no dir", Config{}, false},
		{"negative interval", Config{Dir: "x", SyncInterval: -1}, false},
		{"max below two segments", Config{Dir: "x", MaxBytes: 64 << 20, SegmentBytes: 64 << 20}, false},
		{"small max, default segment halves it", Config{Dir: "x", MaxBytes: 8 << 20}, true},
		{"max below two minimum segments", Config{Dir: "x", MaxBytes: 6 << 20}, false},
		{"tiny segment", Config{Dir: "x", SegmentBytes: 1024}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestConcurrentAppendsAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir, SegmentBytes: 4 << 20})
	var wg sync.WaitGroup
	const writers, each = 16, 20
	for w := range writers {
		wg.Go(func() {
			rec := bytes.Repeat([]byte{byte('a' + w)}, 60<<10)
			for range each {
				if err := s.Append(rec); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, _ := readAll(t, s, s.Checkpoint())
	if len(got) != writers*each {
		t.Fatalf("read %d records across rotations, want %d", len(got), writers*each)
	}
	for _, g := range got {
		if len(g) != 60<<10 || strings.Count(g, g[:1]) != len(g) {
			t.Fatal("record interleaved with another")
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Errorf("%d segments, want rotation to >= 3", len(segs))
	}
}

func TestSegmentsRemovedByHand(t *testing.T) {
	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir})
	s.Append([]byte("a"))
	_, end := readAll(t, s, s.Checkpoint())
	s.Commit(end)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, p := range segs {
		os.Remove(p)
	}
	s2, _ := openSpool(t, Config{Dir: dir})
	if err := s2.Append([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, s2, s2.Checkpoint()); len(got) != 1 || got[0] != "b" {
		t.Fatalf("read %q from the checkpoint after segments vanished, want [b]", got)
	}
}
