package enrich

import (
	"errors"
	"testing"
)

func TestParsePage(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		hash    bool
		want    Page
		wantErr error
	}{
		{name: "plain", raw: "https://acme.example/pricing", want: Page{Hostname: "acme.example", Pathname: "/pricing"}},
		{name: "root without slash", raw: "https://acme.example", want: Page{Hostname: "acme.example", Pathname: "/"}},
		{name: "www, case and port stripped", raw: "HTTPS://WWW.Acme.Example:8443/Docs", want: Page{Hostname: "acme.example", Pathname: "/Docs"}},
		{name: "user info stripped", raw: "http://user:secret@acme.example/a", want: Page{Hostname: "acme.example", Pathname: "/a"}},
		{name: "query dropped except utm", raw: "https://acme.example/p?email=a%40b.c&utm_source=news&utm_medium=email&utm_campaign=spring%20sale&utm_content=hero&utm_term=shoes+red&token=abc",
			want: Page{Hostname: "acme.example", Pathname: "/p", UTMSource: "news", UTMMedium: "email", UTMCampaign: "spring sale", UTMContent: "hero", UTMTerm: "shoes red"}},
		{name: "bad escape kept verbatim", raw: "https://acme.example/?utm_source=%zz", want: Page{Hostname: "acme.example", Pathname: "/", UTMSource: "%zz"}},
		{name: "first utm wins", raw: "https://acme.example/?utm_source=a&utm_source=b", want: Page{Hostname: "acme.example", Pathname: "/", UTMSource: "a"}},
		{name: "click id name only", raw: "https://acme.example/l?gclid=EAIaIQobChMI&x=1", want: Page{Hostname: "acme.example", Pathname: "/l", ClickIDParam: "gclid", Gclid: true}},
		{name: "fbclid", raw: "https://acme.example/?fbclid=IwAR3", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "fbclid"}},
		{name: "msclkid", raw: "https://acme.example/?msclkid=1", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "msclkid", Msclkid: true}},
		{name: "ttclid", raw: "https://acme.example/?ttclid=1", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "ttclid"}},
		{name: "twclid", raw: "https://acme.example/?twclid=1", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "twclid"}},
		{name: "li_fat_id", raw: "https://acme.example/?li_fat_id=1", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "li_fat_id"}},
		{name: "dclid", raw: "https://acme.example/?dclid=1", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "dclid"}},
		{name: "gbraid", raw: "https://acme.example/?gbraid=1", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "gbraid"}},
		{name: "wbraid", raw: "https://acme.example/?wbraid=1", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "wbraid"}},
		{name: "first click id wins", raw: "https://acme.example/?fbclid=1&gclid=2", want: Page{Hostname: "acme.example", Pathname: "/", ClickIDParam: "fbclid", Gclid: true}},
		{name: "ref is the source tag", raw: "https://acme.example/?ref=betalist", want: Page{Hostname: "acme.example", Pathname: "/", UTMSource: "betalist"}},
		{name: "source is the source tag", raw: "https://acme.example/?source=Google-ads&ref=x", want: Page{Hostname: "acme.example", Pathname: "/", UTMSource: "Google-ads"}},
		{name: "utm_source wins over source and ref", raw: "https://acme.example/?ref=a&source=b&utm_source=c", want: Page{Hostname: "acme.example", Pathname: "/", UTMSource: "c"}},
		{name: "fragment dropped", raw: "https://acme.example/a#section", want: Page{Hostname: "acme.example", Pathname: "/a"}},
		{name: "hash mode keeps route", raw: "https://acme.example/app#/settings/profile", hash: true, want: Page{Hostname: "acme.example", Pathname: "/app#/settings/profile"}},
		{name: "hash mode route query", raw: "https://acme.example/#/x?utm_source=hn&secret=1", hash: true, want: Page{Hostname: "acme.example", Pathname: "/#/x", UTMSource: "hn"}},
		{name: "hash mode with path query", raw: "https://acme.example/a?utm_medium=m#/b", hash: true, want: Page{Hostname: "acme.example", Pathname: "/a#/b", UTMMedium: "m"}},
		{name: "hash mode empty fragment", raw: "https://acme.example/a#", hash: true, want: Page{Hostname: "acme.example", Pathname: "/a"}},
		{name: "ipv6 host", raw: "http://[2001:db8::1]:8080/x", want: Page{Hostname: "[2001:db8::1]", Pathname: "/x"}},
		{name: "backslash as slash", raw: "https://acme.example\\a", want: Page{Hostname: "acme.example", Pathname: "/a"}},
		{name: "leading spaces", raw: "  https://acme.example/  ", want: Page{Hostname: "acme.example", Pathname: "/"}},
		{name: "host keeps www", raw: "HTTPS://WWW.Acme.Example:8443/Docs", want: Page{Host: "www.acme.example", Hostname: "acme.example", Pathname: "/Docs"}},
		{name: "backslash ends the authority", raw: `https://evil.example\@acme.example/x`, want: Page{Host: "evil.example", Hostname: "evil.example", Pathname: "/@acme.example/x"}},
		{name: "userinfo ends at the last at", raw: "https://acme.example@evil.example/", want: Page{Host: "evil.example", Hostname: "evil.example", Pathname: "/"}},
		{name: "path parameters dropped", raw: "https://acme.example/x;jsessionid=SECRET?utm_source=a", want: Page{Hostname: "acme.example", Pathname: "/x", UTMSource: "a"}},
		{name: "path parameter in a segment", raw: "https://acme.example/a;v=1/b", want: Page{Hostname: "acme.example", Pathname: "/a"}},
		{name: "hash route parameters dropped", raw: "https://acme.example/#/r;token=SECRET", hash: true, want: Page{Hostname: "acme.example", Pathname: "/#/r"}},
		{name: "percent-decoded", raw: "https://acme.example/caf%C3%A9/%D8%AC", want: Page{Hostname: "acme.example", Pathname: "/café/ج"}},
		{name: "decoded hash route", raw: "https://acme.example/caf%C3%A9#/s%C3%BC", hash: true, want: Page{Hostname: "acme.example", Pathname: "/café#/sü"}},
		{name: "encoded slash decoded", raw: "https://acme.example/a%2Fb", want: Page{Hostname: "acme.example", Pathname: "/a/b"}},
		{name: "trailing encoded space trimmed", raw: "https://acme.example/path%20", want: Page{Hostname: "acme.example", Pathname: "/path"}},
		{name: "bad escape kept", raw: "https://acme.example/100%zz", want: Page{Hostname: "acme.example", Pathname: "/100%zz"}},
		{name: "invalid UTF-8 kept encoded", raw: "https://acme.example/%C3", want: Page{Hostname: "acme.example", Pathname: "/%C3"}},
		{name: "control character kept encoded", raw: "https://acme.example/a%0Ab", want: Page{Hostname: "acme.example", Pathname: "/a%0Ab"}},
		{name: "empty", raw: "", wantErr: ErrURLEmpty},
		{name: "ftp", raw: "ftp://acme.example/", wantErr: ErrURLScheme},
		{name: "javascript", raw: "javascript:alert(1)", wantErr: ErrURLScheme},
		{name: "relative", raw: "/pricing", wantErr: ErrURLScheme},
		{name: "no host", raw: "https:///path", wantErr: ErrURLHost},
		{name: "port only", raw: "https://:443/", wantErr: ErrURLHost},
		{name: "space in host", raw: "https://a b/", wantErr: ErrURLHost},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePage(tc.raw, tc.hash)
			if tc.want.Host == "" {
				got.Host = "" // checked by the cases that name it
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("ParsePage =\n %+v, want\n %+v", got, tc.want)
			}
		})
	}
}

func TestParsePageErrorsDoNotEchoInput(t *testing.T) {
	_, err := ParsePage("ftp://secret-token@acme.example/?email=a@b.c", false)
	if err == nil || err.Error() != "url must be http or https" {
		t.Fatalf("err = %v, want the fixed message", err)
	}
}

func TestParseReferrer(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		site string
		want Referrer
	}{
		{name: "empty", raw: "", site: "acme.example", want: Referrer{}},
		{name: "google", raw: "https://www.google.com/", site: "acme.example", want: Referrer{URL: "google.com", Host: "google.com", Source: "Google"}},
		{name: "google country", raw: "https://www.google.co.uk/search?q=x", site: "acme.example", want: Referrer{URL: "google.co.uk/search", Host: "google.co.uk", Source: "Google"}},
		{name: "google de", raw: "https://google.de/", site: "acme.example", want: Referrer{URL: "google.de", Host: "google.de", Source: "Google"}},
		{name: "bing", raw: "https://www.bing.com/search?q=a", site: "acme.example", want: Referrer{URL: "bing.com/search", Host: "bing.com", Source: "Bing"}},
		{name: "duckduckgo", raw: "https://duckduckgo.com/", site: "acme.example", want: Referrer{URL: "duckduckgo.com", Host: "duckduckgo.com", Source: "DuckDuckGo"}},
		{name: "twitter t.co", raw: "https://t.co/abc123", site: "acme.example", want: Referrer{URL: "t.co/abc123", Host: "t.co", Source: "Twitter"}},
		{name: "x.com", raw: "https://x.com/", site: "acme.example", want: Referrer{URL: "x.com", Host: "x.com", Source: "Twitter"}},
		{name: "facebook link shim", raw: "https://l.facebook.com/l.php?u=https%3A%2F%2Facme.example", site: "acme.example", want: Referrer{URL: "l.facebook.com/l.php", Host: "l.facebook.com", Source: "Facebook"}},
		{name: "facebook mobile", raw: "https://m.facebook.com/", site: "acme.example", want: Referrer{URL: "m.facebook.com", Host: "m.facebook.com", Source: "Facebook"}},
		{name: "linkedin", raw: "https://www.linkedin.com/feed/", site: "acme.example", want: Referrer{URL: "linkedin.com/feed", Host: "linkedin.com", Source: "LinkedIn"}},
		{name: "reddit subdomain", raw: "https://old.reddit.com/r/golang/", site: "acme.example", want: Referrer{URL: "old.reddit.com/r/golang", Host: "old.reddit.com", Source: "Reddit"}},
		{name: "github", raw: "https://github.com/kyomi/collector", site: "acme.example", want: Referrer{URL: "github.com/kyomi/collector", Host: "github.com", Source: "GitHub"}},
		{name: "hacker news", raw: "https://news.ycombinator.com/item?id=1", site: "acme.example", want: Referrer{URL: "news.ycombinator.com/item", Host: "news.ycombinator.com", Source: "Hacker News"}},
		{name: "gmail", raw: "https://mail.google.com/", site: "acme.example", want: Referrer{URL: "mail.google.com", Host: "mail.google.com", Source: "Gmail"}},
		{name: "gmail android app", raw: "android-app://com.google.android.gm/", site: "acme.example", want: Referrer{URL: "android-app://com.google.android.gm", Host: "com.google.android.gm", Source: "Gmail"}},
		{name: "chatgpt", raw: "https://chatgpt.com/", site: "acme.example", want: Referrer{URL: "chatgpt.com", Host: "chatgpt.com", Source: "chatgpt.com"}},
		{name: "perplexity", raw: "https://www.perplexity.ai/search/x", site: "acme.example", want: Referrer{URL: "perplexity.ai/search/x", Host: "perplexity.ai", Source: "Perplexity"}},
		{name: "wikipedia language", raw: "https://de.wikipedia.org/wiki/Go", site: "acme.example", want: Referrer{URL: "de.wikipedia.org/wiki/Go", Host: "de.wikipedia.org", Source: "Wikipedia"}},
		{name: "unknown host is source", raw: "https://blog.example.org/post?id=1#c", site: "acme.example", want: Referrer{URL: "blog.example.org/post", Host: "blog.example.org", Source: "blog.example.org"}},
		{name: "upper case and port", raw: "HTTPS://Blog.Example.org:8443/Post", site: "acme.example", want: Referrer{URL: "blog.example.org/Post", Host: "blog.example.org", Source: "blog.example.org"}},
		{name: "own site is direct", raw: "https://acme.example/pricing", site: "acme.example", want: Referrer{}},
		{name: "own site with www is direct", raw: "https://www.acme.example/", site: "acme.example", want: Referrer{}},
		{name: "own site configured with www", raw: "https://acme.example/", site: "www.acme.example", want: Referrer{}},
		{name: "own site other case", raw: "https://ACME.example/", site: "acme.example", want: Referrer{}},
		{name: "no scheme", raw: "google.com/search", site: "acme.example", want: Referrer{}},
		{name: "trailing slashes", raw: "https://facebook.com/page//", site: "acme.example", want: Referrer{URL: "facebook.com/page", Host: "facebook.com", Source: "Facebook"}},
		{name: "localhost", raw: "http://localhost:4000/", site: "acme.example", want: Referrer{}},
		{name: "ftp", raw: "ftp://wat", site: "acme.example", want: Referrer{}},
		{name: "malformed scheme", raw: "https:://twitter.com", site: "acme.example", want: Referrer{}},
		{name: "no host", raw: "https:///path", site: "acme.example", want: Referrer{}},
		{name: "unknown android app", raw: "android-app://some.android.app", site: "acme.example", want: Referrer{URL: "android-app://some.android.app", Host: "some.android.app", Source: "android-app://some.android.app"}},
		{name: "reddit android app", raw: "android-app://com.reddit.frontpage", site: "acme.example", want: Referrer{URL: "android-app://com.reddit.frontpage", Host: "com.reddit.frontpage", Source: "Reddit"}},
		{name: "garbage", raw: "not a url", site: "acme.example", want: Referrer{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseReferrer(tc.raw, tc.site); got != tc.want {
				t.Fatalf("ParseReferrer =\n %+v, want\n %+v", got, tc.want)
			}
		})
	}
}

func TestReferrerSourceTable(t *testing.T) {
	if n := len(referrerSources); n < 40 {
		t.Fatalf("referrer source table has %d entries, want >= 40", n)
	}
	for host, src := range referrerSources {
		if got, known := sourceOf(host); got != src || !known {
			t.Errorf("sourceOf(%q) = %q, want %q", host, got, src)
		}
	}
}

func TestCanonicalSource(t *testing.T) {
	for tag, want := range map[string]string{
		"facebook": "Facebook", "FACEBOOK": "Facebook", "fb": "Facebook", "fb-ads": "Facebook", "Reddit-ads": "Reddit",
		"google_ads": "Google", "Google-ads": "Google", "Adwords": "Google", "twitter-ads": "Twitter",
		"ig": "Instagram", "yt": "Youtube", "threads": "Threads", "perplexity": "Perplexity", "linktree": "Linktree",
		"Telegram": "Telegram", "betalist": "betalist", "Newsletter-UK": "Newsletter-UK", "producthunt": "producthunt",
		"": "", "t.me": "Telegram",
	} {
		if got := CanonicalSource(tag); got != want {
			t.Errorf("CanonicalSource(%q) = %q, want %q", tag, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = CanonicalSource("Facebook-Ads") }); n != 0 {
		t.Errorf("CanonicalSource allocates %v times", n)
	}
}

func TestParseAllocs(t *testing.T) {
	n := testing.AllocsPerRun(1000, func() {
		_, _ = ParsePage("https://acme.example/pricing?utm_source=news&gclid=1", false)
		_ = ParseReferrer("https://www.google.com/search?q=x", "acme.example")
	})
	if n != 0 {
		t.Fatalf("ParsePage+ParseReferrer allocate %v times on common input, want 0", n)
	}
}

func BenchmarkParsePage(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = ParsePage("https://www.acme.example/blog/post-1?utm_source=newsletter&utm_medium=email&utm_campaign=spring&fbclid=IwAR", false)
	}
}

func BenchmarkParseReferrer(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = ParseReferrer("https://www.google.co.uk/search?q=acme", "acme.example")
	}
}
