package bot

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kyomi/collector/internal/testkit"
)

const chromeUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"

func readCorpus(t testing.TB, rel string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", rel))
	if err != nil {
		t.Fatalf("cannot open corpus: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("cannot read corpus: %v", err)
	}
	return out
}

// writeFile writes content to a file name in a new temporary directory and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	testkit.WriteFile(t, path, []byte(content))
	return path
}

func newFilter(t testing.TB, cfg Config) *Filter {
	t.Helper()
	f, err := NewFilter(cfg)
	if err != nil {
		t.Fatalf("NewFilter: %v", err)
	}
	return f
}

// browserRequest is what a real browser's sendBeacon carries.
func browserRequest(ua string) *Request {
	return &Request{
		UA:             []byte(ua),
		AcceptLanguage: []byte("en-GB,en;q=0.9"),
		ReferrerHost:   "google.com",
		ClientIP:       netip.MustParseAddr("198.51.100.20"),
	}
}

func TestCheck(t *testing.T) {
	dc := writeFile(t, "dc.txt", "# cloud\n192.0.2.0/24\n2001:db8:100::/48\n203.0.113.7\n")
	f := newFilter(t, Config{DatacenterFile: dc, ExtraSpamDomains: []string{"Spam.Example"}, ExtraUAMarkers: []string{"AcmeMonitor"}})
	strict := newFilter(t, Config{Strict: true})
	tests := []struct {
		name   string
		f      *Filter
		mutate func(r *Request)
		want   string
	}{
		{name: "real browser kept", f: f, mutate: func(r *Request) {}, want: ""},
		{name: "empty ua", f: f, mutate: func(r *Request) { r.UA = nil }, want: ReasonEmptyUA},
		{name: "crawler ua", f: f, mutate: func(r *Request) {
			r.UA = []byte("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)")
		}, want: ReasonBotUA},
		{name: "library ua", f: f, mutate: func(r *Request) { r.UA = []byte("python-requests/2.31.0") }, want: ReasonBotUA},
		{name: "headless ua", f: f, mutate: func(r *Request) {
			r.UA = []byte("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36")
		}, want: ReasonHeadless},
		{name: "extra ua marker", f: f, mutate: func(r *Request) { r.UA = []byte(chromeUA + " acmemonitor/1.0") }, want: ReasonBotUA},
		{name: "given verdict is trusted", f: f, mutate: func(r *Request) { r.UAReason = ptr(ReasonHeadless) }, want: ReasonHeadless},
		{name: "given verdict human", f: f, mutate: func(r *Request) { r.UA = []byte("curl/8"); r.UAReason = ptr("") }, want: ""},
		{name: "chrome prefetch", f: f, mutate: func(r *Request) { r.Purpose = []byte("prefetch") }, want: ReasonPrefetch},
		{name: "chrome prerender", f: f, mutate: func(r *Request) { r.Purpose = []byte("prefetch;prerender") }, want: ReasonPrefetch},
		{name: "safari preview", f: f, mutate: func(r *Request) { r.Purpose = []byte("Preview") }, want: ReasonPrefetch},
		{name: "other purpose kept", f: f, mutate: func(r *Request) { r.Purpose = []byte("navigate") }, want: ""},
		{name: "spam referrer", f: f, mutate: func(r *Request) { r.ReferrerHost = "semalt.com" }, want: ReasonSpamReferrer},
		{name: "spam referrer subdomain", f: f, mutate: func(r *Request) { r.ReferrerHost = "x.y.darodar.com" }, want: ReasonSpamReferrer},
		{name: "spam referrer www and case", f: f, mutate: func(r *Request) { r.ReferrerHost = "WWW.Buttons-For-Website.com" }, want: ReasonSpamReferrer},
		{name: "extra spam domain", f: f, mutate: func(r *Request) { r.ReferrerHost = "spam.example" }, want: ReasonSpamReferrer},
		{name: "look-alike not spam", f: f, mutate: func(r *Request) { r.ReferrerHost = "notsemalt.com" }, want: ""},
		{name: "datacenter v4", f: f, mutate: func(r *Request) { r.ClientIP = netip.MustParseAddr("192.0.2.200") }, want: ReasonDatacenterIP},
		{name: "datacenter single", f: f, mutate: func(r *Request) { r.ClientIP = netip.MustParseAddr("203.0.113.7") }, want: ReasonDatacenterIP},
		{name: "datacenter single neighbour", f: f, mutate: func(r *Request) { r.ClientIP = netip.MustParseAddr("203.0.113.8") }, want: ""},
		{name: "datacenter v6", f: f, mutate: func(r *Request) { r.ClientIP = netip.MustParseAddr("2001:db8:100:ffff::1") }, want: ReasonDatacenterIP},
		{name: "datacenter mapped", f: f, mutate: func(r *Request) { r.ClientIP = netip.MustParseAddr("::ffff:192.0.2.1") }, want: ReasonDatacenterIP},
		{name: "outside datacenter v6", f: f, mutate: func(r *Request) { r.ClientIP = netip.MustParseAddr("2001:db8:101::1") }, want: ""},
		{name: "invalid ip kept", f: f, mutate: func(r *Request) { r.ClientIP = netip.Addr{} }, want: ""},
		{name: "no accept-language kept by default", f: f, mutate: func(r *Request) { r.AcceptLanguage = nil }, want: ""},
		{name: "no accept-language strict", f: strict, mutate: func(r *Request) { r.AcceptLanguage = []byte(" ") }, want: ReasonNoAcceptLanguage},
		{name: "accept-language strict kept", f: strict, mutate: func(r *Request) {}, want: ""},
		{name: "ua verdict before other reasons", f: f, mutate: func(r *Request) { r.UA = nil; r.ReferrerHost = "semalt.com" }, want: ReasonEmptyUA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := browserRequest(chromeUA)
			tc.mutate(r)
			if got := tc.f.Check(r); got != tc.want {
				t.Fatalf("Check = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBrowserCorpusKept: no real browser with ordinary headers is dropped.
func TestBrowserCorpusKept(t *testing.T) {
	f := newFilter(t, Config{})
	uas := readCorpus(t, "ua/browsers.txt")
	dropped := 0
	for _, ua := range uas {
		if reason := f.Check(browserRequest(ua)); reason != "" {
			dropped++
			t.Errorf("real browser dropped (%s): %s", reason, ua)
		}
	}
	t.Logf("false positives: %d of %d real browsers", dropped, len(uas))
}

func TestBotCorpusDropped(t *testing.T) {
	f := newFilter(t, Config{})
	uas := readCorpus(t, "bots/bots.txt")
	caught := 0
	for _, ua := range uas {
		if f.Check(browserRequest(ua)) != "" {
			caught++
		} else {
			t.Errorf("bot kept: %s", ua)
		}
	}
	t.Logf("detection: %d of %d bots", caught, len(uas))
}

func TestSpamList(t *testing.T) {
	matomo := listLines(referrerSpamTxt)
	if len(matomo) < 2000 {
		t.Fatalf("Matomo's referrer-spam list has %d domains, want >= 2000", len(matomo))
	}
	domains := append(matomo, listLines(spamDomainsTxt)...)
	for _, d := range domains {
		if d != strings.ToLower(d) || strings.ContainsAny(d, " /:@") || !strings.Contains(d, ".") {
			t.Errorf("spam list entry %q is not a lower-case host name", d)
		}
	}
	f := newFilter(t, Config{})
	for _, spam := range []string{"1-best-seo.com", "www.1-best-seo.com", "semalt.com", "x.darodar.com", "qiwi.xyz", "prizesk.com"} {
		if !f.spamHost(strings.TrimPrefix(spam, "www.")) {
			t.Errorf("%q is not on the spam list", spam)
		}
	}
	for _, legit := range []string{"google.com", "bing.com", "facebook.com", "t.co", "github.com", "news.ycombinator.com", "reddit.com", "chatgpt.com", "com", "co.uk", "ru"} {
		if f.spamHost(legit) {
			t.Errorf("legitimate referrer %q is on the spam list", legit)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "zero value", cfg: Config{}},
		{name: "missing datacenter file", cfg: Config{DatacenterFile: "/nonexistent/dc.txt"}, wantErr: []string{"data-centre list"}},
		{name: "all errors reported", cfg: Config{ExtraSpamDomains: []string{"http://x"}, ExtraUAMarkers: []string{" "}},
			wantErr: []string{"is not a host name", "marker is empty"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", tc.cfg)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, err := NewFilter(tc.cfg); err == nil {
				t.Fatalf("NewFilter accepted an invalid config")
			}
		})
	}
}

func TestDatacenterRanges(t *testing.T) {
	t.Run("bad lines reported", func(t *testing.T) {
		path := writeFile(t, "dc.txt", "10.0.0.0/8\nnot-a-cidr\n10.0.0.0/99\n")
		_, err := NewFilter(Config{DatacenterFile: path})
		if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "line 3") {
			t.Fatalf("err = %v, want lines 2 and 3 reported", err)
		}
	})
	t.Run("merged and searched", func(t *testing.T) {
		path := writeFile(t, "dc.txt", "10.0.0.0/9\n10.128.0.0/9 # adjacent\n10.1.0.0/16 # inside\n172.16.0.0/12\n::ffff:100.64.0.0/106\nfd00::/8\n")
		f := newFilter(t, Config{DatacenterFile: path})
		if got := f.DatacenterRanges(); got != 4 {
			t.Fatalf("DatacenterRanges = %d, want 4 after merging", got)
		}
		for ip, want := range map[string]bool{
			"10.0.0.0": true, "10.255.255.255": true, "11.0.0.0": false, "9.255.255.255": false,
			"172.31.255.255": true, "172.32.0.0": false, "100.64.0.1": true, "100.128.0.0": false,
			"fd12::1": true, "fe80::1": false, "::a00:1": false,
		} {
			if got := f.datacenters.contains(netip.MustParseAddr(ip)); got != want {
				t.Errorf("contains(%s) = %v, want %v", ip, got, want)
			}
		}
	})
}

func TestCheckAllocs(t *testing.T) {
	dc := writeFile(t, "dc.txt", "192.0.2.0/24\n")
	f := newFilter(t, Config{DatacenterFile: dc, Strict: true})
	r := browserRequest(chromeUA)
	r.ReferrerHost = "sub.example.org"
	r.UAReason = ptr(AgentReason(chromeUA)) // as the event handler passes enrich's cached verdict
	if n := testing.AllocsPerRun(1000, func() { f.Check(r) }); n != 0 {
		t.Fatalf("Check allocates %v times per call, want 0", n)
	}
}

func BenchmarkCheck(b *testing.B) {
	dc := writeFile(b, "dc.txt", "192.0.2.0/24\n2001:db8::/32\n")
	f := newFilter(b, Config{DatacenterFile: dc})
	uas := readCorpus(b, "ua/browsers.txt")
	reqs := make([]*Request, len(uas))
	for i, ua := range uas {
		reqs[i] = browserRequest(ua)
		reqs[i].ReferrerHost = "news.example.org"
	}
	// judged-ua: Check reads each user agent with AgentReason, as without enrich's cache.
	b.Run("judged-ua", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f.Check(reqs[i%len(reqs)])
			i++
		}
	})
	// given-verdict: the event handler's call, with the verdict enrich cached.
	b.Run("given-verdict", func(b *testing.B) {
		given := make([]*Request, len(reqs))
		for i, r := range reqs {
			g := *r
			g.UAReason = ptr(AgentReason(string(r.UA)))
			given[i] = &g
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f.Check(given[i%len(given)])
			i++
		}
	})
}

func ptr[T any](v T) *T { return &v }
