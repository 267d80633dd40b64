package enrich

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kyomi/collector/collector/bot"
)

// readCorpus reads a one-per-line corpus from the repository's testdata.
func readCorpus(t testing.TB, rel string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", rel))
	if err != nil {
		t.Fatalf("cannot open corpus: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("cannot read corpus: %v", err)
	}
	return out
}

func TestParseUA(t *testing.T) {
	tests := []struct {
		name string
		ua   string
		want UA
	}{
		{name: "chrome windows", ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "124.0", OS: "Windows", OSVersion: "10", Device: DeviceDesktop}},
		{name: "chrome android reduced", ua: "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "124.0", OS: "Android", OSVersion: "10", Device: DeviceMobile}},
		{name: "chrome android tablet", ua: "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "120.0", OS: "Android", OSVersion: "13", Device: DeviceTablet}},
		{name: "chrome ios", ua: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/123.0.6312.52 Mobile/15E148 Safari/604.1",
			want: UA{Browser: "Chrome", BrowserVersion: "123.0", OS: "iOS", OSVersion: "17.4", Device: DeviceMobile}},
		{name: "firefox linux", ua: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
			want: UA{Browser: "Firefox", BrowserVersion: "128.0", OS: "GNU/Linux", Device: DeviceDesktop}},
		{name: "firefox android tablet", ua: "Mozilla/5.0 (Android 13; Tablet; rv:128.0) Gecko/128.0 Firefox/128.0",
			want: UA{Browser: "Firefox", BrowserVersion: "128.0", OS: "Android", OSVersion: "13", Device: DeviceTablet}},
		{name: "safari mac", ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
			want: UA{Browser: "Safari", BrowserVersion: "17.4", OS: "Mac", OSVersion: "10.15", Device: DeviceDesktop}},
		{name: "safari ipad", ua: "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
			want: UA{Browser: "Safari", BrowserVersion: "17.4", OS: "iOS", OSVersion: "17.4", Device: DeviceTablet}},
		{name: "edge", ua: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
			want: UA{Browser: "Microsoft Edge", BrowserVersion: "124.0", OS: "Windows", OSVersion: "10", Device: DeviceDesktop}},
		{name: "opera", ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0",
			want: UA{Browser: "Opera", BrowserVersion: "110.0", OS: "Mac", OSVersion: "10.15", Device: DeviceDesktop}},
		{name: "samsung", ua: "Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
			want: UA{Browser: "Samsung Browser", BrowserVersion: "26.0", OS: "Android", OSVersion: "14", Device: DeviceMobile}},
		{name: "ie11", ua: "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
			want: UA{Browser: "Internet Explorer", BrowserVersion: "11.0", OS: "Windows", OSVersion: "10", Device: DeviceDesktop}},
		{name: "windows 7", ua: "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "109.0", OS: "Windows", OSVersion: "7", Device: DeviceDesktop}},
		{name: "chrome os", ua: "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "124.0", OS: "Chrome OS", Device: DeviceDesktop}},
		{name: "cubot phone is no bot", ua: "Mozilla/5.0 (Linux; Android 11; CUBOT X30 Build/RP1A.200720.011) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 Mobile Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "119.0", OS: "Android", OSVersion: "11", Device: DeviceMobile}},
		{name: "plausible's desktop agent", ua: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_13_4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.110 Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "70.0", OS: "Mac", OSVersion: "10.13", Device: DeviceDesktop}},
		{name: "plausible's mobile agent", ua: "Mozilla/5.0 (Linux; Android 6.0; U007 Pro Build/MRA58K; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/44.0.2403.119 Mobile Safari/537.36",
			want: UA{Browser: "Chrome", BrowserVersion: "44.0", OS: "Android", OSVersion: "6.0", Device: DeviceMobile}},
		{name: "plausible's tablet agent", ua: "Mozilla/5.0 (Linux; U; Android 4.2.2; it-it; Surfing TAB B 9.7 3G Build/JDQ39) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
			want: UA{Browser: "Android Browser", BrowserVersion: "4.0", OS: "Android", OSVersion: "4.2", Device: DeviceTablet}},
		{name: "facebook in-app", ua: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/456.0.0.40.109]",
			want: UA{Browser: "Mobile App", OS: "iOS", OSVersion: "17.4", Device: DeviceMobile}},
		{name: "empty", ua: "  ", want: UA{Device: DeviceDesktop, Bot: true, BotReason: bot.ReasonEmptyUA}},
		{name: "headless chrome", ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36",
			want: UA{Browser: "Headless Chrome", BrowserVersion: "124.0", OS: "GNU/Linux", Device: DeviceDesktop, Bot: true, BotReason: bot.ReasonHeadless}},
		{name: "googlebot", ua: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
			want: UA{Device: DeviceDesktop, Bot: true, BotReason: bot.ReasonBotUA}},
		{name: "curl", ua: "curl/8.5.0", want: UA{Device: DeviceDesktop, Bot: true, BotReason: bot.ReasonBotUA}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseUA(tc.ua)
			if tc.want.Bot {
				// For bots only the verdict and reason are contractual.
				got = UA{Device: got.Device, Bot: got.Bot, BotReason: got.BotReason, Browser: got.Browser, BrowserVersion: got.BrowserVersion, OS: got.OS, OSVersion: got.OSVersion}
				if got.Bot != tc.want.Bot || got.BotReason != tc.want.BotReason {
					t.Fatalf("ParseUA = %+v, want bot %q", got, tc.want.BotReason)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("ParseUA =\n %+v, want\n %+v", got, tc.want)
			}
		})
	}
}

// TestBrowserCorpus is the false-positive test: no real browser user agent
// may be classified as a bot, and every one must yield a browser, an OS and
// a major version.
func TestBrowserCorpus(t *testing.T) {
	uas := readCorpus(t, "ua/browsers.txt")
	if len(uas) < 200 {
		t.Fatalf("browser corpus has %d user agents, want >= 200", len(uas))
	}
	fp := 0
	for _, ua := range uas {
		u := ParseUA(ua)
		if u.Bot {
			fp++
			t.Errorf("false positive (%s): %s", u.BotReason, ua)
		}
		if u.Browser == "" || u.OS == "" {
			t.Errorf("no browser or OS (%+v): %s", u, ua)
		}
		if u.Device == "" {
			t.Errorf("no device: %s", ua)
		}
	}
	t.Logf("false positives: %d of %d real browser user agents (%.2f%%)", fp, len(uas), 100*float64(fp)/float64(len(uas)))
}

// TestBotCorpus is the detection-rate test: every user agent of the bot
// corpus must be classified as a bot.
func TestBotCorpus(t *testing.T) {
	uas := readCorpus(t, "bots/bots.txt")
	if len(uas) < 150 {
		t.Fatalf("bot corpus has %d user agents, want >= 150", len(uas))
	}
	hit := 0
	reasons := map[string]int{}
	for _, ua := range uas {
		u := ParseUA(ua)
		if u.Bot {
			hit++
			reasons[u.BotReason]++
		} else {
			t.Errorf("missed bot: %s", ua)
		}
	}
	t.Logf("detected %d of %d bot user agents (%.1f%%), by reason %v", hit, len(uas), 100*float64(hit)/float64(len(uas)), reasons)
}

func TestUAParserCache(t *testing.T) {
	p := NewUAParser(64)
	ua := []byte("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
	first := p.Parse(ua)
	// The caller's buffer is reused by fasthttp: mutating it must not
	// change what the cache returns.
	saved := string(ua)
	for i := range ua {
		ua[i] = 'x'
	}
	if again := p.Parse([]byte(saved)); again != first {
		t.Fatalf("cached parse changed after the input buffer was reused: %+v vs %+v", again, first)
	}
	if first.Browser != "Chrome" || first.BrowserVersion != "124.0" {
		t.Fatalf("unexpected parse %+v", first)
	}
	hits, misses := p.CacheStats()
	if hits != 1 || misses != 1 {
		t.Fatalf("hits, misses = %d, %d; want 1, 1", hits, misses)
	}

	// The cache stays bounded whatever the number of distinct agents.
	for i := 0; i < 5000; i++ {
		p.Parse(fmt.Appendf(nil, "Mozilla/5.0 (X11; Linux x86_64; rv:%d.0) Gecko/20100101 Firefox/%d.0", i, i))
	}
	if n := p.CacheLen(); n > 64+uaShards || n == 0 {
		t.Fatalf("cache holds %d entries, want between 1 and %d", n, 64+uaShards)
	}

	off := NewUAParser(0)
	if got := off.Parse([]byte(saved)); got != first {
		t.Fatalf("uncached parse %+v differs from cached %+v", got, first)
	}
	if off.CacheLen() != 0 {
		t.Fatalf("disabled cache holds entries")
	}
}

func TestUAParserHitDoesNotAllocate(t *testing.T) {
	p := NewUAParser(1000)
	ua := []byte("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
	p.Parse(ua)
	if n := testing.AllocsPerRun(1000, func() { p.Parse(ua) }); n != 0 {
		t.Fatalf("cache hit allocates %v times, want 0", n)
	}
}

func TestUAParserConcurrent(t *testing.T) {
	p := NewUAParser(100)
	uas := readCorpus(t, "ua/browsers.txt")
	want := make([]UA, len(uas))
	for i, ua := range uas {
		want[i] = ParseUA(ua)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 5; round++ {
				for i, ua := range uas {
					if got := p.Parse([]byte(ua)); got != want[i] {
						errs <- fmt.Sprintf("concurrent parse of %q = %+v, want %+v", ua, got, want[i])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func BenchmarkUAParse(b *testing.B) {
	uas := readCorpus(b, "ua/browsers.txt")
	b.Run("hit", func(b *testing.B) {
		p := NewUAParser(DefaultUACacheSize)
		bs := make([][]byte, len(uas))
		for i, ua := range uas {
			bs[i] = []byte(ua)
			p.Parse(bs[i])
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p.Parse(bs[i%len(bs)])
			i++
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		p := NewUAParser(DefaultUACacheSize)
		bs := make([][]byte, len(uas))
		for i, ua := range uas {
			bs[i] = []byte(ua)
			p.Parse(bs[i])
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				p.Parse(bs[i%len(bs)])
				i++
			}
		})
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ParseUA(uas[i%len(uas)])
			i++
		}
	})
}
