package sink

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// benchRows returns 10,000 rows spread over 100 workspaces, one day.
func benchRows() []Event {
	ts := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	rows := make([]Event, 0, 10000)
	for w := range 100 {
		rows = append(rows, sampleEvents(fmt.Sprintf("ws_bench_%03d", w), 100, ts.Add(time.Duration(w)*time.Minute), 30)...)
	}
	return rows
}

func BenchmarkEncodeNative(b *testing.B) {
	rows := benchRows()
	buf := appendNative(nil, rows)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = appendNative(buf[:0], rows)
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkEmbeddedInsert10k is one flush of 10,000 rows into the
// embedded engine: encode (Native), batch file and INSERT, as the shipper does it.
func BenchmarkEmbeddedInsert10k(b *testing.B) {
	benchInsert(b, func(ctx context.Context, rows []Event, tok string) error {
		return testStore.Insert(ctx, rows, tok)
	})
}

func benchInsert(b *testing.B, insert func(context.Context, []Event, string) error) {
	b.Helper()
	rows := benchRows()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := insert(ctx, rows, fmt.Sprintf("bench-%s-%d-%d", b.Name(), time.Now().UnixNano(), i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.StopTimer()
	if err := testStore.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE startsWith(workspace_id, 'ws_bench_') SETTINGS mutations_sync = 2"); err != nil {
		b.Fatal(err)
	}
}
