package sink

import (
	"encoding/binary"
	"math"
	"strings"
	"time"

	"github.com/kyomi/collector/sink/row"
)

// column maps one column of analytics.events to its ClickHouse type and to
// the Event field it holds. The table below is the only place that knows
// the mapping: the DDL and the Native encoder of the server store's
// inserts both read it, so they cannot disagree.
type column struct {
	name string
	typ  string // ClickHouse type
	// kind selects the encoding; str/u64/... read the value from an Event.
	kind colKind
	str  func(e *row.Event) string
	u64  func(e *row.Event) uint64
	u16  func(e *row.Event) uint16
	u32  func(e *row.Event) uint32
	u8   func(e *row.Event) uint8
	f64  func(e *row.Event) float64
	bl   func(e *row.Event) bool
}

type colKind uint8

const (
	kindString colKind = iota
	kindTime
	kindUInt64
	kindUInt16
	kindUInt32
	kindUInt8
	kindFloat64
	kindBool
	kindProps
)

// Two types hold strings. lc is for columns with a small, bounded vocabulary (countries,
// browsers, device classes): dictionary-encoded, they group fast in reports and cost little. Open-
// ended ones (workspace ids, hosts, campaigns, cities, versions) are plain String since schema
// version 2: every merge rebuilds a LowCardinality column's dictionaries, and with nineteen such
// columns merges took a fifth of the collector's CPU with the in-process engine it had then
// (BENCHMARKS.md, "Stop 20").
const (
	lc  = "LowCardinality(String)"
	str = "String"
)

func strCol(name, typ string, f func(e *row.Event) string) column {
	return column{name: name, typ: typ, kind: kindString, str: f}
}

// columns is the column table of analytics.events, in insert order.
var columns = []column{
	strCol("workspace_id", str, func(e *row.Event) string { return e.WorkspaceID }),
	strCol("domain", str, func(e *row.Event) string { return e.Domain }),
	{name: "ts", typ: "DateTime64(3, 'UTC')", kind: kindTime},
	strCol("name", str, func(e *row.Event) string { return e.Name }),
	strCol("hostname", str, func(e *row.Event) string { return e.Hostname }),
	strCol("pathname", str, func(e *row.Event) string { return e.Pathname }),
	{name: "visitor_id", typ: "UInt64", kind: kindUInt64, u64: func(e *row.Event) uint64 { return e.VisitorID }},
	{name: "retention_days", typ: "UInt16", kind: kindUInt16, u16: func(e *row.Event) uint16 { return e.RetentionDays }},
	strCol("referrer", str, func(e *row.Event) string { return e.Referrer }),
	strCol("referrer_source", lc, func(e *row.Event) string { return e.ReferrerSource }),
	strCol("utm_source", str, func(e *row.Event) string { return e.UTMSource }),
	strCol("utm_medium", str, func(e *row.Event) string { return e.UTMMedium }),
	strCol("utm_campaign", str, func(e *row.Event) string { return e.UTMCampaign }),
	strCol("utm_content", str, func(e *row.Event) string { return e.UTMContent }),
	strCol("utm_term", str, func(e *row.Event) string { return e.UTMTerm }),
	strCol("click_id_param", lc, func(e *row.Event) string { return e.ClickIDParam }),
	strCol("country_code", lc, func(e *row.Event) string { return e.CountryCode }),
	strCol("region", str, func(e *row.Event) string { return e.Region }),
	strCol("city", str, func(e *row.Event) string { return e.City }),
	strCol("browser", lc, func(e *row.Event) string { return e.Browser }),
	strCol("browser_version", str, func(e *row.Event) string { return e.BrowserVersion }),
	strCol("os", lc, func(e *row.Event) string { return e.OS }),
	strCol("os_version", str, func(e *row.Event) string { return e.OSVersion }),
	strCol("device", lc, func(e *row.Event) string { return e.Device }),
	{name: "interactive", typ: "Bool", kind: kindBool, bl: func(e *row.Event) bool { return e.Interactive }},
	{name: "revenue_amount", typ: "Float64", kind: kindFloat64, f64: func(e *row.Event) float64 { return e.RevenueAmount }},
	strCol("revenue_currency", lc, func(e *row.Event) string { return e.RevenueCurrency }),
	{name: "props", typ: "Map(LowCardinality(String), String)", kind: kindProps},
	// The token of the insert that stored the row: it lets a replay after a crash of the engine
	// or the collector find out which of its batches are stored (Server.ReplayInsert). Hidden from the
	// query path. One value per insert, so it compresses to next to nothing.
	strCol("batch_token", str, func(e *row.Event) string { return e.BatchToken }),
	// Schema version 3: engagement and the tracker version, last so that a table created now and
	// one that migrationEngagement extended have the same column order.
	{name: "scroll_depth", typ: "UInt8", kind: kindUInt8, u8: func(e *row.Event) uint8 { return e.ScrollDepth }},
	{name: "engagement_time", typ: "UInt32", kind: kindUInt32, u32: func(e *row.Event) uint32 { return e.EngagementTime }},
	{name: "tracker_version", typ: "UInt16", kind: kindUInt16, u16: func(e *row.Event) uint16 { return e.TrackerVersion }},
}

// columnList is "workspace_id, domain, ..." for INSERT statements.
var columnList = func() string {
	names := make([]string, len(columns))
	for i, c := range columns {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}()

// tsMillis is the stored timestamp: milliseconds since the epoch, UTC.
func tsMillis(t time.Time) int64 { return t.UnixMilli() }

// appendRBString appends s as ClickHouse writes a String: varint length, bytes.
func appendRBString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// rowValues returns one row's values in column order, typed as
// clickhouse-go/v2 expects them for a batch Append.
func rowValues(dst []any, e *row.Event) []any {
	dst = dst[:0]
	for ci := range columns {
		c := &columns[ci]
		switch c.kind {
		case kindString:
			dst = append(dst, c.str(e))
		case kindTime:
			dst = append(dst, e.TS.UTC())
		case kindUInt64:
			dst = append(dst, c.u64(e))
		case kindUInt16:
			dst = append(dst, c.u16(e))
		case kindUInt32:
			dst = append(dst, c.u32(e))
		case kindUInt8:
			dst = append(dst, c.u8(e))
		case kindFloat64:
			dst = append(dst, c.f64(e))
		case kindBool:
			dst = append(dst, c.bl(e))
		case kindProps:
			n := min(len(e.PropKeys), len(e.PropValues))
			m := make(map[string]string, n)
			for j := range n {
				m[e.PropKeys[j]] = e.PropValues[j]
			}
			dst = append(dst, m)
		}
	}
	return dst
}

// QuoteString returns s as a ClickHouse single-quoted string literal, with
// quotes, backslashes, NUL and newlines escaped.
func QuoteString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case 0:
			b.WriteString(`\0`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// nativeType is the type a column is written with in a Native block: LowCardinality columns as
// plain strings (the INSERT converts them), so the encoder needs no dictionaries.
func (c *column) nativeType() string {
	switch c.kind {
	case kindString:
		return "String"
	case kindProps:
		return "Map(String, String)"
	}
	return c.typ
}

// appendNative appends rows[order[0]], rows[order[1]], ... as one ClickHouse Native block
// (columnar), in the order of columns: the body of the server store's INSERT. It
// allocates nothing beyond growing dst.
func appendNative(dst []byte, rows []row.Event, order []int32) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(columns)))
	dst = binary.AppendUvarint(dst, uint64(len(order)))
	for ci := range columns {
		c := &columns[ci]
		dst = appendRBString(dst, c.name)
		dst = appendRBString(dst, c.nativeType())
		switch c.kind {
		case kindString:
			for _, i := range order {
				dst = appendRBString(dst, c.str(&rows[i]))
			}
		case kindTime:
			for _, i := range order {
				dst = binary.LittleEndian.AppendUint64(dst, uint64(tsMillis(rows[i].TS)))
			}
		case kindUInt64:
			for _, i := range order {
				dst = binary.LittleEndian.AppendUint64(dst, c.u64(&rows[i]))
			}
		case kindUInt16:
			for _, i := range order {
				dst = binary.LittleEndian.AppendUint16(dst, c.u16(&rows[i]))
			}
		case kindUInt32:
			for _, i := range order {
				dst = binary.LittleEndian.AppendUint32(dst, c.u32(&rows[i]))
			}
		case kindUInt8:
			for _, i := range order {
				dst = append(dst, c.u8(&rows[i]))
			}
		case kindFloat64:
			for _, i := range order {
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(c.f64(&rows[i])))
			}
		case kindBool:
			for _, i := range order {
				if c.bl(&rows[i]) {
					dst = append(dst, 1)
				} else {
					dst = append(dst, 0)
				}
			}
		case kindProps:
			// Map(K, V) is Array(Tuple(K, V)): cumulative offsets, then every key, then every value.
			var off uint64
			for _, i := range order {
				off += uint64(min(len(rows[i].PropKeys), len(rows[i].PropValues)))
				dst = binary.LittleEndian.AppendUint64(dst, off)
			}
			for _, i := range order {
				e := &rows[i]
				for j := range min(len(e.PropKeys), len(e.PropValues)) {
					dst = appendRBString(dst, e.PropKeys[j])
				}
			}
			for _, i := range order {
				e := &rows[i]
				for j := range min(len(e.PropKeys), len(e.PropValues)) {
					dst = appendRBString(dst, e.PropValues[j])
				}
			}
		}
	}
	return dst
}
