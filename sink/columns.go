package sink

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// column maps one column of analytics.events to its ClickHouse type and to
// the Event field it holds. The table below is the only place that knows
// the mapping: the DDL, the embedded RowBinary and JSONEachRow encoders and
// the server batch all read it, so they cannot disagree.
type column struct {
	name string
	typ  string // ClickHouse type
	// kind selects the encoding; str/u64/... read the value from an Event.
	kind colKind
	str  func(e *Event) string
	u64  func(e *Event) uint64
	u16  func(e *Event) uint16
	f64  func(e *Event) float64
	bl   func(e *Event) bool
}

type colKind uint8

const (
	kindString colKind = iota
	kindTime
	kindUInt64
	kindUInt16
	kindFloat64
	kindBool
	kindProps
)

// lc is the type of string columns with few distinct values per part.
const lc = "LowCardinality(String)"

func strCol(name, typ string, f func(e *Event) string) column {
	return column{name: name, typ: typ, kind: kindString, str: f}
}

// columns is the column table of analytics.events, in insert order.
var columns = []column{
	strCol("workspace_id", lc, func(e *Event) string { return e.WorkspaceID }),
	strCol("domain", lc, func(e *Event) string { return e.Domain }),
	{name: "ts", typ: "DateTime64(3, 'UTC')", kind: kindTime},
	strCol("name", lc, func(e *Event) string { return e.Name }),
	strCol("hostname", lc, func(e *Event) string { return e.Hostname }),
	strCol("pathname", "String", func(e *Event) string { return e.Pathname }),
	{name: "visitor_id", typ: "UInt64", kind: kindUInt64, u64: func(e *Event) uint64 { return e.VisitorID }},
	{name: "retention_days", typ: "UInt16", kind: kindUInt16, u16: func(e *Event) uint16 { return e.RetentionDays }},
	strCol("referrer", "String", func(e *Event) string { return e.Referrer }),
	strCol("referrer_source", lc, func(e *Event) string { return e.ReferrerSource }),
	strCol("utm_source", lc, func(e *Event) string { return e.UTMSource }),
	strCol("utm_medium", lc, func(e *Event) string { return e.UTMMedium }),
	strCol("utm_campaign", lc, func(e *Event) string { return e.UTMCampaign }),
	strCol("utm_content", "String", func(e *Event) string { return e.UTMContent }),
	strCol("utm_term", "String", func(e *Event) string { return e.UTMTerm }),
	strCol("click_id_param", lc, func(e *Event) string { return e.ClickIDParam }),
	strCol("country_code", lc, func(e *Event) string { return e.CountryCode }),
	strCol("region", lc, func(e *Event) string { return e.Region }),
	strCol("city", lc, func(e *Event) string { return e.City }),
	strCol("browser", lc, func(e *Event) string { return e.Browser }),
	strCol("browser_version", lc, func(e *Event) string { return e.BrowserVersion }),
	strCol("os", lc, func(e *Event) string { return e.OS }),
	strCol("os_version", lc, func(e *Event) string { return e.OSVersion }),
	strCol("device", lc, func(e *Event) string { return e.Device }),
	{name: "interactive", typ: "Bool", kind: kindBool, bl: func(e *Event) bool { return e.Interactive }},
	{name: "revenue_amount", typ: "Float64", kind: kindFloat64, f64: func(e *Event) float64 { return e.RevenueAmount }},
	strCol("revenue_currency", lc, func(e *Event) string { return e.RevenueCurrency }),
	{name: "props", typ: "Map(LowCardinality(String), String)", kind: kindProps},
	// The token of the insert that stored the row: it lets a replay after a crash of the embedded
	// engine find out which of its batches are stored (Embedded.ReplayInsert). Hidden from the
	// query path. One value per part, so it costs next to nothing on disk.
	strCol("batch_token", lc, func(e *Event) string { return e.BatchToken }),
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

// appendRowBinary appends the rows in ClickHouse RowBinary format, in the
// order of columns. It allocates nothing beyond growing dst. The embedded
// store does not use it (binary inline INSERT data can be cut short by the
// engine, see TestInsertBinaryLookingValues); it is kept for the encoder
// benchmarks and for a future binary insert path.
func appendRowBinary(dst []byte, rows []Event) []byte {
	for i := range rows {
		e := &rows[i]
		for ci := range columns {
			c := &columns[ci]
			switch c.kind {
			case kindString:
				dst = appendRBString(dst, c.str(e))
			case kindTime:
				dst = binary.LittleEndian.AppendUint64(dst, uint64(tsMillis(e.TS)))
			case kindUInt64:
				dst = binary.LittleEndian.AppendUint64(dst, c.u64(e))
			case kindUInt16:
				dst = binary.LittleEndian.AppendUint16(dst, c.u16(e))
			case kindFloat64:
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(c.f64(e)))
			case kindBool:
				if c.bl(e) {
					dst = append(dst, 1)
				} else {
					dst = append(dst, 0)
				}
			case kindProps:
				n := min(len(e.PropKeys), len(e.PropValues))
				dst = binary.AppendUvarint(dst, uint64(n))
				for j := range n {
					dst = appendRBString(dst, e.PropKeys[j])
					dst = appendRBString(dst, e.PropValues[j])
				}
			}
		}
	}
	return dst
}

func appendRBString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendJSONEachRow appends the rows in JSONEachRow format, the format the
// embedded store inserts with. It allocates nothing beyond growing dst.
// A non-finite revenue (NaN, ±Inf) is written as 0: JSON cannot carry it
// and one bad value must not fail the whole batch.
func appendJSONEachRow(dst []byte, rows []Event) []byte {
	for i := range rows {
		e := &rows[i]
		dst = append(dst, '{')
		for ci := range columns {
			c := &columns[ci]
			if ci > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, c.name...)
			dst = append(dst, '"', ':')
			switch c.kind {
			case kindString:
				dst = appendJSONString(dst, c.str(e))
			case kindTime:
				dst = append(dst, '"')
				dst = e.TS.UTC().AppendFormat(dst, "2006-01-02 15:04:05.000")
				dst = append(dst, '"')
			case kindUInt64:
				dst = strconv.AppendUint(dst, c.u64(e), 10)
			case kindUInt16:
				dst = strconv.AppendUint(dst, uint64(c.u16(e)), 10)
			case kindFloat64:
				f := c.f64(e)
				if math.IsNaN(f) || math.IsInf(f, 0) {
					f = 0
				}
				dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
			case kindBool:
				dst = strconv.AppendBool(dst, c.bl(e))
			case kindProps:
				dst = append(dst, '{')
				n := min(len(e.PropKeys), len(e.PropValues))
				for j := range n {
					if j > 0 {
						dst = append(dst, ',')
					}
					dst = appendJSONString(dst, e.PropKeys[j])
					dst = append(dst, ':')
					dst = appendJSONString(dst, e.PropValues[j])
				}
				dst = append(dst, '}')
			}
		}
		dst = append(dst, '}', '\n')
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// rowValues returns one row's values in column order, typed as
// clickhouse-go/v2 expects them for a batch Append.
func rowValues(dst []any, e *Event) []any {
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

// quoteString returns s as a ClickHouse single-quoted string literal.
func quoteString(s string) string {
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
