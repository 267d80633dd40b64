package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
	"github.com/kyomi/collector/sink/spool"
)

// dedupStore is a fault-injecting Inserter that deduplicates by token the
// way ClickHouse does: a second insert with a known token is dropped.
type dedupStore struct {
	mu       sync.Mutex
	byToken  map[string][]string // token -> markers
	attempts []string            // tokens of every attempt, in order
	failNext int                 // fail this many attempts before storing
	hangNext int                 // store, then hang until ctx ends: a crash before commit
	next     Inserter            // optional real store behind the fake
	down     atomic.Bool         // while set, every attempt fails
}

var errInjected = errors.New("injected insert failure")

func (d *dedupStore) Insert(ctx context.Context, rows []row.Event, tok string) error {
	d.mu.Lock()
	d.attempts = append(d.attempts, tok)
	if d.down.Load() {
		d.mu.Unlock()
		return errInjected
	}
	if d.failNext > 0 {
		d.failNext--
		d.mu.Unlock()
		return errInjected
	}
	if d.next != nil {
		if err := d.next.Insert(ctx, rows, tok); err != nil {
			d.mu.Unlock()
			return err
		}
	}
	if _, dup := d.byToken[tok]; !dup {
		if d.byToken == nil {
			d.byToken = map[string][]string{}
		}
		ms := make([]string, len(rows))
		for i, r := range rows {
			ms[i] = r.PropValues[0]
		}
		d.byToken[tok] = ms
	}
	hang := d.hangNext > 0
	if hang {
		d.hangNext--
	}
	d.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// stored returns how many times each marker is stored, and the batch count.
func (d *dedupStore) stored() (map[string]int, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for _, ms := range d.byToken {
		for _, m := range ms {
			out[m]++
		}
	}
	return out, len(d.byToken)
}

func (d *dedupStore) tokens() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.attempts...)
}

// appendMarked appends n events of ws with markers ws-from .. ws-(from+n-1).
func appendMarked(t testing.TB, sp *spool.Spool, ws string, from, n int) {
	t.Helper()
	var buf []byte
	for i := range n {
		ev := rowtest.Events(ws, 1, time.Now(), 30)[0]
		ev.PropKeys, ev.PropValues = []string{"marker"}, []string{fmt.Sprintf("%s-%d", ws, from+i)}
		buf = ev.AppendBinary(buf[:0])
		if err := sp.Append(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// checkExactlyOnce fails unless markers 0..n-1 of ws are each stored once.
func checkExactlyOnce(t *testing.T, d *dedupStore, ws string, n int) {
	t.Helper()
	got, _ := d.stored()
	for i := range n {
		if c := got[fmt.Sprintf("%s-%d", ws, i)]; c != 1 {
			t.Errorf("marker %d stored %d times", i, c)
		}
	}
	if len(got) != n {
		t.Errorf("%d distinct markers stored, want %d", len(got), n)
	}
}

func openTestSpool(t *testing.T, dir string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

func startShipper(t *testing.T, sp *spool.Spool, ins Inserter, cfg ShipperConfig) (*Shipper, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 20*time.Millisecond
	}
	s, err := NewShipper(sp, ins, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // stops it after a failed test; Close is idempotent
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s, reg
}

func closeShipper(t *testing.T, s *Shipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestShipperFlushTriggers(t *testing.T) {
	tests := []struct {
		name        string
		cfg         ShipperConfig
		events      int
		beforeClose int // rows stored while running, before Close
	}{
		{"max rows", ShipperConfig{MaxRows: 10, MaxAge: time.Hour}, 25, 20},
		{"max age", ShipperConfig{MaxRows: 1000, MaxAge: 30 * time.Millisecond}, 5, 5},
		{"shutdown only", ShipperConfig{MaxRows: 1000, MaxAge: time.Hour}, 7, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			sp := openTestSpool(t, t.TempDir())
			d := &dedupStore{}
			s, reg := startShipper(t, sp, d, tc.cfg)
			appendMarked(t, sp, "ws", 0, tc.events)
			rows := func() int { m, _ := d.stored(); return len(m) }
			if tc.beforeClose > 0 {
				testkit.Eventually(t, 10*time.Second, "rows stored", func() bool { return rows() >= tc.beforeClose })
			}
			// The rest of the events wait in the open batch for a trigger that does not come.
			waiting := float64(tc.events - tc.beforeClose)
			testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%v rows waiting in the open batch", waiting), func() bool {
				return testkit.Metric(t, reg, "collector_sink_waiting_rows") == waiting
			})
			if n := rows(); n != tc.beforeClose {
				t.Errorf("%d rows stored before close, want %d", n, tc.beforeClose)
			}
			closeShipper(t, s)
			checkExactlyOnce(t, d, "ws", tc.events)
			if v := testkit.Metric(t, reg, "collector_sink_rows_flushed_total"); v != float64(tc.events) {
				t.Errorf("rows flushed metric %v", v)
			}
			if _, ok := sp.Pending(); ok {
				t.Error("pending batch left after drain")
			}
		})
	}
}

func TestShipperRetriesFailedInserts(t *testing.T) {
	leakCheck(t)
	sp := openTestSpool(t, t.TempDir())
	d := &dedupStore{failNext: 3}
	s, reg := startShipper(t, sp, d, ShipperConfig{MaxRows: 20, MaxAge: 10 * time.Millisecond})
	appendMarked(t, sp, "ws", 0, 50)
	closeShipper(t, s)
	checkExactlyOnce(t, d, "ws", 50)
	if v := testkit.Metric(t, reg, "collector_sink_flush_errors_total"); v != 3 {
		t.Errorf("flush errors %v, want 3", v)
	}
	// A retried batch keeps its token.
	toks := d.tokens()
	if len(toks) < 4 || toks[0] != toks[1] || toks[1] != toks[2] || toks[2] != toks[3] {
		t.Errorf("retries changed the token: %q", toks)
	}
}

// TestShipperCrashBetweenInsertAndCommit stores a batch, "crashes" before
// the checkpoint, restarts with a different MaxRows, and checks that the
// replay reuses the token so every event is stored exactly once.
func TestShipperCrashBetweenInsertAndCommit(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	d := &dedupStore{}
	appendMarked(t, sp, "ws", 0, 250)
	// The first batch goes through; the hook then arms a crash: the second
	// batch is stored and the insert hangs, so it never commits.
	first := make(chan struct{})
	s, _ := startShipper(t, sp, insertHook{d, func(n int) {
		if n == 1 {
			d.mu.Lock()
			d.hangNext = 1
			d.mu.Unlock()
			close(first)
		}
	}}, ShipperConfig{MaxRows: 100, MaxAge: time.Hour})
	<-first
	testkit.Eventually(t, 10*time.Second, "second batch stored", func() bool { _, n := d.stored(); return n == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := s.Close(ctx); err == nil {
		t.Fatal("Close returned nil while the insert hung")
	}
	cancel()
	crashed := d.tokens()[len(d.tokens())-1]
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	sp2 := openTestSpool(t, dir)
	if _, ok := sp2.Pending(); !ok {
		t.Fatal("no pending batch recorded before the crash")
	}
	s2, reg := startShipper(t, sp2, d, ShipperConfig{MaxRows: 70, MaxAge: 20 * time.Millisecond})
	appendMarked(t, sp2, "ws", 250, 30)
	closeShipper(t, s2)
	toks := d.tokens()
	var after []string
	for i, tok := range toks {
		if tok == crashed && i > 0 && toks[i-1] == crashed {
			after = toks[i:]
		}
	}
	if len(after) == 0 {
		t.Errorf("replay did not retry the crashed token %s: %q", crashed, toks)
	}
	checkExactlyOnce(t, d, "ws", 280)
	if v := testkit.Metric(t, reg, "collector_sink_replayed_rows_total"); v != 150 {
		t.Errorf("replayed rows %v, want 150", v)
	}
}

// insertHook calls after with the number of successful inserts so far.
type insertHook struct {
	d     *dedupStore
	after func(n int)
}

func (h insertHook) Insert(ctx context.Context, rows []row.Event, tok string) error {
	err := h.d.Insert(ctx, rows, tok)
	if err == nil {
		_, n := h.d.stored()
		h.after(n)
	}
	return err
}

func TestDedupTokenDeterministic(t *testing.T) {
	a := dedupToken("0123456789abcdef", spool.Position{Segment: 3, Offset: 0}, spool.Position{Segment: 4, Offset: 1234})
	b := dedupToken("0123456789abcdef", spool.Position{Segment: 3, Offset: 0}, spool.Position{Segment: 4, Offset: 1234})
	if a != b || a != "0123456789abcdef:3.0-4.1234" {
		t.Errorf("token %q / %q", a, b)
	}
	if err := checkDedupToken(a); err != nil {
		t.Errorf("store rejects shipper token: %v", err)
	}
}

// TestShipperOutage runs spool -> shipper -> the package's real ClickHouse
// server through an outage longer than several flush intervals, then a
// crash between insert and commit, and counts rows with SELECT.
func TestShipperOutage(t *testing.T) {
	leakCheck(t)
	// Unique per run: the store is shared by every test and -count runs.
	ws := fmt.Sprintf("ws_shipper_outage_%d", time.Now().UnixNano())
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	d := &dedupStore{next: testStore}
	d.down.Store(true)
	s, reg := startShipper(t, sp, d, ShipperConfig{MaxRows: 100, MaxAge: 20 * time.Millisecond})
	appendMarked(t, sp, ws, 0, 300)
	testkit.Eventually(t, 10*time.Second, "10 failed inserts during the outage", func() bool {
		return testkit.Metric(t, reg, "collector_sink_flush_errors_total") >= 10
	})
	if n := countRows(t, ws); n != 0 {
		t.Fatalf("%d rows stored during the outage", n)
	}
	appendMarked(t, sp, ws, 300, 100) // still accepted while the sink is down
	d.down.Store(false)
	testkit.Eventually(t, 10*time.Second, "rows after outage", func() bool { return countRows(t, ws) == 400 })

	// Crash after the real insert, before the checkpoint.
	d.mu.Lock()
	d.hangNext = 1
	d.mu.Unlock()
	appendMarked(t, sp, ws, 400, 50)
	// The next batch is stored, then its insert hangs: the process "dies"
	// before the checkpoint. The other rows stay in the spool.
	testkit.Eventually(t, 10*time.Second, "crashing insert", func() bool { return countRows(t, ws) > 400 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	s.Close(ctx)
	cancel()
	sp.Close()

	sp2 := openTestSpool(t, dir)
	s2, _ := startShipper(t, sp2, testStore, ShipperConfig{MaxRows: 100, MaxAge: 20 * time.Millisecond})
	closeShipper(t, s2)
	if n := countRows(t, ws); n != 450 {
		t.Errorf("%d rows after replay, want 450 (none lost, none doubled)", n)
	}
	res, err := testStore.Select(context.Background(),
		"SELECT uniqExact(props['marker']) FROM analytics.events WHERE workspace_id = '"+ws+"'", nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := asUint64(res.Rows[0][0]); n != 450 {
		t.Errorf("%d distinct markers, want 450", n)
	}
}

// TestShipperIntervalSpool: with a long sync interval an acknowledged event
// is written, so it ships within MaxAge without waiting for the interval,
// and the spool is fsynced before each batch is marked pending.
func TestShipperIntervalSpool(t *testing.T) {
	leakCheck(t)
	spReg := prometheus.NewRegistry()
	sp, err := spool.Open(spool.Config{Dir: t.TempDir(), SyncInterval: time.Hour, Registerer: spReg})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	d := &dedupStore{}
	s, _ := startShipper(t, sp, d, ShipperConfig{MaxRows: 10, MaxAge: 10 * time.Millisecond})
	appendMarked(t, sp, "ws", 0, 35)
	testkit.Eventually(t, 5*time.Second, "35 written events shipped with a one-hour sync interval", func() bool {
		m, _ := d.stored()
		return len(m) == 35
	})
	closeShipper(t, s)
	checkExactlyOnce(t, d, "ws", 35)
	// The interval never ticked: the marks of the batches fsynced the spool.
	if n := testkit.Metric(t, spReg, "collector_spool_fsync_duration_seconds"); n < 1 {
		t.Errorf("%v spool fsyncs for 4 or more shipped batches, want at least 1", n)
	}
}

// TestShipperCloseShipsRingRecords: events acknowledged just before Close, still in the spool's
// ring (copied into the segment only every 50 ms), are shipped by Close, not left for the next
// start.
func TestShipperCloseShipsRingRecords(t *testing.T) {
	leakCheck(t)
	for round := range 5 {
		sp, err := spool.Open(spool.Config{Dir: t.TempDir(), SyncInterval: time.Hour, RingDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		d := &dedupStore{}
		s, _ := startShipper(t, sp, d, ShipperConfig{MaxRows: 1000, MaxAge: time.Hour})
		ws := fmt.Sprintf("ws_ring_%d", round)
		appendMarked(t, sp, ws, 0, 20) // Close comes well within the ring's copy interval
		closeShipper(t, s)
		checkExactlyOnce(t, d, ws, 20)
		sp.Close()
	}
}

// TestDrain ships a spool's events into the store with Drain, as
// erase-workspace does, and finds every one stored exactly once; a second
// drain of the same spool ships nothing.
func TestDrain(t *testing.T) {
	ws := "ws_drain_" + strings.ReplaceAll(t.Name(), "/", "_")
	sp := openTestSpool(t, t.TempDir())
	appendMarked(t, sp, ws, 0, 25)
	n, err := Drain(context.Background(), sp, testStore, ShipperConfig{MaxRows: 10, MaxAge: time.Second})
	if err != nil || n != 25 {
		t.Fatalf("drained %d records, err %v; want 25", n, err)
	}
	if got := queryUint64(t, "SELECT uniqExact(props['marker']) * 1000 + count() FROM analytics.events WHERE workspace_id = "+QuoteString(ws)); got != 25*1000+25 {
		t.Fatalf("stored %d (distinct markers * 1000 + rows), want 25025", got)
	}
	if n, err := Drain(context.Background(), sp, testStore, ShipperConfig{MaxRows: 10, MaxAge: time.Second}); err != nil || n != 0 {
		t.Fatalf("second drain found %d records, err %v; want 0", n, err)
	}
}
