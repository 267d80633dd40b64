package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/enrich/geotest"
	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/salt"
)

func TestDecodeValid(t *testing.T) {
	cases := []struct {
		name string
		body string
		want string // fmt of the decoded fields
	}{
		{"short names", `{"n":"pageview","u":"https://a.example/","d":"a.example","r":"https://r.example/"}`,
			"pageview|https://a.example/|a.example|https://r.example/|h=false i=true|[] []|rev=false 0 "},
		{"long names", `{"name":"Signup","url":"https://a.example/x","domain":"a.example","referrer":null,"interactive":false,"hash_mode":true}`,
			"Signup|https://a.example/x|a.example||h=true i=false|[] []|rev=false 0 "},
		{"whitespace everywhere", " \n{ \"n\" : \"pageview\" ,\t\"u\":\"https://a.example/\" , \"d\" : \"a.example\" , \"h\" : 1 } \r\n",
			"pageview|https://a.example/|a.example||h=true i=true|[] []|rev=false 0 "},
		{"props scalars stringified", `{"n":"e","u":"https://a.example/","d":"a.example","p":{"s":"x","i":-12,"f":1.50,"e":2E+3,"t":true,"f2":false,"z":null}}`,
			"e|https://a.example/|a.example||h=false i=true|[s i f e t f2] [x -12 1.50 2E+3 true false]|rev=false 0 "},
		{"escapes", `{"n":"a\"b\\c\/d\u00e9\ud83d\ude00","u":"https://a.example/","d":"a.example","p":{"k\u0065y":"v\u00e9"}}`,
			"a\"b\\c/dé😀|https://a.example/|a.example||h=false i=true|[key] [vé]|rev=false 0 "},
		{"revenue number", `{"n":"Purchase","u":"https://a.example/","d":"a.example","$":{"amount":19.9,"currency":"usd"}}`,
			"Purchase|https://a.example/|a.example||h=false i=true|[] []|rev=true 19.9 USD"},
		{"revenue string amount long name", `{"n":"Purchase","u":"https://a.example/","d":"a.example","revenue":{"currency":"EUR","amount":"-5.25","note":[1,{"x":null}]}}`,
			"Purchase|https://a.example/|a.example||h=false i=true|[] []|rev=true -5.25 EUR"},
		{"unknown fields skipped", `{"x":{"y":[1,2,{"z":"w"}],"q":null},"n":"pageview","sd":"meta","u":"https://a.example/","d":"a.example","w":1024}`,
			"pageview|https://a.example/|a.example||h=false i=true|[] []|rev=false 0 "},
		{"last duplicate wins", `{"n":"a","name":"b","u":"https://a.example/","d":"a.example"}`,
			"b|https://a.example/|a.example||h=false i=true|[] []|rev=false 0 "},
		{"null props and revenue", `{"n":"a","u":"https://a.example/","d":"a.example","p":null,"$":null}`,
			"a|https://a.example/|a.example||h=false i=true|[] []|rev=false 0 "},
		{"max props", `{"n":"a","u":"https://a.example/","d":"a.example","p":{` + manyProps(MaxProps) + `}}`, ""},
		{"max name", `{"n":"` + strings.Repeat("é", MaxNameBytes/2) + `","u":"https://a.example/","d":"a.example"}`, ""},
	}
	var b Beacon
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := b.Decode([]byte(tc.body)); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got := fmt.Sprintf("%s|%s|%s|%s|h=%v i=%v|%v %v|rev=%v %v %s", b.Name, b.URL, b.Domain, b.Referrer,
				b.HashMode, b.Interactive, b.PropKeys, b.PropValues, b.HasRevenue, b.Revenue, b.Currency)
			if tc.want != "" && got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestDecodeProps follows Plausible's reading of props (lib/plausible/ingestion/request.ex,
// put_props, filter_bad_props, validate_props; lib/plausible/helpers/json.ex).
func TestDecodeProps(t *testing.T) {
	const ev = `"n":"e","u":"https://a.example/","d":"a.example"`
	cases := []struct {
		name, fields, want string
	}{
		{"object", `"p":{"a":"b"}`, "[a] [b]"},
		{"long name", `"props":{"a":"b"}`, "[a] [b]"},
		{"m", `"m":{"a":"b"}`, "[a] [b]"},
		{"meta", `"meta":{"a":"b"}`, "[a] [b]"},
		{"JSON string", `"p":"{\"a\":\"b\",\"n\":1}"`, "[a n] [b 1]"},
		{"JSON string with escapes inside", `"p":"{\"k\\u0065y\":\"caf\\u00e9 \\\"q\\\"\"}"`, `[key] [café "q"]`},
		{"JSON string with white space", `"meta":" \n{ \"a\" : \"b\" }\t"`, "[a] [b]"},
		{"JSON string without escapes", `"p":"{}"`, "[] []"},
		{"string not JSON", `"p":"a=b"`, "[] []"},
		{"string of an array", `"p":"[1]"`, "[] []"},
		{"string with data after the object", `"p":"{\"a\":\"b\"} x"`, "[] []"},
		{"string with invalid JSON inside", `"p":"{\"a\":x}"`, "[] []"},
		{"empty string", `"p":""`, "[] []"},
		{"array", `"p":["a"]`, "[] []"},
		{"number", `"p":1`, "[] []"},
		{"true", `"p":true`, "[] []"},
		{"nested values dropped", `"p":{"a":{"b":1},"c":[1,{"d":[]}],"e":"f"}`, "[e] [f]"},
		{"scalars as text", `"p":{"s":"x","i":-12,"f":1.50,"t":true,"f2":false}`, "[s i f t f2] [x -12 1.50 true false]"},
		{"null dropped", `"p":{"z":null,"a":"b"}`, "[a] [b]"},
		{"empty and blank dropped", `"p":{"":"x","a":"","b":"  ","\u00a0":"y","c":" d"}`, "[c] [ d]"},
		{"blank with control dropped", `"p":{"a":"\t"}`, "[] []"},
		{"first of a repeated name", `"p":{"a":"1","b":"2","a":"3"}`, "[a b] [1 2]"},
		{"first of a repeated name even dropped", `"p":{"a":null,"a":"3"}`, "[] []"},
		{"31st prop dropped", `"p":{` + manyProps(MaxProps+1) + `}`, ""},
		{"over-long prop past the 30th dropped", `"p":{` + manyProps(MaxProps) + `,"x":"` + strings.Repeat("v", MaxPropValBytes+1) + `"}`, ""},
		{"over-long key of a dropped value", `"p":{"` + strings.Repeat("k", MaxPropKeyBytes+1) + `":{}}`, "[] []"},

		// Precedence: m || meta || p || props, each the first of its repeats.
		{"m over p", `"p":{"p":"1"},"m":{"m":"1"}`, "[m] [1]"},
		{"meta over props", `"props":{"props":"1"},"meta":{"meta":"1"}`, "[meta] [1]"},
		{"p over props", `"props":{"props":"1"},"p":{"p":"1"}`, "[p] [1]"},
		{"m over everything", `"props":{"x":"4"},"p":{"x":"3"},"meta":{"x":"2"},"m":{"x":"1"}`, "[x] [1]"},
		{"null m passed over", `"m":null,"p":{"p":"1"}`, "[p] [1]"},
		{"false m passed over", `"m":false,"p":{"p":"1"}`, "[p] [1]"},
		{"empty m wins", `"m":{},"p":{"p":"1"}`, "[] []"},
		{"unparsable m wins", `"m":"x","p":{"p":"1"}`, "[] []"},
		{"first p of two", `"p":{"a":"1"},"p":{"b":"2"}`, "[a] [1]"},
		{"first p of two even null", `"p":null,"p":{"b":"2"}`, "[] []"},
		{"over-long prop in a losing source", `"p":{"k":"` + strings.Repeat("v", MaxPropValBytes+1) + `"},"m":{"a":"b"}`, "[a] [b]"},
		{"over-long prop in a losing source after the winner", `"m":{"a":"b"},"p":{"k":"` + strings.Repeat("v", MaxPropValBytes+1) + `"}`, "[a] [b]"},
		{"JSON string winning over a decoded object", `"p":{"p":"1"},"m":"{\"m\":\"1\"}"`, "[m] [1]"},
		{"decoded object winning over a JSON string", `"props":"{\"x\":\"1\"}","p":{"p":"1"}`, "[p] [1]"},
		{"falsy m after a decoded p", `"p":{"p":"1"},"m":null`, "[p] [1]"},
	}
	var b Beacon
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := b.Decode([]byte(`{` + ev + `,` + tc.fields + `}`)); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got := fmt.Sprint(b.PropKeys, b.PropValues)
			if tc.want == "" {
				if len(b.PropKeys) != MaxProps || b.PropKeys[MaxProps-1] != fmt.Sprintf("k%d", MaxProps-1) {
					t.Fatalf("got %s, want the first %d", got, MaxProps)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestDecodeHashMode(t *testing.T) {
	cases := []struct {
		fields string
		want   bool
	}{
		{`"h":1`, true},
		{`"hash_mode":true`, true},
		{`"hashMode":1`, true},
		{`"hashMode":true`, true},
		{`"hashMode":0`, false},
		{`"h":0,"hashMode":1`, false}, // 0 is true to Elixir's ||: h wins
		{`"hashMode":1,"h":0`, false},
		{`"h":null,"hashMode":1`, true},
		{`"h":false,"hashMode":1`, true},
		{`"h":1,"hashMode":0`, true},
		{`"h":"1"`, true}, // Plausible casts h to an integer: "1" is 1
		{`"h":"+01"`, true},
		{`"h":"0"`, false},
		{`"h":"-1"`, false},
		{`"h":2`, false},
		{`"hashMode":"1"`, true},
		{`"h":"0","hashMode":1`, false},
	}
	var b Beacon
	for _, tc := range cases {
		t.Run(tc.fields, func(t *testing.T) {
			if err := b.Decode([]byte(`{"n":"e","u":"https://a.example/","d":"a.example",` + tc.fields + `}`)); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if b.HashMode != tc.want {
				t.Fatalf("HashMode %v, want %v", b.HashMode, tc.want)
			}
		})
	}
}

// TestDecodeInteractive checks the i flag: only false (or 0) marks an event non-interactive; null
// keeps the default, as Plausible's request.ex does for anything but a boolean.
func TestDecodeInteractive(t *testing.T) {
	cases := []struct {
		fields string
		want   bool
	}{
		{``, true},
		{`,"i":false`, false},
		{`,"interactive":false`, false},
		{`,"i":0`, false},
		{`,"i":true`, true},
		{`,"i":1`, true},
		{`,"i":null`, true},
		{`,"i":false,"i":null`, true}, // the last one wins, as for the other scalar fields
		{`,"interactive":null`, true},
	}
	var b Beacon
	for _, tc := range cases {
		t.Run(tc.fields, func(t *testing.T) {
			if err := b.Decode([]byte(`{"n":"e","u":"https://a.example/","d":"a.example"` + tc.fields + `}`)); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if b.Interactive != tc.want {
				t.Fatalf("Interactive %v, want %v", b.Interactive, tc.want)
			}
		})
	}
}

func TestDecodeErrorsNameField(t *testing.T) {
	var b Beacon
	for _, tc := range malformedCorpus() {
		if tc.status != 400 || tc.field == "" || tc.field == "content-type" || b.Decode([]byte(tc.req.body)) == nil {
			continue // answered after decoding (URL parse, domain list) or by the transport
		}
		t.Run(tc.name, func(t *testing.T) {
			err := b.Decode([]byte(tc.req.body))
			var be *BeaconError
			if !errors.As(err, &be) {
				t.Fatalf("Decode = %v, want a *BeaconError", err)
			}
			if be.Field != tc.field {
				t.Fatalf("field %q, want %q (%v)", be.Field, tc.field, err)
			}
		})
	}
}

func TestDecodeAllocs(t *testing.T) {
	for _, body := range []string{
		`{"n":"pageview","u":"https://acme.example/pricing?utm_source=x","d":"acme.example","r":"https://www.google.com/","p":{"plan":"pro","n":3,"esc":"caf\u00e9"},"$":{"amount":"9.99","currency":"EUR"}}`,
		`{"n":"e","u":"https://acme.example/","d":"acme.example","m":"{\"plan\":\"pro\",\"esc\":\"caf\\u00e9\",\"x\":{\"y\":[1]}}","p":{"lost":"1"},"hashMode":1}`,
	} {
		var b Beacon
		body := []byte(body)
		if err := b.Decode(body); err != nil || len(b.PropKeys) < 2 {
			t.Fatal(err, b.PropKeys)
		}
		if n := testing.AllocsPerRun(100, func() { _ = b.Decode(body) }); n != 0 {
			t.Fatalf("Decode allocates %v times on %s", n, body)
		}
	}
}

// FuzzDecodeBeacon checks that Decode never panics, that what it accepts satisfies every limit,
// and that it agrees with encoding/json on what is a JSON object.
func FuzzDecodeBeacon(f *testing.F) {
	f.Add([]byte(`{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`))
	f.Add([]byte(`{"name":"x","url":"https://a.example/","domain":"a.example,b.example","p":{"a":1,"b":true,"c":"\u00e9"},"$":{"amount":"1.5","currency":"eur"},"h":1,"i":false}`))
	f.Add([]byte(`{"n":"\ud83d\ude00","u":"u","d":"d","x":[1,{"y":null}]}`))
	f.Add([]byte(`{"n":"e","u":"u","d":"d","h":"+01","hashMode":"x","i":null}`))
	f.Add([]byte(`{"n":"e","u":"u","d":"d","p":"{\"a\":\"b\\u00e9\",\"c\":{\"d\":[1]},\"e\":null,\"\":\"x\"}","m":null,"props":{"z":"1"}}`))
	f.Add([]byte(`{"n":"e","u":"u","d":"d","meta":{"a":" ","a":"1","b":[{}],"c":1.5e3,"d":false},"p":{"x":"y"},"hashMode":1,"h":null}`))
	for _, tc := range malformedCorpus() {
		if len(tc.req.body) < 4096 {
			f.Add([]byte(tc.req.body))
		}
	}
	var b Beacon
	f.Fuzz(func(t *testing.T, body []byte) {
		err := b.Decode(body)
		if err != nil {
			var be *BeaconError
			if !errors.As(err, &be) {
				t.Fatalf("error %T %v", err, err)
			}
			// A prop refused for its length or content is one that Plausible's rules keep.
			if be.Field == "props" && (strings.Contains(be.Msg, "longer than") || strings.Contains(be.Msg, "control")) {
				if _, _, perr := plausibleProps(body); perr == "" {
					t.Fatalf("refused %v, Plausible's rules accept %q", err, body)
				}
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		// UseNumber: a valid number too large for a float64 (in a skipped field) is still JSON.
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if dec.Decode(&m) != nil {
			t.Fatalf("accepted a non-object %q", body)
		}
		for _, s := range append([]string{b.Name, b.URL, b.Domain, b.Referrer, b.Currency}, append(b.PropKeys, b.PropValues...)...) {
			if !utf8.ValidString(s) || hasControl(s) {
				t.Fatalf("accepted string %q", s)
			}
		}
		switch {
		case b.Name == "" || len(b.Name) > MaxNameBytes, b.URL == "" || len(b.URL) > MaxURLBytes,
			b.Domain == "" && !b.DomainFromURL, len(b.Referrer) > MaxReferrerBytes, len(b.PropKeys) > MaxProps,
			len(b.PropKeys) != len(b.PropValues), b.HasRevenue && (math.IsNaN(b.Revenue) || math.IsInf(b.Revenue, 0) || len(b.Currency) != 3):
			t.Fatalf("limits broken: %+v", b)
		}
		// Props and hash mode agree with Plausible's rules applied to encoding/json's reading.
		keys, vals, perr := plausibleProps(body)
		if perr != "" || fmt.Sprint(keys, vals) != fmt.Sprint(b.PropKeys, b.PropValues) {
			t.Fatalf("props %q %q, Plausible's rules say %q %q %s", b.PropKeys, b.PropValues, keys, vals, perr)
		}
		if hm := plausibleHashMode(body); hm != b.HashMode {
			t.Fatalf("hash mode %v, Plausible's rules say %v", b.HashMode, hm)
		}
		// The decoded name agrees with encoding/json's reading of the same body.
		want, _ := m["n"].(string)
		if v, ok := m["name"].(string); ok && strings.Index(string(body), `"name"`) > strings.LastIndex(string(body), `"n"`) {
			want = v
		}
		if want != "" && want != b.Name && !strings.Contains(string(body), `\`) {
			t.Fatalf("name %q, encoding/json says %q", b.Name, want)
		}
	})
}

// plausibleProps is the fuzz oracle for props: Plausible's rules (lib/plausible/ingestion/
// request.ex put_props, filter_bad_props, validate_props; helpers/json.ex decode_or_fallback)
// applied to encoding/json's reading of body, with this collector's documented differences: the
// first 30 props sent are kept, numbers keep their spelling, control characters are refused, only
// maxDroppedNames dropped names are remembered, and a props string nested deeper than maxNesting
// gives no props. Jason, Plausible's decoder, keeps the first of repeated keys. err is non-empty
// when the props must be refused.
func plausibleProps(body []byte) (keys, vals []string, err string) {
	sources := map[string][]byte{}
	for _, m := range members(body) {
		if _, seen := sources[m.key]; !seen {
			sources[m.key] = m.val
		}
	}
	var raw []byte
	for _, k := range []string{"m", "meta", "p", "props"} {
		if v, ok := sources[k]; ok && string(v) != "null" && string(v) != "false" {
			raw = v
			break
		}
	}
	if len(raw) > 0 && raw[0] == '"' {
		var text string
		if json.Unmarshal(raw, &text) != nil {
			return nil, nil, "bad string"
		}
		raw = bytes.Trim([]byte(text), " \t\r\n") // JSON's white space, not Unicode's
		if !json.Valid(raw) || jsonTooDeep(raw) {
			raw = nil
		}
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil, ""
	}
	var dropped []string
	seen := func(k string) bool {
		for _, prev := range append(keys[:len(keys):len(keys)], dropped...) {
			if prev == k {
				return true
			}
		}
		return false
	}
	for _, m := range members(raw) {
		v, keep := "", true
		switch c := m.val[0]; {
		case c == '"':
			json.Unmarshal(m.val, &v)
		case c == '{' || c == '[' || c == 'n':
			keep = false
		default: // numbers as sent, true, false
			v = string(m.val)
		}
		switch {
		case len(keys) == MaxProps || seen(m.key):
		case !keep || strings.TrimLeftFunc(m.key, unicode.IsSpace) == "" || strings.TrimLeftFunc(v, unicode.IsSpace) == "":
			if len(dropped) < maxDroppedNames {
				dropped = append(dropped, m.key)
			}
		case len(m.key) > MaxPropKeyBytes || len(v) > MaxPropValBytes || hasControl(m.key) || hasControl(v):
			return nil, nil, "refused"
		default:
			keys, vals = append(keys, m.key), append(vals, v)
		}
	}
	return keys, vals, ""
}

// plausibleHashMode applies request.ex's h || hashMode (Elixir's || passes over null and false)
// to the last h (or hash_mode) and the last hashMode of body.
func plausibleHashMode(body []byte) bool {
	var short, long string
	for _, m := range members(body) {
		switch m.key {
		case "h", "hash_mode":
			short = string(m.val)
		case "hashMode":
			long = string(m.val)
		}
	}
	if short == "" || short == "null" || short == "false" {
		short = long
	}
	if s := ""; json.Unmarshal([]byte(short), &s) == nil {
		n, err := strconv.Atoi(s) // Ecto's integer cast; the decoder refused what fails it
		return err == nil && n == 1
	}
	return short == "1" || short == "true" // a JSON integer has no sign or leading zero for 1
}

type member struct {
	key string
	val json.RawMessage
}

// members lists the members of the JSON object obj in order, repeats included.
func members(obj []byte) []member {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var ms []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ms
		}
		var m member
		m.key, _ = tok.(string)
		if dec.Decode(&m.val) != nil {
			return ms
		}
		ms = append(ms, m)
	}
	return ms
}

// jsonTooDeep reports whether the JSON value v holds a value inside more than maxNesting containers,
// which the decoder does not follow.
func jsonTooDeep(v []byte) bool {
	depth, inString := 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			if depth > maxNesting {
				j := i + 1
				for j < len(v) && (v[j] == ' ' || v[j] == '\t' || v[j] == '\n' || v[j] == '\r') {
					j++
				}
				if j < len(v) && v[j] != '}' && v[j] != ']' {
					return true
				}
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return false
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(`{"n":"pageview","u":"https://acme.example/pricing?utm_source=newsletter&utm_medium=email","d":"acme.example","r":"https://www.google.com/search?q=x","p":{"plan":"pro","seats":12}}`)
	var bc Beacon
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := bc.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

// discardSpool accepts every record: the benchmark measures the handler, not the disk (the spool
// has its own benchmarks).
type discardSpool struct{ n int }

func (d *discardSpool) AppendAll(recs [][]byte) error {
	for _, rec := range recs {
		d.n += len(rec)
	}
	return nil
}

// BenchmarkEventHandler runs the whole handler (decode, limits, registry, client IP, rate limits
// off, UA cache hit, bot filter, geo, salt, encoding) on a reused RequestCtx.
func BenchmarkEventHandler(b *testing.B) {
	sp := &discardSpool{}
	hb := newHandlerBench(b, sp)
	hb.serve()
	if hb.ctx.Response.StatusCode() != 202 || sp.n == 0 {
		b.Fatalf("status %d %s", hb.ctx.Response.StatusCode(), hb.ctx.Response.Body())
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(hb.body)))
	for b.Loop() {
		hb.serve()
	}
	if hb.ctx.Response.StatusCode() != 202 {
		b.Fatal(hb.ctx.Response.StatusCode())
	}
}

// BenchmarkEventHandlerParallel runs the handler of BenchmarkEventHandler from GOMAXPROCS
// goroutines at once, each on its own RequestCtx, into a spool that keeps nothing. With -cpu 1,2
// it shows what the handler's shared state (metrics, caches, locks) costs when both cores of a
// busy collector use it: the time per request should halve, and does not quite.
func BenchmarkEventHandlerParallel(b *testing.B) {
	hb := newHandlerBench(b, nopSpool{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		h := &handlerBench{handler: hb.handler, body: hb.body}
		h.ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 1234}, nil)
		n := 0
		for pb.Next() {
			h.serve()
			n++
		}
		if n > 0 && h.ctx.Response.StatusCode() != fasthttp.StatusAccepted {
			b.Errorf("status %d %s", h.ctx.Response.StatusCode(), h.ctx.Response.Body())
		}
	})
}

// nopSpool accepts every append and keeps nothing; safe for concurrent use.
type nopSpool struct{}

func (nopSpool) AppendAll([][]byte) error { return nil }

// handlerBench is the event handler with every stage on (registry, geo, bot filter, local salt),
// writing to a given spool, and one reused request: a pageview through a trusted proxy.
type handlerBench struct {
	handler fasthttp.RequestHandler
	ctx     fasthttp.RequestCtx
	body    []byte
}

// newHandlerBench builds it; everything it opens is closed when b ends.
func newHandlerBench(b *testing.B, sp Spool) *handlerBench {
	b.Helper()
	dir := b.TempDir()
	registry := openTestRegistry(b, dir)
	geoPath := filepath.Join(dir, "geo.mmdb")
	if err := geotest.Write(geoPath, map[string]enrich.Geo{"203.0.113.0/24": {CountryCode: "NZ", City: "Auckland"}}); err != nil {
		b.Fatal(err)
	}
	geo, err := enrich.OpenGeoDB(geoPath)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { geo.Close() })
	filter, err := bot.NewFilter(bot.Config{})
	if err != nil {
		b.Fatal(err)
	}
	salts, err := salt.NewLocal(filepath.Join(dir, "salt"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { salts.Close() })
	trusted, _ := clientip.ParsePrefixes("10.0.0.0/8")
	srv, err := NewServer(Config{Registry: registry, Resolver: clientip.NewResolver(trusted), UA: enrich.NewUAParser(100),
		Geo: geo, Bots: filter, Salts: salts, Spool: sp})
	if err != nil {
		b.Fatal(err)
	}
	hb := &handlerBench{handler: srv.Handler(),
		body: []byte(`{"n":"pageview","u":"https://acme.example/pricing?utm_source=newsletter","d":"acme.example","r":"https://www.google.com/search?q=x"}`)}
	hb.ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 1234}, nil)
	return hb
}

// serve resets the request and runs the handler on it.
func (hb *handlerBench) serve() {
	ctx := &hb.ctx
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/api/event")
	ctx.Request.Header.SetContentType("text/plain")
	ctx.Request.Header.SetUserAgent(chromeUA)
	ctx.Request.Header.Set("Accept-Language", "en")
	ctx.Request.Header.Set("X-Forwarded-For", "203.0.113.9")
	ctx.Request.Header.Set("Origin", "https://acme.example")
	ctx.Request.SetBody(hb.body)
	hb.handler(ctx)
}

// openTestRegistry writes testWorkspaces under dir and opens it without polling.
func openTestRegistry(b *testing.B, dir string) *workspace.Registry {
	b.Helper()
	cfgPath := filepath.Join(dir, "w.yaml")
	if err := writeTestFile(cfgPath, testWorkspaces); err != nil {
		b.Fatal(err)
	}
	registry, err := workspace.Open(cfgPath, workspace.RegistryConfig{PollInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { registry.Close() })
	return registry
}

func writeTestFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
