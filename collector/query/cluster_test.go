package query

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/engine/enginetest"
	"github.com/kyomi/collector/sink/row"
)

// TestIsolationThroughDistributed: on a 2-shard cluster of two servers (remote_servers, a
// Distributed events table over each shard's events_local, as an operator lays it out), a
// workspace's queries see its own rows from both shards and nothing of the others'.
func TestIsolationThroughDistributed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stmts, err := sink.MigrationSQL(sink.SchemaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := enginetest.StartOperatorCluster("kyomi_q", 2, "analytics", stmts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var stores []*sink.Server
	for _, srv := range c.Shards {
		s, err := sink.OpenServer(srv.DSN("default"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	// ws_a's rows, and SECRET rows of 15 other workspaces, which land on both shards.
	ts := time.Now().UTC().Add(-time.Hour)
	var rows []row.Event
	for i := range 4 {
		rows = append(rows, row.Event{WorkspaceID: "ws_a", Domain: "a.example", TS: ts.Add(time.Duration(i) * time.Second), Name: "pageview", Pathname: "/a", RetentionDays: 30})
	}
	for w := range 15 {
		rows = append(rows, row.Event{WorkspaceID: fmt.Sprintf("ws_other_%d", w), Domain: "b.example", TS: ts, Name: "SECRET_N", Pathname: "/SECRET_P", RetentionDays: 30})
	}
	if err := stores[0].Insert(ctx, rows, "isolation-cluster"); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		res, err := s.Select(ctx, "SELECT count() FROM analytics.events_local WHERE workspace_id != 'ws_a'", nil)
		if err != nil || len(res.Rows) != 1 || res.Rows[0][0] == "0" {
			t.Fatalf("shard %d holds none of the other workspaces' rows (%v %v): the test would prove nothing", i+1, res, err)
		}
	}
	g := &Guard{Store: stores[1], Limits: DefaultLimits}
	for _, tc := range []struct{ sql, want string }{
		{"SELECT count() FROM events", `["4"]`},
		{"SELECT DISTINCT workspace_id, name, pathname FROM events", `["ws_a","pageview","/a"]`},
		{"SELECT count() FROM events a JOIN events b ON a.ts = b.ts", `["4"]`},
		{"SELECT count() FROM events WHERE name LIKE 'SECRET%'", `["0"]`},
	} {
		p, err := g.Prepare(ctx, "ws_a", tc.sql, 0)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		res, err := stores[1].Select(ctx, p.SQL(p.MaxRows+1), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		r, err := toResult(res, p.MaxRows, DefaultLimits.MaxResultBytes)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r.Rows)
		if out := string(b); strings.Contains(out, "SECRET") || strings.Contains(out, "ws_other") || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: %s, want %s and nothing of other workspaces", tc.sql, out, tc.want)
		}
	}
	// The error oracle through the Distributed table: a predicate on a value only other
	// workspaces hold must answer exactly as one on a value nobody holds.
	run := func(sql string) string {
		p, err := g.Prepare(ctx, "ws_a", sql, 0)
		if err != nil {
			return "refused " + engineError(engineCode(err), err.Error(), sql).Message
		}
		res, err := stores[1].Select(ctx, p.SQL(p.MaxRows+1), nil)
		if err != nil {
			return "error " + engineError(engineCode(err), err.Error(), sql).Message
		}
		b, _ := json.Marshal(res.Rows)
		return string(b)
	}
	for _, tmpl := range []string{
		"SELECT count() AS n FROM events WHERE throwIf(pathname = %s) = 0",
		"SELECT count() AS n FROM events WHERE base64Decode(if(pathname = %s, 'not base64!', '')) = ''",
		"SELECT count() AS n FROM events a JOIN events b ON a.ts = b.ts AND throwIf(b.pathname = %s) = 0",
	} {
		foreign, nowhere := run(fmt.Sprintf(tmpl, "'/SECRET_P'")), run(fmt.Sprintf(tmpl, "'/NOWHERE'"))
		if foreign != nowhere || !strings.Contains(nowhere, `"4"`) {
			t.Errorf("%s through Distributed: %s with another workspace's value, %s with none", tmpl, foreign, nowhere)
		}
	}
}
