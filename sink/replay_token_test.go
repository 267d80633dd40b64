package sink

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
	"github.com/kyomi/collector/sink/spool"
)

// tokenLog is a ReplayInserter that records the token of every call. With hangAt n > 0, the
// n-th Insert is taken as stored and then hangs until its context ends: a process killed after
// its insert and before its commit.
type tokenLog struct {
	mu      sync.Mutex
	inserts []string
	replays []string
	hangAt  int
}

func (l *tokenLog) Insert(ctx context.Context, rows []row.Event, tok string) error {
	l.mu.Lock()
	l.inserts = append(l.inserts, tok)
	hang := len(l.inserts) == l.hangAt
	l.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (l *tokenLog) ReplayInsert(ctx context.Context, rows []row.Event, tok string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.replays = append(l.replays, tok)
	return nil
}

func (l *tokenLog) calls() (inserts, replays []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.inserts...), append([]string(nil), l.replays...)
}

// TestReplayAfterSegmentEndKeepsToken is the shape of a duplicate TestKillNineLosesNothing found:
// a process ships the records left in the previous process's segment as one batch that ends
// exactly at the end of that segment (committing it deletes the segment), inserts its next batch
// and dies before committing it. The restarted Shipper must replay that batch under the token of
// the original insert, or ReplayInsert cannot find its rows and stores them a second time.
func TestReplayAfterSegmentEndKeepsToken(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	appendEvent := func(sp *spool.Spool, marker string) {
		t.Helper()
		ev := rowtest.Events("ws_seg", 1, time.Now(), 30)[0]
		ev.PropKeys, ev.PropValues = []string{"marker"}, []string{marker}
		if err := sp.Append(ev.AppendBinary(nil)); err != nil {
			t.Fatal(err)
		}
	}
	start := func(sp *spool.Spool, ins Inserter) *Shipper {
		t.Helper()
		s, err := NewShipper(sp, ins, ShipperConfig{MaxAge: 10 * time.Millisecond,
			MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			s.Close(ctx)
		})
		return s
	}

	// An earlier process left two records in segment 1.
	sp := openTestSpool(t, dir)
	appendEvent(sp, "m0")
	appendEvent(sp, "m1")
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	// The next process ships them as one batch ending at the end of segment 1, then inserts the
	// batch of a new record and dies before its commit.
	sp = openTestSpool(t, dir)
	first := &tokenLog{hangAt: 2}
	s := start(sp, first)
	from := sp.Checkpoint()
	testkit.Eventually(t, 10*time.Second, "the first batch to be committed", func() bool {
		_, pending := sp.Pending()
		return !pending && sp.Checkpoint() != from
	})
	appendEvent(sp, "m2")
	testkit.Eventually(t, 10*time.Second, "the second insert", func() bool {
		ins, _ := first.calls()
		return len(ins) == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err == nil {
		t.Fatal("Close drained a batch whose insert never returned")
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	ins, _ := first.calls()

	// The restarted process replays the pending batch.
	sp = openTestSpool(t, dir)
	if _, ok := sp.Pending(); !ok {
		t.Fatal("no pending batch after the crash")
	}
	second := &tokenLog{}
	start(sp, second) // stopped by its cleanup
	testkit.Eventually(t, 10*time.Second, "the replay", func() bool {
		_, rep := second.calls()
		return len(rep) > 0
	})
	_, rep := second.calls()
	if rep[0] != ins[1] {
		t.Errorf("batch inserted as %s and replayed as %s: the replay cannot find its rows", ins[1], rep[0])
	}
	t.Logf("first batch %s, pending batch %s, replayed as %s", ins[0], ins[1], rep[0])
}
