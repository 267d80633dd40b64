package query

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kyomi/collector/sink/chdb"
)

// engine adapts the embedded chDB connection to Store. The connection is
// shared by the whole package (one per process).
type engine struct{ c *chdb.Conn }

func (e engine) Raw(ctx context.Context, sql, format string) ([]byte, error) {
	return e.c.Query(ctx, sql, format)
}

var testStore Store

// testSchema mirrors analytics.events as DESIGN 3.4 and sink.Event describe
// it; the report and guard only rely on the columns named there.
var testSchema = []string{
	"CREATE DATABASE IF NOT EXISTS analytics",
	`CREATE TABLE IF NOT EXISTS analytics.events (
		workspace_id LowCardinality(String), domain LowCardinality(String),
		ts DateTime64(3, 'UTC'), name LowCardinality(String), hostname String, pathname String,
		visitor_id UInt64, retention_days UInt16, referrer String, referrer_source LowCardinality(String),
		utm_source String, utm_medium String, utm_campaign String, utm_content String, utm_term String,
		click_id_param LowCardinality(String), country_code LowCardinality(String), region String, city String,
		browser LowCardinality(String), browser_version String, os LowCardinality(String), os_version String,
		device LowCardinality(String), interactive Bool, revenue_amount Float64, revenue_currency LowCardinality(String),
		props Map(String, String)
	) ENGINE = MergeTree PARTITION BY toYYYYMM(ts) ORDER BY (workspace_id, domain, ts)`,
	// Things a query must never reach.
	"CREATE TABLE IF NOT EXISTS analytics.other (secret String) ENGINE = Memory",
	"INSERT INTO analytics.other VALUES ('SECRET_OTHER')",
	"CREATE TABLE IF NOT EXISTS default.secret (secret String) ENGINE = Memory",
	"INSERT INTO default.secret VALUES ('SECRET_DEFAULT')",
	"CREATE TABLE IF NOT EXISTS default.events (secret String, workspace_id String) ENGINE = Memory",
	"INSERT INTO default.events VALUES ('SECRET_DEFAULT_EVENTS', 'ws_a')",
}

// goldenRows is the fixed dataset of the report golden tests (workspace
// ws_a) plus rows of another workspace (ws_b) that must never show up. The
// expected figures are worked out by hand in report_test.go.
const goldenRows = `{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-10 10:00:00","name":"pageview","pathname":"/","visitor_id":1,"referrer_source":"Google","country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-10 10:05:00","name":"pageview","pathname":"/pricing","visitor_id":1,"referrer_source":"Bing","country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-10 10:06:00","name":"signup","pathname":"/pricing","visitor_id":1,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-10 12:00:00","name":"pageview","pathname":"/","visitor_id":1,"country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-11 09:00:00","name":"pageview","pathname":"/blog","visitor_id":2,"referrer_source":"Twitter","utm_source":"tw","country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":true}
{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-11 09:01:00","name":"scroll","pathname":"/blog","visitor_id":2,"country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":false}
{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-12 23:50:00","name":"pageview","pathname":"/","visitor_id":3,"referrer_source":"Google","country_code":"DE","device":"desktop","browser":"Firefox","os":"Windows","interactive":true}
{"workspace_id":"ws_a","domain":"a.example","ts":"2026-01-13 00:10:00","name":"pageview","pathname":"/pricing","visitor_id":3,"country_code":"DE","device":"desktop","browser":"Firefox","os":"Windows","interactive":true}
{"workspace_id":"ws_b","domain":"b.example","ts":"2026-01-10 10:00:00","name":"pageview","pathname":"/SECRET_B","visitor_id":99,"referrer_source":"SECRET_B","country_code":"DE","device":"desktop","browser":"Chrome","os":"Linux","interactive":true}
{"workspace_id":"ws_b","domain":"b.example","ts":"2026-01-11 10:00:00","name":"SECRET_B","pathname":"/SECRET_B","visitor_id":98,"country_code":"FR","device":"mobile","browser":"Safari","os":"iOS","interactive":true}
`

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "query-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	conn, err := chdb.Open(filepath.Join(dir, "db"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot open embedded ClickHouse:", err)
		os.Exit(1)
	}
	testStore = engine{conn}
	ctx := context.Background()
	for _, q := range testSchema {
		if _, err := conn.Query(ctx, q, ""); err != nil {
			fmt.Fprintln(os.Stderr, "cannot prepare schema:", err)
			os.Exit(1)
		}
	}
	if _, err := conn.Query(ctx, "INSERT INTO analytics.events FORMAT JSONEachRow\n"+goldenRows, ""); err != nil {
		fmt.Fprintln(os.Stderr, "cannot insert dataset:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = conn.Close()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// leaked reports whether out carries a marker of data the caller may not see.
func leaked(out string) bool {
	return strings.Contains(out, "SECRET") || strings.Contains(out, `"ws_b"`) || strings.Contains(out, "b.example")
}
