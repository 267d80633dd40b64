package collector

import (
	"fmt"
	"strings"
	"testing"
)

// malformedCase is one hostile or broken request and its documented answer.
type malformedCase struct {
	name   string
	req    request
	status int
	field  string // the error must name this field ("" = any message)
}

const okURL = `"u":"https://acme.example/"`
const okDomain = `"d":"acme.example"`

// pv builds a body from a pageview with fields replaced or added.
func pv(extra string) string {
	return `{"n":"pageview",` + okURL + `,` + okDomain + `,` + extra + `}`
}

// malformedCorpus is the documented answer to every kind of bad input: 400 for a malformed body
// (naming the field), 403 for a domain or origin no workspace configured, 413 for a body over
// MaxBodyBytes, 405 for a method other than POST and OPTIONS. None is stored.
func malformedCorpus() []malformedCase {
	cases := []malformedCase{
		// Not JSON, or not an object.
		{"empty body", request{body: ``}, 400, ""},
		{"whitespace", request{body: "   \n"}, 400, ""},
		{"array", request{body: `[]`}, 400, ""},
		{"string", request{body: `"pageview"`}, 400, ""},
		{"number", request{body: `42`}, 400, ""},
		{"null", request{body: `null`}, 400, ""},
		{"truncated", request{body: `{"n":"pageview","u":`}, 400, ""},
		{"unterminated string", request{body: `{"n":"pageview`}, 400, ""},
		{"missing colon", request{body: `{"n" "pageview"}`}, 400, ""},
		{"missing comma", request{body: `{"n":"pageview" "u":"x"}`}, 400, ""},
		{"trailing comma", request{body: pv(`"x":1,`)}, 400, ""},
		{"single quotes", request{body: `{'n':'pageview'}`}, 400, ""},
		{"unquoted key", request{body: `{n:"pageview"}`}, 400, ""},
		{"two objects", request{body: pv(`"x":1`) + `{}`}, 400, ""},
		{"trailing garbage", request{body: pv(`"x":1`) + `x`}, 400, ""},
		{"comment", request{body: `{/* c */"n":"pageview"}`}, 400, ""},
		{"NaN number", request{body: pv(`"x":NaN`)}, 400, ""},
		{"leading plus", request{body: pv(`"x":+1`)}, 400, ""},
		{"leading zero", request{body: pv(`"x":01`)}, 400, ""},
		{"bare dot", request{body: pv(`"x":1.`)}, 400, ""},
		{"bad exponent", request{body: pv(`"x":1e`)}, 400, ""},
		{"bad literal", request{body: pv(`"x":tru`)}, 400, ""},
		{"bad escape", request{body: `{"n":"page\qview",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"short unicode escape", request{body: `{"n":"\u12",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"lone high surrogate", request{body: `{"n":"\ud800",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"lone low surrogate", request{body: `{"n":"\udc00",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"deep nesting in unknown field", request{body: pv(`"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100))}, 400, ""},
		{"very deep nesting", request{body: strings.Repeat(`{"a":`, 1500)}, 400, ""},
		{"raw newline in string", request{body: "{\"n\":\"page\nview\"," + okURL + "," + okDomain + "}"}, 400, ""},
		{"raw tab in string", request{body: "{\"n\":\"page\tview\"," + okURL + "," + okDomain + "}"}, 400, ""},
		{"BOM", request{body: "\ufeff" + pv(`"x":1`)}, 400, ""},

		// Missing and wrongly typed fields.
		{"missing u", request{body: `{"n":"pageview",` + okDomain + `}`}, 400, "url"},
		{"missing n", request{body: `{` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"empty object", request{body: `{}`}, 400, "name"},
		{"empty d", request{body: `{"n":"pageview",` + okURL + `,"d":""}`}, 400, "domain"},
		{"empty n", request{body: `{"n":"",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"number d", request{body: `{"n":"pageview",` + okURL + `,"d":1}`}, 400, "domain"},
		{"array d", request{body: `{"n":"pageview",` + okURL + `,"d":["acme.example"]}`}, 400, "domain"},
		{"object u", request{body: `{"n":"pageview","u":{"href":"x"},` + okDomain + `}`}, 400, "url"},
		{"bool n", request{body: `{"n":true,` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"float n", request{body: `{"n":404.5,` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"engagement without sd and e", request{body: `{"n":"engagement",` + okURL + `,` + okDomain + `}`}, 400, "sd"},
		{"engagement with negative sd and e 0", request{body: `{"n":"engagement",` + okURL + `,` + okDomain + `,"sd":-1,"e":0}`}, 400, "sd"},
		{"engagement with float sd and huge e", request{body: `{"n":"engagement",` + okURL + `,` + okDomain + `,"sd":50.5,"e":2592000000}`}, 400, "sd"},
		{"number r", request{body: pv(`"r":5`)}, 400, "referrer"},
		{"string h", request{body: pv(`"h":"yes"`)}, 400, "h"},
		{"h 1.5", request{body: pv(`"h":1.5`)}, 400, "h"},
		{"string i", request{body: pv(`"i":"false"`)}, 400, "interactive"},
		{"string hashMode", request{body: pv(`"hashMode":"one"`)}, 400, "hashMode"},
		{"props bad value", request{body: pv(`"p":{"a":x}`)}, 400, "props"},
		{"props unterminated", request{body: `{"n":"pageview",` + okURL + `,` + okDomain + `,"p":{"a":"1"`}, 400, "props"},

		// Limits.
		{"name too long", request{body: `{"n":"` + strings.Repeat("a", MaxNameBytes+1) + `",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"url too long", request{body: `{"n":"pageview","u":"https://acme.example/` + strings.Repeat("a", MaxURLBytes) + `",` + okDomain + `}`}, 400, "url"},
		{"prop key too long", request{body: pv(`"p":{"` + strings.Repeat("k", MaxPropKeyBytes+1) + `":"v"}`)}, 400, "props"},
		{"prop value too long", request{body: pv(`"p":{"k":"` + strings.Repeat("v", MaxPropValBytes+1) + `"}`)}, 400, "props"},
		{"prop number too long", request{body: pv(`"p":{"k":` + strings.Repeat("9", MaxPropValBytes+1) + `}`)}, 400, "props"},
		{"prop value too long in props string", request{body: pv(`"p":"{\"k\":\"` + strings.Repeat("v", MaxPropValBytes+1) + `\"}"`)}, 400, "props"},
		{"prop key too long in meta", request{body: pv(`"meta":{"` + strings.Repeat("k", MaxPropKeyBytes+1) + `":"v"}`)}, 400, "props"},
		{"prop value too long in m after p", request{body: pv(`"p":{"a":"b"},"m":{"k":"` + strings.Repeat("v", MaxPropValBytes+1) + `"}`)}, 400, "props"},
		{"props invalid after a prop too long", request{body: pv(`"p":{"k":"` + strings.Repeat("v", MaxPropValBytes+1) + `","a":x}`)}, 400, "props"},
		{"too many domains", request{body: `{"n":"pageview",` + okURL + `,"d":"` + strings.Repeat("acme.example,", MaxDomains) + `acme.example"}`}, 400, "domain"},
		{"empty domain in list", request{body: `{"n":"pageview",` + okURL + `,"d":"acme.example,,acme.example"}`}, 400, "domain"},
		{"body too large", request{body: pv(`"x":"` + strings.Repeat("a", MaxBodyBytes) + `"`)}, 413, "body"},
		{"body far too large", request{body: strings.Repeat(" ", MaxBodyBytes+(200<<10))}, 413, "body"},

		// Control characters and injection attempts.
		{"CRLF header injection in name", request{body: `{"n":"pageview\r\nSet-Cookie: a=b",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"CRLF injection in url", request{body: `{"n":"pageview","u":"https://acme.example/\r\nX-Evil: 1",` + okDomain + `}`}, 400, "url"},
		{"NUL in domain", request{body: `{"n":"pageview",` + okURL + `,"d":"acme.example\u0000.evil"}`}, 400, "domain"},
		{"escape in referrer", request{body: pv(`"r":"https://x.example/\u001b[31m"`)}, 400, "referrer"},
		{"C1 control in name", request{body: `{"n":"page\u0085view",` + okURL + `,` + okDomain + `}`}, 400, "name"},
		{"DEL in prop key", request{body: pv(`"p":{"a\u007f":"1"}`)}, 400, "props"},
		{"newline in prop value", request{body: pv(`"p":{"a":"1\n2"}`)}, 400, "props"},
		{"newline in prop value in props string", request{body: pv(`"m":"{\"a\":\"1\\n2\"}"`)}, 400, "props"},
		{"log forging in name", request{body: `{"n":"x\n{\"level\":\"ERROR\"}",` + okURL + `,` + okDomain + `}`}, 400, "name"},

		// URLs.
		{"data URL", request{body: `{"n":"pageview","u":"data:text/html,<script>alert(1)</script>",` + okDomain + `}`}, 400, "url"},
		{"javascript URL", request{body: `{"n":"pageview","u":"javascript:alert(1)",` + okDomain + `}`}, 400, "url"},
		{"file URL", request{body: `{"n":"pageview","u":"file:///etc/passwd",` + okDomain + `}`}, 400, "url"},
		{"relative URL", request{body: `{"n":"pageview","u":"/pricing",` + okDomain + `}`}, 400, "url"},
		{"URL without host", request{body: `{"n":"pageview","u":"https:///path",` + okDomain + `}`}, 400, "url"},
		{"not a URL", request{body: `{"n":"pageview","u":"pageview",` + okDomain + `}`}, 400, "url"},

		// Domains and origins nobody configured.
		{"unknown domain", request{body: `{"n":"pageview","u":"https://evil.example/","d":"evil.example"}`}, 403, "domain"},
		{"url of another workspace", request{body: `{"n":"pageview","u":"https://globex.example/",` + okDomain + `}`}, 403, "url"},
		{"url of no workspace", request{body: `{"n":"pageview","u":"https://evil.example/",` + okDomain + `}`}, 403, "url"},
		{"subdomain not configured", request{body: `{"n":"pageview","u":"https://blog.acme.example/","d":"blog.acme.example"}`}, 403, "domain"},
		{"suffix trick", request{body: `{"n":"pageview","u":"https://acme.example.evil.example/","d":"acme.example.evil.example"}`}, 403, "domain"},
		{"userinfo trick", request{body: `{"n":"pageview","u":"https://acme.example@evil.example/",` + okDomain + `}`}, 403, "url"},
		{"backslash userinfo trick", request{body: `{"n":"pageview","u":"https://evil.example\\@acme.example/x",` + okDomain + `}`}, 403, "url"},
		{"no d and a url of no workspace", request{body: `{"n":"pageview","u":"https://evil.example/"}`}, 403, "domain"},
		{"domains of two workspaces", request{body: `{"n":"pageview",` + okURL + `,"d":"acme.example,globex.example"}`}, 403, "domain"},
		{"one unknown domain in list", request{body: `{"n":"pageview",` + okURL + `,"d":"acme.example,evil.example"}`}, 403, "domain"},
		{"foreign origin", request{body: pv(`"x":1`), origin: "https://evil.example"}, 403, "origin"},
		{"origin of another workspace", request{body: pv(`"x":1`), origin: "https://globex.example"}, 403, "origin"},
		{"null origin", request{body: pv(`"x":1`), origin: "null"}, 403, "origin"},
		{"garbage origin", request{body: pv(`"x":1`), origin: "acme.example"}, 403, "origin"},
		{"domain with path", request{body: `{"n":"pageview",` + okURL + `,"d":"acme.example/x"}`}, 403, "domain"},

		// Transport.
		{"form content type", request{body: pv(`"x":1`), ctype: "application/x-www-form-urlencoded"}, 400, "content-type"},
		{"multipart content type", request{body: pv(`"x":1`), ctype: "multipart/form-data; boundary=x"}, 400, "content-type"},
		{"GET", request{method: "GET", body: ""}, 405, ""},
		{"PUT", request{method: "PUT", body: pv(`"x":1`)}, 405, ""},
		{"DELETE", request{method: "DELETE"}, 405, ""},
	}
	// Bad UTF-8 anywhere in the body.
	for i, bad := range []string{"\xff", "\xc3", "\xc3\x28", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\x80"} {
		cases = append(cases, malformedCase{fmt.Sprintf("bad UTF-8 %d in name", i), request{body: `{"n":"page` + bad + `",` + okURL + `,` + okDomain + `}`}, 400, ""})
		cases = append(cases, malformedCase{fmt.Sprintf("bad UTF-8 %d in prop", i), request{body: pv(`"p":{"k":"` + bad + `"}`)}, 400, ""})
	}
	// Every escaped C0 control in the event name.
	for c := 0; c < 0x20; c++ {
		cases = append(cases, malformedCase{fmt.Sprintf("control U+%04X in name", c),
			request{body: fmt.Sprintf(`{"n":"a\u%04xb",`, c) + okURL + `,` + okDomain + `}`}, 400, "name"})
	}
	return cases
}

func manyProps(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":"v"`, i)
	}
	return b.String()
}

func TestMalformedCorpus(t *testing.T) {
	cases := malformedCorpus()
	if len(cases) < 100 {
		t.Fatalf("corpus has %d cases, want at least 100", len(cases))
	}
	h := newHarness(t, harnessOptions{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.ip = "203.0.113.60"
			code, hdr, body := h.do(tc.req)
			if code != tc.status {
				t.Fatalf("status %d, want %d (body %s)", code, tc.status, body)
			}
			if tc.req.method == "" || tc.req.method == "POST" {
				if !strings.HasPrefix(body, `{"error":"`) {
					t.Fatalf("body %q is not an error object", body)
				}
				if tc.field != "" && !strings.HasPrefix(body, `{"error":"`+tc.field) {
					t.Fatalf("error %s does not name %q", body, tc.field)
				}
			}
			if hdr.Get("Set-Cookie") != "" || hdr.Get("X-Evil") != "" {
				t.Fatalf("injected headers: %v", hdr)
			}
		})
	}
	if n := len(h.events()); n != 0 {
		t.Fatalf("%d malformed events stored", n)
	}
	if got := h.metric("collector_events_accepted_total"); got != 0 {
		t.Fatalf("accepted %v", got)
	}
	logs := h.logs.String()
	if strings.Contains(logs, `"level":"ERROR"`) || strings.Contains(logs, "203.0.113.60") {
		t.Fatalf("logs:\n%s", logs)
	}
	// The corpus is all that was sent, and the answers are counted by reason.
	rejected := h.metric("collector_events_rejected_total", "reason", "bad_request") +
		h.metric("collector_events_rejected_total", "reason", "forbidden") +
		h.metric("collector_events_rejected_total", "reason", "too_large") +
		h.metric("collector_events_rejected_total", "reason", "method")
	if int(rejected) != len(cases) {
		t.Fatalf("rejected %v, sent %d", rejected, len(cases))
	}
}
