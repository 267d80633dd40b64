package query

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// runAs prepares sql for wid and, when the guard lets it through, runs it.
// It returns the output (JSONCompact) and the error of whichever step failed.
func runAs(t testing.TB, wid, sql string) (string, error) {
	t.Helper()
	g := &Guard{Store: testStore}
	p, err := g.Prepare(context.Background(), wid, sql, 0)
	if err != nil {
		return "", err
	}
	return runSQL(t, p)
}

func TestGuardAllows(t *testing.T) {
	tests := []struct {
		name, sql string
		want      string // substring of the output
	}{
		{"count", "SELECT count() FROM events", `["8"]`},
		{"lower case and comment", "select /* hi */ count() -- x\n from events", `["8"]`},
		{"where", "SELECT count() FROM events WHERE name = 'pageview'", `["6"]`},
		{"cte", "WITH p AS (SELECT * FROM events WHERE name = 'pageview') SELECT count() FROM p", `["6"]`},
		{"subquery", "SELECT count() FROM (SELECT visitor_id FROM events GROUP BY visitor_id)", `["3"]`},
		{"self join", "SELECT count() FROM events a JOIN events b ON a.visitor_id = b.visitor_id WHERE a.name = 'signup'", `["4"]`},
		{"union all", "SELECT 1 AS x FROM events WHERE name = 'signup' UNION ALL SELECT 2 FROM events WHERE name = 'scroll'", `[1]`},
		{"in subquery", "SELECT count() FROM events WHERE visitor_id IN (SELECT visitor_id FROM events WHERE name = 'signup')", `["4"]`},
		{"window", "SELECT visitor_id, lagInFrame(ts) OVER (PARTITION BY visitor_id ORDER BY ts) AS prev FROM events ORDER BY visitor_id, ts LIMIT 1", `"1"`},
		{"trailing semicolon", "SELECT count() FROM events;", `["8"]`},
		{"order kept", "SELECT pathname FROM events ORDER BY ts DESC LIMIT 1", `["/pricing"]`},
		{"scalar with", "WITH 2 AS two SELECT count() * two FROM events", `["16"]`},
		{"workspace column", "SELECT DISTINCT workspace_id FROM events", `["ws_a"]`},
		{"cte named like a table", "WITH secret AS (SELECT name FROM events) SELECT count() FROM secret", `["8"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runAs(t, "ws_a", tt.sql)
			if err != nil {
				t.Fatalf("refused or failed: %v", err)
			}
			if !strings.Contains(out, tt.want) {
				t.Fatalf("output %s does not contain %s", out, tt.want)
			}
			if leaked(out) {
				t.Fatalf("output leaks: %s", out)
			}
		})
	}
}

// TestGuardEscapes tries to read beyond the caller's workspace. Every case
// must be refused by the guard or fail in the engine, or run and return
// nothing but ws_a's rows.
func TestGuardEscapes(t *testing.T) {
	tests := []struct {
		name, sql string
		refused   bool // must be refused by the guard itself (else: fail or stay confined)
	}{
		{"other workspace where", "SELECT * FROM events WHERE workspace_id = 'ws_b'", false},
		{"other workspace or", "SELECT * FROM events WHERE 1 OR workspace_id = 'ws_b'", false},
		{"qualified analytics.events", "SELECT * FROM analytics.events", true},
		{"backquoted qualified", "SELECT * FROM `analytics`.`events`", true},
		{"qualified in join", "SELECT * FROM events e JOIN analytics.events x ON 1", true},
		{"qualified in subquery", "SELECT * FROM (SELECT * FROM analytics.events)", true},
		{"qualified in IN", "SELECT * FROM events WHERE pathname IN (SELECT pathname FROM analytics.events)", true},
		{"IN table name", "SELECT count() FROM events WHERE (workspace_id, pathname) IN analytics.events", true},
		{"IN bare table", "SELECT count() FROM events WHERE secret IN secret", false},
		{"other analytics table", "SELECT * FROM analytics.other", true},
		{"schema migrations table", "SELECT * FROM analytics.schema_migrations", true},
		{"schema migrations bare", "SELECT * FROM schema_migrations", false},
		{"default db table", "SELECT * FROM secret", true},
		{"default events qualified", "SELECT * FROM default.events", true},
		{"system tables", "SELECT * FROM system.tables", true},
		{"system one", "SELECT * FROM system.one", true},
		{"system in subquery", "SELECT (SELECT count() FROM system.tables)", true},
		{"information schema", "SELECT * FROM information_schema.tables", true},
		{"INFORMATION_SCHEMA upper", "SELECT * FROM INFORMATION_SCHEMA.TABLES", true},
		{"table function file", "SELECT * FROM file('/etc/passwd', 'LineAsString')", true},
		{"table function url", "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')", true},
		{"table function remote", "SELECT * FROM remote('127.0.0.1', 'analytics', 'events')", true},
		{"table function cluster", "SELECT * FROM cluster('default', 'analytics.events')", true},
		{"table function s3", "SELECT * FROM s3('http://127.0.0.1:1/x.csv')", true},
		{"table function numbers", "SELECT * FROM numbers(10)", true},
		{"table function merge", "SELECT * FROM merge('analytics', '.*')", true},
		{"table function view", "SELECT * FROM view(SELECT * FROM analytics.events)", true},
		{"table function input", "SELECT * FROM input('x String')", true},
		{"table function mysql", "SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')", true},
		{"table function in join", "SELECT * FROM events JOIN numbers(3) AS n ON 1", true},
		{"scalar file", "SELECT file('/etc/passwd')", true},
		{"dictGet", "SELECT dictGet('d', 'x', 1)", true},
		{"dictGetString case", "SELECT DICTGETSTRING('d', 'x', toUInt64(1))", true},
		{"joinGet", "SELECT joinGet('analytics.other', 'secret', 1)", true},
		{"currentUser", "SELECT currentUser()", true},
		{"currentDatabase alias", "SELECT DATABASE()", true},
		{"getSetting", "SELECT getSetting('additional_table_filters')", true},
		{"hostName", "SELECT hostName()", true},
		{"hasColumnInTable", "SELECT hasColumnInTable('analytics', 'other', 'secret')", true},
		{"sleep", "SELECT sleepEachRow(3) FROM events", true},
		{"settings override filter", "SELECT * FROM events SETTINGS additional_table_filters={'analytics.events':'1'}", true},
		{"settings readonly", "SELECT count() FROM events SETTINGS readonly=0", true},
		{"settings in subquery", "SELECT * FROM (SELECT * FROM events SETTINGS max_result_rows=0)", true},
		{"format clause", "SELECT * FROM events FORMAT TSV", true},
		{"into outfile", "SELECT * FROM events INTO OUTFILE '/tmp/x'", true},
		{"two statements", "SELECT 1; SELECT * FROM analytics.events", true},
		{"statement after comment", "SELECT 1 /* x */; DROP TABLE analytics.events", true},
		{"insert", "INSERT INTO analytics.events (workspace_id) VALUES ('ws_b')", true},
		{"insert select", "INSERT INTO events SELECT * FROM events", true},
		{"alter", "ALTER TABLE analytics.events DELETE WHERE 1", true},
		{"create", "CREATE TABLE x (a Int8) ENGINE = Memory", true},
		{"drop", "DROP TABLE analytics.events", true},
		{"truncate", "TRUNCATE TABLE analytics.events", true},
		{"system", "SYSTEM DROP DNS CACHE", true},
		{"kill", "KILL QUERY WHERE 1", true},
		{"set", "SET readonly = 0", true},
		{"use", "USE analytics", true},
		{"optimize", "OPTIMIZE TABLE analytics.events", true},
		{"explain", "EXPLAIN SELECT * FROM analytics.events", true},
		{"show", "SHOW TABLES FROM analytics", true},
		{"describe", "DESCRIBE TABLE analytics.other", true},
		{"cte shadows events with system", "WITH events AS (SELECT * FROM system.tables) SELECT * FROM events", true},
		{"cte shadows events with analytics", "WITH events AS (SELECT * FROM analytics.events) SELECT * FROM events", true},
		{"cte shadows events with table", "WITH events AS (SELECT * FROM secret) SELECT * FROM events", true},
		{"cte shadows events with itself", "WITH events AS (SELECT * FROM events) SELECT * FROM events", false},
		{"cte shadows events nested", "SELECT * FROM (WITH events AS (SELECT * FROM events WHERE 1) SELECT secret, workspace_id FROM events)", false},
		{"cte shadows events in subquery", "WITH e AS (SELECT * FROM (WITH events AS (SELECT 1 AS x) SELECT * FROM events)) SELECT * FROM e, events", false},
		{"cte named system table", "WITH tables AS (SELECT 1) SELECT * FROM tables UNION ALL SELECT * FROM system.tables", true},
		{"out of scope cte name", "SELECT * FROM (WITH secret AS (SELECT 1 AS secret) SELECT * FROM secret) UNION ALL SELECT * FROM secret", true},
		{"unicode fullwidth dot", "SELECT * FROM analytics．events", true},
		{"unicode homoglyph", "SELECT * FROM еvents", true},
		{"IN bare default table", "SELECT count() FROM events WHERE name IN secret", true},
		{"IN bare default events", "SELECT count() FROM events WHERE name IN (SELECT secret FROM default.events)", true},
		{"zero width joiner", "SELECT * FROM ev\u200bents", false},
		{"nul byte", "SELECT 1\x00; DROP TABLE x", true},
		{"query parameter", "SELECT * FROM events WHERE workspace_id = {wid:String}", true},
		{"comment hides settings", "SELECT 1 /* */ SETTINGS readonly=0", true},
		{"string with quote tricks", `SELECT '\'; SELECT * FROM system.tables; --' FROM events`, false},
		{"lambda file", "SELECT arrayMap(x -> file(x), ['/etc/passwd'])", true},
		{"function alias of file in cte", "WITH file('/etc/passwd') AS f SELECT f", true},
		{"introspection", "SELECT addressToSymbol(toUInt64(1))", true},
		{"global in", "SELECT * FROM events WHERE visitor_id GLOBAL IN (SELECT toUInt64(1) FROM system.one)", true},
		{"array join other table", "SELECT * FROM events ARRAY JOIN (SELECT groupArray(secret) FROM secret) AS s", true},
		{"exists other table", "SELECT count() FROM events WHERE EXISTS (SELECT 1 FROM system.tables)", true},
		{"huge sql", "SELECT " + strings.Repeat("1+", MaxSQLBytes) + "1", true},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d escape attempts", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runAs(t, "ws_a", tt.sql)
			var re *RefusedError
			if tt.refused && !errors.As(err, &re) {
				t.Fatalf("not refused by the guard: err=%v out=%.200s", err, out)
			}
			if leaked(out) {
				t.Fatalf("output leaks: %.300s", out)
			}
			if err != nil && leaked(err.Error()) {
				t.Fatalf("error leaks: %v", err)
			}
		})
	}
}

// TestScopedToWorkspace proves `events` means the caller's rows: the same
// query returns each workspace's own count, and workspace filters cannot
// widen it.
func TestScopedToWorkspace(t *testing.T) {
	tests := []struct {
		name, wid, sql, want string
	}{
		{"ws_a count", "ws_a", "SELECT count() FROM events", `["8"]`},
		{"ws_b count", "ws_b", "SELECT count() FROM events", `["2"]`},
		{"unknown workspace", "ws_none", "SELECT count() FROM events", `["0"]`},
		{"ws_a asks for ws_b", "ws_a", "SELECT count() FROM events WHERE workspace_id = 'ws_b'", `["0"]`},
		{"ws_a or true", "ws_a", "SELECT count() FROM events WHERE workspace_id != 'ws_a' OR 1", `["8"]`},
		{"ws_b self join", "ws_b", "SELECT count() FROM events a, events b", `["4"]`},
		{"quote in wid refused", "ws_a' OR '1", "SELECT count() FROM events", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runAs(t, tt.wid, tt.sql)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ran for an invalid workspace: %s", out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.want) {
				t.Fatalf("got %s, want %s", out, tt.want)
			}
		})
	}
}

// TestSettingsInTextOverride measures the engine behaviour the guard relies
// on: a SETTINGS clause in the statement text beats settings given outside
// it, so the guard must refuse SETTINGS in the caller's text.
func TestSettingsInTextOverride(t *testing.T) {
	ctx := context.Background()
	out, err := testStore.Raw(ctx, "SELECT getSetting('max_result_rows') FROM (SELECT 1 SETTINGS max_result_rows=7) SETTINGS max_result_rows=3", "TSVRaw")
	if err != nil {
		t.Fatal(err)
	}
	// The inner clause applies inside the subquery; the outer one to the
	// final result. A caller's SETTINGS would therefore change limits.
	if strings.TrimSpace(string(out)) != "3" {
		t.Fatalf("outer setting not in force: %q", out)
	}
	out, err = testStore.Raw(ctx, "SELECT count() FROM (SELECT getSetting('readonly') AS r SETTINGS readonly=0) WHERE r = 0 SETTINGS readonly=1", "TSVRaw")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("inner SETTINGS did not override the outer readonly: %q", out)
	}
}

func TestLimits(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		sql     string
		maxRows int
		rows    int
		wantErr int // engine error code expected, 0 for none
	}{
		{"max_rows 1", "SELECT visitor_id FROM events", 1, 2, 0},
		{"max_rows above limit clamps", "SELECT visitor_id FROM events", 100, 6, 0},
		{"rows to read", "SELECT count() FROM events", 0, 0, 158},
		{"execution time", "SELECT count() FROM events a, events b WHERE sleepEachRow(0) = 0", 0, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := Limits{MaxRows: 5, MaxResultBytes: 1 << 20, MaxMemory: 1 << 28, MaxExecutionSecs: 1, MaxRowsToRead: 1000}
			if tt.wantErr == 158 {
				lim.MaxRowsToRead = 3
			}
			g := &Guard{Store: testStore, Limits: lim}
			p, err := g.Prepare(ctx, "ws_a", tt.sql, tt.maxRows)
			if tt.wantErr == -1 {
				if err == nil {
					t.Fatal("sleep not refused")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res, err := testStore.Select(ctx, p.SQL(p.MaxRows+1), nil)
			if tt.wantErr != 0 {
				if err == nil || engineCode(err) != tt.wantErr {
					t.Fatalf("want engine error %d, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, err := toResult(res, p.MaxRows, DefaultLimits.MaxResultBytes)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Rows) != tt.rows-1 || !r.Truncated {
				t.Fatalf("rows %d truncated %v, want %d rows truncated", len(r.Rows), r.Truncated, tt.rows-1)
			}
		})
	}
}
