package enrich

import "strings"

// Referrer is what the collector keeps of a referrer. Strings may alias the
// raw input given to ParseReferrer.
type Referrer struct {
	URL    string // host (without "www.") and path, no query, no fragment, no trailing "/"; "android-app://" kept
	Host   string // lower case, without "www.", port and user info
	Source string // "Google", "Twitter", ...; the host (with "android-app://") when no source is known
}

// ParseReferrer returns the referrer as Plausible keeps it
// (lib/plausible/ingestion/source.ex, format_referrer): only http, https and
// android-app referrers with a host count; a referrer whose host is the
// site's own (siteHost, with or without www.) or "localhost" is direct, as is
// any other referrer, malformed ones included: empty Referrer{}. Source is
// mapped from the host ("Google", "Bing", "Facebook", ...; otherwise the
// host). utm_source does not belong here; the handler prefers the URL's tag
// over Source, as Plausible does. Safe on any input.
func ParseReferrer(raw string, siteHost string) Referrer {
	s := strings.TrimSpace(raw)
	if s == "" {
		return Referrer{}
	}
	i := strings.Index(s, "://")
	if i <= 0 {
		return Referrer{}
	}
	scheme := s[:i]
	android := false
	switch {
	case strings.EqualFold(scheme, "http"), strings.EqualFold(scheme, "https"):
	case strings.EqualFold(scheme, "android-app"):
		android = true
	default:
		return Referrer{}
	}
	after := s[i+3:]
	host, rest := splitAuthority(after)
	if strings.HasPrefix(after, "/") || host == "localhost" {
		return Referrer{} // "https:///x" and "https:://x" have no host
	}
	host = strings.TrimPrefix(host, "www.")
	if host == "" || !validHost(host) {
		return Referrer{}
	}
	site := strings.TrimPrefix(lowerASCII(strings.TrimSuffix(siteHost, ".")), "www.")
	if host == site {
		return Referrer{}
	}
	path := rest
	if j := strings.IndexAny(path, "?#"); j >= 0 {
		path = path[:j]
	}
	path = strings.TrimRight(path, "/")
	r := Referrer{Host: host}
	name, known := sourceOf(host)
	prefix := ""
	if android {
		prefix = "android-app://"
		if !known {
			if n, ok := referrerSources[prefix+host]; ok {
				name, known = n, true
			}
		}
	}
	// The URL is a substring of s when nothing was removed in between (user info, a port, a
	// trailing dot, upper case letters, "www."): no allocation.
	if j := strings.Index(s, host); j >= 0 && j >= len(prefix) && s[j-len(prefix):j] == prefix &&
		strings.HasPrefix(s[j+len(host):], path) {
		r.URL = s[j-len(prefix) : j+len(host)+len(path)]
	} else {
		r.URL = prefix + host + path
	}
	r.Source = name
	if !known {
		r.Source = r.URL[:len(prefix)+len(host)]
	}
	return r
}

// CanonicalSource returns the known name of a tagged source (utm_source,
// source or ref) compared without case ("facebook" → "Facebook", "fb-ads" →
// "Facebook", "adwords" → "Google"), or tag itself when it names no known
// source, as Plausible's Source.find_mapping does. It does not allocate.
func CanonicalSource(tag string) string {
	if tag == "" || len(tag) > 64 {
		return tag
	}
	var buf [64]byte
	low := buf[:len(tag)]
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	if name, ok := canonicalSources[string(low)]; ok {
		return name
	}
	return tag
}

// canonicalSources maps the lower-case form of every known source name, and of the shorthands
// sites tag links with, to the name (Plausible: every RefInspector name and custom_sources.json).
var canonicalSources = func() map[string]string {
	m := map[string]string{}
	for _, names := range []map[string]string{referrerSources, brandSources} {
		for _, name := range names {
			m[strings.ToLower(name)] = name
		}
	}
	for tag, name := range tagSources {
		m[tag] = name
	}
	return m
}()

// tagSources are the tags (utm_source values) Plausible maps to a source besides the source
// names themselves: shorthands and the domains of its custom_sources.json.
var tagSources = map[string]string{
	"fb": "Facebook", "fb-ads": "Facebook", "fbads": "Facebook", "fbad": "Facebook",
	"facebook-ads": "Facebook", "facebook_ads": "Facebook", "fcb": "Facebook", "facebook_ad": "Facebook",
	"facebook_feed_ad": "Facebook", "ig": "Instagram", "yt": "Youtube", "yt-ads": "Youtube",
	"reddit-ads": "Reddit", "google_ads": "Google", "google-ads": "Google", "googleads": "Google",
	"gads": "Google", "google ads": "Google", "adwords": "Google", "twitter-ads": "Twitter",
	"tiktokads": "TikTok", "tik.tok": "TikTok", "perplexity": "Perplexity", "linktree": "Linktree",
	"android-app://com.reddit.frontpage": "Reddit", "baidu.com": "Baidu", "discord.com": "Discord",
	"discordapp.com": "Discord", "canary.discord.com": "Discord", "ptb.discord.com": "Discord",
	"linktr.ee": "Linktree", "sogou.com": "Sogou", "m.sogou.com": "Sogou", "wap.sogou.com": "Sogou",
	"ntp.msn.com": "Bing", "perplexity.ai": "Perplexity", "search.brave.com": "Brave",
	"statics.teams.cdn.office.net": "Microsoft Teams", "t.me": "Telegram", "webk.telegram.org": "Telegram",
	"ya.ru": "Yandex", "yandex.com.tr": "Yandex", "yandex.eu": "Yandex", "yandex.fr": "Yandex",
	"yandex.kz": "Yandex", "yandex.tm": "Yandex", "yandex.uz": "Yandex",
}

func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// validHost rejects hosts with bytes no host name or address can hold, so
// that arbitrary text never becomes a Source.
func validHost(h string) bool {
	if len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c == 0x7f || c == '"' || c == '<' || c == '>' || c == '\\' || c == '^' || c == '`' || c == '{' || c == '|' || c == '}' || c == '%' {
			return false
		}
	}
	return true
}

// sourceOf maps a lower-case host without "www." to a source name, and reports whether the host
// is a known source.
func sourceOf(host string) (string, bool) {
	h := host
	for _, p := range [...]string{"m.", "l.", "lm.", "mobile."} {
		if strings.HasPrefix(h, p) && strings.Count(h, ".") >= 2 {
			h = h[len(p):]
			break
		}
	}
	// The host, then each parent domain: "old.reddit.com" → "reddit.com".
	for d := h; ; {
		if s, ok := referrerSources[d]; ok {
			return s, true
		}
		i := strings.IndexByte(d, '.')
		if i < 0 || strings.IndexByte(d[i+1:], '.') < 0 {
			break
		}
		d = d[i+1:]
	}
	// Search engines with country domains: google.de, google.co.uk, yandex.ru.
	labels := h
	for {
		label, after, ok := strings.Cut(labels, ".")
		if !ok {
			break
		}
		if s, ok := brandSources[label]; ok && countryTLD(after) {
			return s, true
		}
		labels = after
	}
	return host, false
}

// countryTLD reports whether s looks like a public suffix of one or two
// short labels ("de", "co.uk", "com.au").
func countryTLD(s string) bool {
	first, second, two := strings.Cut(s, ".")
	if first == "" || len(first) > 3 {
		return false
	}
	if two {
		return second != "" && len(second) <= 3 && strings.IndexByte(second, '.') < 0
	}
	return true
}

// brandSources are sources recognised under any country domain.
var brandSources = map[string]string{
	"google": "Google",
	"bing":   "Bing",
	"yahoo":  "Yahoo!",
	"yandex": "Yandex",
	"baidu":  "Baidu",
	"amazon": "Amazon",
	"ebay":   "eBay",
	"ecosia": "Ecosia",
	"qwant":  "Qwant",
	"naver":  "Naver",
}

// referrerSources maps a domain (matched on the host and its parents) to a
// source name: search engines, social networks, webmail and messengers, AI
// assistants and developer sites. Android app referrers appear by package.
var referrerSources = map[string]string{
	// search
	"google.com":       "Google",
	"bing.com":         "Bing",
	"duckduckgo.com":   "DuckDuckGo",
	"search.yahoo.com": "Yahoo!",
	"yahoo.com":        "Yahoo!",
	"yandex.ru":        "Yandex",
	"ya.ru":            "Yandex",
	"baidu.com":        "Baidu",
	"ecosia.org":       "Ecosia",
	"search.brave.com": "Brave",
	"ntp.msn.com":      "Bing",
	"startpage.com":    "Startpage",
	"qwant.com":        "Qwant",
	"naver.com":        "Naver",
	"seznam.cz":        "Seznam",
	"ask.com":          "Ask",
	"search.aol.com":   "AOL",
	"kagi.com":         "Kagi",
	"sogou.com":        "Sogou",
	"so.com":           "360 Search",
	"mojeek.com":       "Mojeek",
	"search.naver.com": "Naver",
	"com.google.android.googlequicksearchbox": "Google",
	// social
	"twitter.com":          "Twitter",
	"t.co":                 "Twitter",
	"x.com":                "Twitter",
	"facebook.com":         "Facebook",
	"fb.com":               "Facebook",
	"fb.me":                "Facebook",
	"instagram.com":        "Instagram",
	"linkedin.com":         "LinkedIn",
	"lnkd.in":              "LinkedIn",
	"com.linkedin.android": "LinkedIn",
	"reddit.com":           "Reddit",
	"com.reddit.frontpage": "Reddit",
	"youtube.com":          "Youtube",
	"youtu.be":             "Youtube",
	"pinterest.com":        "Pinterest",
	"pin.it":               "Pinterest",
	"tiktok.com":           "TikTok",
	"threads.net":          "Threads",
	"threads.com":          "Threads",
	"bsky.app":             "Bluesky",
	"mastodon.social":      "Mastodon",
	"news.ycombinator.com": "Hacker News",
	"producthunt.com":      "Product Hunt",
	"tumblr.com":           "Tumblr",
	"quora.com":            "Quora",
	"vk.com":               "Vkontakte",
	"vkontakte.ru":         "Vkontakte",
	"linktr.ee":            "Linktree",
	"weibo.com":            "Weibo",
	"snapchat.com":         "Snapchat",
	"twitch.tv":            "Twitch",
	"flipboard.com":        "Flipboard",
	"feedly.com":           "Feedly",
	"lobste.rs":            "Lobsters",
	"wikipedia.org":        "Wikipedia",
	"medium.com":           "Medium",
	"substack.com":         "Substack",
	// messengers and webmail
	"web.whatsapp.com":             "WhatsApp",
	"whatsapp.com":                 "WhatsApp",
	"wa.me":                        "WhatsApp",
	"t.me":                         "Telegram",
	"telegram.org":                 "Telegram",
	"org.telegram.messenger":       "Telegram",
	"discord.com":                  "Discord",
	"discordapp.com":               "Discord",
	"slack.com":                    "Slack",
	"com.slack":                    "Slack",
	"mail.google.com":              "Gmail",
	"com.google.android.gm":        "Gmail",
	"outlook.live.com":             "Outlook.com",
	"outlook.office.com":           "Outlook.com",
	"outlook.office365.com":        "Outlook.com",
	"statics.teams.cdn.office.net": "Microsoft Teams",
	"teams.microsoft.com":          "Microsoft Teams",
	"mail.yahoo.com":               "Yahoo! Mail",
	"mail.proton.me":               "Proton Mail",
	"mail.yandex.ru":               "Yandex Mail",
	"mail.ru":                      "Mail.ru",
	"e.mail.ru":                    "Mail.ru",
	// AI assistants (Plausible names only Perplexity; the others are stored as their host)
	"perplexity.ai": "Perplexity",
	// developers
	"github.com":        "GitHub",
	"gitlab.com":        "GitLab",
	"stackoverflow.com": "Stack Overflow",
	"dev.to":            "DEV",
	"hashnode.com":      "Hashnode",
}
