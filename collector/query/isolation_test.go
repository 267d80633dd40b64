package query

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
)

// postRaw sends one request message and returns the status and the exact
// answer bytes.
func (s *testServer) postRaw(t *testing.T, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.addr+"/api/query", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

func executeMsg(sql string) string {
	b, _ := json.Marshal(map[string]any{"id": "q", "op": "execute_query", "params": map[string]any{"sql": sql}})
	return string(b)
}

// isolationAttacks are statements with one hole for a string literal
// ($V). Each is run as ws_a three times: with a value only ws_b holds, with a
// value nobody holds, and with a value ws_a holds. The first two answers
// must be byte for byte the same (status, code, message, rows, sizes):
// whether ws_b holds a value may not change anything ws_a sees. live
// marks the statements whose answer changes with ws_a's own value, which
// shows the hole is evaluated at all and the test can fail.
var isolationAttacks = []struct {
	name, sql string
	live      bool
}{
	{"where throwIf", "SELECT count() FROM events WHERE throwIf(pathname = $V) = 0", true},
	{"where with workspace first", "SELECT count() FROM events WHERE workspace_id = 'ws_a' AND throwIf(pathname = $V) = 0", true},
	{"where or", "SELECT count() FROM events WHERE name = 'nope' OR throwIf(pathname = $V) = 0", true},
	{"join on", "SELECT count() FROM events a JOIN events b ON a.visitor_id = b.visitor_id AND throwIf(b.pathname = $V) = 0", true},
	{"left join subquery", "SELECT count() FROM events a LEFT JOIN (SELECT pathname FROM events WHERE throwIf(pathname = $V) = 0) b USING pathname", true},
	{"having", "SELECT pathname, count() FROM events GROUP BY pathname HAVING throwIf(any(pathname) = $V) = 0 ORDER BY pathname", true},
	{"group by", "SELECT count() FROM events GROUP BY throwIf(pathname = $V)", true},
	{"order by", "SELECT pathname FROM events ORDER BY throwIf(pathname = $V), pathname", true},
	{"select aggregate", "SELECT sum(throwIf(pathname = $V)) AS n FROM events", true},
	{"countIf", "SELECT countIf(throwIf(pathname = $V) = 0) AS n FROM events", true},
	{"in subquery", "SELECT count() FROM events WHERE pathname IN (SELECT pathname FROM events WHERE throwIf(pathname = $V) = 0)", true},
	{"scalar subquery", "SELECT (SELECT count() FROM events WHERE throwIf(pathname = $V) = 0)", true},
	{"cte", "WITH x AS (SELECT * FROM events WHERE throwIf(pathname = $V) = 0) SELECT count() FROM x", true},
	{"nested subquery", "SELECT count() FROM (SELECT * FROM (SELECT * FROM events) WHERE throwIf(pathname = $V) = 0)", true},
	{"union", "SELECT count() FROM events WHERE throwIf(pathname = $V) = 0 UNION ALL SELECT 1", true},
	{"window", "SELECT count() OVER () FROM events WHERE throwIf(pathname = $V) = 0 LIMIT 1", true},
	{"array join", "SELECT count() FROM events ARRAY JOIN [pathname] AS p WHERE throwIf(p = $V) = 0", true},
	{"lambda", "SELECT count() FROM events WHERE arrayExists(x -> throwIf(x = $V) = 0, [pathname])", true},
	{"if branch", "SELECT count() FROM events WHERE if(pathname = $V, throwIf(1), 0) = 0", true},
	{"prewhere", "SELECT count() FROM events PREWHERE throwIf(pathname = $V) = 0", false},
	{"echo base64Decode", "SELECT count() FROM events WHERE base64Decode(if(pathname = $V, concat(domain, '|', pathname), '')) != 'x'", true},
	{"echo toUUID", "SELECT count() FROM events WHERE toUUID(if(pathname = $V, pathname, '00000000-0000-0000-0000-000000000000')) != toUUID('00000000-0000-0000-0000-000000000001')", true},
	{"echo toDate", "SELECT count() FROM events WHERE toDate(if(pathname = $V, pathname, '2020-01-01')) > '2000-01-01'", true},
	{"echo toIPv4", "SELECT count() FROM events WHERE toIPv4(if(pathname = $V, pathname, '1.2.3.4')) != toIPv4('9.9.9.9')", true},
	{"echo toInt32", "SELECT count() FROM events WHERE toInt32(if(pathname = $V, pathname, '1')) > 0", true},
	{"echo CAST", "SELECT count() FROM events WHERE CAST(if(pathname = $V, pathname, '1') AS UInt8) > 0", true},
	{"echo parseDateTime", "SELECT count() FROM events WHERE parseDateTimeBestEffort(if(pathname = $V, pathname, '2020-01-01')) > '2000-01-01'", true},
	{"division by zero", "SELECT count() FROM events WHERE intDiv(1, toInt32(pathname != $V)) > 0", true},
	{"array index", "SELECT count() FROM events WHERE arrayElement([1], if(pathname = $V, 5, 1)) = 1", true},
	{"plain filter", "SELECT count() FROM events WHERE pathname = $V", true},
	{"like", "SELECT groupArray(pathname) FROM events WHERE pathname LIKE concat($V, '%')", true},
}

func TestIsolationPairs(t *testing.T) {
	s := startServer(t, testStore, Config{})
	const foreign, nowhere, own = "'/SECRET_B'", "'/NOWHERE_Z'", "'/pricing'"
	live := 0
	for _, a := range isolationAttacks {
		t.Run(a.name, func(t *testing.T) {
			run := func(v string) string {
				status, body := s.postRaw(t, executeMsg(strings.ReplaceAll(a.sql, "$V", v)))
				return fmt.Sprintf("%d %s", status, body)
			}
			f, n, o := run(foreign), run(nowhere), run(own)
			if f != n {
				t.Fatalf("the answer depends on ws_b's data:\n  ws_b value: %s\n  no value:   %s", f, n)
			}
			if leaked(f) {
				t.Fatalf("answer leaks: %s", f)
			}
			if a.live {
				if o == n {
					t.Fatalf("the statement does not depend on its own workspace's value either, so it proves nothing: %s", o)
				}
				live++
			}
		})
	}
	t.Logf("%d attack statements, %d of them shown live with ws_a's own value", len(isolationAttacks), live)
}

// TestIsolationOtherColumns repeats the oracle on the other columns ws_b
// holds secrets in.
func TestIsolationOtherColumns(t *testing.T) {
	s := startServer(t, testStore, Config{})
	for _, tt := range []struct{ col, foreign, nowhere string }{
		{"domain", "'b.example'", "'z.example'"},
		{"name", "'SECRET_B'", "'NOWHERE_Z'"},
		{"referrer_source", "'SECRET_B'", "'NOWHERE_Z'"},
		{"workspace_id", "'ws_b'", "'ws_z'"},
		{"toString(visitor_id)", "'99'", "'12345'"},
	} {
		for _, tmpl := range []string{
			"SELECT count() FROM events WHERE throwIf(%s = %s) = 0",
			"SELECT count() FROM events WHERE base64Decode(if(%s = %s, 'not base64!', '')) = ''",
		} {
			_, f := s.postRaw(t, executeMsg(fmt.Sprintf(tmpl, tt.col, tt.foreign)))
			_, n := s.postRaw(t, executeMsg(fmt.Sprintf(tmpl, tt.col, tt.nowhere)))
			if !bytes.Equal(f, n) {
				t.Errorf("%s: the answer depends on ws_b's data:\n  %s\n  %s", tt.col, f, n)
			}
		}
	}
}

// TestErrorsCarryNoValues checks that an engine error about a value of the
// caller's own rows names the kind of mistake, never the value.
func TestErrorsCarryNoValues(t *testing.T) {
	s := startServer(t, testStore, Config{})
	for _, sql := range []string{
		"SELECT toUUID(pathname) FROM events",
		"SELECT base64Decode(concat(domain, '|', pathname)) FROM events",
		"SELECT toDate(pathname) FROM events",
		"SELECT toIPv4(referrer_source) FROM events WHERE referrer_source != ''",
		"SELECT toInt32(pathname) FROM events",
		"SELECT * FROM secret_table_that_is_not_here",
	} {
		_, body := s.postRaw(t, executeMsg(sql))
		var r Response
		if err := json.Unmarshal(body, &r); err != nil || r.Type != "error" {
			t.Fatalf("%s: want an error, got %s", sql, body)
		}
		for _, v := range []string{"/pricing", "/blog", "a.example", "Google", "Bing", "Twitter", "analytics", "other", "schema_migrations"} {
			if strings.Contains(r.Error.Message, v) {
				t.Errorf("%s: error text carries %q: %s", sql, v, r.Error.Message)
			}
		}
	}
}

// TestNoEngineStatistics checks that answers carry no rows_read or
// bytes_read: the engine counts the granules it reads, which hold ws_b's
// rows too (ws_a has 8 rows, the table 10).
func TestNoEngineStatistics(t *testing.T) {
	s := startServer(t, testStore, Config{})
	_, body := s.postRaw(t, executeMsg("SELECT count() FROM events"))
	if !bytes.Contains(body, []byte(`"rows":[["8"]]`)) {
		t.Fatalf("unexpected answer %s", body)
	}
	for _, k := range []string{"rows_read", "bytes_read", "elapsed", "statistics"} {
		if bytes.Contains(body, []byte(k)) {
			t.Fatalf("answer reports %s: %s", k, body)
		}
	}
}

// TestResultBytesBounded runs the large answer: 10,000 rows of
// 20 kB, about 200 MB. It must be cut at the result limit with too_large.
func TestResultBytesBounded(t *testing.T) {
	s := startServer(t, testStore, Config{Limits: Limits{MaxResultBytes: 8 << 20}})
	for _, tt := range []struct{ format, sql string }{
		{"json", "SELECT arrayJoin(range(10000)) AS a, repeat('z', 20000) AS b"},
		// Arrow output is lz4-compressed: random text does not shrink.
		{"arrow", "SELECT arrayJoin(range(10000)) AS a, randomPrintableASCII(20000 + a % 2) AS b"},
	} {
		format, sql := tt.format, tt.sql
		b, _ := json.Marshal(map[string]any{"id": "big", "op": "execute_query", "params": map[string]any{
			"sql": sql, "format": format}})
		status, body := s.postRaw(t, string(b))
		if status != 200 || len(body) > 4096 || !bytes.Contains(body, []byte(`"code":"too_large"`)) {
			t.Fatalf("%s: status %d, %d bytes: %.300s", format, status, len(body), body)
		}
	}
	// Just under the limit still answers.
	status, body := s.postRaw(t, executeMsg("SELECT arrayJoin(range(100)) AS a, repeat('z', 20000) AS b"))
	if status != 200 || !bytes.Contains(body, []byte(`"row_count":100`)) {
		t.Fatalf("status %d: %.300s", status, body)
	}
}

// TestConcurrentQueriesBounded holds the process and per-token bounds: a
// slow store shows how many statements run at once when many callers ask.
func TestConcurrentQueriesBounded(t *testing.T) {
	store := &slowStore{Store: testStore, delay: 300 * time.Millisecond}
	s := startServer(t, store, Config{MaxQueries: 3, MaxQueriesPerToken: 2})
	other := s.key.Sign(t, s.key.Header(), testkit.ConnectClaims("ws_a", map[string]any{"jti": "other-token"}))
	third := s.key.Sign(t, s.key.Header(), testkit.ConnectClaims("ws_a", map[string]any{"jti": "third-token"}))
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for i := 0; i < 12; i++ {
		tok := []string{s.token, other, third}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, r := s.post(t, tok, executeMsg("SELECT count() FROM events"))
			code := "ok"
			if r.Error != nil {
				code = r.Error.Code
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if m := store.max.Load(); m > 3 {
		t.Fatalf("%d statements ran at once, the process bound is 3", m)
	}
	if codes["ok"] != 12 {
		t.Fatalf("answers %v: every caller within the waiting bound must be answered", codes)
	}
}

// TestTooBusyPerToken fills one token's running and waiting places and
// checks that the next statement of that token is answered too_busy at
// once while another token is still served.
func TestTooBusyPerToken(t *testing.T) {
	store := &slowStore{Store: testStore, delay: 2 * time.Second}
	s := startServer(t, store, Config{MaxQueries: 64, MaxQueriesPerToken: 1})
	var wg sync.WaitGroup
	for i := 0; i < 1+maxWaitingPerToken; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); s.post(t, s.token, executeMsg("SELECT 1")) }()
	}
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%d statements of the token in the slots", 1+maxWaitingPerToken), func() bool {
		s.h.slots.mu.Lock()
		defer s.h.slots.mu.Unlock()
		n := 0
		for _, ts := range s.h.slots.perToken {
			n += ts.users
		}
		return n == 1+maxWaitingPerToken
	})
	_, r := s.post(t, s.token, executeMsg("SELECT 1"))
	if r.Error == nil || r.Error.Code != CodeTooBusy {
		t.Fatalf("want too_busy, got %+v", r)
	}
	other := s.key.Sign(t, s.key.Header(), testkit.ConnectClaims("ws_a", map[string]any{"jti": "another"}))
	_, r = s.post(t, other, executeMsg("SELECT 1"))
	if r.Error != nil {
		t.Fatalf("another token was refused: %+v", r.Error)
	}
	wg.Wait()
}

// TestReportIsolation checks the report op, whose compiled statement is
// scoped without the LIMIT boundary (wrapTrusted): a filter on a value
// only ws_b holds answers exactly as one on a value nobody holds.
func TestReportIsolation(t *testing.T) {
	s := startServer(t, testStore, Config{})
	for _, tt := range []struct{ filter, foreign, nowhere string }{
		{"event:page", "/SECRET_B", "/NOWHERE_Z"},
		{"visit:source", "SECRET_B", "NOWHERE_Z"},
		{"event:name", "SECRET_B", "NOWHERE_Z"},
	} {
		msg := func(v string) string {
			b, _ := json.Marshal(map[string]any{"id": "r", "op": "report", "params": map[string]any{
				"metrics": []string{"visitors", "pageviews", "bounce_rate", "visit_duration"}, "dimensions": []string{"event:page"},
				"filters": [][]any{{"is", tt.filter, []string{v}}}, "date_range": []string{"2026-01-01", "2026-01-31"}}})
			return string(b)
		}
		_, f := s.postRaw(t, msg(tt.foreign))
		_, n := s.postRaw(t, msg(tt.nowhere))
		if !bytes.Equal(f, n) || leaked(string(f)) {
			t.Errorf("%s: the report depends on ws_b's data:\n  %s\n  %s", tt.filter, f, n)
		}
	}
}
