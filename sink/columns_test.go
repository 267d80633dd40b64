package sink

import (
	"testing"
	"time"

	"github.com/kyomi/collector/sink/row/rowtest"
)

func TestQuoteString(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "ws_acme", `'ws_acme'`},
		{"quote", "a'b", `'a\'b'`},
		{"backslash", `a\`, `'a\\'`},
		{"nul and newline", "a\x00\n", `'a\0\n'`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := QuoteString(tc.in); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestQuoteStringRoundTrip runs hostile literals through the engine.
func TestQuoteStringRoundTrip(t *testing.T) {
	for _, s := range []string{"x' OR 1=1 --", `\'`, "a\x00b", "ünï\n"} {
		res, err := testStore.Select(t.Context(), "SELECT "+QuoteString(s), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Rows[0][0]; got != s {
			t.Fatalf("got %q, want %q", got, s)
		}
	}
}

func TestRowValuesMatchColumns(t *testing.T) {
	e := rowtest.Events("ws_x", 1, time.Unix(1700000000, 0), 30)[0]
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
