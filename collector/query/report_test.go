package query

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite testdata/query/*.golden from the current output (check them by hand)")

// TestReportGolden runs reports over the fixed dataset of main_test.go.
// Expected figures, worked out by hand from goldenRows (ws_a, January 2026):
//
//	visitor 1: visit A 10:00 / (Google), 10:05 /pricing, 10:06 signup; 12:00 / is visit B (gap 114 min, direct)
//	visitor 2: visit C 09:00 /blog (Twitter, FR, mobile), 09:01 scroll (non-interactive)
//	visitor 3: visit D 23:50 / (Google), 00:10 next day /pricing (gap 20 min, same visit)
//	totals: visitors 3, visits 4, pageviews 6, events 8, views_per_visit 1.5,
//	bounce_rate 50 (B and C have one interactive event), visit_duration (360+0+60+1200)/4 = 405
//	by visit:source: Google visitors 2 visits 2 pageviews 4; Direct / None 1 1 1; Twitter 1 1 1
//	by event:page (pageviews): / 3, /pricing 2, /blog 1
//	country DE: visitors 2, visits 3, pageviews 5
//	page contains "pric": visitors 2, events 3
func TestReportGolden(t *testing.T) {
	jan := `"date_range":["2026-01-01","2026-01-31"]`
	tests := []struct {
		name, params string
	}{
		{"totals", `{"metrics":["visitors","visits","pageviews","events","views_per_visit","bounce_rate","visit_duration"],` + jan + `}`},
		{"by_source", `{"metrics":["visitors","visits","pageviews"],"dimensions":["visit:source"],` + jan + `}`},
		{"by_page", `{"metrics":["pageviews","visitors"],"dimensions":["event:page"],` + jan + `}`},
		{"by_day", `{"metrics":["visitors","pageviews"],"dimensions":["time:day"],` + jan + `}`},
		{"country_de", `{"metrics":["visitors","visits","pageviews"],"filters":[["is","visit:country",["DE"]]],` + jan + `}`},
		{"page_contains", `{"metrics":["visitors","events"],"filters":[["contains","event:page",["pric"]]],` + jan + `}`},
		{"not_direct_paged", `{"metrics":["visitors"],"dimensions":["visit:source"],"filters":[["is_not","visit:source",["Direct / None"]]],"order_by":[["visit:source","asc"]],"limit":1,"offset":1,` + jan + `}`},
		{"by_device_browser", `{"metrics":["visits","bounce_rate"],"dimensions":["visit:device","visit:browser"],` + jan + `}`},
		{"empty_range", `{"metrics":["visitors","pageviews"],"date_range":["2025-01-01","2025-01-31"]}`},
	}
	s := startServer(t, testStore, Config{})
	runGolden(t, s, s.token, tests)
}

// TestReportEngagementGolden runs reports over the engagement dataset of main_test.go
// (ws_e, 2026-01-20). Expected figures, worked out by hand:
//
//	visitor 11: 10:00 / (Google), engagement / sd 40 e 30 s; 10:01 /pricing, engagement /pricing
//	            sd 80 e 60 s, sd 100 e 5 s
//	visitor 12: 11:00 /pricing, engagement /pricing sd 20 e 21 s
//	visitor 13: 12:00 /, engagement / no sd (255) e 46 s; 13:00 engagement / sd 50 e 10 s, an
//	            hour after the visitor's last event: no visit, not counted
//	without engagement: visitors 3, visits 3, pageviews 4, events 4, bounce_rate 67 (12 and 13),
//	visit_duration (60+0+0)/3 = 20: the same with the engagement rows as without them
//	scroll_depth (deepest per visitor): 11 → 100, 12 → 20, 13 none: (100+20)/2 = 60
//	time_on_page: (30+60+5+21+46) s / 3 visits = 54
//	by page: / scroll 40 (11 only), time (30+46)/2 = 38; /pricing scroll (100+20)/2 = 60,
//	time (60+5+21)/2 = 43
//	source Google (visit 11 only): scroll 100, time (30+60+5)/1 = 95
//	by name: pageview 4; engagement is not an event and gets no row
func TestReportEngagementGolden(t *testing.T) {
	jan := `"date_range":["2026-01-01","2026-01-31"]`
	tests := []struct {
		name, params string
	}{
		{"engagement_classic_totals", `{"metrics":["visitors","visits","pageviews","events","views_per_visit","bounce_rate","visit_duration"],` + jan + `}`},
		{"engagement_totals", `{"metrics":["visitors","visits","pageviews","events","bounce_rate","visit_duration","scroll_depth","time_on_page"],` + jan + `}`},
		{"engagement_by_page", `{"metrics":["visitors","pageviews","scroll_depth","time_on_page"],"dimensions":["event:page"],"order_by":[["event:page","asc"]],` + jan + `}`},
		{"engagement_by_name", `{"metrics":["events","visitors"],"dimensions":["event:name"],` + jan + `}`},
		{"engagement_source_google", `{"metrics":["visitors","scroll_depth","time_on_page"],"filters":[["is","visit:source",["Google"]]],` + jan + `}`},
	}
	s := startServer(t, testStore, Config{})
	runGolden(t, s, s.key.Sign(t, s.key.Header(), testkit.ConnectClaims("ws_e", nil)), tests)
}

func runGolden(t *testing.T, s *testServer, token string, tests []struct{ name, params string }) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r := s.post(t, token, `{"id":"r","op":"report","params":`+tt.params+`}`)
			if r.Type != "result" {
				t.Fatalf("report failed: %+v", r.Error)
			}
			res, _ := json.Marshal(r.Result)
			var full Result
			json.Unmarshal(res, &full)
			got := goldenText(full)
			path := filepath.Join("..", "..", "testdata", "query", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("got\n%s\nwant\n%s", got, want)
			}
			if leaked(string(got)) {
				t.Fatalf("report leaks: %s", got)
			}
		})
	}
}

func TestCompileReportErrors(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, params, want string
	}{
		{"no metric", `{"date_range":"7d"}`, "at least one metric"},
		{"unknown metric", `{"metrics":["x'); DROP"],"date_range":"7d"}`, "unknown metric"},
		{"unknown dimension", `{"metrics":["visitors"],"dimensions":["event:props"],"date_range":"7d"}`, "unknown dimension"},
		{"bad date", `{"metrics":["visitors"],"date_range":["2026-13-01","2026-01-02"]}`, "YYYY-MM-DD"},
		{"reversed dates", `{"metrics":["visitors"],"date_range":["2026-02-01","2026-01-02"]}`, "from <= to"},
		{"bad range word", `{"metrics":["visitors"],"date_range":"1y"}`, "date_range"},
		{"bad filter op", `{"metrics":["visitors"],"filters":[["like","event:page",["/"]]],"date_range":"7d"}`, "operator"},
		{"filter on time", `{"metrics":["visitors"],"filters":[["is","time:day",["x"]]],"date_range":"7d"}`, "cannot filter"},
		{"order by unknown", `{"metrics":["visitors"],"order_by":[["pageviews","desc"]],"date_range":"7d"}`, "order_by"},
		{"negative offset", `{"metrics":["visitors"],"offset":-1,"date_range":"7d"}`, "offset"},
		{"scroll depth by source", `{"metrics":["scroll_depth"],"dimensions":["visit:source"],"date_range":"7d"}`, "event:page and time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p ReportParams
			if err := json.Unmarshal([]byte(tt.params), &p); err != nil {
				t.Fatal(err)
			}
			_, err := CompileReport(&p, now)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestReportValuesBound checks that filter values reach the engine as
// literals: a value full of SQL stays a value.
func TestReportValuesBound(t *testing.T) {
	p := ReportParams{Metrics: []string{"visitors"}, DateRange: json.RawMessage(`["2026-01-01","2026-01-31"]`),
		Filters: []json.RawMessage{json.RawMessage(`["is","event:page",["/') OR 1=1 OR ('", "\\\\' OR 1 --"]]`)}}
	sql, err := CompileReport(&p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	g := &Guard{Store: testStore}
	res, err := testStore.Select(context.Background(), g.scoped("ws_a", sql, 10).SQL(11), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := toResult(res, 10, DefaultLimits.MaxResultBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Rows) != 1 || string(r.Rows[0]) != `["0"]` {
		t.Fatalf("injection changed the result: %s", r.Rows)
	}
}

func TestDateRanges(t *testing.T) {
	now := time.Date(2026, 3, 15, 18, 30, 0, 0, time.UTC)
	tests := []struct{ name, raw, from, to string }{
		{"day", `"day"`, "2026-03-15", "2026-03-16"},
		{"7d", `"7d"`, "2026-03-09", "2026-03-16"},
		{"30d", `"30d"`, "2026-02-14", "2026-03-16"},
		{"month", `"month"`, "2026-03-01", "2026-03-16"},
		{"pair", `["2026-01-01","2026-01-31"]`, "2026-01-01", "2026-02-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, to, err := dateRange(json.RawMessage(tt.raw), now)
			if err != nil {
				t.Fatal(err)
			}
			if f, e := from.Format("2006-01-02"), to.Format("2006-01-02"); f != tt.from || e != tt.to {
				t.Fatalf("got [%s, %s), want [%s, %s)", f, e, tt.from, tt.to)
			}
		})
	}
}

// goldenText renders a result one column and one row per line, so golden
// files are easy to check by hand.
func goldenText(r Result) []byte {
	var b strings.Builder
	b.WriteString("columns:\n")
	for _, c := range r.Columns {
		b.WriteString("  " + c.Name + " " + c.Type + "\n")
	}
	b.WriteString("rows:\n")
	for _, row := range r.Rows {
		b.WriteString("  " + string(row) + "\n")
	}
	return []byte(b.String())
}
