package query

import (
	"context"
	"testing"
)

// FuzzGuard feeds SQL texts through the guard and a real engine: a
// text is refused, fails, or runs and returns nothing outside ws_a's rows.
// Seeds are in testdata/fuzz/FuzzGuard; found crashers are kept there.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{
		"SELECT count() FROM events",
		"SELECT * FROM analytics.events",
		"WITH events AS (SELECT * FROM system.tables) SELECT * FROM events",
		"SELECT 1; SELECT 2",
		"SELECT * FROM file('x')",
		"SELECT name FROM events WHERE name IN secret",
	} {
		f.Add(s)
	}
	g := &Guard{Store: testStore, Limits: Limits{MaxRows: 100, MaxResultBytes: 1 << 20, MaxMemory: 1 << 28, MaxExecutionSecs: 2, MaxRowsToRead: 1 << 20}}
	f.Fuzz(func(t *testing.T, sql string) {
		ctx := context.Background()
		p, err := g.Prepare(ctx, "ws_a", sql, 0)
		if err != nil {
			if leaked(err.Error()) {
				t.Fatalf("error leaks: %v", err)
			}
			return
		}
		out, err := runSQL(t, p)
		if err == nil && leaked(out) {
			t.Fatalf("guard let through %q, output leaks: %.300s", sql, out)
		}
	})
}

// FuzzCheckAST checks that the AST and query tree checkers never panic on
// arbitrary text and never accept text that is not a single SELECT tree.
func FuzzCheckAST(f *testing.F) {
	f.Add("SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  SelectQuery (children 1)\n")
	f.Add("SelectWithUnionQuery (children 1)\n Set\n")
	f.Add("  TABLE id: 3, alias: __table1, table_name: system.one\n")
	f.Fuzz(func(t *testing.T, text string) {
		if err := CheckAST(text); err == nil {
			nodes := parseASTLines(text)
			if len(nodes) == 0 || nodes[0].typ != "SelectWithUnionQuery" {
				t.Fatalf("accepted %q", text)
			}
		}
		_ = CheckQueryTree(text)
	})
}
