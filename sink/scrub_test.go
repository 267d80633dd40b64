package sink

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestScrub(t *testing.T) {
	tests := []struct {
		name, msg, sql, want string
	}{
		{"identifier kept", "Table 'analytics.x' does not exist", "", "Table 'analytics.x' does not exist"},
		{"ip redacted", "Cannot parse '10.0.0.1'", "", "Cannot parse '<redacted>'"},
		{"unterminated", "bad 'abc def", "", "bad '<redacted>"},
		{"sql line", "near: insert into t values 42", "insert into t values 42", "near: <statement>"},
		{"column values", "Constraint `c` is violated at row 1. Column values: workspace_id = 'ws_acme', pathname = 'x'. (VIOLATED_CONSTRAINT)", "",
			"Constraint `c` is violated at row 1. Column values:<redacted>. (VIOLATED_CONSTRAINT)"},
		{"bare value", "Invalid base64Decode value (beta.example|/beta-secret-7391/2), cannot be decoded", "", "Invalid base64Decode value (<redacted>), cannot be decoded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := scrub(tc.msg, []byte(tc.sql)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestStoreErrorScrubbed: an engine error reaches the caller typed, with its code and what
// names the failure, but without the statement or the data it quoted.
func TestStoreErrorScrubbed(t *testing.T) {
	tests := []struct {
		name, sql, secret, wantIn string
	}{
		{"syntax", "SELEC 'ua Mozilla/5.0 secret' FROM x", "Mozilla", "SYNTAX_ERROR"},
		{"unknown table", "SELECT '203.0.113.7' FROM default.nope_table", "203.0.113.7", "nope_table"},
		{"bad cast", "SELECT toUInt8('198.51.100.9 secret')", "198.51.100.9", "Code:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testStore.Raw(context.Background(), tc.sql, "TSV")
			if err == nil {
				t.Fatal("want an error")
			}
			var se *serverError
			if !errors.As(err, &se) {
				t.Fatalf("want *serverError, got %T %v", err, err)
			}
			if strings.Contains(err.Error(), tc.secret) || strings.Contains(err.Error(), tc.sql) {
				t.Fatalf("error echoes data: %v", err)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("error %q lacks %q", err, tc.wantIn)
			}
		})
	}
}
