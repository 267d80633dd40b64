package collector

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/collector/enrich"
)

// The port of Plausible's Events API controller tests
// (test/plausible_web/controllers/api/external_controller_test.exs in plausible/analytics) to
// the real handler and the real engine: every request goes through the collector's HTTP server,
// every accepted event through the spool and the sink's Insert into a ClickHouse server, and
// every assertion reads the stored row back from the engine.
//
// Plausible's sites become domains of one workspace (site.example, site2.example, and the page
// hosts the tests use). Its test connection sends no User-Agent; here every request sends
// Plausible's desktop agent unless the case sets one (an event without a User-Agent is dropped
// here, see the README's deliberate differences). A case marked diff asserts our behaviour where
// it differs on purpose; the README lists each with its reason. Cases that test a Plausible
// feature the collector does not have (goals, acquisition channels, blocked sites) are listed in
// plausibleNotPorted, with the reason.

const plausibleWorkspaces = `
tiers:
  pro: { retention_days: 395 }
workspaces:
  - id: ws_site
    tier: pro
    domains: [site.example, site2.example, example.com, test.com, ab.cd, user-id-test-domain.com,
      app.user-id-test-domain.com, other-domain.com]
  - id: ws_other
    tier: pro
    domains: [other.example]
`

// Plausible's test user agents.
const (
	plausibleUA       = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_13_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36"
	plausibleUAMobile = "Mozilla/5.0 (Linux; Android 6.0; U007 Pro Build/MRA58K; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/44.0.2403.119 Mobile Safari/537.36"
	plausibleUATablet = "Mozilla/5.0 (Linux; U; Android 4.2.2; it-it; Surfing TAB B 9.7 3G Build/JDQ39) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30"
)

// plausibleGeo stands in for Plausible's test GeoLite2 database: the addresses its tests use.
var plausibleGeo = map[string]enrich.Geo{
	"2.125.160.216/32": {CountryCode: "GB", Region: "GB-ENG", City: "Boxford"},
	"216.160.83.56/32": {CountryCode: "US", Region: "US-WA", City: "Milton"},
	"2001:218::/32":    {CountryCode: "JP"},
	"198.51.100.10/32": {CountryCode: "ZZ"},
	"198.51.100.11/32": {CountryCode: "XX"},
	"198.51.100.12/32": {CountryCode: "T1", Region: "T1-X", City: "Nowhere"},
	"192.0.2.0/24":     {CountryCode: "NL"},
	"100.64.0.0/10":    {CountryCode: "AU"},
	"127.0.0.1/32":     {CountryCode: "AQ"}, // the socket peer: a case that falls back to it shows it
	"82.32.12.1/32":    {CountryCode: "GB"},
	"10.1.1.1/32":      {CountryCode: "CA"},
}

// plausibleCase is one ported test.
type plausibleCase struct {
	name string    // Plausible's test name
	reqs []request // sent in order; each gets Plausible's UA and a client address unless set
	// status is the expected status of every request (202 when 0); dropped the expected
	// X-Collector-Dropped of the last one.
	status  int
	dropped string
	rows    int               // rows stored by the case (len(reqs) when want is set and rows is 0)
	want    map[string]string // columns of the last stored row
	check   func(t *testing.T, rows []storedRow, bodies []string)
	diff    string // a deliberate difference (README): the case asserts our behaviour
	note    string // how the case was adapted, when it was
	ours    bool   // a case of ours next to Plausible's, not counted as ported
}

// body builds a JSON body from key/value pairs written as JSON already: body(`"n":"pageview"`, ...).
func body(members ...string) string { return "{" + strings.Join(members, ",") + "}" }

const (
	pvName   = `"name":"pageview"`
	siteD    = `"domain":"site.example"`
	exURL    = `"url":"http://example.com/"`
	wwwExURL = `"url":"http://www.example.com/"`
)

func pvReq(members ...string) request {
	return request{body: body(append([]string{pvName, siteD}, members...)...)}
}

func withUA(r request, ua string) request { r.ua = ua; return r }

func withIP(r request, ip string) request { r.ip = ip; return r }

func withHeaders(r request, h map[string]string) request { r.headers = h; return r }

func plausibleCases() []plausibleCase {
	cases := []plausibleCase{
		// describe "POST /api/event"
		{name: "records the event and session", reqs: []request{pvReq(exURL, `"referrer":"http://m.facebook.com/"`)},
			want: map[string]string{"hostname": "example.com", "pathname": "/", "domain": "site.example"}},
		{name: "works with Content-Type: text/plain", reqs: []request{{ctype: "text/plain", body: body(siteD, pvName, exURL)}},
			want: map[string]string{"hostname": "example.com", "pathname": "/", "domain": "site.example"}},
		{name: "returns error if JSON cannot be parsed", reqs: []request{{body: ""}}, status: 400},
		{name: "can send to multiple dashboards by listing multiple domains - same timestamp",
			reqs: []request{{body: body(pvName, exURL, `"referrer":"http://m.facebook.com/"`, `"domain":"site.example,site2.example"`)}},
			rows: 2, check: func(t *testing.T, rows []storedRow, _ []string) {
				if rows[0]["domain"] == rows[1]["domain"] || rows[0]["ts"] != rows[1]["ts"] {
					t.Errorf("domains %q %q at %s and %s, want both domains at one timestamp", rows[0]["domain"], rows[1]["domain"], rows[0]["ts"], rows[1]["ts"])
				}
			}},
		{name: "timestamps differ when two events sent in a row",
			reqs: []request{pvReq(exURL, `"referrer":"http://m.facebook.com/"`), pvReq(exURL, `"referrer":"http://m.facebook.com/"`)},
			rows: 2, note: "timestamps are in milliseconds here, so no second-long wait",
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if rows[0]["ts"] >= rows[1]["ts"] {
					t.Errorf("timestamps %s then %s, want increasing", rows[0]["ts"], rows[1]["ts"])
				}
			}},
		{name: "www. is stripped from domain", reqs: []request{{body: body(`"name":"custom event"`, exURL, `"domain":"www.site.example"`)}},
			want: map[string]string{"domain": "site.example"}, note: "d sent with www. (Plausible's test sends the site's own domain)"},
		{name: "www. is stripped from hostname", reqs: []request{pvReq(wwwExURL)}, want: map[string]string{"hostname": "example.com"}},
		{name: "empty path defaults to /", reqs: []request{pvReq(`"url":"http://www.example.com"`)}, want: map[string]string{"pathname": "/"}},
		{name: "trailing whitespace is removed", reqs: []request{pvReq(`"url":"http://www.example.com/path "`)}, want: map[string]string{"pathname": "/path"}},
		{name: "bots and crawlers are ignored", reqs: []request{withUA(pvReq(wwwExURL), "generic crawler")}, dropped: "bot_ua"},
		{name: "Headless Chrome is ignored", reqs: []request{withUA(pvReq(wwwExURL),
			"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/85.0.4183.83 Safari/537.36")}, dropped: "headless"},
		{name: "parses user_agent", reqs: []request{pvReq(exURL)},
			want: map[string]string{"os": "Mac", "os_version": "10.13", "browser": "Chrome", "browser_version": "70.0"}},
		{name: "parses referrer source", reqs: []request{pvReq(exURL, `"referrer":"https://facebook.com"`)},
			want: map[string]string{"referrer_source": "Facebook", "click_id_param": ""}},
		{name: "strips trailing slash from referrer", reqs: []request{pvReq(exURL, `"referrer":"https://facebook.com/page/"`)},
			want: map[string]string{"referrer": "facebook.com/page", "referrer_source": "Facebook"}},
		{name: "ignores event when referrer is a spammer", reqs: []request{pvReq(exURL, `"referrer":"https://www.1-best-seo.com"`)}, dropped: "spam_referrer"},
		{name: "ignores when referrer is internal", reqs: []request{pvReq(exURL, `"referrer":"https://example.com"`)},
			want: map[string]string{"referrer_source": "", "referrer": ""}},
		{name: "ignores localhost referrer", reqs: []request{pvReq(exURL, `"referrer":"http://localhost:4000/"`)},
			want: map[string]string{"referrer_source": ""}},
		{name: "parses subdomain referrer", reqs: []request{pvReq(exURL, `"referrer":"https://blog.example.com"`)},
			want: map[string]string{"referrer_source": "blog.example.com"}},
		{name: "referrer is cleaned", reqs: []request{pvReq(wwwExURL, `"referrer":"https://www.indiehackers.com/page?query=param#hash"`)},
			want: map[string]string{"referrer": "indiehackers.com/page"}},
		{name: "utm_source overrides referrer source", reqs: []request{pvReq(`"url":"http://www.example.com/?utm_source=betalist"`, `"referrer":"https://betalist.com/my-produxct"`)},
			want: map[string]string{"referrer_source": "betalist", "utm_source": "betalist"}},
		{name: "?ref param behaves like ?utm_source", reqs: []request{pvReq(`"url":"http://www.example.com/?ref=betalist"`)},
			want: map[string]string{"referrer_source": "betalist", "utm_source": "betalist"}},
		{name: "?source param behaves like ?utm_source", reqs: []request{pvReq(`"url":"http://www.example.com/?source=betalist"`)},
			want: map[string]string{"referrer_source": "betalist", "utm_source": "betalist"}},
		{name: "if utm_source matches a capitalized form from ref_inspector, the capitalized form is recorded",
			reqs: []request{pvReq(`"url":"http://www.example.com/?utm_source=facebook"`)}, want: map[string]string{"referrer_source": "Facebook"}},
		{name: "utm tags are stored", reqs: []request{pvReq(`"url":"http://www.example.com/?utm_medium=ads&utm_source=instagram&utm_campaign=video_story"`)},
			want: map[string]string{"utm_medium": "ads", "utm_source": "instagram", "utm_campaign": "video_story"}},
		{name: "if it's an :unknown referrer, just the domain is used", reqs: []request{pvReq(exURL, `"referrer":"https://www.indiehackers.com/landing-page-feedback"`)},
			want: map[string]string{"referrer_source": "indiehackers.com"}},
		{name: "if the referrer is not http, https, or android it is ignored", reqs: []request{pvReq(exURL, `"referrer":"ftp://wat"`)},
			want: map[string]string{"referrer_source": "", "referrer": ""}},
		{name: "stores referrer from android app", reqs: []request{pvReq(exURL, `"referrer":"android-app://some.android.app"`)},
			want: map[string]string{"referrer": "android-app://some.android.app", "referrer_source": "android-app://some.android.app"}},
		{name: "screen size is calculated from user agent", reqs: []request{withUA(pvReq(exURL), plausibleUAMobile)}, want: map[string]string{"device": "Mobile"}},
		{name: "screen size is nil if user agent is unknown", reqs: []request{withUA(pvReq(exURL), "unknown UA")}, dropped: "bot_ua",
			diff: "user agents that are not browser-shaped are dropped as bots; Plausible stores them with an empty screen size"},
		{name: "screen size is calculated from user_agent when is tablet", reqs: []request{withUA(pvReq(exURL), plausibleUATablet)}, want: map[string]string{"device": "Tablet"}},
		{name: "screen size is calculated from user_agent when is desktop", reqs: []request{pvReq(exURL)}, want: map[string]string{"device": "Desktop"}},
		{name: "can trigger a custom event", reqs: []request{{body: body(`"name":"custom event"`, exURL, siteD)}}, want: map[string]string{"name": "custom event"}},
		{name: "casts custom props to string", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD, `"props":{"bool_test":true,"number_test":12}`)}},
			want: map[string]string{"props_keys": "['bool_test','number_test']", "props_values": "['true','12']"}},
		{name: "records custom props for a pageleave event",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://ab.cd"`, `"d":"site.example"`)},
				{body: body(`"name":"pageleave"`, `"url":"http://ab.cd/"`, siteD, `"props":{"bool_test":true,"number_test":12}`)}},
			check: func(t *testing.T, rows []storedRow, _ []string) {
				leave := findRow(t, rows, "pageleave")
				if leave["props_keys"] != "['bool_test','number_test']" || leave["props_values"] != "['true','12']" {
					t.Errorf("props %s %s", leave["props_keys"], leave["props_values"])
				}
			}},
		{name: "filters out bad props", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD,
			`"props":{"false":null,"":false,"good":true,"      ":"    ","    ":"value","key":"    "}`)}},
			want: map[string]string{"props_keys": "['good']", "props_values": "['true']"},
			note: "Plausible's atom keys false and nil become the JSON keys \"false\" and \"\" (to_string(nil) is empty)"},
		{name: "ignores malformed custom props", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD, `"props":"\"show-more:button\""`)}},
			want: map[string]string{"props_keys": "[]", "props_values": "[]"}},
		{name: "can send props stringified", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD, `"props":"{\"number_test\":12}"`)}},
			want: map[string]string{"props_keys": "['number_test']", "props_values": "['12']"}},
		{name: "ignores custom prop with array value", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD, `"props":"{\"other\":\"key\",\"wat\":[\"some-thing\"]}"`)}},
			want: map[string]string{"props_keys": "['other']", "props_values": "['key']"}},
		{name: "ignores custom prop with map value", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD, `"props":"{\"foo\":{\"bar\":\"baz\"},\"other_key\":1}"`)}},
			want: map[string]string{"props_keys": "['other_key']", "props_values": "['1']"}},
		{name: "ignores custom prop with empty string value", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD, `"props":"{\"foo\":\"\",\"other_key\":true}"`)}},
			want: map[string]string{"props_keys": "['other_key']", "props_values": "['true']"}},
		{name: "ignores custom prop with nil value", reqs: []request{{body: body(`"name":"Signup"`, exURL, siteD, `"props":"{\"foo\":null,\"other_key\":true}"`)}},
			want: map[string]string{"props_keys": "['other_key']", "props_values": "['true']"}},
		{name: "does not fail when revenue value is invalid", reqs: []request{{body: body(`"name":"Payment"`, exURL, siteD, `"revenue":{"amount":"1831d","currency":"ADSIE"}`)}},
			want: map[string]string{"name": "Payment", "revenue_amount": "0", "revenue_currency": ""}},
		{name: "does not fail when sending revenue without a matching goal", reqs: []request{{body: body(`"name":"Add to Cart"`, exURL, siteD, `"revenue":{"amount":10.2,"currency":"USD"}`)}},
			want: map[string]string{"name": "Add to Cart"}, note: "there are no goals here: the revenue is stored as sent (10.2 USD)",
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if r := rows[0]; r["revenue_amount"] != "10.2" || r["revenue_currency"] != "USD" {
					t.Errorf("revenue %s %s, want 10.2 USD", r["revenue_amount"], r["revenue_currency"])
				}
			}},
		{name: "ignores a malformed referrer URL", reqs: []request{pvReq(exURL, `"referrer":"https:://twitter.com"`)}, want: map[string]string{"referrer": ""}},
		{name: "looks up location data from the ip address", reqs: []request{withIP(pvReq(exURL), "2.125.160.216")},
			want: map[string]string{"country_code": "GB", "region": "GB-ENG", "city": "Boxford"},
			diff: "location is stored as country, one region and a city name; Plausible stores two subdivision codes and a GeoNames city id"},
		{name: "ignores unknown country code ZZ", reqs: []request{withIP(pvReq(exURL), "198.51.100.10")}, want: map[string]string{"country_code": "", "region": "", "city": ""},
			note: "an address of the test database that says ZZ (Plausible's test uses 0.0.0.0, not a client address here)"},
		{name: "ignores disputed territory code XX", reqs: []request{withIP(pvReq(exURL), "198.51.100.11")}, want: map[string]string{"country_code": "", "region": "", "city": ""}},
		{name: "ignores TOR exit node country code T1", reqs: []request{withIP(pvReq(exURL), "198.51.100.12")}, want: map[string]string{"country_code": "", "region": "", "city": ""}},
		{name: "scrubs port from x-forwarded-for", reqs: []request{withIP(pvReq(exURL), "216.160.83.56:123")}, want: map[string]string{"country_code": "US"}},
		{name: "works with ipv6 without port in x-forwarded-for", reqs: []request{withIP(pvReq(exURL), "2001:218:1:1:1:1:1:1")}, want: map[string]string{"country_code": "JP"}},
		{name: "works with ipv6 with a port number in x-forwarded-for", reqs: []request{withIP(pvReq(exURL), "[2001:218:1:1:1:1:1:1]:123")}, want: map[string]string{"country_code": "JP"}},
		{name: "uses cloudflare's special header for client IP address if present",
			reqs: []request{withHeaders(withIP(pvReq(exURL), "192.0.2.1"), map[string]string{"CF-Connecting-IP": "216.160.83.56"})},
			want: map[string]string{"country_code": "NL"},
			diff: "the client address comes from X-Forwarded-For or Forwarded of trusted proxies only; CF-Connecting-IP is not read"},
		{name: "uses BunnyCDN's custom header for client IP address if present",
			reqs: []request{withHeaders(withIP(pvReq(exURL), "192.0.2.1"), map[string]string{"B-Forwarded-For": "216.160.83.56,9.9.9.9"})},
			want: map[string]string{"country_code": "NL"},
			diff: "the client address comes from X-Forwarded-For or Forwarded of trusted proxies only; B-Forwarded-For is not read"},
		{name: "prioritizes x-plausible-ip header over everything else",
			reqs: []request{withHeaders(withIP(pvReq(exURL), "192.0.2.1"), map[string]string{"X-Plausible-IP": "216.160.83.56", "CF-Connecting-IP": "198.51.100.1"})},
			want: map[string]string{"country_code": "NL"},
			diff: "the client address comes from X-Forwarded-For or Forwarded of trusted proxies only; X-Plausible-IP is not read"},
		{name: "Uses the Forwarded header when cf-connecting-ip and x-forwarded-for are missing",
			reqs: []request{withHeaders(withIP(pvReq(exURL), "-"), map[string]string{"Forwarded": "by=0.0.0.0;for=216.160.83.56;host=somehost.com;proto=https"})},
			want: map[string]string{"country_code": "US"}},
		{name: "Forwarded header can parse ipv6",
			reqs: []request{withHeaders(withIP(pvReq(exURL), "-"), map[string]string{"Forwarded": `by=0.0.0.0;for="[2001:218:1:1:1:1:1:1]",for=10.1.1.1;host=somehost.com;proto=https`})},
			want: map[string]string{"country_code": "CA"},
			diff: "the client is the rightmost address that is not a trusted proxy (the leftmost can be forged by the client); Plausible takes the leftmost. The IPv6 form is parsed in either position: see the next case",
			note: "the second for= is 10.1.1.1 here (Plausible's 0.0.0.0 is no client address)"},
		{name: "Forwarded header can parse ipv6 (rightmost)",
			reqs: []request{withHeaders(withIP(pvReq(exURL), "-"), map[string]string{"Forwarded": `by=0.0.0.0;for=10.1.1.1,for="[2001:218:1:1:1:1:1:1]";host=somehost.com;proto=https`})},
			want: map[string]string{"country_code": "JP"}, ours: true, note: "the quoted IPv6 form in the position this collector reads"},
		{name: "URL is decoded", reqs: []request{pvReq(`"url":"http://www.example.com/opportunity/category/%D8%AC%D9%88%D8%A7%D8%A6%D8%B2-%D9%88%D9%85%D8%B3%D8%A7%D8%A8%D9%82%D8%A7%D8%AA"`)},
			want: map[string]string{"pathname": "/opportunity/category/جوائز-ومسابقات"}},
		{name: "accepts shorthand map keys", reqs: []request{{body: body(`"n":"pageview"`, `"u":"http://www.example.com/opportunity"`, `"d":"site.example"`, `"r":"https://facebook.com/page"`)}},
			want: map[string]string{"pathname": "/opportunity", "referrer_source": "Facebook", "referrer": "facebook.com/page"}},
		{name: "records hash when in hash mode", reqs: []request{{body: body(`"n":"pageview"`, `"u":"http://www.example.com/#page-a"`, `"d":"site.example"`, `"h":1`)}},
			want: map[string]string{"pathname": "/#page-a"}},
		{name: "does not record hash when hash mode is 0", reqs: []request{{body: body(`"n":"pageview"`, `"u":"http://www.example.com/#page-a"`, `"d":"site.example"`, `"h":0`)}},
			want: map[string]string{"pathname": "/"}},
		{name: "decodes URL pathname, fragment and search", reqs: []request{{body: body(`"n":"pageview"`,
			`"u":"https://test.com/%EF%BA%9D%EF%BB%AD%EF%BA%8E%EF%BA%8B%EF%BA%AF-%EF%BB%AE%EF%BB%A4%EF%BA%B3%EF%BA%8E%EF%BA%92%EF%BB%97%EF%BA%8E%EF%BA%97?utm_source=%25balle%25"`,
			`"d":"site.example"`, `"h":1`)}},
			want: map[string]string{"hostname": "test.com", "pathname": "/ﺝﻭﺎﺋﺯ-ﻮﻤﺳﺎﺒﻗﺎﺗ", "utm_source": "%balle%"}},
		{name: "can use double quotes in query params", reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com/?utm_source=Something+%22quoted%22"`, `"d":"site.example"`, `"h":1`)}},
			want: map[string]string{"utm_source": `Something "quoted"`}},
		{name: "responds 400 when required fields are missing", reqs: []request{{body: body(siteD, pvName)}}, status: 400,
			diff: "our error body: {\"error\":\"url: required\"} where Plausible answers {\"errors\":{\"url\":[\"is required\"]}}",
			check: func(t *testing.T, _ []storedRow, bodies []string) {
				if bodies[0] != `{"error":"url: required"}` {
					t.Errorf("body %s", bodies[0])
				}
			}},
		{name: "responds 400 with errors when domain is missing", reqs: []request{{body: body(`"domain":null`, `"url":"about:config"`, pvName)}}, status: 400,
			diff: "our error body, and non-http(s) URLs are refused: without d the domain would be the URL's host, and about:config has none; the answer names url where Plausible's names domain",
			check: func(t *testing.T, _ []storedRow, bodies []string) {
				if !strings.HasPrefix(bodies[0], `{"error":"url: `) {
					t.Errorf("body %s", bodies[0])
				}
			}},

		// describe "scroll depth tests"
		{name: "ingests scroll_depth as 255 when sd not in params",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com"`, `"d":"site.example"`)},
				{body: body(`"n":"engagement"`, `"u":"https://test.com"`, `"d":"site.example"`, `"e":1000`)}},
			note: "on an engagement (with e, which an engagement needs without sd): Plausible's current request.ex reads sd for engagement events only; the test predates it and sends a pageleave",
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if sd := findRow(t, rows, "engagement")["scroll_depth"]; sd != "255" {
					t.Errorf("scroll_depth %s, want 255", sd)
				}
			}},
		{name: "sd field is ignored if name is not pageleave",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com"`, `"d":"site.example"`, `"sd":10`)},
				{body: body(`"n":"custom_e"`, `"u":"https://test.com"`, `"d":"site.example"`, `"sd":10`)}},
			check: func(t *testing.T, rows []storedRow, _ []string) {
				for _, r := range rows {
					if r["scroll_depth"] != "0" {
						t.Errorf("%s: scroll_depth %s, want 0", r["name"], r["scroll_depth"])
					}
				}
			}},
		{name: "ingests valid scroll_depth for a pageleave",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com"`, `"d":"site.example"`)},
				{body: body(`"n":"engagement"`, `"u":"https://test.com"`, `"d":"site.example"`, `"sd":25`)}},
			note: "on an engagement, as above",
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if sd := findRow(t, rows, "engagement")["scroll_depth"]; sd != "25" {
					t.Errorf("scroll_depth %s, want 25", sd)
				}
			}},
		{name: "ingests scroll_depth as 100 when sd > 100",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com"`, `"d":"site.example"`)},
				{body: body(`"n":"engagement"`, `"u":"https://test.com"`, `"d":"site.example"`, `"sd":101`)}},
			note: "on an engagement, as above",
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if sd := findRow(t, rows, "engagement")["scroll_depth"]; sd != "100" {
					t.Errorf("scroll_depth %s, want 100", sd)
				}
			}},
		{name: "ingests scroll_depth as 255 when sd is a string",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com"`, `"d":"site.example"`)},
				{body: body(`"n":"engagement"`, `"u":"https://test.com"`, `"d":"site.example"`, `"sd":"1"`, `"e":1000`)}},
			note: "Plausible's current request.ex parses a string holding an integer (parse_scroll_depth/1 with Integer.parse): \"1\" is stored as 1; the test predates it",
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if sd := findRow(t, rows, "engagement")["scroll_depth"]; sd != "1" {
					t.Errorf("scroll_depth %s, want 1", sd)
				}
			}},
		{name: "ingests scroll_depth as 255 when sd is a negative integer",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com"`, `"d":"site.example"`)},
				{body: body(`"n":"engagement"`, `"u":"https://test.com"`, `"d":"site.example"`, `"sd":-1`, `"e":1000`)}},
			note: "on an engagement, as above",
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if sd := findRow(t, rows, "engagement")["scroll_depth"]; sd != "255" {
					t.Errorf("scroll_depth %s, want 255", sd)
				}
			}},
		{name: "ingests valid scroll_depth for a engagement event",
			reqs: []request{{body: body(`"n":"pageview"`, `"u":"https://test.com"`, `"d":"site.example"`)},
				{body: body(`"n":"engagement"`, `"u":"https://test.com"`, `"d":"site.example"`, `"sd":25`)}},
			check: func(t *testing.T, rows []storedRow, _ []string) {
				if r := findRow(t, rows, "engagement"); r["scroll_depth"] != "25" || r["engagement_time"] != "0" {
					t.Errorf("scroll_depth %s engagement_time %s, want 25 and 0", r["scroll_depth"], r["engagement_time"])
				}
			}},

		// describe "acquisition channel tests": the parts that are stored columns (the channel is not)
		{name: "parses paid search channel based on gclid", reqs: []request{pvReq(`"url":"http://example.com?gclid=123identifier"`, `"referrer":"https://google.com"`)},
			want: map[string]string{"utm_medium": "(gclid)", "click_id_param": "gclid"}, note: "acquisition_channel is not stored"},
		{name: "is not paid search when gclid is present on non-google referrer", reqs: []request{pvReq(`"url":"http://example.com?gclid=123identifier"`, `"referrer":"https://duckduckgo.com"`)},
			want: map[string]string{"utm_medium": "", "click_id_param": "gclid"}, note: "acquisition_channel is not stored"},
		{name: "does not override utm_medium with (gclid) if link is already tagged", reqs: []request{pvReq(`"url":"http://example.com?gclid=123identifier&utm_medium=paidads"`, `"referrer":"https://google.com"`)},
			want: map[string]string{"utm_medium": "paidads", "click_id_param": "gclid"}, note: "acquisition_channel is not stored"},
		{name: "parses paid search channel based on msclkid", reqs: []request{pvReq(`"url":"http://example.com?msclkid=123identifier"`, `"referrer":"https://bing.com"`)},
			want: map[string]string{"utm_medium": "(msclkid)", "click_id_param": "msclkid"}, note: "acquisition_channel is not stored"},
		{name: "is not paid search when msclkid is present on non-bing referrer", reqs: []request{pvReq(`"url":"http://example.com?msclkid=123identifier&utm_medium=cpc"`, `"referrer":"https://bing.com"`)},
			want: map[string]string{"utm_medium": "cpc", "click_id_param": "msclkid"}, note: "acquisition_channel is not stored"},
		{name: "does not override utm_medium with (msclkid) if link is already tagged", reqs: []request{pvReq(`"url":"http://example.com?gclid=123identifier&utm_medium=paidads"`, `"referrer":"https://google.com"`)},
			want: map[string]string{"utm_medium": "paidads", "click_id_param": "gclid"}, note: "acquisition_channel is not stored"},
		{name: "parses paid search channel based on utm_source and medium", reqs: []request{pvReq(`"url":"http://example.com?utm_source=google&utm_medium=paid"`)},
			want: map[string]string{"click_id_param": ""}, note: "acquisition_channel is not stored"},
	}

	// describe "custom source parsing rules" and "custom channel parsing rules": the source and
	// the tag (the channel is not stored).
	type src struct{ name, url, referrer, source, utm string }
	for _, c := range []src{
		{"threads is Threads", "?utm_source=threads", "", "Threads", "threads"},
		{"ig is Instagram", "?utm_source=ig", "", "Instagram", "ig"},
		{"yt is Youtube", "?utm_source=yt", "", "Youtube", "yt"},
		{"yt-ads is Youtube paid", "?utm_source=yt-ads", "", "Youtube", "yt-ads"},
		{"fb is Facebook", "?utm_source=fb", "", "Facebook", "fb"},
		{"fb-ads is Facebook", "?utm_source=fb-ads", "", "Facebook", "fb-ads"},
		{"fbad is Facebook", "?utm_source=fbad", "", "Facebook", "fbad"},
		{"facebook-ads is Facebook", "?utm_source=facebook-ads", "", "Facebook", "facebook-ads"},
		{"Reddit-ads is Reddit", "?utm_source=Reddit-ads", "", "Reddit", "Reddit-ads"},
		{"google_ads is Google", "?utm_source=google_ads", "", "Google", "google_ads"},
		{"Google-ads is Google", "?source=Google-ads", "", "Google", "Google-ads"},
		{"utm_source=Adwords is Google paid search", "?utm_source=Adwords", "", "Google", "Adwords"},
		{"twitter-ads is Twitter", "?utm_source=twitter-ads", "", "Twitter", "twitter-ads"},
		{"android-app://com.reddit.frontpage is Reddit", "", "android-app://com.reddit.frontpage", "Reddit", ""},
		{"perplexity.ai is Perplexity", "", "https://perplexity.ai", "Perplexity", ""},
		{"utm_source=perplexity is Perplexity", "?utm_source=perplexity", "", "Perplexity", "perplexity"},
		{"statics.teams.cdn.office.net is Microsoft Teams", "", "https://statics.teams.cdn.office.net", "Microsoft Teams", ""},
		{"wikipedia domain is resolved as Wikipedia", "", "https://en.wikipedia.org", "Wikipedia", ""},
		{"ntp.msn.com is Bing", "", "https://ntp.msn.com", "Bing", ""},
		{"search.brave.com is Brave", "", "https://search.brave.com", "Brave", ""},
		{"yandex.com.tr is Yandex", "", "https://yandex.com.tr", "Yandex", ""},
		{"yandex.kz is Yandex", "", "https://yandex.kz", "Yandex", ""},
		{"ya.ru is Yandex", "", "https://ya.ru", "Yandex", ""},
		{"yandex.uz is Yandex", "", "https://yandex.uz", "Yandex", ""},
		{"yandex.fr is Yandex", "", "https://yandex.fr", "Yandex", ""},
		{"yandex.eu is Yandex", "", "https://yandex.eu", "Yandex", ""},
		{"yandex.tm is Yandex", "", "https://yandex.tm", "Yandex", ""},
		{"discord.com is Discord", "", "https://discord.com", "Discord", ""},
		{"discordapp.com is Discord", "", "https://discordapp.com", "Discord", ""},
		{"canary.discord.com is Discord", "", "https://canary.discord.com", "Discord", ""},
		{"ptb.discord.com is Discord", "", "https://ptb.discord.com", "Discord", ""},
		{"www.baidu.com is Baidu", "", "https://baidu.com", "Baidu", ""},
		{"t.me is Telegram", "", "https://t.me", "Telegram", ""},
		{"webk.telegram.org is Telegram", "", "https://webk.telegram.org", "Telegram", ""},
		{"sogou.com is Sogou", "", "https://sogou.com", "Sogou", ""},
		{"m.sogou.com is Sogou", "", "https://m.sogou.com", "Sogou", ""},
		{"wap.sogou.com is Sogou", "", "https://wap.sogou.com", "Sogou", ""},
		{"linktr.ee is Linktree", "", "https://linktr.ee", "Linktree", ""},
		{"linktree is Linktree", "?utm_source=linktree", "", "Linktree", "linktree"},
		{"hacker news is social channel", "", "https://news.ycombinator.com", "Hacker News", ""},
		{"yahoo is organic search", "", "https://search.yahoo.com", "Yahoo!", ""},
		{"gmail is email channel", "", "https://mail.google.com", "Gmail", ""},
		{"utm_source=newsletter is email channel", "?utm_source=Newsletter-UK", "", "Newsletter-UK", "Newsletter-UK"},
		{"temu.com is shopping channel", "", "https://temu.com", "temu.com", ""},
		{"utm_source=Telegram is social channel", "?utm_source=Telegram", "", "Telegram", "Telegram"},
		{"chatgpt.com is search channel", "", "https://chatgpt.com", "chatgpt.com", ""},
		{"Slack is social channel", "", "https://app.slack.com", "Slack", ""},
		{"producthunt is social", "?ref=producthunt", "", "producthunt", "producthunt"},
		{"github is social", "", "https://github.com", "GitHub", ""},
		{"steamcommunity.com is social", "", "https://steamcommunity.com", "steamcommunity.com", ""},
		{"Vkontakte is social", "", "https://vkontakte.ru", "Vkontakte", ""},
		{"Threads is social", "", "https://threads.net", "Threads", ""},
		{"Ecosia is search", "", "https://ecosia.org", "Ecosia", ""},
	} {
		members := []string{pvName, siteD, `"url":"http://example.com` + c.url + `"`}
		if c.referrer != "" {
			members = append(members, `"referrer":"`+c.referrer+`"`)
		}
		cases = append(cases, plausibleCase{name: c.name, reqs: []request{{body: body(members...)}},
			want: map[string]string{"referrer_source": c.source, "utm_source": c.utm}, note: "acquisition_channel is not stored"})
	}

	// describe "user_id generation"
	sameVisitor := func(same bool) func(t *testing.T, rows []storedRow, _ []string) {
		return func(t *testing.T, rows []storedRow, _ []string) {
			if got := rows[0]["visitor_id"] == rows[1]["visitor_id"]; got != same {
				t.Errorf("visitor ids %s and %s: same = %v, want %v", rows[0]["visitor_id"], rows[1]["visitor_id"], got, same)
			}
		}
	}
	uid := func(ip, ua, domain, url string) request {
		return request{body: body(`"url":"`+url+`"`, `"domain":"`+domain+`"`, pvName), ip: ip, ua: ua}
	}
	const uidURL = "https://user-id-test-domain.com/"
	cases = append(cases,
		plausibleCase{name: "with same IP address and user agent, the same user ID is generated", rows: 2, check: sameVisitor(true),
			reqs: []request{uid("10.1.1.1", plausibleUA, "site.example", uidURL), uid("10.1.1.1", plausibleUA, "site.example", uidURL)},
			note: "10.1.1.1 for Plausible's 127.0.0.1, the address the test server's own proxy has here"},
		plausibleCase{name: "different IP address results in different user ID", rows: 2, check: sameVisitor(false),
			reqs: []request{uid("10.1.1.1", plausibleUA, "site.example", uidURL), uid("82.32.12.1", plausibleUA, "site.example", uidURL)}},
		plausibleCase{name: "different user agent results in different user ID", rows: 2, check: sameVisitor(false),
			reqs: []request{uid("10.1.1.1", plausibleUA, "site.example", uidURL), uid("10.1.1.1", plausibleUA+"!!", "site.example", uidURL)}},
		plausibleCase{name: "different domain value results in different user ID", rows: 2, check: sameVisitor(false),
			reqs: []request{uid("10.1.1.1", plausibleUA, "site.example", uidURL), uid("10.1.1.1", plausibleUA, "site2.example", uidURL)}},
		plausibleCase{name: "different hostname results in different user ID", rows: 2, check: sameVisitor(true),
			reqs: []request{uid("10.1.1.1", plausibleUA, "site.example", uidURL), uid("10.1.1.1", plausibleUA, "site.example", "https://other-domain.com/")},
			diff: "the visitor id hashes (workspace, d's domain, IP, user agent) as the design fixes it, not the page host's registrable domain: the same visitor on two hosts of one site is one visitor"},
		plausibleCase{name: "different hostname results in the same user ID when the root domain in the same", rows: 2, check: sameVisitor(true),
			reqs: []request{uid("10.1.1.1", plausibleUA, "site.example", uidURL), uid("10.1.1.1", plausibleUA, "site.example", "https://app.user-id-test-domain.com/")}},
	)

	// describe "remaining"
	cases = append(cases,
		plausibleCase{name: "defaults hostname to (none) when missing", reqs: []request{{ctype: "text/plain", body: body(siteD, pvName, `"url":"file:///android_asset/www/index.html"`)}},
			status: 400, diff: "file: and extension URLs are refused: they belong to no configured domain"},
		plausibleCase{name: "accepts chrome extension URLs", reqs: []request{{ctype: "text/plain", body: body(siteD, pvName, `"url":"chrome-extension://liipgellkffekalgefpjolodblggkmjg/popup.html"`)}},
			status: 400, diff: "file: and extension URLs are refused: they belong to no configured domain"},
	)
	return cases
}

// plausibleNotPorted are the tests of the same file that check a Plausible feature the collector
// does not have, with the reason; they are counted, not run.
var plausibleNotPorted = map[string]string{
	"blocks traffic from a domain when it's blocked":                          "per-site ingest blocking (Plausible's ingest_rate_limit_threshold 0); -rate-workspace limits a workspace with 429",
	"converts revenue values into the goal currency":                          "revenue goals and currency conversion (Plausible EE); the revenue is stored as sent",
	"revenue values can be sent with minified keys":                           "asserts the goal-currency conversion (EE); the $ key sent as a JSON string is ported in TestPlausibleRevenueForms",
	"saves the exact same amount when goal currency is the same as the event": "revenue goals (EE); the amount is stored as sent",
	"GET /api/health returns 200 OK":                                          "another endpoint (/healthz, /readyz here)",
}

// plausibleChannelTests are the acquisition-channel tests whose only assertion is the channel,
// which the collector does not store (a report derives it from source and medium).
var plausibleChannelTests = []string{
	"parses cross network channel", "parses paid shopping channel based on campaign/medium",
	"parses paid shopping channel based on referrer source and medium", "parses paid shopping channel based on referrer utm_source and medium",
	"parses paid search channel based on referrer and medium", "parses paid social channel based on referrer and medium",
	"parses paid social channel based on utm_source and medium", "parses paid video channel based on referrer and medium",
	"parses paid video channel based on utm_source and medium", "parses display channel", "display channel with gclid",
	"parses paid other channel", "parses organic shopping channel from referrer", "parses organic shopping channel from utm_source",
	"parses organic shopping channel from utm_campaign", "parses organic social channel from referrer",
	"parses organic social channel from utm_source", "parses organic social channel from utm_medium",
	"parses organic video channel from referrer", "parses organic video channel from utm_source",
	"parses organic video channel from utm_medium", "parses organic search channel from referrer",
	"parses organic search channel from utm_source", "parses referral channel from utm_medium", "parses email channel from utm_source",
	"parses email channel from utm_medium", "parses affiliates channel from utm_medium", "parses audio channel from utm_medium",
	"parses sms channel from utm_source", "parses sms channel from utm_medium",
	"parses mobile push notifications channel from utm_medium with push", "parses mobile push notifications channel from utm_medium",
	"parses referral channel if session starts with a simple referral", "parses direct channel if session starts without referrer or utm tags",
}

func findRow(t *testing.T, rows []storedRow, name string) storedRow {
	t.Helper()
	for _, r := range rows {
		if r["name"] == name {
			return r
		}
	}
	t.Fatalf("no %s row among %d", name, len(rows))
	return nil
}

// TestPlausibleEventsAPI runs the ported cases against the real handler and the real engine.
func TestPlausibleEventsAPI(t *testing.T) {
	h := newHarness(t, harnessOptions{workspaces: plausibleWorkspaces, geo: plausibleGeo})
	cases := plausibleCases()
	ported, diffs, passed, failed := 0, 0, 0, 0
	for i, tc := range cases {
		if !tc.ours {
			ported++
			if tc.diff != "" {
				diffs++
			}
		}
		ok := t.Run(tc.name, func(t *testing.T) {
			before := len(h.events())
			var bodies []string
			var last http.Header
			for j, r := range tc.reqs {
				if r.ua == "" {
					r.ua = plausibleUA
				}
				switch r.ip {
				case "":
					r.ip = fmt.Sprintf("100.64.%d.%d", i/250, i%250+1)
				case "-":
					r.ip = "" // no X-Forwarded-For: the case sends Forwarded
				}
				if j > 0 {
					time.Sleep(3 * time.Millisecond) // distinct millisecond timestamps
				}
				code, hdr, b := h.do(r)
				want := tc.status
				if want == 0 {
					want = 202
				}
				if code != want {
					t.Fatalf("request %d: status %d, want %d (body %s)", j, code, want, b)
				}
				bodies, last = append(bodies, b), hdr
			}
			if got := last.Get("X-Collector-Dropped"); got != tc.dropped {
				t.Fatalf("X-Collector-Dropped %q, want %q", got, tc.dropped)
			}
			evs := h.events()[before:]
			rows := storeEvents(t, evs, fmt.Sprintf("plausible-%03d", i))
			wantRows := tc.rows
			if wantRows == 0 && tc.dropped == "" && tc.status < 300 && (tc.want != nil || tc.check != nil) {
				wantRows = len(tc.reqs)
			}
			if len(rows) != wantRows {
				t.Fatalf("%d rows stored, want %d", len(rows), wantRows)
			}
			if tc.want != nil {
				last := rows[len(rows)-1]
				for col, w := range tc.want {
					if last[col] != w {
						t.Errorf("%s = %q, want %q", col, last[col], w)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, rows, bodies)
			}
		})
		switch {
		case !ok:
			failed++
		case !tc.ours:
			passed++
		}
	}
	t.Logf("Plausible's Events API tests: %d ported, %d pass (%d of them deliberate differences, asserting ours); "+
		"%d acquisition-channel-only and %d feature tests not applicable",
		ported, passed, diffs, len(plausibleChannelTests), len(plausibleNotPorted))
	if failed > 0 {
		t.Errorf("%d cases fail", failed)
	}
}

// TestPlausibleRevenueForms checks the revenue forms Plausible's trackers and integrations send,
// read as request/revenue.ex reads them, on the stored row: "$" and "revenue" as objects or as
// JSON text, and the forms that store the event without revenue (never a 400): "$":{} is what a
// tagged element without revenue classes sends.
func TestPlausibleRevenueForms(t *testing.T) {
	h := newHarness(t, harnessOptions{workspaces: plausibleWorkspaces, geo: plausibleGeo})
	tests := []struct {
		name, extra, amount, currency string
	}{
		{"minified key as JSON text", `"$":"{\"amount\":10.2,\"currency\":\"USD\"}"`, "10.2", "USD"},
		{"object", `"revenue":{"amount":"19.90","currency":"EUR"}`, "19.9", "EUR"},
		{"integer amount", `"$":{"amount":10,"currency":"BRL"}`, "10", "BRL"},
		{"amount with trailing text", `"$":{"amount":"12.5 EUR","currency":"EUR"}`, "12.5", "EUR"},
		{"lower-case currency", `"$":{"amount":1,"currency":"usd"}`, "1", "USD"},
		{"revenue before $", `"revenue":{"amount":2,"currency":"EUR"},"$":{"amount":3,"currency":"USD"}`, "2", "EUR"},
		{"null revenue, $ taken", `"revenue":null,"$":{"amount":3,"currency":"USD"}`, "3", "USD"},
		{"empty object", `"$":{}`, "0", ""},
		{"empty object as text", `"$":"{}"`, "0", ""},
		{"no amount", `"$":{"currency":"EUR"}`, "0", ""},
		{"no currency", `"$":{"amount":10}`, "0", ""},
		{"bad amount", `"$":{"amount":"ten","currency":"EUR"}`, "0", ""},
		{"boolean amount", `"$":{"amount":true,"currency":"EUR"}`, "0", ""},
		{"long currency", `"$":{"amount":1,"currency":"EURO"}`, "0", ""},
		{"number currency", `"$":{"amount":1,"currency":978}`, "0", ""},
		{"huge amount", `"$":{"amount":1e300,"currency":"EUR"}`, "0", ""},
		{"not an object", `"$":"10 EUR"`, "0", ""},
		{"array", `"$":[10,"EUR"]`, "0", ""},
		{"empty revenue object hides $", `"revenue":{},"$":{"amount":3,"currency":"USD"}`, "0", ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.events())
			code, _, b := h.do(request{body: body(`"n":"Purchase"`, exURL, siteD, tc.extra), ua: plausibleUA, ip: "100.64.9.9"})
			if code != 202 {
				t.Fatalf("status %d (%s), want 202", code, b)
			}
			rows := storeEvents(t, h.events()[before:], fmt.Sprintf("revenue-%02d", i))
			if len(rows) != 1 {
				t.Fatalf("%d rows, want 1", len(rows))
			}
			if r := rows[0]; r["revenue_amount"] != tc.amount || r["revenue_currency"] != tc.currency || r["name"] != "Purchase" {
				t.Errorf("stored %s %s %s, want Purchase %s %s", r["name"], r["revenue_amount"], r["revenue_currency"], tc.amount, tc.currency)
			}
		})
	}
}
