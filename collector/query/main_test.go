package query

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/engine/enginetest"
)

// testStore is the store with the real schema (sink.Migrate), shared by the whole package: a
// ClickHouse server, started by TestMain (enginetest), or the one CLICKHOUSE_ADDR names; its
// analytics.events is emptied first, so point it at a disposable server.
var testStore *sink.Server

// testSchema adds things a query must never reach.
var testSchema = []string{
	"CREATE TABLE IF NOT EXISTS analytics.other (secret String) ENGINE = Memory",
	"INSERT INTO analytics.other VALUES ('SECRET_OTHER')",
	"CREATE TABLE IF NOT EXISTS default.secret (secret String) ENGINE = Memory",
	"INSERT INTO default.secret VALUES ('SECRET_DEFAULT')",
	"CREATE TABLE IF NOT EXISTS default.events (secret String, workspace_id String) ENGINE = Memory",
	"INSERT INTO default.events VALUES ('SECRET_DEFAULT_EVENTS', 'ws_a')",
}

// goldenRows is the fixed dataset of the report golden tests (workspace
// ws_a; ws_e for engagement) plus rows of another workspace (ws_b) that must
// never show up. The expected figures are worked out by hand in
// report_test.go.
const goldenRows = `{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-10 10:00:00","name":"pageview","pathname":"/","visitor_id":1,"referrer_source":"Google","country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-10 10:05:00","name":"pageview","pathname":"/pricing","visitor_id":1,"referrer_source":"Bing","country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-10 10:06:00","name":"signup","pathname":"/pricing","visitor_id":1,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-10 12:00:00","name":"pageview","pathname":"/","visitor_id":1,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-11 09:00:00","name":"pageview","pathname":"/blog","visitor_id":2,"referrer_source":"Twitter","utm_source":"tw","country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":true}
{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-11 09:01:00","name":"scroll","pathname":"/blog","visitor_id":2,"country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":false}
{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-12 23:50:00","name":"pageview","pathname":"/","visitor_id":3,"referrer_source":"Google","country_code":"DE","device":"desktop","browser":"Firefox","os":"Windows","interactive":true}
{"workspace_id":"ws_a","retention_days":3650,"domain":"a.example","ts":"2026-01-13 00:10:00","name":"pageview","pathname":"/pricing","visitor_id":3,"country_code":"DE","device":"desktop","browser":"Firefox","os":"Windows","interactive":true}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 10:00:00","name":"pageview","pathname":"/","visitor_id":11,"referrer_source":"Google","country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 10:00:30","name":"engagement","pathname":"/","visitor_id":11,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true,"scroll_depth":40,"engagement_time":30000,"tracker_version":36}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 10:01:00","name":"pageview","pathname":"/pricing","visitor_id":11,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 10:02:00","name":"engagement","pathname":"/pricing","visitor_id":11,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true,"scroll_depth":80,"engagement_time":60000,"tracker_version":36}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 10:02:10","name":"engagement","pathname":"/pricing","visitor_id":11,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true,"scroll_depth":100,"engagement_time":5000,"tracker_version":36}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 11:00:00","name":"pageview","pathname":"/pricing","visitor_id":12,"country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":true}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 11:00:20","name":"engagement","pathname":"/pricing","visitor_id":12,"country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":true,"scroll_depth":20,"engagement_time":21000,"tracker_version":36}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 12:00:00","name":"pageview","pathname":"/","visitor_id":13,"country_code":"DE","device":"desktop","browser":"Firefox","os":"Windows","interactive":true}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 12:00:40","name":"engagement","pathname":"/","visitor_id":13,"country_code":"DE","device":"desktop","browser":"Firefox","os":"Windows","interactive":true,"scroll_depth":255,"engagement_time":46000,"tracker_version":36}
{"workspace_id":"ws_e","retention_days":3650,"domain":"e.example","ts":"2026-01-20 13:00:00","name":"engagement","pathname":"/","visitor_id":13,"country_code":"DE","device":"desktop","browser":"Firefox","os":"Windows","interactive":true,"scroll_depth":50,"engagement_time":10000,"tracker_version":36}
{"workspace_id":"ws_b","retention_days":3650,"domain":"b.example","ts":"2026-01-10 10:00:00","name":"pageview","pathname":"/SECRET_B","visitor_id":99,"referrer_source":"SECRET_B","country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_b","retention_days":3650,"domain":"b.example","ts":"2026-01-11 10:00:00","name":"SECRET_B","pathname":"/SECRET_B","visitor_id":98,"country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":true}
`

func TestMain(m *testing.M) {
	enginetest.RunLauncher()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	srv, err := enginetest.Start(enginetest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	testStore, err = sink.OpenServer(srv.DSN("default"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot open ClickHouse:", err)
		return 1
	}
	defer testStore.Close()
	ctx := context.Background()
	if err := sink.Migrate(ctx, testStore, sink.SchemaConfig{}); err != nil {
		fmt.Fprintln(os.Stderr, "cannot migrate:", err)
		return 1
	}
	if err := testStore.Exec(ctx, "TRUNCATE TABLE analytics.events"); err != nil {
		fmt.Fprintln(os.Stderr, "cannot empty analytics.events:", err)
		return 1
	}
	for _, q := range testSchema {
		if err := testStore.Exec(ctx, q); err != nil {
			fmt.Fprintln(os.Stderr, "cannot prepare schema:", err)
			return 1
		}
	}
	if err := testStore.Exec(ctx, "INSERT INTO analytics.events FORMAT JSONEachRow\n"+goldenRows); err != nil {
		fmt.Fprintln(os.Stderr, "cannot insert dataset:", err)
		return 1
	}
	return m.Run()
}

// leakCheck is leakcheck.Register, after which the server store's idle HTTP connections to
// ClickHouse (kept for the next query, not goroutines of the test) are closed.
func leakCheck(t *testing.T) {
	t.Helper()
	leakcheck.Register(t)
	t.Cleanup(testStore.CloseIdleConnections)
}

// runSQL runs a prepared statement and renders its result as JSON.
func runSQL(t testing.TB, p *Prepared) (string, error) {
	t.Helper()
	res, err := testStore.Select(context.Background(), p.SQL(p.MaxRows+1), nil)
	if err != nil {
		return "", err
	}
	r, err := toResult(res, p.MaxRows, DefaultLimits.MaxResultBytes)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(r)
	return string(out), nil
}

// leaked reports whether out carries a marker of data the caller may not see.
func leaked(out string) bool {
	return strings.Contains(out, "SECRET") || strings.Contains(out, `"ws_b"`) || strings.Contains(out, "b.example")
}
