package query

import (
	"context"
	"testing"
)

// BenchmarkPrepare measures the guard's cost per query: three engine calls
// (formatQuerySingleLine, EXPLAIN AST, EXPLAIN QUERY TREE) and the checks.
func BenchmarkPrepare(b *testing.B) {
	g := &Guard{Store: testStore}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.Prepare(ctx, "ws_a", "SELECT pathname, count() FROM events WHERE name = 'pageview' GROUP BY pathname ORDER BY 2 DESC", 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecute measures a whole execute_query answer (guard + run +
// decode) on the package's ClickHouse server.
func BenchmarkExecute(b *testing.B) {
	h := &Handler{store: testStore, guard: &Guard{Store: testStore}}
	ctx := context.Background()
	c := &Claims{WID: "ws_a"}
	req := &Request{ID: "b", Op: "execute_query", Params: []byte(`{"sql":"SELECT pathname, count() FROM events GROUP BY pathname"}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.dispatch(ctx, c, req); err != nil {
			b.Fatal(err)
		}
	}
}
