package sink

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"uote", "back\\slash", "nl\n\t\r", "\x00\x1f", "ünï", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("invalid JSON %q for %q: %v", out, s, err)
		}
		if want := strings.ToValidUTF8(s, "\uFFFD"); got != want && utf8.ValidString(s) {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
}

func TestQuoteString(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "ws_acme", `'ws_acme'`},
		{"quote", "a'b", `'a\'b'`},
		{"backslash", `a\`, `'a\\'`},
		{"nul and newline", "a\x00\n", `'a\0\n'`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := quoteString(tc.in); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestQuoteStringRoundTrip runs hostile literals through the engine.
func TestQuoteStringRoundTrip(t *testing.T) {
	for _, s := range []string{"x' OR 1=1 --", `\'`, "a\x00b", "ünï\n"} {
		res, err := testStore.Select(t.Context(), "SELECT "+quoteString(s), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Rows[0][0]; got != s {
			t.Fatalf("got %q, want %q", got, s)
		}
	}
}

func TestRowValuesMatchColumns(t *testing.T) {
	e := sampleEvents("ws_x", 1, time.Unix(1700000000, 0), 30)[0]
	vals := rowValues(nil, &e)
	if len(vals) != len(columns) {
		t.Fatalf("%d values for %d columns", len(vals), len(columns))
	}
	if vals[0] != "ws_x" || vals[6] != e.VisitorID || vals[7] != uint16(30) {
		t.Fatalf("values: %v", vals[:8])
	}
	m, ok := vals[27].(map[string]string)
	if columns[27].name != "props" || !ok || m["plan"] != "pro" {
		t.Fatalf("props: %#v", vals[27])
	}
}

func TestJSONEachRowNonFiniteRevenue(t *testing.T) {
	tests := []struct {
		name string
		v    float64
	}{
		{"nan", math.NaN()},
		{"inf", math.Inf(1)},
		{"-inf", math.Inf(-1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := sampleEvents("ws_nan", 1, time.Unix(1700000000, 0), 30)
			e[0].RevenueAmount = tc.v
			var m map[string]any
			if err := json.Unmarshal(appendJSONEachRow(nil, e), &m); err != nil {
				t.Fatalf("invalid JSON: %v", err)
			}
			if m["revenue_amount"] != 0.0 {
				t.Fatalf("revenue_amount %v, want 0", m["revenue_amount"])
			}
		})
	}
}
