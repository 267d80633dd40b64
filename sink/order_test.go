package sink

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
)

// alreadySorted is how many inserted blocks the engine found sorted by the table's key and
// did not sort (its MergeTreeDataWriterBlocksAlreadySorted counter).
func alreadySorted(t *testing.T) uint64 {
	t.Helper()
	return queryUint64(t, "SELECT toUInt64(sum(value)) FROM system.events WHERE event = 'MergeTreeDataWriterBlocksAlreadySorted'")
}

// TestInsertInKeyOrder inserts a shuffled batch whose rows differ in every part of the sorting
// key (workspaces whose ids sort differently as bytes and as text, days on both sides of
// midnight UTC, visitors, times) and checks that the engine found the block already sorted,
// and that every row is stored once.
func TestInsertInKeyOrder(t *testing.T) {
	ctx := context.Background()
	midnight := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	var rows []row.Event
	for _, ws := range []string{"ws_order_B", "ws_order_a", "ws_order_Ä", "ws_order_b"} {
		for _, ts := range []time.Time{midnight.Add(-time.Millisecond), midnight, midnight.Add(-25 * time.Hour), midnight.Add(90 * time.Minute)} {
			for v := range 5 {
				e := rowtest.Events(ws, 1, ts, keepDays)[0]
				e.VisitorID = uint64(5-v) * 0x9E3779B97F4A7C15 // large and small, out of order
				rows = append(rows, e, e)                      // equal keys too
			}
		}
	}
	r := rand.New(rand.NewPCG(7, 8))
	r.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	t.Cleanup(func() {
		_ = testStore.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE startsWith(workspace_id, 'ws_order_') SETTINGS mutations_sync = 2")
	})

	before := alreadySorted(t)
	if err := testStore.Insert(ctx, rows, fmt.Sprintf("order-%d", time.Now().UnixNano())); err != nil {
		t.Fatal(err)
	}
	if got := alreadySorted(t) - before; got != 1 {
		t.Fatalf("the engine found %d inserted blocks already sorted, want 1: the batch was not in the table's key order", got)
	}
	if n := queryUint64(t, "SELECT count() FROM analytics.events WHERE startsWith(workspace_id, 'ws_order_')"); n != uint64(len(rows)) {
		t.Fatalf("%d rows stored, want %d", n, len(rows))
	}
}

// TestRowOrderKeepsBatchOrderOfTies: rows with equal keys come out in their batch order, and a
// time before 1970 falls on the day before the epoch, as toDate does.
func TestRowOrderKeepsBatchOrderOfTies(t *testing.T) {
	ts := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	rows := []row.Event{
		{WorkspaceID: "b", TS: ts, VisitorID: 1},
		{WorkspaceID: "a", TS: ts, VisitorID: 2},
		{WorkspaceID: "a", TS: ts, VisitorID: 1},
		{WorkspaceID: "a", TS: ts, VisitorID: 1},
		{WorkspaceID: "a", TS: time.UnixMilli(-1), VisitorID: 9},
		{WorkspaceID: "a", TS: time.UnixMilli(0), VisitorID: 0},
	}
	var o rowOrder
	got := fmt.Sprint(o.of(rows))
	if want := "[4 5 2 3 1 0]"; got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
	if fmt.Sprint(o.of(rows[:2])) != "[1 0]" {
		t.Fatal("a second call does not start afresh")
	}
}

// TestRowOrderMatchesKeyComparison checks rowOrder against a plain stable sort of the batch by
// the table's key with workspace ids compared as strings, over random batches: workspaces that
// share prefixes or differ in case and non-ASCII bytes, days on both sides of 1970, visitors and
// times that tie.
func TestRowOrderMatchesKeyComparison(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	wss := []string{"ws_a", "ws_A", "ws_ab", "ws_Ä", "ws_ä", "ws_", "", "ws_b", "ws_a\x00", "zz"}
	var o rowOrder
	for round := range 200 {
		rows := make([]row.Event, 1+r.IntN(300))
		for i := range rows {
			rows[i] = row.Event{
				WorkspaceID: wss[r.IntN(len(wss))],
				TS:          time.UnixMilli(r.Int64N(4*msPerDay) - 2*msPerDay),
				VisitorID:   r.Uint64N(4) << 62,
			}
		}
		want := make([]int32, len(rows))
		for i := range want {
			want[i] = int32(i)
		}
		day := func(e *row.Event) int64 {
			ms := e.TS.UnixMilli()
			d := ms / msPerDay
			if ms%msPerDay < 0 {
				d--
			}
			return d
		}
		slices.SortStableFunc(want, func(a, b int32) int {
			x, y := &rows[a], &rows[b]
			return cmp.Or(strings.Compare(x.WorkspaceID, y.WorkspaceID), cmp.Compare(day(x), day(y)),
				cmp.Compare(x.VisitorID, y.VisitorID), cmp.Compare(x.TS.UnixMilli(), y.TS.UnixMilli()))
		})
		if got := o.of(rows); !slices.Equal(got, want) {
			t.Fatalf("round %d, %d rows: order %v, want %v", round, len(rows), got, want)
		}
	}
}

// BenchmarkRowOrder sorts the keys of a 10,000-row batch in arrival order.
func BenchmarkRowOrder(b *testing.B) {
	rows := benchRows()
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	var o rowOrder
	b.ReportAllocs()
	for b.Loop() {
		o.of(rows)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
}
