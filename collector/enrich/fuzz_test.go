package enrich

import (
	"testing"
	"unicode/utf8"
)

func FuzzUA(f *testing.F) {
	for _, s := range []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)",
		"Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 Version/12.16",
		"Mozilla/5.0 (((;;)))",
		"",
		"curl/8.5.0",
	} {
		f.Add([]byte(s))
	}
	p := NewUAParser(16)
	f.Fuzz(func(t *testing.T, ua []byte) {
		u := p.Parse(ua)
		if u.Bot != (u.BotReason != "") {
			t.Fatalf("Bot %v with reason %q", u.Bot, u.BotReason)
		}
		switch u.Device {
		case DeviceDesktop, DeviceMobile, DeviceTablet:
		default:
			t.Fatalf("device %q", u.Device)
		}
		if majorMinor(u.BrowserVersion) != u.BrowserVersion || len(u.BrowserVersion) > 17 {
			t.Fatalf("browser version %q is not major.minor", u.BrowserVersion)
		}
		if plainName(u.Browser) != u.Browser || plainName(u.OS) != u.OS && u.OS != "GNU/Linux" {
			t.Fatalf("free text in browser %q or OS %q", u.Browser, u.OS)
		}
		if again := p.Parse(ua); again != u {
			t.Fatalf("second parse %+v differs from %+v", again, u)
		}
	})
}

func FuzzParsePage(f *testing.F) {
	for _, s := range []string{
		"https://www.Example.com:8443/a/b?utm_source=x&utm_medium=y%20z&gclid=1#frag",
		"http://user:pw@example.com",
		"https://example.com/#/route?utm_campaign=c",
		"ftp://example.com/",
		"https://[2001:db8::1]:443/p",
		"https://example.com\\evil",
		"https://%zz",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, hash bool) {
		p, err := ParsePage(raw, hash)
		if err != nil {
			if p != (Page{}) {
				t.Fatalf("error %v with non-empty page %+v", err, p)
			}
			return
		}
		if p.Hostname == "" || p.Pathname == "" {
			t.Fatalf("accepted %q without host or path: %+v", raw, p)
		}
		if !hash && containsAny(p.Pathname, "?#") {
			t.Fatalf("pathname %q keeps a query or fragment", p.Pathname)
		}
		if utf8.ValidString(raw) && !utf8.ValidString(p.Hostname) {
			t.Fatalf("invalid host from valid input")
		}
	})
}

func FuzzParseReferrer(f *testing.F) {
	for _, s := range []string{
		"https://www.google.com/search?q=x",
		"android-app://com.google.android.gm/",
		"https://l.facebook.com/l.php?u=x",
		"//example.org/a#b",
		"https://acme.example/page",
		"https://user@[::1]:80/x",
		"not a url at all",
	} {
		f.Add(s, "acme.example")
	}
	f.Fuzz(func(t *testing.T, raw, site string) {
		r := ParseReferrer(raw, site)
		if r == (Referrer{}) {
			return
		}
		if r.Host == "" || r.Source == "" || r.URL == "" {
			t.Fatalf("partial referrer %+v from %q", r, raw)
		}
		if containsAny(r.URL, "?#") || containsAny(r.Host, " /?#@") {
			t.Fatalf("referrer %+v keeps a query, fragment or bad host", r)
		}
	})
}

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}
