package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
)

func TestStoreInsertRoundTrip(t *testing.T) {
	ctx := context.Background()
	ts := time.Date(2026, 11, 20, 10, 11, 12, 345e6, time.UTC)
	rows := rowtest.Events("ws_roundtrip", 3, ts, keepDays)
	if err := testStore.Insert(ctx, rows, "roundtrip-1"); err != nil {
		t.Fatal(err)
	}
	res, err := testStore.Select(ctx, `SELECT workspace_id, domain, ts, name, hostname, pathname, visitor_id,
	retention_days, referrer, referrer_source, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
	click_id_param, country_code, region, city, browser, browser_version, os, os_version, device,
	interactive, revenue_amount, revenue_currency, props, batch_token,
	scroll_depth, engagement_time, tracker_version
	FROM analytics.events WHERE workspace_id = 'ws_roundtrip' ORDER BY ts`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 3 {
		t.Fatalf("got %d rows, want 3", len(res.Rows))
	}
	if len(res.Columns) != len(columns) {
		t.Fatalf("got %d columns, want %d", len(res.Columns), len(columns))
	}
	for i, c := range columns {
		if res.Columns[i].Name != c.name || res.Columns[i].Type != c.typ {
			t.Errorf("column %d: got %v, want %s %s", i, res.Columns[i], c.name, c.typ)
		}
	}
	r := res.Rows[1]
	want := map[int]any{
		0: "ws_roundtrip", 2: "2026-11-20 10:11:12.346", 5: "/blog/post-1",
		6: json.Number("2654435762"), 7: json.Number("3650"), 13: `c"1`, 14: `t\2`,
		24: false, 25: json.Number("12.5"), 26: "EUR", 28: "roundtrip-1",
		29: json.Number("1"), 30: json.Number("1500"), 31: json.Number("36"),
	}
	for i, w := range want {
		if r[i] != w {
			t.Errorf("column %s: got %#v, want %#v", columns[i].name, r[i], w)
		}
	}
	props, ok := r[27].(map[string]any)
	if !ok || props["plan"] != "pro" || props["author"] != "ünïcode\n'x'" {
		t.Errorf("props: got %#v", r[27])
	}
}

func TestStoreInsertDedup(t *testing.T) {
	ctx := context.Background()
	ts := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		ws      string
		tokens  []string
		wantRow uint64
	}{
		{"retry with same token stored once", "ws_dedup_a", []string{"tok-a", "tok-a", "tok-a"}, 100},
		{"different tokens stored twice", "ws_dedup_b", []string{"tok-b1", "tok-b2"}, 200},
		{"no token stored every time", "ws_dedup_c", []string{"", ""}, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, run := fresh(tc.ws), fresh("")
			rows := rowtest.Events(ws, 100, ts, keepDays)
			for _, tok := range tc.tokens {
				if tok != "" {
					tok += run
				}
				if err := testStore.Insert(ctx, rows, tok); err != nil {
					t.Fatal(err)
				}
			}
			if got := countRows(t, ws); got != tc.wantRow {
				t.Fatalf("got %d rows, want %d", got, tc.wantRow)
			}
		})
	}
}

func TestStoreInsertRejectsBadToken(t *testing.T) {
	err := testStore.Insert(context.Background(), rowtest.Events("ws_badtok", 1, time.Now(), 30), "x' OR 1")
	if err == nil || !strings.Contains(err.Error(), "invalid dedup token") {
		t.Fatalf("got %v", err)
	}
	if n := countRows(t, "ws_badtok"); n != 0 {
		t.Fatalf("stored %d rows", n)
	}
}

func TestStoreSelectSettings(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		sql      string
		settings map[string]string
		wantErr  string
		want     string
	}{
		{"no settings", "SELECT 1 AS x", nil, "", "1"},
		{"trailing semicolon", "SELECT 2 AS x;", nil, "", "2"},
		{"limit respected", "SELECT number FROM numbers(10)", map[string]string{"max_result_rows": "5", "result_overflow_mode": "throw"}, "TOO_MANY_ROWS", ""},
		{"settings inside the SQL win", "SELECT number FROM numbers(10) SETTINGS max_result_rows = 100", map[string]string{"max_result_rows": "5", "result_overflow_mode": "throw"}, "", "0"},
		{"bad setting name", "SELECT 1", map[string]string{"x; DROP": "1"}, "invalid setting name", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := testStore.Select(ctx, tc.sql, tc.settings)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Rows[0][0].(json.Number).String(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestStoreRaw(t *testing.T) {
	tests := []struct {
		name, format, wantPrefix string
	}{
		{"tsv", "TSV", "a\t1\n"},
		{"csv", "CSV", "\"a\",1\n"},
		{"arrow stream", "ArrowStream", "\xff\xff\xff\xff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := testStore.Raw(context.Background(), "SELECT 'a', 1", tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(out), tc.wantPrefix) {
				t.Fatalf("got %q", out)
			}
		})
	}
}

func TestStoreConcurrentInsertSelect(t *testing.T) {
	ctx := context.Background()
	ts := time.Now().UTC().Add(-time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 4 {
		wg.Go(func() {
			for i := range 5 {
				if err := testStore.Insert(ctx, rowtest.Events("ws_conc", 10, ts, 30), fmt.Sprintf("conc-%d-%d", g, i)); err != nil {
					errs <- err
					return
				}
				if _, err := testStore.Select(ctx, "SELECT count() FROM analytics.events WHERE workspace_id = 'ws_conc'", nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := countRows(t, "ws_conc"); n != 200 {
		t.Fatalf("got %d rows, want 200", n)
	}
}

// TestStoreReplayInsert covers what a replay after a crash can find: the token in the
// deduplication log without its rows (a plain Insert would drop the batch), the rows of one
// partition stored and the other's not, and everything stored.
func TestStoreReplayInsert(t *testing.T) {
	ctx := context.Background()
	count := func(ws string) uint64 { t.Helper(); return countRows(t, ws) }

	// The token is known to the engine but its rows are gone.
	const wsLost = "ws_replay_lost"
	rows := rowtest.Events(wsLost, 10, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), keepDays)
	if err := testStore.Insert(ctx, rows, "replay-lost"); err != nil {
		t.Fatal(err)
	}
	if err := testStore.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE workspace_id = '"+wsLost+"' SETTINGS mutations_sync = 1"); err != nil {
		t.Fatal(err)
	}
	if err := testStore.Insert(ctx, rows, "replay-lost"); err != nil {
		t.Fatal(err)
	}
	if n := count(wsLost); n != 0 {
		t.Fatalf("plain insert of a known token stored %d rows; the premise of this test is gone", n)
	}
	if err := testStore.ReplayInsert(ctx, rows, "replay-lost"); err != nil {
		t.Fatal(err)
	}
	if n := count(wsLost); n != 10 {
		t.Fatalf("replay stored %d rows, want 10", n)
	}

	// A batch across a month boundary: one partition stored, the other not.
	const wsSplit = "ws_replay_split"
	oct := rowtest.Events(wsSplit, 4, time.Date(2026, 10, 31, 23, 59, 0, 0, time.UTC), keepDays)
	nov := rowtest.Events(wsSplit, 6, time.Date(2026, 11, 1, 0, 0, 1, 0, time.UTC), keepDays)
	if err := testStore.insert(ctx, oct, "split-partial", "replay-split"); err != nil {
		t.Fatal(err)
	}
	batch := append(append([]row.Event{}, oct...), nov...)
	for range 2 { // the second replay finds everything stored
		if err := testStore.ReplayInsert(ctx, batch, "replay-split"); err != nil {
			t.Fatal(err)
		}
		if n := count(wsSplit); n != 10 {
			t.Fatalf("after replay: %d rows, want 10", n)
		}
	}
}

// TestStoreInsertUnevenProps stores rows with no, several and one props: the Native batch
// keeps each row's map apart (offsets, then keys, then values).
func TestStoreInsertUnevenProps(t *testing.T) {
	ctx := context.Background()
	ws := fmt.Sprintf("ws_props_%d", time.Now().UnixNano())
	rows := rowtest.Events(ws, 4, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), keepDays)
	rows[0].PropKeys, rows[0].PropValues = nil, nil
	rows[1].PropKeys, rows[1].PropValues = []string{"a", "b", "c"}, []string{"1", "2", "3"}
	rows[2].PropKeys, rows[2].PropValues = []string{"only"}, []string{""}
	rows[3].PropKeys, rows[3].PropValues = nil, nil
	if err := testStore.Insert(ctx, rows, ""); err != nil {
		t.Fatal(err)
	}
	res, err := testStore.Select(ctx, "SELECT toJSONString(props) FROM analytics.events WHERE workspace_id = '"+ws+"' ORDER BY ts", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{}`, `{"a":"1","b":"2","c":"3"}`, `{"only":""}`, `{}`}
	if len(res.Rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(res.Rows), len(want))
	}
	for i, r := range res.Rows {
		if r[0] != want[i] {
			t.Errorf("row %d props %v, want %s", i, r[0], want[i])
		}
	}
}

// TestStoreResultLimit: under a result limit (SetMaxResultBytes), answers below it come back
// whole and the same as without a limit, a larger one fails with ErrResultTooLarge and keeps
// nothing, and the store answers correctly afterwards; an error of the statement is still
// returned as such.
func TestStoreResultLimit(t *testing.T) {
	ctx := context.Background()
	s, err := OpenServer(testServerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const limit = 1 << 20
	s.SetMaxResultBytes(limit)
	for _, sql := range []string{"SELECT 1, 'a'", "SELECT number, toString(number) FROM numbers(20000)", "SELECT 1 WHERE 0",
		"SELECT formatQuerySingleLine('select 1')", "EXPLAIN AST SELECT 1", "SHOW DATABASES"} {
		for _, format := range []string{"TSV", "JSONCompact"} {
			got, err := s.Raw(ctx, sql, format)
			if err != nil {
				t.Fatalf("%s %s: %v", sql, format, err)
			}
			want, err := testStore.Raw(ctx, sql, format)
			if err != nil {
				t.Fatal(err)
			}
			// The statistics (elapsed, rows read) differ from run to run.
			got, _, _ = bytes.Cut(got, []byte(`"statistics"`))
			want, _, _ = bytes.Cut(want, []byte(`"statistics"`))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s %s: limited %q, unlimited %q", sql, format, got, want)
			}
		}
	}
	const big = "SELECT arrayJoin(range(10000)) AS a, repeat('z', 20000) AS b" // 200 MB
	if out, err := s.Raw(ctx, big, "JSONCompact"); !errors.Is(err, ErrResultTooLarge) || out != nil {
		t.Fatalf("a 200 MB answer under a 1 MiB limit: %d bytes, %v", len(out), err)
	}
	if res, err := s.Select(ctx, big, nil); !errors.Is(err, ErrResultTooLarge) || res != nil {
		t.Fatalf("a 200 MB Select under a 1 MiB limit: %v", err)
	}
	out, err := s.Raw(ctx, "SELECT 42", "TSV")
	if err != nil || string(out) != "42\n" {
		t.Fatalf("after a cut answer: %q, %v", out, err)
	}
	if _, err := s.Raw(ctx, "SELECT throwIf(1)", "TSV"); err == nil || errors.Is(err, ErrResultTooLarge) {
		t.Fatalf("an engine error under a limit: %v", err)
	}
}
