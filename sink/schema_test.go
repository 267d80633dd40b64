package sink

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMigrationSQLGolden(t *testing.T) {
	tests := []struct {
		name   string
		cfg    SchemaConfig
		golden string
	}{
		{"single node", SchemaConfig{}, "schema_single.sql"},
		{"cluster", SchemaConfig{Cluster: "kyomi"}, "schema_cluster.sql"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stmts, err := MigrationSQL(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(stmts, ";\n\n") + ";\n"
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./sink -run TestMigrationSQLGolden -update)", err)
			}
			if got != string(want) {
				t.Fatalf("DDL differs from %s (rerun with -update if intended):\n%s", path, got)
			}
		})
	}
}

func TestClusterDDLShape(t *testing.T) {
	stmts, err := MigrationSQL(SchemaConfig{Cluster: "kyomi"})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(stmts, "\n")
	for _, want := range []string{
		"CREATE DATABASE IF NOT EXISTS analytics ON CLUSTER `kyomi`",
		"CREATE TABLE IF NOT EXISTS analytics.events_local ON CLUSTER `kyomi`",
		"ReplicatedMergeTree('/clickhouse/tables/{shard}/analytics/events_local', '{replica}')",
		"CREATE TABLE IF NOT EXISTS analytics.events ON CLUSTER `kyomi` AS analytics.events_local",
		"ENGINE = Distributed('kyomi', 'analytics', 'events_local', cityHash64(workspace_id))",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("cluster DDL lacks %q", want)
		}
	}
	for _, s := range stmts {
		if strings.HasPrefix(s, "CREATE") && !strings.Contains(s, "ON CLUSTER") {
			t.Errorf("statement without ON CLUSTER: %s", s)
		}
	}
}

func TestSchemaConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     SchemaConfig
		wantErr bool
	}{
		{"empty", SchemaConfig{}, false},
		{"cluster", SchemaConfig{Cluster: "prod_2s2r"}, false},
		{"injection", SchemaConfig{Cluster: "x` ; DROP"}, true},
		{"negative window", SchemaConfig{DedupWindow: -1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Fatalf("got %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func showCreate(t *testing.T) string {
	t.Helper()
	out, err := testStore.Raw(context.Background(), "SHOW CREATE TABLE analytics.events", "TSVRaw")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestMigrateIdempotent(t *testing.T) {
	ctx := context.Background()
	before := showCreate(t)
	v0, err := SchemaVersion(ctx, testStore)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Migrate(ctx, testStore, SchemaConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	v1, err := SchemaVersion(ctx, testStore)
	if err != nil {
		t.Fatal(err)
	}
	if v0 != LatestSchemaVersion() || v1 != v0 {
		t.Fatalf("versions %d then %d, want %d", v0, v1, LatestSchemaVersion())
	}
	res, err := testStore.Select(ctx, "SELECT count() FROM analytics.schema_migrations", nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := asUint64(res.Rows[0][0]); n != uint64(len(migrations)) {
		t.Fatalf("%d migration records, want %d", n, len(migrations))
	}
	if after := showCreate(t); after != before {
		t.Fatalf("schema changed:\n%s\n%s", before, after)
	}
}

// TestMigrateFromVersion1 puts the events table back in its version-1 shape (the open-ended
// string columns as LowCardinality), stores rows, and checks that Migrate converts the columns to
// the current types, records version 2, and leaves every stored value as it was.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	exec := func(q string) {
		t.Helper()
		if err := testStore.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	types := func() map[string]string {
		t.Helper()
		res, err := testStore.Select(ctx, "SELECT name, type FROM system.columns WHERE database = 'analytics' AND table = 'events'", nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range res.Rows {
			out[r[0].(string)] = r[1].(string)
		}
		return out
	}
	var back []string
	for _, name := range plainStringColumns {
		back = append(back, "MODIFY COLUMN "+name+" "+lc)
	}
	exec("ALTER TABLE analytics.events " + strings.Join(back, ", ") + " SETTINGS mutations_sync = 2")
	exec("ALTER TABLE analytics.schema_migrations DELETE WHERE version >= 2 SETTINGS mutations_sync = 2")
	if v, err := SchemaVersion(ctx, testStore); err != nil || v != 1 {
		t.Fatalf("schema version %d, %v; want 1 after the rollback", v, err)
	}
	if got := types()["city"]; got != lc {
		t.Fatalf("city is %s after the rollback, want %s", got, lc)
	}

	const ws = "ws_migrate_v1"
	want := rowtest.Events(ws, 300, time.Now().UTC().Truncate(time.Millisecond), 30)
	for i := range want {
		want[i].City = fmt.Sprintf("City %d", i%7)
		want[i].UTMCampaign = fmt.Sprintf("campaign-%d", i%11)
	}
	if err := testStore.Insert(ctx, want, "migrate-v1-"+time.Now().Format(time.RFC3339Nano)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = testStore.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE workspace_id = '"+ws+"' SETTINGS mutations_sync = 2")
	})

	if err := Migrate(ctx, testStore, SchemaConfig{}); err != nil {
		t.Fatal(err)
	}
	if v, err := SchemaVersion(ctx, testStore); err != nil || v != LatestSchemaVersion() {
		t.Fatalf("schema version %d, %v after Migrate; want %d", v, err, LatestSchemaVersion())
	}
	got := types()
	for _, c := range columns {
		if got[c.name] != c.typ {
			t.Errorf("column %s is %s after Migrate, want %s", c.name, got[c.name], c.typ)
		}
	}
	// Read the rows back once the conversion has rewritten the parts.
	testkit.Eventually(t, 30*time.Second, "the column conversion to finish", func() bool {
		return queryUint64(t, "SELECT count() FROM system.mutations WHERE database = 'analytics' AND table = 'events' AND NOT is_done") == 0
	})
	res, err := testStore.Select(ctx, "SELECT workspace_id, domain, name, hostname, utm_source, utm_medium, utm_campaign, region, city, browser_version, os_version, browser, country_code FROM analytics.events WHERE workspace_id = '"+ws+"' ORDER BY ts", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != len(want) {
		t.Fatalf("%d rows after Migrate, want %d", len(res.Rows), len(want))
	}
	for i, r := range res.Rows {
		e := want[i]
		w := []any{e.WorkspaceID, e.Domain, e.Name, e.Hostname, e.UTMSource, e.UTMMedium, e.UTMCampaign, e.Region, e.City, e.BrowserVersion, e.OSVersion, e.Browser, e.CountryCode}
		for j := range w {
			if r[j] != w[j] {
				t.Fatalf("row %d column %d: %v, want %v", i, j, r[j], w[j])
			}
		}
	}
}

func TestEventsTableLayout(t *testing.T) {
	res, err := testStore.Select(context.Background(), "SELECT partition_key, sorting_key, engine FROM system.tables WHERE database = 'analytics' AND name = 'events'", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"toYYYYMM(ts)", "workspace_id, toDate(ts), visitor_id, ts", "MergeTree"}
	for i, w := range want {
		if res.Rows[0][i] != w {
			t.Errorf("column %d: got %v, want %v", i, res.Rows[0][i], w)
		}
	}
	ddl := showCreate(t)
	for _, w := range []string{"TTL toDateTime(ts) + toIntervalDay(retention_days)", "non_replicated_deduplication_window = 1000", "ttl_only_drop_parts = 0",
		"merge_selector_base = 20"} { // mergePolicy, set by Migrate
		if !strings.Contains(ddl, w) {
			t.Errorf("DDL lacks %q:\n%s", w, ddl)
		}
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	future := LatestSchemaVersion() + 1
	if err := testStore.Exec(ctx, fmt.Sprintf("INSERT INTO analytics.schema_migrations (version, description) VALUES (%d, 'from the future')", future)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testStore.Exec(context.Background(), fmt.Sprintf("ALTER TABLE analytics.schema_migrations DELETE WHERE version = %d SETTINGS mutations_sync = 2", future)); err != nil {
			t.Error(err)
		}
	})
	err := Migrate(ctx, testStore, SchemaConfig{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("got %v, want ErrSchemaTooNew", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("schema version %d", future)) {
		t.Fatalf("error does not name the version: %v", err)
	}
}

// TestPartitionsBoundedMonth simulates a month of traffic from 10,000
// workspaces over three tiers and checks that the month is one partition.
func TestPartitionsBoundedMonth(t *testing.T) {
	ctx := context.Background()
	const workspaces, perWorkspace = 10000, 3
	tiers := []uint16{30, 395, 760}
	// Next month: no row of it has expired by any tier while the test reads it.
	now := time.Now().UTC()
	start := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	partition := start.Format("200601")
	hours := 24 * start.AddDate(0, 1, -1).Day()
	batch := make([]row.Event, 0, 10000)
	flush := func(n int) {
		t.Helper()
		if err := testStore.Insert(ctx, batch, fmt.Sprintf("month-%d", n)); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	n := 0
	for w := range workspaces {
		for i := range perWorkspace {
			e := rowtest.Events(fmt.Sprintf("ws_month_%05d", w), 1, start.Add(time.Duration((w*perWorkspace+i)%hours)*time.Hour), tiers[w%3])[0]
			batch = append(batch, e)
			if len(batch) == cap(batch) {
				flush(n)
				n++
			}
		}
	}
	if len(batch) > 0 {
		flush(n)
	}
	res, err := testStore.Select(ctx, `SELECT uniqExact(partition), count(), sum(rows) FROM system.parts
	WHERE database = 'analytics' AND table = 'events' AND active AND partition = '`+partition+`'`, nil)
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := asUint64(res.Rows[0][0])
	active, _ := asUint64(res.Rows[0][1])
	rows, _ := asUint64(res.Rows[0][2])
	if rows != workspaces*perWorkspace {
		t.Fatalf("%d rows in the month, want %d", rows, workspaces*perWorkspace)
	}
	if parts != 1 {
		t.Fatalf("%d partitions for one month of %d workspaces, want 1", parts, workspaces)
	}
	res, err = testStore.Select(ctx, `SELECT uniqExact(partition) FROM system.parts WHERE database = 'analytics' AND table = 'events' AND active`, nil)
	if err != nil {
		t.Fatal(err)
	}
	total, _ := asUint64(res.Rows[0][0])
	t.Logf("10,000 workspaces x 3 tiers over %s: %d partition(s) for the month, %d active parts, %d partitions in the whole table", start.Format("January 2006"), parts, active, total)
}

// TestMigrateFromVersion2 drops the engagement columns, as a version-2 table lacks them, stores
// rows, and checks that Migrate adds the columns (rows stored before read 0) and records version 3,
// and that rows stored afterwards keep their engagement values.
func TestMigrateFromVersion2(t *testing.T) {
	ctx := context.Background()
	exec := func(q string) {
		t.Helper()
		if err := testStore.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const ws = "ws_migrate_v2"
	t.Cleanup(func() {
		_ = testStore.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE workspace_id = '"+ws+"' SETTINGS mutations_sync = 2")
	})
	exec("ALTER TABLE analytics.events DROP COLUMN scroll_depth, DROP COLUMN engagement_time, DROP COLUMN tracker_version")
	exec("ALTER TABLE analytics.schema_migrations DELETE WHERE version >= 3 SETTINGS mutations_sync = 2")
	if v, err := SchemaVersion(ctx, testStore); err != nil || v != 2 {
		t.Fatalf("schema version %d, %v; want 2 after the rollback", v, err)
	}
	exec("INSERT INTO analytics.events (workspace_id, ts, name, retention_days) VALUES ('" + ws + "', now64(3), 'pageview', 30)")

	if err := Migrate(ctx, testStore, SchemaConfig{}); err != nil {
		t.Fatal(err)
	}
	if v, err := SchemaVersion(ctx, testStore); err != nil || v != 3 {
		t.Fatalf("schema version %d, %v after Migrate; want 3", v, err)
	}
	rows := rowtest.Events(ws, 2, time.Now().UTC().Truncate(time.Millisecond).Add(time.Second), 30)
	rows[1].Name, rows[1].ScrollDepth, rows[1].EngagementTime = row.EngagementName, 87, 42_000
	if err := testStore.Insert(ctx, rows, "migrate-v2-"+time.Now().Format(time.RFC3339Nano)); err != nil {
		t.Fatal(err)
	}
	res, err := testStore.Select(ctx, "SELECT name, scroll_depth, engagement_time, tracker_version FROM analytics.events WHERE workspace_id = '"+ws+"' ORDER BY ts", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Rows {
		got = append(got, fmt.Sprintf("%v %v %v %v", r...))
	}
	want := []string{"pageview 0 0 0", "pageview 0 0 36", "engagement 87 42000 36"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("rows %q, want %q", got, want)
	}
}
