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
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
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
		{"unknown fields skipped", `{"x":{"y":[1,2,{"z":"w"}],"q":null},"n":"pageview","m":"meta","u":"https://a.example/","d":"a.example","w":1024}`,
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
	body := []byte(`{"n":"pageview","u":"https://acme.example/pricing?utm_source=x","d":"acme.example","r":"https://www.google.com/","p":{"plan":"pro","n":3,"esc":"caf\u00e9"},"$":{"amount":"9.99","currency":"EUR"}}`)
	var b Beacon
	if err := b.Decode(body); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = b.Decode(body) }); n != 0 {
		t.Fatalf("Decode allocates %v times", n)
	}
}

// FuzzDecodeBeacon checks that Decode never panics, that what it accepts satisfies every limit,
// and that it agrees with encoding/json on what is a JSON object.
func FuzzDecodeBeacon(f *testing.F) {
	f.Add([]byte(`{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`))
	f.Add([]byte(`{"name":"x","url":"https://a.example/","domain":"a.example,b.example","p":{"a":1,"b":true,"c":"\u00e9"},"$":{"amount":"1.5","currency":"eur"},"h":1,"i":false}`))
	f.Add([]byte(`{"n":"\ud83d\ude00","u":"u","d":"d","x":[1,{"y":null}]}`))
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
			b.Domain == "", len(b.Referrer) > MaxReferrerBytes, len(b.PropKeys) > MaxProps,
			len(b.PropKeys) != len(b.PropValues), b.HasRevenue && (math.IsNaN(b.Revenue) || math.IsInf(b.Revenue, 0) || len(b.Currency) != 3):
			t.Fatalf("limits broken: %+v", b)
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
	if err := enrich.WriteTestGeoDB(geoPath, map[string]enrich.Geo{"203.0.113.0/24": {CountryCode: "NZ", City: "Auckland"}}); err != nil {
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
	registry, err := workspace.Open(cfgPath, workspace.Options{PollInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { registry.Close() })
	return registry
}

func writeTestFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
