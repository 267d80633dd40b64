package collector

import (
	"fmt"
	"strings"
	"testing"
)

// TestURLHostOneParser checks, on rows read back from the engine, that one parse of u decides the
// host of both the domain check and the stored row (issue 22: a URL that one parser read as
// acme.example and another as evil.example was accepted and stored under evil.example), and that
// path parameters are dropped like the query string.
func TestURLHostOneParser(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	tests := []struct {
		name, url          string
		status             int
		hostname, pathname string // of the stored row, when 202
	}{
		{"backslash before the at: the host is evil.example", `https://evil.example\\@acme.example/x`, 403, "", ""},
		{"backslash after the at", `https://acme.example\\@evil.example/x`, 202, "acme.example", "/@evil.example/x"},
		{"user info: the host is after the last at", "https://acme.example@evil.example/", 403, "", ""},
		{"user info of a configured host", "https://evil.example@acme.example/a", 202, "acme.example", "/a"},
		{"encoded at in the authority: no valid host", "https://evil.example%40acme.example/", 400, "", ""},
		{"path parameter dropped", "https://acme.example/x;jsessionid=SECRET", 202, "acme.example", "/x"},
		{"path parameter and query dropped", "https://acme.example/a/b;sid=SECRET?utm_source=n&token=SECRET", 202, "acme.example", "/a/b"},
		{"path parameter of a hash route dropped", "https://acme.example/#/r;token=SECRET", 202, "acme.example", "/"},
		{"path parameter in the first segment", "https://acme.example/;SECRET/x", 202, "acme.example", "/"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.events())
			body := `{"n":"pageview","u":"` + tc.url + `","d":"acme.example"}`
			code, _, b := h.do(request{body: body, ip: "203.0.113.70"})
			if code != tc.status {
				t.Fatalf("status %d (%s), want %d", code, b, tc.status)
			}
			rows := storeEvents(t, h.events()[before:], fmt.Sprintf("urlhost-%02d", i))
			if tc.status != 202 {
				if len(rows) != 0 {
					t.Fatalf("%d rows stored for a refused event", len(rows))
				}
				return
			}
			if len(rows) != 1 {
				t.Fatalf("%d rows, want 1", len(rows))
			}
			r := rows[0]
			if r["hostname"] != tc.hostname || r["pathname"] != tc.pathname {
				t.Errorf("stored %s %s, want %s %s", r["hostname"], r["pathname"], tc.hostname, tc.pathname)
			}
			for col, v := range r {
				if strings.Contains(v, "SECRET") || strings.Contains(v, "evil.example") && col != "pathname" {
					t.Errorf("column %s holds %q", col, v)
				}
			}
		})
	}
}
