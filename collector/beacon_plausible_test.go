package collector

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestDecodePlausibleFields checks the fields read as Plausible's request.ex reads them: integer
// names, v, sd and e, a missing d, and the referrer cut at 2000 bytes.
func TestDecodePlausibleFields(t *testing.T) {
	const u = `"u":"https://acme.example/"`
	tests := []struct {
		name, body string
		check      func(b *Beacon) bool
		errField   string // the field a 400 names, "" for success
	}{
		{"integer name", `{"n":404,` + u + `,"d":"acme.example"}`, func(b *Beacon) bool { return b.Name == "404" }, ""},
		{"negative zero name", `{"n":-0,` + u + `,"d":"acme.example"}`, func(b *Beacon) bool { return b.Name == "0" }, ""},
		{"float name", `{"n":404.0,` + u + `,"d":"acme.example"}`, nil, "name"},
		{"v", `{"n":"pageview",` + u + `,"d":"acme.example","v":36}`, func(b *Beacon) bool { return b.TrackerVersion == 36 }, ""},
		{"v as a string is not a version", `{"n":"pageview",` + u + `,"d":"acme.example","v":"36"}`, func(b *Beacon) bool { return b.TrackerVersion == 0 }, ""},
		{"v out of range", `{"n":"pageview",` + u + `,"d":"acme.example","v":70000}`, func(b *Beacon) bool { return b.TrackerVersion == 0 }, ""},
		{"no d", `{"n":"pageview",` + u + `}`, func(b *Beacon) bool { return b.DomainFromURL && b.Domain == "" }, ""},
		{"null d", `{"n":"pageview",` + u + `,"d":null}`, func(b *Beacon) bool { return b.DomainFromURL }, ""},
		{"blank d", `{"n":"pageview",` + u + `,"d":"  "}`, nil, "domain"},
		{"engagement sd and e", `{"n":"engagement",` + u + `,"d":"acme.example","sd":42,"e":1500}`,
			func(b *Beacon) bool { return b.ScrollDepth == 42 && b.EngagementTime == 1500 }, ""},
		{"engagement sd clamped", `{"n":"engagement",` + u + `,"d":"acme.example","sd":250}`, func(b *Beacon) bool { return b.ScrollDepth == 100 }, ""},
		{"engagement huge sd clamped", `{"n":"engagement",` + u + `,"d":"acme.example","sd":123456789012345678901234567890}`,
			func(b *Beacon) bool { return b.ScrollDepth == 100 }, ""},
		{"engagement sd as a string", `{"n":"engagement",` + u + `,"d":"acme.example","sd":"+7"}`, func(b *Beacon) bool { return b.ScrollDepth == 7 }, ""},
		{"engagement e only", `{"n":"engagement",` + u + `,"d":"acme.example","e":"2500"}`,
			func(b *Beacon) bool { return b.ScrollDepth == NoScrollDepth && b.EngagementTime == 2500 }, ""},
		{"engagement e of 30 days is not sent", `{"n":"engagement",` + u + `,"d":"acme.example","sd":1,"e":2592000000}`,
			func(b *Beacon) bool { return b.ScrollDepth == 1 && b.EngagementTime == 0 }, ""},
		{"engagement e just under 30 days", `{"n":"engagement",` + u + `,"d":"acme.example","e":2591999999}`,
			func(b *Beacon) bool { return b.EngagementTime == 2591999999 }, ""},
		{"engagement without either", `{"n":"engagement",` + u + `,"d":"acme.example"}`, nil, "sd"},
		{"engagement with e 0 only", `{"n":"engagement",` + u + `,"d":"acme.example","e":0}`, nil, "sd"},
		{"engagement with sd 0", `{"n":"engagement",` + u + `,"d":"acme.example","sd":0}`, func(b *Beacon) bool { return b.ScrollDepth == 0 }, ""},
		{"engagement with objects", `{"n":"engagement",` + u + `,"d":"acme.example","sd":{"a":1},"e":[1]}`, nil, "sd"},
		{"sd on a pageview is ignored", `{"n":"pageview",` + u + `,"d":"acme.example","sd":50,"e":10}`,
			func(b *Beacon) bool { return b.ScrollDepth == 0 && b.EngagementTime == 0 }, ""},
		{"long referrer cut", `{"n":"pageview",` + u + `,"d":"acme.example","r":"https://x.example/` + strings.Repeat("a", 5000) + `"}`,
			func(b *Beacon) bool { return len(b.Referrer) == MaxReferrerBytes }, ""},
		{"long referrer cut at a character", `{"n":"pageview",` + u + `,"d":"acme.example","r":"https://x.example/` + strings.Repeat("é", 3000) + `"}`,
			func(b *Beacon) bool { return len(b.Referrer) <= MaxReferrerBytes && utf8.ValidString(b.Referrer) }, ""},
		{"url of 2000 bytes", `{"n":"pageview","u":"https://acme.example/` + strings.Repeat("a", MaxURLBytes-21) + `","d":"acme.example"}`,
			func(b *Beacon) bool { return len(b.URL) == MaxURLBytes }, ""},
		{"url of 2001 bytes", `{"n":"pageview","u":"https://acme.example/` + strings.Repeat("a", MaxURLBytes-20) + `","d":"acme.example"}`, nil, "url"},
	}
	var b Beacon
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := b.Decode([]byte(tc.body))
			if tc.errField != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.errField+":") {
					t.Fatalf("Decode = %v, want an error naming %s", err, tc.errField)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !tc.check(&b) {
				t.Fatalf("decoded %+v", b)
			}
		})
	}
}

// TestPlausibleLimits stores a body at Plausible's limits: 30 props of 300-byte names and
// 2000-byte values (and a 31st, dropped) are accepted and stored whole, read back from the engine.
func TestPlausibleLimits(t *testing.T) {
	h := newHarness(t, harnessOptions{workspaces: plausibleWorkspaces, geo: plausibleGeo})
	var props []string
	for i := range MaxProps + 1 {
		name := strings.Repeat(string(rune('a'+i%26)), MaxPropKeyBytes-2) + string(rune('A'+i/26)) + string(rune('a'+i%26))
		props = append(props, `"`+name+`":"`+strings.Repeat("v", MaxPropValBytes)+`"`)
	}
	bodyText := body(pvName, exURL, siteD, `"p":{`+strings.Join(props, ",")+`}`)
	if len(bodyText) < 60000 {
		t.Fatalf("body of %d bytes, want the size of 31 maximal props", len(bodyText))
	}
	code, _, b := h.do(request{body: bodyText, ua: plausibleUA, ip: "100.64.50.1"})
	if code != 202 {
		t.Fatalf("status %d (%s)", code, b)
	}
	evs := h.events()
	rows := storeEvents(t, evs[len(evs)-1:], "limits-1")
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	keys := strings.Count(rows[0]["props_keys"], "','") + 1
	if keys != MaxProps || !strings.Contains(rows[0]["props_values"], strings.Repeat("v", MaxPropValBytes)) {
		t.Fatalf("%d props stored, want %d whole ones", keys, MaxProps)
	}
	// One byte more in a kept value is a 400, and a body past MaxBodyBytes a 413.
	over := body(pvName, exURL, siteD, `"p":{"k":"`+strings.Repeat("v", MaxPropValBytes+1)+`"}`)
	if code, _, _ := h.do(request{body: over, ua: plausibleUA, ip: "100.64.50.2"}); code != 400 {
		t.Fatalf("value of %d bytes: status %d, want 400", MaxPropValBytes+1, code)
	}
	huge := body(pvName, exURL, siteD, `"x":"`+strings.Repeat("a", MaxBodyBytes)+`"`)
	if code, _, _ := h.do(request{body: huge, ua: plausibleUA, ip: "100.64.50.3"}); code != 413 {
		t.Fatalf("body over %d bytes: status %d, want 413", MaxBodyBytes, code)
	}
}
