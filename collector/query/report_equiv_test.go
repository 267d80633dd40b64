package query

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// legacySessionsSQL is the former window design of the per-event rows (three window passes over
// every event), kept as the reference the current design (rowsSQL) must match exactly. The
// running sum of e2 sorts again: among rows of the same instant (a row stored twice), the one
// that starts a visit comes first, else a copy sorted before it would fall in the visit before
// (or in a visit 0) and count one visit more.
const legacySessionsSQL = `WITH ` +
	`e1 AS (SELECT ts, name, pathname, visitor_id, interactive, referrer_source, utm_source, utm_medium, utm_campaign, device, browser, os, country_code, ` +
	`if(dateDiff('second', lagInFrame(ts, 1, toDateTime64(0, 3, 'UTC')) OVER (PARTITION BY visitor_id ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW), ts) > 1800, 1, 0) AS is_new ` +
	`FROM events WHERE %[1]s AND name != 'engagement'), ` +
	`e2 AS (SELECT *, sum(is_new) OVER (PARTITION BY visitor_id ORDER BY ts, is_new DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session_no FROM e1), ` +
	`e3 AS (SELECT *, ` +
	`first_value(referrer_source) OVER s AS v_source, first_value(utm_source) OVER s AS v_utm_source, ` +
	`first_value(utm_medium) OVER s AS v_utm_medium, first_value(utm_campaign) OVER s AS v_utm_campaign, ` +
	`first_value(device) OVER s AS v_device, first_value(browser) OVER s AS v_browser, ` +
	`first_value(os) OVER s AS v_os, first_value(country_code) OVER s AS v_country, ` +
	`dateDiff('second', min(ts) OVER s, max(ts) OVER s) AS s_duration, countIf(interactive) OVER s AS s_interactive ` +
	`FROM e2 WINDOW s AS (PARTITION BY visitor_id, session_no ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) `

// legacyEngagementSQL adds the engagement rows to e3 by ASOF JOIN, in e4.
const legacyEngagementSQL = `, e4 AS (` +
	`SELECT ts, name, pathname, visitor_id, session_no, v_source, v_utm_source, v_utm_medium, v_utm_campaign, ` +
	`v_device, v_browser, v_os, v_country, s_duration, s_interactive, toUInt8(0) AS scroll_depth, toUInt32(0) AS engagement_time FROM e3 ` +
	`UNION ALL ` +
	`SELECT g.ts, 'engagement', g.pathname, g.visitor_id, s.session_no, s.v_source, s.v_utm_source, s.v_utm_medium, s.v_utm_campaign, ` +
	`s.v_device, s.v_browser, s.v_os, s.v_country, s.s_duration, s.s_interactive, g.scroll_depth, g.engagement_time ` +
	`FROM (SELECT ts, pathname, visitor_id, scroll_depth, engagement_time FROM events WHERE %s AND name = 'engagement') AS g ` +
	`ASOF INNER JOIN e3 AS s ON g.visitor_id = s.visitor_id AND g.ts >= s.ts ` +
	`WHERE dateDiff('second', s.ts, g.ts) <= 1800) `

// legacyRowsSQL is rowsSQL in the former design: every report derives every visit column.
func legacyRowsSQL(where string, n rowNeeds) (with, from string, metrics map[string]string) {
	with = fmt.Sprintf(legacySessionsSQL, where)
	if n.engagement {
		return with + fmt.Sprintf(legacyEngagementSQL, where), "e4", metricSQL
	}
	return with, "e3", metricSQL
}

// equivRows generates the dataset of TestReportDesignsAgree into workspace ws_eq: 400
// visitors, each with 40 rows from about two hours before a midnight of February 2026 (some
// before February, some running into March), the gaps between rows drawn from values around the
// 30-minute rule (1799 s, 1800 s, 1800.999 s, 1801 s, ...) and half a second, so visits split,
// continue across midnight and meet the rule at its edge. Rows are page views, custom events,
// non-interactive events and engagements (some at the same millisecond as the event before,
// some more than 30 minutes after it); every row draws its own source, UTM campaign, country,
// device, browser, OS and page, so a visit's values are its first event's only.
const equivRows = `INSERT INTO analytics.events (workspace_id, retention_days, domain, ts, name, pathname, visitor_id, interactive,
	referrer_source, utm_campaign, country_code, device, browser, os, scroll_depth, engagement_time)
SELECT 'ws_eq', 3650, 'eq.example',
	toDateTime64('2026-02-01 00:00:00', 3, 'UTC') + toIntervalMillisecond(start + off), nm,
	['/', '/a', '/b', '/pricing', '/blog', '/a/x'][h % 6 + 1], v, nm != 'scroll',
	['', 'Google', 'Twitter', 'Bing'][bitShiftRight(h, 4) % 4 + 1],
	['', '', 'spring', 'fall'][bitShiftRight(h, 8) % 4 + 1],
	['DE', 'FR', 'US'][bitShiftRight(h, 12) % 3 + 1],
	['desktop', 'mobile', 'tablet'][bitShiftRight(h, 16) % 3 + 1],
	['Chrome', 'Firefox', 'Safari'][bitShiftRight(h, 20) % 3 + 1],
	['Windows', 'Mac', 'iOS'][bitShiftRight(h, 24) % 3 + 1],
	if(nm = 'engagement', [10, 50, 100, 255, 0][bitShiftRight(h, 28) % 5 + 1], 0),
	if(nm = 'engagement', toUInt32(bitShiftRight(h, 32) % 90000), 0)
FROM (
	SELECT v, i, off, cityHash64(v, i, 'row') AS h, nms[i] AS nm,
		(cityHash64(v) % 29) * 86400000 - 7200000 + cityHash64(v, 'start') % 7200000 AS start
	FROM (
		SELECT number + 500 AS v,
			arrayMap(i -> ['pageview', 'pageview', 'pageview', 'engagement', 'engagement', 'signup', 'scroll', 'pageview'][cityHash64(v, i, 'name') % 8 + 1], range(1, 41)) AS nms,
			arrayCumSum(arrayMap((i, nm) -> if(nm = 'engagement' AND cityHash64(v, i) % 3 = 0, 0,
				[500, 60000, 1799000, 1800000, 1800999, 1801000, 1801001, 3600000, 250000, 1000][cityHash64(v, i, 'gap') % 10 + 1]),
				range(1, 41), nms)) AS offs
		FROM numbers(400))
	ARRAY JOIN offs AS off, arrayEnumerate(offs) AS i)`

// TestReportDesignsAgree runs every metric and dimension the dashboard uses, alone and under
// filters, through the former window design (legacyRowsSQL) and the current one (rowsSQL) over
// equivRows, and wants the same answer to the byte.
func TestReportDesignsAgree(t *testing.T) {
	ctx := context.Background()
	if err := testStore.Exec(ctx, equivRows); err != nil {
		t.Fatal(err)
	}
	g := &Guard{Store: testStore}
	run := func(t *testing.T, sql string) string {
		t.Helper()
		out, err := runSQL(t, g.scopedTrusted("ws_eq", sql, 10000))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The dataset holds what the test is for: visits across midnight, rows past the 30-minute
	// rule by less than a second, and engagements that belong to no visit.
	w := `"date_range":["2026-02-01","2026-02-28"]`
	with, _, _ := legacyRowsSQL("ts >= toDateTime64('2026-02-01 00:00:00', 3, 'UTC') AND ts < toDateTime64('2026-03-01 00:00:00', 3, 'UTC')", rowNeeds{engagement: true})
	probe := with + "SELECT (SELECT countIf(d > 1) FROM (SELECT uniqExact(toDate(ts)) AS d FROM e3 GROUP BY visitor_id, session_no)), " +
		"(SELECT countIf(name = 'engagement') FROM events WHERE ts >= toDateTime64('2026-02-01 00:00:00', 3, 'UTC') AND ts < toDateTime64('2026-03-01 00:00:00', 3, 'UTC')) - " +
		"(SELECT countIf(name = 'engagement') FROM e4)"
	out := run(t, probe)
	var res struct{ Rows [][]string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Rows) != 1 || res.Rows[0][0] == "0" || res.Rows[0][1] == "0" {
		t.Fatalf("the dataset lacks visits across midnight or engagements outside a visit: %s", out)
	}
	t.Logf("visits across midnight, engagements outside a visit: %v", res.Rows[0])

	metricSets := []string{
		`"visitors","visits","pageviews","bounce_rate","visit_duration","time_on_page","scroll_depth"`,
		`"visitors","visits","pageviews","events","views_per_visit","bounce_rate","visit_duration"`,
		`"time_on_page"`, `"scroll_depth"`, `"visits"`, `"bounce_rate"`, `"visit_duration"`,
	}
	var reports []string
	for _, m := range metricSets {
		reports = append(reports, `{"metrics":[`+m+`],`+w+`}`)
	}
	for _, d := range []string{"event:page", "time:day"} {
		reports = append(reports, `{"metrics":["visitors","pageviews","time_on_page","scroll_depth"],"dimensions":["`+d+`"],`+w+`}`)
	}
	for _, d := range []string{"event:page", "time:day", "event:name"} {
		reports = append(reports, `{"metrics":["visitors","visits","pageviews","events","views_per_visit","bounce_rate","visit_duration"],"dimensions":["`+d+`"],`+w+`}`)
	}
	reports = append(reports, `{"metrics":["visitors","pageviews","visits","bounce_rate","time_on_page","scroll_depth"],"dimensions":["time:hour"],"date_range":["2026-02-10","2026-02-10"]}`)
	for _, d := range []string{"visit:source", "visit:utm_campaign", "visit:country", "visit:device", "visit:browser", "visit:os"} {
		reports = append(reports,
			`{"metrics":["visitors"],"dimensions":["`+d+`"],"order_by":[["visitors","desc"]],"limit":10,`+w+`}`,
			`{"metrics":["visitors","visits","pageviews","events","views_per_visit","bounce_rate","visit_duration"],"dimensions":["`+d+`"],`+w+`}`,
			`{"metrics":["visitors","bounce_rate"],"dimensions":["`+d+`","time:day"],`+w+`}`)
	}
	filters := []string{``,
		`"filters":[["is","visit:source",["Google"]]],`,
		`"filters":[["is","visit:country",["DE"]],["is_not","visit:device",["mobile"]]],`,
		`"filters":[["is","visit:utm_campaign",["spring"]]],`,
		`"filters":[["is","event:page",["/a"]]],`,
		`"filters":[["contains","event:page",["/a"]],["is","visit:browser",["Firefox"]]],`,
		`"filters":[["is","visit:source",["Direct / None"]],["is","visit:os",["Mac"]]],`,
	}
	n := 0
	for _, r := range reports {
		for _, f := range filters {
			params := r[:1] + f + r[1:]
			var p ReportParams
			if err := json.Unmarshal([]byte(params), &p); err != nil {
				t.Fatal(params, err)
			}
			now := time.Now()
			old, err := compileReport(&p, now, legacyRowsSQL)
			if err != nil {
				t.Fatal(params, err)
			}
			cur, err := compileReport(&p, now, rowsSQL)
			if err != nil {
				t.Fatal(params, err)
			}
			want, got := run(t, old), run(t, cur)
			if got != want {
				t.Errorf("%s\n  window design: %s\n  current:       %s", params, want, got)
			}
			if strings.Contains(want, `"rows":[]`) {
				t.Errorf("%s: no rows, nothing compared", params)
			}
			n++
		}
	}
	t.Logf("%d reports agree", n)
}

// TestReportCodedFallback holds the two branches of a coded visit attribute (codedAggSQL) to each
// other: with maxCodes lowered below the dataset's distinct values the tuple branch answers, and it
// must give the coded branch's bytes (TestReportDesignsAgree holds the coded branch to the window
// design); a range without events (an empty dictionary) answers no rows.
func TestReportCodedFallback(t *testing.T) {
	ctx := context.Background()
	g := &Guard{Store: testStore}
	// The rows once (TestReportDesignsAgree may have inserted them).
	res, err := testStore.Select(ctx, "SELECT count() FROM analytics.events WHERE workspace_id = 'ws_eq'", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res.Rows[0][0]) == "0" {
		if err := testStore.Exec(ctx, equivRows); err != nil {
			t.Fatal(err)
		}
	}
	run := func(t *testing.T, sql string) string {
		t.Helper()
		out, err := runSQL(t, g.scopedTrusted("ws_eq", sql, 10000))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	defer func(m int) { maxCodes = m }(maxCodes)
	for _, r := range []string{
		`{"metrics":["visitors","visits","bounce_rate","visit_duration"],"dimensions":["visit:source"],"date_range":["2026-02-01","2026-02-28"]}`,
		`{"metrics":["visitors","bounce_rate"],"dimensions":["visit:country","time:day"],"date_range":["2026-02-01","2026-02-28"]}`,
		`{"metrics":["visitors","visits","pageviews","time_on_page","scroll_depth"],"filters":[["is","visit:source",["Google"]]],"date_range":["2026-02-01","2026-02-28"]}`,
		`{"metrics":["visitors","pageviews"],"dimensions":["time:day"],"filters":[["is_not","visit:device",["mobile"]]],"date_range":["2026-02-01","2026-02-28"]}`,
	} {
		var p ReportParams
		if err := json.Unmarshal([]byte(r), &p); err != nil {
			t.Fatal(err)
		}
		var outs []string
		for _, lim := range []int{1<<19 - 1, 1} {
			maxCodes = lim
			sql, err := compileReport(&p, time.Now(), rowsSQL)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(sql, "length(D) <= "+strconv.Itoa(lim)) {
				t.Fatalf("%s: not compiled with a coded attribute: %s", r, sql)
			}
			outs = append(outs, run(t, sql))
		}
		if outs[0] != outs[1] || strings.Contains(outs[0], `"rows":[]`) {
			t.Errorf("%s\n  coded: %s\n  tuple: %s", r, outs[0], outs[1])
		}
	}
	maxCodes = 1<<19 - 1
	p := ReportParams{Metrics: []string{"visitors", "visits"}, Dimensions: []string{"visit:os"}, DateRange: json.RawMessage(`["2019-01-01","2019-01-31"]`)}
	cur, err := CompileReport(&p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, cur); !strings.Contains(got, `"rows":[]`) {
		t.Errorf("empty range: %s", got)
	}
}
