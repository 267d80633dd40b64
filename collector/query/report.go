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
	"scroll_depth":    deepestScrollSQL("scroll_depth", isEngagement+" AND scroll_depth <= 100"),
	"time_on_page":    "toUInt64(round(ifNotFinite(sumIf(engagement_time, " + isEngagement + ") / 1000 / uniqExactIf(visitor_id, session_no, " + isEngagement + "), 0)))",
}

// deepestScrollSQL is the scroll_depth metric over rows whose depth is sd (0 to 100 where cond
// holds): the average, over the visitors of the result row, of the deepest scroll of each.
// The row's (visitor, 255 - depth) pairs, sorted, put each visitor's deepest first; the first
// pair of each visitor counts. A sorted array is several times cheaper than maxMap, which keeps
// an ordered map per result row.
func deepestScrollSQL(sd, cond string) string {
	a := "arraySort(groupArrayIf((visitor_id, 255 - toInt16(" + sd + ")), " + cond + "))"
	return "toUInt8(round(ifNotFinite(arrayAvg(arrayFilter((s, v, p) -> v != p, arrayMap(x -> 255 - x, (" + a + ").2), (" + a + ").1, " +
		"arrayPopBack(arrayPushFront((" + a + ").1, (" + a + ").1[1] + 1)))), 0)))"
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

// rowNeeds says what the rows of a report must carry; the rows are derived
// only as far as the report reads them.
type rowNeeds struct {
	visits     bool     // session_no, s_duration, s_interactive and the v_* columns
	sessions   bool     // a metric of visits (sessionMetrics), not only of engagements
	engagement bool     // the engagement rows, scroll_depth and engagement_time
	name       bool     // the event name itself (else only whether it is a page view)
	pathname   bool     // the page
	attrs      []string // the visit attributes read (keys of visitAttrs)
	events     bool     // a dimension or filter of the event (event:*, time:*)
	origin     string   // the range's first instant, a DateTime64 literal ("" for none)
	metrics    map[string]bool
	distinct   bool // the only metric is visitors, and every visit attribute read is a dimension
}

// maxCodes bounds the dictionary of a coded visit attribute (see rowsSQL): codes take the 19
// low bits of an event's key. A range with more distinct values takes the tuple path.
var maxCodes = 1<<19 - 1

// rowsFunc returns the WITH clause that defines a report's rows, the name of the CTE that
// holds them and the metric expressions over those rows: one row per event (metricSQL), one per
// visit (visitMetricSQL) or one per visitor (visitorMetricSQL).
type rowsFunc func(where string, n rowNeeds) (with, from string, metrics map[string]string)

// visitMetricSQL maps metric names to aggregate expressions over one row per visit, for reports
// that read no event dimension: the same figures as metricSQL over the visit's events, without
// a distinct count of visits. A visit row has visitor_id, the v_* attributes and, as far as the
// report's metrics read them, s_duration, s_interactive, pv and ev (its page views and events)
// and, with engagement, eng_time and eng_n (the engaged time and number of its engagements) and
// sd_max (its deepest scroll, -1 for none).
var visitMetricSQL = map[string]string{
	"visitors":        "toUInt64(uniqExact(visitor_id))",
	"visits":          "toUInt64(count())",
	"pageviews":       "toUInt64(sum(pv))",
	"events":          "toUInt64(sum(ev))",
	"views_per_visit": "round(sum(pv) / greatest(count(), 1), 2)",
	"bounce_rate":     "toUInt64(round(100 * countIf(s_interactive <= 1) / greatest(count(), 1)))",
	"visit_duration":  "toUInt64(round(ifNotFinite(avg(s_duration), 0)))",
	"scroll_depth":    deepestScrollSQL("sd_max", "sd_max >= 0"),
	"time_on_page":    "toUInt64(round(ifNotFinite(sum(eng_time) / 1000 / countIf(eng_n > 0), 0)))",
}

// visitorMetricSQL maps metric names to aggregate expressions over one row per visitor, for
// reports that read no event dimension and no visit attribute (visitorRowsSQL): the same
// figures as visitMetricSQL over the visitor's visits. A visitor row has nv (its visits), pv
// and ev (its page views and events), nb (its visits with at most one interactive event), dur
// (the sum of its visits' durations, in seconds) and, with engagement, et (the engaged time of
// its engagements that belong to a visit), nve (its visits with such engagements) and sdm (their
// deepest scroll, -1 for none).
var visitorMetricSQL = map[string]string{
	"visitors":        "toUInt64(count())",
	"visits":          "toUInt64(sum(nv))",
	"pageviews":       "toUInt64(sum(pv))",
	"events":          "toUInt64(sum(ev))",
	"views_per_visit": "round(sum(pv) / greatest(sum(nv), 1), 2)",
	"bounce_rate":     "toUInt64(round(100 * sum(nb) / greatest(sum(nv), 1)))",
	"visit_duration":  "toUInt64(round(ifNotFinite(sum(dur) / sum(nv), 0)))",
	"scroll_depth":    "toUInt8(round(ifNotFinite(avgIf(sdm, sdm >= 0), 0)))",
	"time_on_page":    "toUInt64(round(ifNotFinite(sum(et) / 1000 / sum(nve), 0)))",
}

// distinctVisitorMetricSQL is visitMetricSQL for the rows of a report of visitors alone by
// visit attributes that are all dimensions: one row per visitor and distinct value.
var distinctVisitorMetricSQL = map[string]string{"visitors": "toUInt64(count())"}

// visitAttrs maps the visit columns of the per-event rows to the event
// columns they take from the visit's first event.
var visitAttrs = map[string]string{
	"v_source": "referrer_source", "v_utm_source": "utm_source", "v_utm_medium": "utm_medium",
	"v_utm_campaign": "utm_campaign", "v_device": "device", "v_browser": "browser", "v_os": "os",
	"v_country": "country_code",
}

// sessionMetrics need visits.
var sessionMetrics = map[string]bool{"visits": true, "views_per_visit": true, "bounce_rate": true, "visit_duration": true}

// rowsSQL is the rowsFunc of the report op. Its rows read only what the
// report reads (n):
//
//   - A report that reads no visit (visitors, page views and events by page,
//     name or time, filtered on those) is a plain scan of the events.
//   - Otherwise the visits are derived in one aggregation per visitor: each
//     event of the range becomes one Int64 key (its millisecond times 8 plus
//     flags), with the columns the report reads besides in a tuple behind it
//     when there are any, but a single visit attribute read with no other
//     string goes as a code in the key's low bits (codedAggSQL) when the range
//     holds at most maxCodes distinct values; the sorted array then goes through array functions
//     that mark each event that starts a visit (more than 30 minutes after
//     the visitor's previous event), number the visits (running sum), carry a
//     visit's first values forward (arrayFill) and its last values back
//     (arrayReverseFill). Each step is linear in the visitor's events: no
//     lambda captures an array, which ClickHouse would copy for every element.
//   - A report by page or time whose only use of visits is to place its
//     engagements (scroll_depth, time_on_page, no other visit metric, no
//     visit dimension or filter) scans the events, aggregates only their keys
//     and joins the placed engagements (engagementRowsSQL).
//   - A report with no event dimension and no visit attribute (the top line)
//     gets one row per visitor (visitorRowsSQL; visitorMetricSQL).
//   - A report with a visit attribute and no event dimension or filter gets
//     one row per visit (ARRAY JOIN over the visits; visitMetricSQL) with the
//     columns its metrics read, or, for visitors alone by attributes that are
//     all dimensions, one row per visitor and distinct value
//     (distinctVisitorMetricSQL); others one row per event,
//     with the visit's columns (ARRAY JOIN over the events; metricSQL):
//     session_no (the visit's number among the visitor's visits in the range),
//     the visit's attributes (v_*, see visitAttrs), s_duration (seconds from
//     its first to its last event), s_interactive (its interactive events)
//     and, for engagement metrics, scroll_depth and engagement_time.
//
// An engagement joins the visit of the visitor's last event at or before it
// when that event is at most 30 minutes older; the others are left out.
//
// The former design, three window passes over every event (legacyRowsSQL in
// the tests), sorted every column of the range by visitor and failed at the
// 1 GiB query memory limit on a month of 9M events (issue 26);
// TestReportDesignsAgree holds this design to its answers and
// BenchmarkReportMonth measures both. Only comparisons with literals and
// functions that cannot fail on a value appear: the statement runs under
// wrapTrusted.
func rowsSQL(where string, n rowNeeds) (with, from string, metrics map[string]string) {
	if !n.visits && !n.engagement {
		return "WITH e AS (SELECT ts, name, pathname, visitor_id FROM events WHERE " + where + " AND " + notEngagement + ") ", "e", metricSQL
	}
	perVisit := !n.events
	if perVisit && len(n.attrs) == 0 && n.origin != "" {
		return visitorRowsSQL(where, n)
	}
	if n.events && n.engagement && !n.sessions && len(n.attrs) == 0 {
		return engagementRowsSQL(where, n)
	}
	// Each event is one Int64 key, its millisecond times 8 plus three flags:
	// 4 engagement, 2 page view, 1 interactive. Sorting the keys sorts by
	// time, an engagement after the other events of its millisecond. The
	// columns the report reads besides go in a tuple behind the key, when
	// there are any: a plain Int64 array is the cheapest state to aggregate.
	key := "toUnixTimestamp64Milli(ts) * 8 + 4 * (" + isEngagement + ") + 2 * (name = 'pageview') + interactive"
	var cols, arrays, join, out []string
	nameOut := "multiIf(bitAnd(k, 2) = 2, 'pageview', bitAnd(k, 4) = 4, 'engagement', '')"
	if n.name {
		cols = append(cols, "name")
		nameOut = "nm"
		join = append(join, "N AS nm")
	}
	pathOut := "''"
	if n.pathname {
		cols = append(cols, "pathname")
		pathOut = "pathname"
		join = append(join, "P AS pathname")
	}
	out = append(out, "fromUnixTimestamp64Milli(intDiv(k - bitAnd(k, 7), 8), 'UTC') AS ts", nameOut+" AS name", pathOut+" AS pathname",
		"visitor_id", "session_no", "s_duration", "s_interactive")
	// A single visit attribute read with no string of the event goes as a code in the key
	// (see codedAggSQL) when the range holds at most maxCodes distinct values.
	coded := len(n.attrs) == 1 && len(cols) == 0 && n.origin != ""
	attrBase := len(cols) + 2
	for i, a := range n.attrs {
		if !coded {
			cols = append(cols, visitAttrs[a])
		}
		join = append(join, fmt.Sprintf("A%d AS %s", i, a))
		out = append(out, a)
	}
	// Without a string column, the engagement's scroll depth and time go in a second Int64
	// array (depth * 2^32 + time), sorted by the keys: a tuple array costs several times as
	// much to aggregate. Engagements with equal keys (same millisecond) may swap values; they
	// belong to the same visit, so no figure changes.
	packed := n.engagement && len(cols) == 0
	if n.engagement {
		if !packed {
			cols = append(cols, "scroll_depth", "engagement_time")
		}
		join = append(join, "SD AS scroll_depth", "ET AS engagement_time")
		out = append(out, "scroll_depth", "engagement_time")
	}
	if packed && coded {
		arrays = append(arrays, "SD", "ET") // from codedAggSQL
	} else if packed {
		arrays = append(arrays, "arrayMap(g -> toUInt8(intDiv(g, 4294967296)), G) AS SD", "arrayMap(g -> toUInt32(bitAnd(g, 4294967295)), G) AS ET")
	}
	// Tuple element i+2 holds cols[i].
	for i, c := range cols {
		switch c {
		case "name":
			arrays = append(arrays, fmt.Sprintf("r.%d AS N", i+2))
		case "pathname":
			arrays = append(arrays, fmt.Sprintf("r.%d AS P", i+2))
		case "scroll_depth":
			arrays = append(arrays, fmt.Sprintf("r.%d AS SD", i+2))
		case "engagement_time":
			arrays = append(arrays, fmt.Sprintf("r.%d AS ET", i+2))
		}
	}
	for i := range n.attrs {
		if coded {
			// The visit's value: its first event's code (C) or, on the tuple path, string (S).
			pick := "arrayFilter((x, f) -> f, %s, NW)"
			if !perVisit {
				pick = "arrayFill((x, f) -> f, %s, NW)"
			}
			arrays = append(arrays, fmt.Sprintf("arrayMap((c, s) -> if(c > 0, arrayElement(D, c), s), "+pick+", "+pick+") AS A%d", "C", "S", i))
			continue
		}
		if perVisit {
			// The visit's value: its first event's.
			arrays = append(arrays, fmt.Sprintf("arrayFilter((x, f) -> f, r.%d, NW) AS A%d", attrBase+i, i))
		} else {
			// The visit's value: its first event's, carried forward.
			arrays = append(arrays, fmt.Sprintf("arrayFill((x, f) -> f, r.%d, NW) AS A%d", attrBase+i, i))
		}
	}
	if perVisit {
		// One element per visit: its duration and interactive events, read at its first
		// event, and sums over its elements (visitSums).
		// Only the columns the report's metrics read (visitMetricSQL) are joined, so the others
		// are not computed.
		join, out = nil, []string{"visitor_id"}
		m := n.metrics
		if m["visit_duration"] || len(n.attrs) == 0 && !n.engagement {
			arrays = append(arrays, "arrayFilter((x, f) -> f, DUR, NW) AS VDUR")
			join, out = append(join, "VDUR AS s_duration"), append(out, "s_duration")
		}
		if m["bounce_rate"] {
			arrays = append(arrays, "arrayFilter((x, f) -> f, SINT, NW) AS VSINT")
			join, out = append(join, "VSINT AS s_interactive"), append(out, "s_interactive")
		}
		if m["pageviews"] || m["views_per_visit"] {
			arrays = append(arrays, visitSums("arrayMap(k -> toInt64(bitAnd(k, 2) = 2), K)", "VPV"))
			join, out = append(join, "VPV AS pv"), append(out, "pv")
		}
		if m["events"] {
			arrays = append(arrays, visitSums("arrayMap(ne -> toInt64(ne), NE)", "VEV"))
			join, out = append(join, "VEV AS ev"), append(out, "ev")
		}
		for i, a := range n.attrs {
			join = append(join, fmt.Sprintf("A%d AS %s", i, a))
			out = append(out, a)
		}
		if n.engagement {
			// RG: ranges (first element, length) over the visitor's elements from a visit's
			// first event to the next visit's (arrayReduceInRanges; valid by construction,
			// whatever the values).
			arrays = append(arrays, "arrayFilter((i, f) -> f, arrayEnumerate(K), NW) AS SP",
				"arrayMap((s, nx) -> (toUInt64(s), toUInt64(nx - s)), SP, arrayPopFront(arrayPushBack(SP, length(K) + 1))) AS RG",
				visitSums("arrayMap((ne, kp, et) -> if(ne = 0 AND kp, toInt64(et), 0), NE, KEEP, ET)", "VET"),
				visitSums("arrayMap((ne, kp) -> toInt64(ne = 0 AND kp), NE, KEEP)", "VEN"),
				"arrayReduceInRanges('max', RG, arrayMap((ne, kp, sd) -> if(ne = 0 AND kp AND sd <= 100, toInt16(sd), -1), NE, KEEP, SD)) AS VSD")
			join = append(join, "VET AS eng_time", "VEN AS eng_n", "VSD AS sd_max")
			out = append(out, "eng_time", "eng_n", "sd_max")
		}
	}
	filter := ""
	if !n.engagement {
		filter = " AND " + notEngagement
	}
	agg, keys := "arraySort(groupArray("+key+")) AS K", "K"
	if packed {
		agg = "groupArray(" + key + ") AS K0, arraySort(K0) AS K, " +
			"arraySort((x, k) -> k, groupArray(toInt64(scroll_depth) * 4294967296 + engagement_time), K0) AS G"
	} else if len(cols) > 0 {
		agg, keys = "arraySort(groupArray(("+key+", "+strings.Join(cols, ", ")+"))) AS r", "r.1 AS K"
	}
	var b strings.Builder
	if coded {
		b.WriteString(codedAggSQL(where, filter, n, key))
		keys = "K"
	} else {
		b.WriteString("WITH a AS (SELECT visitor_id, " + agg + " FROM events WHERE " + where + filter + " GROUP BY visitor_id), ")
	}
	// T: each element's second (Unix time), as Int64: the differences of seconds are what
	// dateDiff('second', ...) gives, without a DateTime64 per element.
	b.WriteString("b AS (SELECT visitor_id, " + keys + ", " +
		"arrayMap(k -> intDiv(k, 8000), K) AS T, " +
		"arrayMap(k -> toUInt8(bitAnd(k, 4) = 0), K) AS NE, arrayMap(k -> toUInt8(bitAnd(k, 1)), K) AS I, " +
		// LNE: the time of the last event (not engagement) at or before each element; PNE: before it.
		"arrayFill((x, ne) -> ne, arrayMap((x, ne) -> if(ne = 1, x, 0), T, NE), NE) AS LNE, " +
		"arrayPushFront(arrayPopBack(LNE), 0) AS PNE, " +
		// NW: the event starts a visit; SN: the visit's number (an engagement's: its last event's).
		"arrayMap((ne, x, p) -> toUInt8(ne = 1 AND x - p > 1800), NE, T, PNE) AS NW, " +
		"arrayCumSum(NW) AS SN, " +
		"arrayMap((ne, x, l, s) -> ne = 1 OR (s > 0 AND x - l <= 1800), NE, T, LNE, SN) AS KEEP, " +
		// LAST: the event ends its visit (the next event starts one, or there is none).
		"arrayPushBack(arrayPopFront(arrayReverseFill((x, ne) -> ne, arrayMap((ne, w) -> if(ne = 1, w, 1), NE, NW), NE)), 1) AS NX, " +
		"arrayMap((ne, nx) -> toUInt8(ne = 1 AND nx = 1), NE, NX) AS LAST, " +
		// A visit's last values reach its elements back from its last event, then forward to its trailing engagements.
		"arrayMap((e, s) -> e - s, arrayFill((x, ne) -> ne, arrayReverseFill((x, f) -> f, T, LAST), NE), arrayFill((x, f) -> f, T, NW)) AS DUR, " +
		"arrayCumSum(arrayMap((ne, i) -> toUInt8(ne = 1 AND i = 1), NE, I)) AS CI, " +
		"arrayMap((e, s) -> e - s, arrayFill((x, ne) -> ne, arrayReverseFill((x, f) -> f, CI, LAST), NE), " +
		"arrayFill((x, f) -> f, arrayMap((c, ne, i) -> c - toUInt8(ne = 1 AND i = 1), CI, NE, I), NW)) AS SINT")
	for _, a := range arrays {
		b.WriteString(", " + a)
	}
	b.WriteString(" FROM a), ")
	if perVisit && n.distinct && len(n.attrs) > 0 && !n.engagement {
		// Visitors alone, by visit attributes that are all dimensions: each visitor's distinct
		// values of the dimensions (the attributes as the dimensions show them, so two values
		// shown alike count once), one row each, so a visitor is counted once per row of the
		// result without a distinct count.
		var shown, zout []string
		for i, a := range n.attrs {
			shown = append(shown, fmt.Sprintf("arrayMap(%s -> %s, A%d)", a, dimensionSQL["visit:"+strings.TrimPrefix(a, "v_")], i))
			zout = append(zout, fmt.Sprintf("z.%d AS %s", i+1, a))
		}
		b.WriteString("e AS (SELECT " + strings.Join(zout, ", ") + " FROM b ARRAY JOIN arrayDistinct(arrayZip(" + strings.Join(shown, ", ") + ")) AS z) ")
		return b.String(), "e", distinctVisitorMetricSQL
	}
	if perVisit {
		b.WriteString("e AS (SELECT " + strings.Join(out, ", ") + " FROM b ARRAY JOIN " + strings.Join(join, ", ") + ") ")
		return b.String(), "e", visitMetricSQL
	}
	join = append([]string{"K AS k", "SN AS session_no", "DUR AS s_duration", "SINT AS s_interactive", "KEEP AS keep"}, join...)
	b.WriteString("e AS (SELECT " + strings.Join(out, ", ") + " FROM b ARRAY JOIN " + strings.Join(join, ", ") + " WHERE keep) ")
	return b.String(), "e", metricSQL
}

// visitSums is the array alias of the sums of x (an Int64 array over the visitor's elements)
// per visit, from a visit's first event (NW) to the next visit's: running sums read before each
// visit's first event, then their differences. Elements before the first visit (engagements
// that belong to none) count in no visit.
func visitSums(x, alias string) string {
	return "arrayPopFront(arrayDifference(arrayPushBack(arrayFilter((c, f) -> f, arrayMap((c, v) -> c - v, arrayCumSum(" + x + "), " + x + "), NW), arraySum(" + x + ")))) AS " + alias
}

// visitorRowsSQL is rowsSQL for a report of visits with no event dimension and no visit
// attribute (the top line; visits, bounce_rate alone): one row per visitor, no ARRAY JOIN and no
// distinct count. Without engagement, only the second of an event and whether it is
// interactive decide these figures (the 30-minute rule compares seconds, and events of the same
// second are in the same visit whatever their order), so each event is one UInt32, its second
// since the range's start times 2 plus its interactive flag (a range of five years and a day is
// under 2^28 s). Sorted, the differences of seconds (D) cut the visits: a visit starts at the
// first event and wherever D exceeds 1800; a visitor's visits' durations add up to the sum of
// the differences that do not; the interactive events of each visit are differences of a
// running sum read at each visit's first event (visitSums). With engagement, the keys are
// rowsSQL's (milliseconds since the range's start times 8 plus the flags), so an engagement
// follows the events at or before it; the engagements' depth and time ride apart, in a sorted
// (key, depth and time) array of the engagements only, in the order of the engagements' keys
// (engagements of equal keys are placed alike); the events alone then go through the same
// differences.
func visitorRowsSQL(where string, n rowNeeds) (with, from string, metrics map[string]string) {
	visits := "arrayPopFront(arrayDifference(S)) AS D, arrayPushFront(arrayMap(d -> toUInt8(d > 1800), D), 1) AS NW, " +
		visitSums("I", "VI") + ", length(VI) AS nv, arrayCount(x -> x <= 1, VI) AS nb, arraySum(d -> if(d <= 1800, d, 0), D) AS dur"
	if !n.engagement {
		// toUInt32 around the whole: a UInt32 times 2 would widen to UInt64.
		key := "toUInt32((toUnixTimestamp(ts) - toUnixTimestamp(" + n.origin + ")) * 2 + interactive)"
		return "WITH a AS (SELECT arraySort(groupArray(" + key + ")) AS K, countIf(name = 'pageview') AS pv, count() AS ev " +
			"FROM events WHERE " + where + " AND " + notEngagement + " GROUP BY visitor_id), " +
			"b AS (SELECT pv, ev, arrayMap(k -> toInt64(intDiv(k, 2)), K) AS S, arrayMap(k -> toInt64(bitAnd(k, 1)), K) AS I, " + visits + " FROM a), " +
			"e AS (SELECT nv, pv, ev, nb, dur FROM b) ", "e", visitorMetricSQL
	}
	key := "(toUnixTimestamp64Milli(ts) - toUnixTimestamp64Milli(" + n.origin + ")) * 8 + 4 * (" + isEngagement + ") + 2 * (name = 'pageview') + interactive"
	// T: the seconds since the range's start; LNE: the second of the last event (not
	// engagement) at or before each element, far before the range for none; SN: the visit's
	// number; KEEP: the engagement belongs to its last event's visit.
	return "WITH a AS (SELECT arraySort(groupArray(" + key + ")) AS K, " +
		"arraySort(groupArrayIf((" + key + ", toInt64(scroll_depth) * 4294967296 + engagement_time), " + isEngagement + ")) AS GT, " +
		"countIf(name = 'pageview') AS pv, countIf(" + notEngagement + ") AS ev FROM events WHERE " + where + " GROUP BY visitor_id), " +
		"b AS (SELECT pv, ev, GT.2 AS G, arrayMap(k -> intDiv(k, 8000), K) AS T, arrayMap(k -> toUInt8(bitAnd(k, 4) = 0), K) AS NE, " +
		"arrayFill((x, ne) -> ne, arrayMap((x, ne) -> if(ne = 1, x, -1000000), T, NE), NE) AS LNE, " +
		"arrayCumSum(arrayMap((ne, x, p) -> toUInt8(ne = 1 AND x - p > 1800), NE, T, arrayPushFront(arrayPopBack(LNE), -1000000))) AS SN, " +
		"arrayFilter((kp, ne) -> ne = 0, arrayMap((x, l, s) -> s > 0 AND x - l <= 1800, T, LNE, SN), NE) AS KEEP, " +
		"arrayFilter((s, ne) -> ne = 0, SN, NE) AS GSN, " +
		"arrayFilter((x, ne) -> ne = 1, T, NE) AS S, arrayFilter((k, ne) -> ne = 1, arrayMap(k -> toInt64(bitAnd(k, 1)), K), NE) AS I, " + visits + ", " +
		"arraySum((g, kp) -> if(kp, bitAnd(g, 4294967295), 0), G, KEEP) AS et, " +
		"length(arrayDistinct(arrayFilter((s, kp) -> kp, GSN, KEEP))) AS nve, " +
		"arrayMax(arrayPushBack(arrayMap((g, kp) -> if(kp AND intDiv(g, 4294967296) <= 100, toInt16(intDiv(g, 4294967296)), -1), G, KEEP), -1)) AS sdm " +
		"FROM a WHERE ev > 0), " +
		"e AS (SELECT nv, pv, ev, nb, dur, et, nve, sdm FROM b) ", "e", visitorMetricSQL
}

// codedAggSQL is the per-visitor aggregation (the CTE a, after the dictionary D) of rowsSQL for a
// report that reads one visit attribute and no other string of the event. D is the sorted
// distinct values of the attribute in the range, one scan of one column (engagements included,
// whose values no visit takes: a superset codes the same order, and the scan need not read the
// event's name); when there are at
// most maxCodes, each event is one Int64, (its millisecond since the range's start (origin)
// times 8 plus the flags of key) times 2^19 plus the code of its value (its position in D,
// from 1), so the aggregation moves no string. The codes sort as the values do, so the keys
// sort as the (key, value) tuples of the tuple path, ties included. With more values the tuple
// path runs instead: both branches are in the statement, one reads no row (its WHERE is false
// once D is known). Both give visitor_id, K (the keys of rowsSQL), C and S: the codes and the
// strings of the values, one of them zeros or empty strings, and, for engagement metrics, SD
// and ET. A range of at most five years and a day is under 2^38 ms, so a coded key is under 2^60.
func codedAggSQL(where, filter string, n rowNeeds, key string) string {
	col := visitAttrs[n.attrs[0]]
	lim := strconv.Itoa(maxCodes)
	rel := strings.Replace(key, "toUnixTimestamp64Milli(ts)", "(toUnixTimestamp64Milli(ts) - toUnixTimestamp64Milli("+n.origin+"))", 1)
	kc := "(" + rel + ") * 524288 + transform(" + col + ", D, arrayEnumerate(D), 0)"
	decode := "arrayMap(x -> intDiv(x, 524288) + toUnixTimestamp64Milli(" + n.origin + ") * 8, R) AS K, " +
		"arrayMap(x -> toUInt32(bitAnd(x, 524287)), R) AS C, arrayMap(x -> '', R) AS S"
	agg, tupleAgg, tupleOut := "arraySort(groupArray("+kc+")) AS R", "arraySort(groupArray(("+key+", "+col+"))) AS r", "r.1 AS K, arrayMap(x -> toUInt32(0), K) AS C, r.2 AS S"
	if n.engagement {
		// Depth and time in a second Int64 array sorted by the keys, as rowsSQL's packed path.
		agg = "groupArray(" + kc + ") AS R0, arraySort(R0) AS R, " +
			"arraySort((x, k) -> k, groupArray(toInt64(scroll_depth) * 4294967296 + engagement_time), R0) AS G"
		decode += ", arrayMap(g -> toUInt8(intDiv(g, 4294967296)), G) AS SD, arrayMap(g -> toUInt32(bitAnd(g, 4294967295)), G) AS ET"
		tupleAgg = "arraySort(groupArray((" + key + ", " + col + ", scroll_depth, engagement_time))) AS r"
		tupleOut += ", r.3 AS SD, r.4 AS ET"
	}
	return "WITH (SELECT arraySort(groupUniqArray(" + strconv.Itoa(maxCodes+1) + ")(" + col + ")) FROM events WHERE " + where + ") AS D, " +
		"a AS (SELECT visitor_id, " + decode + " FROM (SELECT visitor_id, " + agg + " FROM events WHERE " + where + filter +
		" AND length(D) <= " + lim + " GROUP BY visitor_id) " +
		"UNION ALL SELECT visitor_id, " + tupleOut + " FROM (SELECT visitor_id, " + tupleAgg + " FROM events WHERE " + where + filter +
		" AND length(D) > " + lim + " GROUP BY visitor_id)), "
}

// engagementRowsSQL is rowsSQL for a report by event that reads visits only to place its
// engagements (pages or time with scroll_depth and time_on_page, no visit metric, dimension or
// filter): the events come from a plain scan, and the per-visitor aggregation carries one Int64
// key per event (rowsSQL's), no string. It places each engagement as rowsSQL does and gives the
// keys and visit numbers of the engagements that belong to a visit (GS, distinct: engagements of
// equal keys are placed alike); the engagements' rows join them on (visitor, key) for their page,
// depth and time.
func engagementRowsSQL(where string, n rowNeeds) (with, from string, metrics map[string]string) {
	key := "toUnixTimestamp64Milli(ts) * 8 + 4 * (" + isEngagement + ") + 2 * (name = 'pageview') + interactive"
	pathOut := "''"
	if n.pathname {
		pathOut = "g.pathname"
	}
	return "WITH a AS (SELECT visitor_id, arraySort(groupArray(" + key + ")) AS K, countIf(" + isEngagement + ") AS ng " +
		"FROM events WHERE " + where + " GROUP BY visitor_id), " +
		"b AS (SELECT visitor_id, " +
		"arrayMap(k -> intDiv(k, 8000), K) AS T, " +
		"arrayMap(k -> toUInt8(bitAnd(k, 4) = 0), K) AS NE, " +
		"arrayFill((x, ne) -> ne, arrayMap((x, ne) -> if(ne = 1, x, 0), T, NE), NE) AS LNE, " +
		"arrayPushFront(arrayPopBack(LNE), 0) AS PNE, " +
		"arrayCumSum(arrayMap((ne, x, p) -> toUInt8(ne = 1 AND x - p > 1800), NE, T, PNE)) AS SN, " +
		"arrayDistinct(arrayFilter((z, ne, x, l, s) -> ne = 0 AND s > 0 AND x - l <= 1800, arrayZip(K, SN), NE, T, LNE, SN)) AS GS " +
		"FROM a WHERE ng > 0), " +
		"e AS (SELECT ts, name, pathname, visitor_id, toUInt64(0) AS session_no, toUInt8(0) AS scroll_depth, toUInt32(0) AS engagement_time " +
		"FROM events WHERE " + where + " AND " + notEngagement + " " +
		"UNION ALL SELECT g.ts, 'engagement', " + pathOut + ", g.visitor_id, k.sn, g.scroll_depth, g.engagement_time " +
		"FROM (SELECT ts, pathname, visitor_id, scroll_depth, engagement_time, " + key + " AS gk FROM events WHERE " + where + " AND " + isEngagement + ") AS g " +
		"INNER JOIN (SELECT visitor_id, gs.1 AS gk, gs.2 AS sn FROM b ARRAY JOIN GS AS gs) AS k ON g.visitor_id = k.visitor_id AND g.gk = k.gk) ", "e", metricSQL
}

// read notes that the report reads dimension d (validated).
func (n *rowNeeds) read(d string) {
	switch {
	case d == "event:name":
		n.name, n.events = true, true
	case d == "event:page":
		n.pathname, n.events = true, true
	case strings.HasPrefix(d, "time:"):
		n.events = true
	case strings.HasPrefix(d, "visit:"):
		n.visits = true
		col := "v_" + strings.TrimPrefix(d, "visit:")
		if visitAttrs[col] != "" {
			for _, a := range n.attrs {
				if a == col {
					return
				}
			}
			n.attrs = append(n.attrs, col)
		}
	}
}

// spillGroupBy is where a report's aggregation spills to disk: 200 MB, a fifth of the query
// memory limit (1 GiB), measured to keep a month of 9M events (1M visitors) under 256 MiB
// (BenchmarkReportMonth).
const spillGroupBy = 200_000_000

// maxFilterValue bounds one filter value.
const maxFilterValue = 512

// CompileReport turns report params into one SELECT over `events` (to be
// scoped by the guard's wrapper). User values enter the SQL only as
// validated names from fixed tables or as quoteString literals.
func CompileReport(p *ReportParams, now time.Time) (string, error) {
	return compileReport(p, now, rowsSQL)
}

// compileReport is CompileReport with the per-event rows given by rows (the
// equivalence test passes the former window design).
func compileReport(p *ReportParams, now time.Time, rows rowsFunc) (string, error) {
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

	need := rowNeeds{origin: "toDateTime64(" + quoteString(from.Format("2006-01-02 15:04:05")) + ", 3, 'UTC')", metrics: map[string]bool{}}
	for _, m := range p.Metrics {
		need.metrics[m] = true
		need.engagement = need.engagement || engagementMetrics[m]
		need.visits = need.visits || sessionMetrics[m] || engagementMetrics[m]
		need.sessions = need.sessions || sessionMetrics[m]
	}
	engagement := need.engagement
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
		if _, ok := metricSQL[m]; !ok {
			return "", perr(CodeInvalidRequest, "unknown metric %s", safeName(m))
		}
		if known[m] {
			return "", perr(CodeInvalidRequest, "duplicate metric %s", safeName(m))
		}
		known[m] = true
	}
	var conds []string
	for _, raw := range p.Filters {
		c, dim, err := compileFilter(raw)
		if err != nil {
			return "", err
		}
		conds = append(conds, c)
		need.read(dim)
	}
	for _, d := range p.Dimensions {
		need.read(d)
	}
	need.distinct = len(p.Metrics) == 1 && p.Metrics[0] == "visitors"
	for _, a := range need.attrs {
		need.distinct = need.distinct && known["visit:"+strings.TrimPrefix(a, "v_")]
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

	with, source, metrics := rows(where, need)
	for _, m := range p.Metrics {
		sel = append(sel, metrics[m]+" AS `"+m+"`")
	}
	var b strings.Builder
	b.WriteString(with)
	b.WriteString("SELECT " + strings.Join(sel, ", ") + " FROM " + source)
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
	// The per-visitor aggregation of a month holds every event of the range: past
	// spillGroupBy bytes it goes to temporary files instead of growing to the query's memory
	// limit. Not a limit, so the guard's SETTINGS (the statement's outermost) keep theirs.
	b.WriteString(" SETTINGS max_bytes_before_external_group_by = " + strconv.Itoa(spillGroupBy))
	return b.String(), nil
}

func compileFilter(raw json.RawMessage) (cond, dim string, err error) {
	var f []json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil || len(f) != 3 {
		return "", "", perr(CodeInvalidRequest, "a filter is [operator, dimension, [values]]")
	}
	var op string
	var vals []string
	if json.Unmarshal(f[0], &op) != nil || json.Unmarshal(f[1], &dim) != nil || json.Unmarshal(f[2], &vals) != nil {
		return "", "", perr(CodeInvalidRequest, "a filter is [operator, dimension, [values]] of strings")
	}
	col, ok := dimensionSQL[dim]
	if !ok || strings.HasPrefix(dim, "time:") {
		return "", "", perr(CodeInvalidRequest, "cannot filter on %s", safeName(dim))
	}
	if len(vals) == 0 || len(vals) > 100 {
		return "", "", perr(CodeInvalidRequest, "a filter needs 1 to 100 values")
	}
	q := make([]string, len(vals))
	for i, v := range vals {
		if len(v) > maxFilterValue || !utf8.ValidString(v) {
			return "", "", perr(CodeInvalidRequest, "filter values must be UTF-8 of at most %d bytes", maxFilterValue)
		}
		q[i] = quoteString(v)
	}
	list := strings.Join(q, ", ")
	switch op {
	case "is":
		return col + " IN (" + list + ")", dim, nil
	case "is_not":
		return col + " NOT IN (" + list + ")", dim, nil
	case "contains":
		return "multiSearchAny(" + col + ", [" + list + "])", dim, nil
	case "matches":
		return "multiMatchAny(" + col + ", [" + list + "])", dim, nil
	}
	return "", "", perr(CodeInvalidRequest, "unknown filter operator %s", safeName(op))
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
