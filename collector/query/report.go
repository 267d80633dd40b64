package query

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ReportParams are the params of the report op, modelled on Plausible's
// Stats API v2:
//
//	{"metrics":["visitors","pageviews"],"dimensions":["visit:source"],
//	 "filters":[["is","visit:country",["DE","FR"]]],
//	 "date_range":["2026-01-01","2026-01-31"],
//	 "order_by":[["visitors","desc"]],"limit":100,"offset":0}
//
// date_range is a pair of inclusive UTC dates or "day" (today), "7d" and
// "30d" (that many days ending today, inclusive) or "month" (this month up
// to today). Sessions are derived at query time: a visitor's events belong
// to one visit until a gap of more than 30 minutes. A bounce is a visit
// with at most one interactive event. Visit dimensions (visit:*) are taken
// from the first event of the visit; event dimensions from each event.
//
// Engagement rows (name "engagement") are not events: they are left out of
// the visits and of every metric but scroll_depth and time_on_page, which
// only they feed. An engagement belongs to the visit of the visitor's last
// event at or before it, when that event is at most 30 minutes older (as
// Plausible drops an engagement without a session); others are not counted.
type ReportParams struct {
	Metrics    []string          `json:"metrics"`
	Dimensions []string          `json:"dimensions"`
	Filters    []json.RawMessage `json:"filters"`
	DateRange  json.RawMessage   `json:"date_range"`
	OrderBy    [][]string        `json:"order_by"`
	Limit      int               `json:"limit"`
	Offset     int               `json:"offset"`
}

// metricSQL maps metric names to aggregate expressions over the per-event
// rows of the report (see CompileReport).
//
// scroll_depth and time_on_page are Plausible's: scroll_depth averages, over
// the visitors of each result row, the deepest scroll a visitor reported
// there (sd values over 100, "not sent", are skipped); time_on_page is the
// engaged time of the row's engagements, in seconds, divided by the visits
// that sent them (lib/plausible/stats: sum(engagement_time) / 1000 /
// uniq(session)).
var metricSQL = map[string]string{
	"visitors":        "toUInt64(uniqExactIf(visitor_id, " + notEngagement + "))",
	"visits":          "toUInt64(uniqExactIf(visitor_id, session_no, " + notEngagement + "))",
	"pageviews":       "toUInt64(countIf(name = 'pageview'))",
	"events":          "toUInt64(countIf(" + notEngagement + "))",
	"views_per_visit": "round(countIf(name = 'pageview') / greatest(uniqExactIf(visitor_id, session_no, " + notEngagement + "), 1), 2)",
	"bounce_rate":     "toUInt64(round(100 * uniqExactIf(visitor_id, session_no, s_interactive <= 1 AND " + notEngagement + ") / greatest(uniqExactIf(visitor_id, session_no, " + notEngagement + "), 1)))",
	"visit_duration":  "toUInt64(round(ifNotFinite(arrayAvg(arrayMap(x -> x.3, groupUniqArrayIf((visitor_id, session_no, s_duration), " + notEngagement + "))), 0)))",
	"scroll_depth":    "toUInt8(round(ifNotFinite(arrayAvg((maxMapIf([visitor_id], [toUInt16(scroll_depth)], " + isEngagement + " AND scroll_depth <= 100)).2), 0)))",
	"time_on_page":    "toUInt64(round(ifNotFinite(sumIf(engagement_time, " + isEngagement + ") / 1000 / uniqExactIf(visitor_id, session_no, " + isEngagement + "), 0)))",
}

const (
	isEngagement  = "name = 'engagement'"
	notEngagement = "name != 'engagement'"
)

// engagementMetrics need the engagement rows in the report's row set.
var engagementMetrics = map[string]bool{"scroll_depth": true, "time_on_page": true}

// dimensionSQL maps dimensions to columns of the per-event rows.
var dimensionSQL = map[string]string{
	"event:name":         "name",
	"event:page":         "pathname",
	"visit:source":       "if(v_source = '', 'Direct / None', v_source)",
	"visit:utm_source":   "v_utm_source",
	"visit:utm_medium":   "v_utm_medium",
	"visit:utm_campaign": "v_utm_campaign",
	"visit:device":       "v_device",
	"visit:browser":      "v_browser",
	"visit:os":           "v_os",
	"visit:country":      "v_country",
	"time:hour":          "toString(toStartOfHour(ts))",
	"time:day":           "toString(toDate(ts))",
	"time:week":          "toString(toMonday(ts))",
	"time:month":         "toString(toStartOfMonth(ts))",
}

// sessionsSQL derives visits: is_new marks an event more than 30 minutes
// after the visitor's previous one, session_no numbers the visits, and the
// visit's attributes come from its first event.
const sessionsSQL = `WITH ` +
	`e1 AS (SELECT ts, name, pathname, visitor_id, interactive, referrer_source, utm_source, utm_medium, utm_campaign, device, browser, os, country_code, ` +
	`if(dateDiff('second', lagInFrame(ts, 1, toDateTime64(0, 3, 'UTC')) OVER (PARTITION BY visitor_id ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW), ts) > 1800, 1, 0) AS is_new ` +
	`FROM events WHERE %[1]s AND name != 'engagement'), ` +
	`e2 AS (SELECT *, sum(is_new) OVER (PARTITION BY visitor_id ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session_no FROM e1), ` +
	`e3 AS (SELECT *, ` +
	`first_value(referrer_source) OVER s AS v_source, first_value(utm_source) OVER s AS v_utm_source, ` +
	`first_value(utm_medium) OVER s AS v_utm_medium, first_value(utm_campaign) OVER s AS v_utm_campaign, ` +
	`first_value(device) OVER s AS v_device, first_value(browser) OVER s AS v_browser, ` +
	`first_value(os) OVER s AS v_os, first_value(country_code) OVER s AS v_country, ` +
	`dateDiff('second', min(ts) OVER s, max(ts) OVER s) AS s_duration, countIf(interactive) OVER s AS s_interactive ` +
	`FROM e2 WINDOW s AS (PARTITION BY visitor_id, session_no ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) `

// engagementSQL adds the engagement rows to the rows of e3 (sessionsSQL), in e4: each takes the
// visit, and the visit's attributes, of the visitor's last event at or before it, at most 30
// minutes older (ASOF JOIN); an engagement without one is left out.
const engagementSQL = `, e4 AS (` +
	`SELECT ts, name, pathname, visitor_id, session_no, v_source, v_utm_source, v_utm_medium, v_utm_campaign, ` +
	`v_device, v_browser, v_os, v_country, s_duration, s_interactive, toUInt8(0) AS scroll_depth, toUInt32(0) AS engagement_time FROM e3 ` +
	`UNION ALL ` +
	`SELECT g.ts, 'engagement', g.pathname, g.visitor_id, s.session_no, s.v_source, s.v_utm_source, s.v_utm_medium, s.v_utm_campaign, ` +
	`s.v_device, s.v_browser, s.v_os, s.v_country, s.s_duration, s.s_interactive, g.scroll_depth, g.engagement_time ` +
	`FROM (SELECT ts, pathname, visitor_id, scroll_depth, engagement_time FROM events WHERE %s AND name = 'engagement') AS g ` +
	`ASOF INNER JOIN e3 AS s ON g.visitor_id = s.visitor_id AND g.ts >= s.ts ` +
	`WHERE dateDiff('second', s.ts, g.ts) <= 1800) `

// maxFilterValue bounds one filter value.
const maxFilterValue = 512

// CompileReport turns report params into one SELECT over `events` (to be
// scoped by the guard's wrapper). User values enter the SQL only as
// validated names from fixed tables or as quoteString literals.
func CompileReport(p *ReportParams, now time.Time) (string, error) {
	if len(p.Metrics) == 0 {
		return "", perr(CodeInvalidRequest, "report needs at least one metric")
	}
	if p.Limit < 0 || p.Offset < 0 || p.Offset > 1_000_000 {
		return "", perr(CodeInvalidRequest, "limit and offset must be >= 0")
	}
	from, to, err := dateRange(p.DateRange, now)
	if err != nil {
		return "", err
	}
	where := fmt.Sprintf("ts >= toDateTime64(%s, 3, 'UTC') AND ts < toDateTime64(%s, 3, 'UTC')",
		quoteString(from.Format("2006-01-02 15:04:05")), quoteString(to.Format("2006-01-02 15:04:05")))

	engagement := false
	for _, m := range p.Metrics {
		engagement = engagement || engagementMetrics[m]
	}
	var sel, group []string
	known := map[string]bool{}
	for _, d := range p.Dimensions {
		col, ok := dimensionSQL[d]
		if !ok {
			return "", perr(CodeInvalidRequest, "unknown dimension %s", safeName(d))
		}
		if known[d] {
			return "", perr(CodeInvalidRequest, "duplicate dimension %s", safeName(d))
		}
		if engagement && d != "event:page" && !strings.HasPrefix(d, "time:") {
			return "", perr(CodeInvalidRequest, "scroll_depth and time_on_page go with the dimensions event:page and time:* only")
		}
		known[d] = true
		sel = append(sel, col+" AS `"+d+"`")
		group = append(group, "`"+d+"`")
	}
	for _, m := range p.Metrics {
		expr, ok := metricSQL[m]
		if !ok {
			return "", perr(CodeInvalidRequest, "unknown metric %s", safeName(m))
		}
		if known[m] {
			return "", perr(CodeInvalidRequest, "duplicate metric %s", safeName(m))
		}
		known[m] = true
		sel = append(sel, expr+" AS `"+m+"`")
	}
	var conds []string
	for _, raw := range p.Filters {
		c, err := compileFilter(raw)
		if err != nil {
			return "", err
		}
		conds = append(conds, c)
	}
	var order []string
	for _, o := range p.OrderBy {
		if len(o) != 2 || !known[o[0]] || (o[1] != "asc" && o[1] != "desc") {
			return "", perr(CodeInvalidRequest, "order_by entries are [metric or dimension, \"asc\"|\"desc\"] of the report")
		}
		order = append(order, "`"+o[0]+"` "+strings.ToUpper(o[1]))
	}
	if len(order) == 0 {
		for _, d := range p.Dimensions {
			if strings.HasPrefix(d, "time:") {
				order = append(order, "`"+d+"` ASC")
			}
		}
		order = append(order, "`"+p.Metrics[0]+"` DESC")
	}
	// Ties are broken by every dimension so pages are stable.
	for _, g := range group {
		order = append(order, g+" ASC")
	}

	var b strings.Builder
	fmt.Fprintf(&b, sessionsSQL, where)
	rows := "e3"
	if engagement {
		fmt.Fprintf(&b, engagementSQL, where)
		rows = "e4"
	}
	b.WriteString("SELECT " + strings.Join(sel, ", ") + " FROM " + rows)
	if len(conds) > 0 {
		b.WriteString(" WHERE " + strings.Join(conds, " AND "))
	}
	if len(group) > 0 {
		b.WriteString(" GROUP BY " + strings.Join(group, ", "))
	}
	b.WriteString(" ORDER BY " + strings.Join(order, ", "))
	if p.Limit > 0 {
		b.WriteString(" LIMIT " + strconv.Itoa(p.Limit))
	}
	if p.Offset > 0 {
		if p.Limit == 0 {
			b.WriteString(" LIMIT 1000000")
		}
		b.WriteString(" OFFSET " + strconv.Itoa(p.Offset))
	}
	return b.String(), nil
}

func compileFilter(raw json.RawMessage) (string, error) {
	var f []json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil || len(f) != 3 {
		return "", perr(CodeInvalidRequest, "a filter is [operator, dimension, [values]]")
	}
	var op, dim string
	var vals []string
	if json.Unmarshal(f[0], &op) != nil || json.Unmarshal(f[1], &dim) != nil || json.Unmarshal(f[2], &vals) != nil {
		return "", perr(CodeInvalidRequest, "a filter is [operator, dimension, [values]] of strings")
	}
	col, ok := dimensionSQL[dim]
	if !ok || strings.HasPrefix(dim, "time:") {
		return "", perr(CodeInvalidRequest, "cannot filter on %s", safeName(dim))
	}
	if len(vals) == 0 || len(vals) > 100 {
		return "", perr(CodeInvalidRequest, "a filter needs 1 to 100 values")
	}
	q := make([]string, len(vals))
	for i, v := range vals {
		if len(v) > maxFilterValue || !utf8.ValidString(v) {
			return "", perr(CodeInvalidRequest, "filter values must be UTF-8 of at most %d bytes", maxFilterValue)
		}
		q[i] = quoteString(v)
	}
	list := strings.Join(q, ", ")
	switch op {
	case "is":
		return col + " IN (" + list + ")", nil
	case "is_not":
		return col + " NOT IN (" + list + ")", nil
	case "contains":
		return "multiSearchAny(" + col + ", [" + list + "])", nil
	case "matches":
		return "multiMatchAny(" + col + ", [" + list + "])", nil
	}
	return "", perr(CodeInvalidRequest, "unknown filter operator %s", safeName(op))
}

func dateRange(raw json.RawMessage, now time.Time) (from, to time.Time, err error) {
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "day":
			return today, today.AddDate(0, 0, 1), nil
		case "7d":
			return today.AddDate(0, 0, -6), today.AddDate(0, 0, 1), nil
		case "30d":
			return today.AddDate(0, 0, -29), today.AddDate(0, 0, 1), nil
		case "month":
			return time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC), today.AddDate(0, 0, 1), nil
		}
		return from, to, perr(CodeInvalidRequest, "date_range must be day, 7d, 30d, month or [from, to]")
	}
	var pair []string
	if json.Unmarshal(raw, &pair) != nil || len(pair) != 2 {
		return from, to, perr(CodeInvalidRequest, "date_range must be day, 7d, 30d, month or [from, to]")
	}
	from, err1 := time.Parse("2006-01-02", pair[0])
	last, err2 := time.Parse("2006-01-02", pair[1])
	if err1 != nil || err2 != nil || last.Before(from) || last.Sub(from) > 5*366*24*time.Hour {
		return from, to, perr(CodeInvalidRequest, "date_range dates must be YYYY-MM-DD, from <= to, within 5 years")
	}
	return from, last.AddDate(0, 0, 1), nil
}
