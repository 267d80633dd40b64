package sink

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/row"
)

// TestInsertBinaryLookingValues stores rows whose numbers, in little-endian bytes, hold newlines,
// NULs, quotes and semicolons: values that once ended the inline data of a RowBinary INSERT into
// the former in-process engine early (a visitor id of 0xe59e093d0a0a5be4 was the first found).
// Every row must be stored intact.
func TestInsertBinaryLookingValues(t *testing.T) {
	ctx := context.Background()
	ws := fmt.Sprintf("ws_inline_%d", time.Now().UnixNano())
	ids := []uint64{0xe59e093d0a0a5be4, 0x0a0a0a0a0a0a0a0a, 0x0000000000000000, 0x3b3b0a0d0a0d2727, 0x5c5c22220a000a00, 1}
	var rows []row.Event
	for i, id := range ids {
		rows = append(rows, row.Event{WorkspaceID: ws, Domain: "a.example", TS: time.UnixMilli(1795444227162 + int64(i)).UTC(),
			Name: "pageview", Pathname: "/p\n\n;'\"\\", VisitorID: id, RetentionDays: 30, City: "Köln\x00\n",
			RevenueAmount: 1.5, PropKeys: []string{"k\n"}, PropValues: []string{"v\n\nx"}})
	}
	if err := testStore.Insert(ctx, rows, ""); err != nil {
		t.Fatalf("insert: %v", err)
	}
	res, err := testStore.Select(ctx, "SELECT toString(visitor_id), pathname, city, props['k\\n'] FROM analytics.events WHERE workspace_id = '"+ws+"' ORDER BY ts", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != len(ids) {
		t.Fatalf("stored %d rows, want %d", len(res.Rows), len(ids))
	}
	for i, r := range res.Rows {
		if r[0] != fmt.Sprint(ids[i]) || r[1] != "/p\n\n;'\"\\" || r[2] != "Köln\x00\n" || r[3] != "v\n\nx" {
			t.Errorf("row %d stored as %q", i, r)
		}
	}
}
