package collector

import (
	"net/http"
	"strings"
	"testing"
)

// TestSecondForwardedForLineWins sends X-Forwarded-For as two header lines, as happens when the
// client writes one and a trusted proxy appends its own: the address the proxy saw must be used,
// never the one the client wrote. Visitor ids tell which address was hashed.
func TestSecondForwardedForLineWins(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	body := `{"n":"pageview","u":"https://acme.example/x","d":"acme.example"}`
	send := func(lines ...string) {
		t.Helper()
		req, err := http.NewRequest("POST", "http://"+h.addr+"/api/event", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain")
		req.Header.Set("User-Agent", chromeUA)
		req.Header.Set("Accept-Language", "en")
		for _, l := range lines {
			req.Header.Add("X-Forwarded-For", l)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	send("198.51.100.1", "203.0.113.9") // spoofed line, then the proxy's
	send("203.0.113.9")
	send("198.51.100.1")
	ev := h.events()
	if len(ev) != 3 {
		t.Fatalf("%d events stored, want 3", len(ev))
	}
	if ev[0].VisitorID != ev[1].VisitorID {
		t.Fatal("the two-line request was not attributed to the address the proxy appended")
	}
	if ev[0].VisitorID == ev[2].VisitorID {
		t.Fatal("the two-line request was attributed to the address the client wrote")
	}
}
