package spool

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/testkit"
)

// readBatch reads every durable record from `from` and returns them with the end of the last one,
// where the shipper ends a batch of them.
func readBatch(t *testing.T, s *Spool, from Position) ([]string, Position) {
	t.Helper()
	r := s.NewReader(from)
	defer r.Close()
	var out []string
	end := from
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, end
		}
		if err != nil {
			t.Fatal(err)
		}
		out, end = append(out, string(rec.Data)), rec.Next
	}
}

// TestCheckpointAtSegmentEndSurvivesRestart commits the end of a sealed segment (which deletes
// it), marks the next batch pending and restarts. The checkpoint must come back as recorded: the
// shipper names a batch "<id>:<start>-<end>" with start = Checkpoint(), and the replay of a pending
// batch is stored once only under the name of the original insert. Moved at open to the start of
// the next segment (the same place, but another name), the replay stored the batch a second time
// (TestKillNineLosesNothing: tokens ...:13.53940-14.27695 and ...:14.0-14.27695 on the same rows).
func TestCheckpointAtSegmentEndSurvivesRestart(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	s1, _ := openSpool(t, Config{Dir: dir})
	for _, r := range []string{"a", "b"} {
		if err := s1.Append([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s1.Close(); err != nil { // seals segment 1; the next open starts segment 2
		t.Fatal(err)
	}

	s2, _ := openSpool(t, Config{Dir: dir})
	got, end1 := readBatch(t, s2, s2.Checkpoint())
	if !slices.Equal(got, []string{"a", "b"}) || end1.Segment != 1 {
		t.Fatalf("read %q up to %s, want [a b] up to the end of segment 1", got, end1)
	}
	if err := s2.MarkPending(end1); err != nil {
		t.Fatal(err)
	}
	if err := s2.Commit(end1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, segName(1))); !os.IsNotExist(err) {
		t.Fatalf("consumed segment 1 not deleted (stat: %v): the case under test did not arise", err)
	}
	start := s2.Checkpoint() // the start of the next batch, part of its token
	if err := s2.Append([]byte("c")); err != nil {
		t.Fatal(err)
	}
	got, end2 := readBatch(t, s2, start)
	if !slices.Equal(got, []string{"c"}) {
		t.Fatalf("read %q, want [c]", got)
	}
	if err := s2.MarkPending(end2); err != nil {
		t.Fatal(err)
	}
	// The insert of [start, end2) ran; the process dies before Commit. Close leaves on disk what a
	// SIGKILL would: the checkpoint with the pending batch.
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}

	s3, reg := openSpool(t, Config{Dir: dir})
	if c := s3.Checkpoint(); c != start {
		t.Errorf("checkpoint after restart %s, want %s as committed: the replayed batch gets another token", c, start)
	}
	if p, ok := s3.Pending(); !ok || p != end2 {
		t.Errorf("pending after restart %s %v, want %s", p, ok, end2)
	}
	if got, _ := readAll(t, s3, s3.Checkpoint()); !slices.Equal(got, []string{"c"}) {
		t.Errorf("read %q from the checkpoint after restart, want [c]", got)
	}
	// The oldest uncommitted record is found past the deleted segment the checkpoint names.
	if age := testkit.Metric(t, reg, "collector_spool_oldest_unflushed_seconds"); age <= 0 {
		t.Errorf("oldest unflushed age %v with record c uncommitted, want > 0", age)
	}
}

// TestAppendDoesNotWaitForCheckpoint: while a checkpoint write is in progress (MarkPending or
// Commit, two fsyncs each), durable appends still complete. They used to wait for it, twice per
// shipped batch. The write is held open by making checkpoint.tmp a FIFO: opening it for writing
// blocks until the test opens it for reading.
func TestAppendDoesNotWaitForCheckpoint(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir})
	if err := s.Append([]byte("first")); err != nil {
		t.Fatal(err)
	}
	_, end := readBatch(t, s, s.Checkpoint())
	fifo := filepath.Join(dir, "checkpoint.tmp")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() { committed <- s.Commit(end) }() // blocks opening the FIFO
	testkit.Eventually(t, 10*time.Second, "Commit to block opening the checkpoint FIFO", openingCheckpoint)

	appended := make(chan error, 1)
	go func() {
		for range 10 {
			if err := s.Append([]byte("event")); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	var appendErr error
	timedOut := false
	select {
	case appendErr = <-appended:
	case <-time.After(10 * time.Second):
		timedOut = true
	}
	// Let the checkpoint write go on: read the FIFO. Its fsync then fails (a FIFO cannot be
	// synced), so Commit reports an error; that is not what this test is about.
	r, err := os.Open(fifo)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(r)
	r.Close()
	<-committed
	if timedOut {
		<-appended
		t.Fatal("durable appends waited for the checkpoint write")
	}
	if appendErr != nil {
		t.Fatal(appendErr)
	}
	if err := os.Remove(fifo); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	got, end := readBatch(t, s, s.Checkpoint())
	if len(got) != 11 {
		t.Fatalf("%d records readable, want 11", len(got))
	}
	if err := s.Commit(end); err != nil {
		t.Fatalf("Commit after the FIFO was removed: %v", err)
	}
}

// openingCheckpoint reports whether a goroutine is in the open system call of writeCheckpoint, as
// the writer of a FIFO waits there for a reader: the checkpoint write is in progress, with the
// checkpoint lock held and before any fsync.
func openingCheckpoint() bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, " [syscall") && strings.Contains(g, "os.OpenFile(") && strings.Contains(g, ".(*Spool).writeCheckpoint(") {
			return true
		}
	}
	return false
}
