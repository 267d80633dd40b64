package query

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// monthWID is the workspace of the synthetic month (monthSQL).
const monthWID = "ws_month"

// monthSQL generates a synthetic month into analytics.events inside the
// engine (INSERT ... SELECT from numbers(), no data crosses the Go side):
// visitors visitors in workspace ws_month, March 2026, each with 3 visits on
// different days, each visit 3 rows 0:00 to 38:00 minutes apart after the
// first (a visit may cross midnight):
//
//	row 0: pageview with the visit's source, UTM campaign and landing page;
//	row 1: a pageview 5 s to 10 min later, or (one in three) an engagement
//	       of the landing page (scroll depth 0-100, engaged time = the gap);
//	row 2: 30 s to 25 min after row 1, a pageview or (one in four) a
//	       non-interactive "scroll" event.
//
// Country, device, browser and OS belong to the visitor. 1M visitors give
// the 9M rows of issue 26.
func monthSQL(visitors int) string {
	return `INSERT INTO analytics.events (workspace_id, retention_days, domain, ts, name, pathname, visitor_id, interactive,
	referrer_source, utm_source, utm_campaign, country_code, device, browser, os, scroll_depth, engagement_time)
SELECT 'ws_month', 3650, 'm.example',
	toDateTime64('2026-03-01 00:00:00', 3, 'UTC') + toIntervalMillisecond(1000 * (day * 86400 + sec + off) + ms),
	nm, if(j = 0 OR nm = 'engagement', concat('/p', toString(bitShiftRight(h, 12) % 50)), concat('/q', toString(bitShiftRight(h, (14 + j)) % 40))),
	v, nm != 'scroll',
	if(j = 0, ['', 'Google', 'Twitter', 'Bing', 'DuckDuckGo', 'Facebook', 'Reddit', 'GitHub'][bitShiftRight(h, 24) % 8 + 1], ''),
	if(j = 0 AND bitShiftRight(h, 28) % 5 = 0, 'newsletter', ''),
	if(j = 0 AND bitShiftRight(h, 28) % 5 = 0, concat('c', toString(bitShiftRight(h, 31) % 10)), ''),
	['DE', 'FR', 'US', 'GB', 'JP', 'BR', 'IN', 'NL'][vh % 8 + 1],
	['desktop', 'mobile', 'tablet'][bitShiftRight(vh, 4) % 3 + 1],
	['Chrome', 'Firefox', 'Safari', 'Edge', 'Opera'][bitShiftRight(vh, 8) % 5 + 1],
	['Windows', 'GNU/Linux', 'Mac', 'iOS', 'Android'][bitShiftRight(vh, 12) % 5 + 1],
	if(nm = 'engagement', toUInt8(bitShiftRight(h, 50) % 101), 0),
	if(nm = 'engagement', toUInt32(g1 * 1000), 0)
FROM (
	SELECT intDiv(number, 9) + 1000 AS v, intDiv(number % 9, 3) AS k, number % 3 AS j,
		cityHash64(v, k) AS h, cityHash64(v) AS vh,
		h % 10 + k * 10 AS day, bitShiftRight(h, 8) % 86400 AS sec,
		5 + bitShiftRight(h, 20) % 596 AS g1, 30 + bitShiftRight(h, 34) % 1471 AS g2,
		[0, g1, g1 + g2][j + 1] AS off, bitShiftRight(h, 40) % 1000 * (j > 0) AS ms,
		multiIf(j = 0, 'pageview', j = 1 AND bitShiftRight(h, 44) % 3 = 0, 'engagement', j = 1, 'pageview', bitShiftRight(h, 46) % 4 = 0, 'scroll', 'pageview') AS nm
	FROM numbers(` + strconv.Itoa(visitors*9) + `))`
}

// monthVisitors is the size of the synthetic month: KYOMI_MONTH_VISITORS, 100k by default
// (900k rows, a few minutes for the whole benchmark on two cores).
func monthVisitors() int {
	if n, err := strconv.Atoi(os.Getenv("KYOMI_MONTH_VISITORS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// monthRange is the date range of the synthetic month (monthSQL).
const monthRange = `"date_range":["2026-03-01","2026-03-31"]`

// monthReports are the reports the built-in dashboard issues (dashboard/static/app.js), plus
// the ones issue 26 timed, over the synthetic month.
var monthReports = []struct{ name, params string }{
	{"top", `{"metrics":["visitors","visits","pageviews","bounce_rate","visit_duration","time_on_page","scroll_depth"]}`},
	{"top_classic", `{"metrics":["visitors","visits","pageviews","bounce_rate","visit_duration"]}`},
	{"visits", `{"metrics":["visits"]}`},
	{"bounce_rate", `{"metrics":["bounce_rate"]}`},
	{"chart_day", `{"metrics":["visitors","pageviews"],"dimensions":["time:day"]}`},
	{"pages", `{"metrics":["visitors","pageviews","time_on_page","scroll_depth"],"dimensions":["event:page"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"sources", `{"metrics":["visitors"],"dimensions":["visit:source"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"sources_bounce", `{"metrics":["visitors","bounce_rate"],"dimensions":["visit:source"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"campaigns", `{"metrics":["visitors"],"dimensions":["visit:utm_campaign"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"countries", `{"metrics":["visitors"],"dimensions":["visit:country"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"devices", `{"metrics":["visitors"],"dimensions":["visit:device"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"browsers", `{"metrics":["visitors"],"dimensions":["visit:browser"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"os", `{"metrics":["visitors"],"dimensions":["visit:os"],"order_by":[["visitors","desc"]],"limit":10}`},
	{"top_source_google", `{"metrics":["visitors","visits","pageviews","bounce_rate","visit_duration","time_on_page","scroll_depth"],"filters":[["is","visit:source",["Google"]]]}`},
	{"chart_country_de", `{"metrics":["visitors","pageviews"],"dimensions":["time:day"],"filters":[["is","visit:country",["DE"]]]}`},
	{"pages_country_de", `{"metrics":["visitors","pageviews","time_on_page","scroll_depth"],"dimensions":["event:page"],"filters":[["is","visit:country",["DE"]]],"order_by":[["visitors","desc"]],"limit":10}`},
	{"sources_page", `{"metrics":["visitors"],"dimensions":["visit:source"],"filters":[["is","event:page",["/p1"]]],"order_by":[["visitors","desc"]],"limit":10}`},
}

// monthPlain is the baseline of BenchmarkReportMonth: the plain aggregation of the month's rows.
const monthPlain = "SELECT count(), uniq(visitor_id) FROM events WHERE ts >= toDateTime64('2026-03-01 00:00:00', 3, 'UTC') AND ts < toDateTime64('2026-04-01 00:00:00', 3, 'UTC')"

// BenchmarkReportMonth runs the dashboard's reports over a synthetic month (monthSQL) of
// KYOMI_MONTH_VISITORS visitors (default 100k: 900k rows; issue 26's month is 1000000: 9M rows),
// generated once per run. Each iteration runs the plain aggregation of the same rows
// (monthPlain: count() and uniq(visitor_id), the floor of any report) and then the report, so
// x_plain, the ratio of their times, holds on a machine whose load moves; cpu_x_plain is the
// ratio of the engine's CPU time for the two (server run only: the engine is a child process),
// steadier still when other processes share the cores; report_ms is the report's time alone
// and mem_MB<= an upper bound of its peak memory (see memCeilingMB). Each
// report runs as the report op runs it: compiled, scoped by wrapTrusted, under the default
// limits (1 GiB of memory). With KYOMI_MONTH_LEGACY=1 the former window design (legacyRowsSQL)
// runs too, as legacy/<name>.
//
//	KYOMI_MONTH_VISITORS=1000000 go test -run '^$' -bench BenchmarkReportMonth -benchtime 3x ./collector/query/
func BenchmarkReportMonth(b *testing.B) {
	ctx := context.Background()
	if err := loadMonth(ctx, monthVisitors()); err != nil {
		b.Fatal(err)
	}
	g := &Guard{Store: testStore}
	engines := childPIDs()
	timed := func(b *testing.B, sql string) (time.Duration, time.Duration) {
		cpu0 := cpuTime(engines)
		start := time.Now()
		if _, err := testStore.Select(ctx, g.scopedTrusted(monthWID, sql, 1000).SQL(1001), nil); err != nil {
			b.Fatal(err)
		}
		return time.Since(start), cpuTime(engines) - cpu0
	}
	designs := []struct {
		prefix string
		rows   rowsFunc
	}{{"", rowsSQL}}
	if os.Getenv("KYOMI_MONTH_LEGACY") != "" {
		designs = append(designs, struct {
			prefix string
			rows   rowsFunc
		}{"legacy/", legacyRowsSQL})
	}
	for _, d := range designs {
		for _, r := range monthReports {
			var p ReportParams
			if err := json.Unmarshal([]byte(r.params[:len(r.params)-1]+","+monthRange+"}"), &p); err != nil {
				b.Fatal(err)
			}
			sql, err := compileReport(&p, time.Now(), d.rows)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(d.prefix+r.name, func(b *testing.B) {
				var plain, report, plainCPU, reportCPU time.Duration
				for b.Loop() {
					w, c := timed(b, monthPlain)
					plain, plainCPU = plain+w, plainCPU+c
					w, c = timed(b, sql)
					report, reportCPU = report+w, reportCPU+c
				}
				b.StopTimer()
				b.ReportMetric(float64(report)/float64(plain), "x_plain")
				if len(engines) > 0 && plainCPU > 0 {
					b.ReportMetric(float64(reportCPU)/float64(plainCPU), "cpu_x_plain")
				}
				b.ReportMetric(float64(report.Milliseconds())/float64(b.N), "report_ms")
				b.ReportMetric(memCeilingMB(ctx, sql), "mem_MB<=")
			})
		}
	}
}

// childPIDs are the processes this one started: in the server run, the managed engine
// (enginetest), whose CPU time BenchmarkReportMonth reads; none with CLICKHOUSE_ADDR.
func childPIDs() []int {
	tasks, _ := os.ReadDir("/proc/self/task")
	var pids []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// cpuTime is the CPU time (user and system, all threads) the processes pids have used so far,
// from /proc/PID/stat, in clock ticks of 10 ms: unlike the wall time, it does not grow with the
// load of other processes on the machine.
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (in parentheses, which may hold spaces): utime and stime
		// are the 14th and 15th fields of the line, the 12th and 13th after it.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// loadMonth makes ws_month hold exactly the synthetic month of visitors.
func loadMonth(ctx context.Context, visitors int) error {
	res, err := testStore.Select(ctx, "SELECT count() FROM analytics.events WHERE workspace_id = 'ws_month'", nil)
	if err != nil {
		return err
	}
	if fmt.Sprint(res.Rows[0][0]) == strconv.Itoa(visitors*9) {
		return nil
	}
	if err := testStore.Exec(ctx, "DELETE FROM analytics.events WHERE workspace_id = 'ws_month'"); err != nil {
		return err
	}
	if err := testStore.Exec(ctx, monthSQL(visitors)); err != nil {
		return err
	}
	return testStore.Exec(ctx, "OPTIMIZE TABLE analytics.events FINAL")
}

// memCeilingMB is the smallest memory limit of a ladder (32 MiB to 1 GiB, doubling) under
// which sql answers: an upper bound of its peak memory, within a factor of two. The engine keeps
// no system.query_log to read the peak from. Only a memory error moves up the ladder: another
// (the time limit, on a loaded machine) tries the same limit again, up to three times. 2048
// means it failed at 1 GiB.
func memCeilingMB(ctx context.Context, sql string) float64 {
	for mb := int64(32); mb <= 1024; mb *= 2 {
		g := &Guard{Store: testStore, Limits: Limits{MaxMemory: mb << 20}}
		for try := 0; ; try++ {
			_, err := testStore.Select(ctx, g.scopedTrusted(monthWID, sql, 1000).SQL(1001), nil)
			if err == nil {
				return float64(mb)
			}
			if strings.Contains(err.Error(), "MEMORY_LIMIT_EXCEEDED") || strings.Contains(err.Error(), "memory limit exceeded") || try == 2 {
				break
			}
		}
	}
	return 2048
}
