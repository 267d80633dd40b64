package enrich

import "strings"

// Referrer is what the collector keeps of a referrer. Strings may alias the
// raw input given to ParseReferrer.
type Referrer struct {
	URL    string // host (without "www.") and path, no query, no fragment, no trailing "/" on the bare host
	Host   string // lower case, without "www.", port and user info
	Source string // "Google", "Twitter", ...; the host when no source is known
}

// ParseReferrer returns the referrer with Source mapped from its host
// ("Google", "Bing", "Twitter", "Facebook", "LinkedIn", "Reddit",
// "DuckDuckGo", "GitHub", ...; otherwise the host). A referrer whose host is
// the site's own (siteHost, with or without www.) is direct: empty
// Referrer{}. An empty or unparsable referrer is also Referrer{}. utm_source
// does not belong here; the handler prefers UTMSource over Source where
// Plausible does. Safe on any input.
func ParseReferrer(raw string, siteHost string) Referrer {
	s := strings.TrimSpace(raw)
	if s == "" {
		return Referrer{}
	}
	// Any scheme is accepted ("android-app://com.google.android.gm/" is
	// what Android apps send); a referrer without one is taken as host/path.
	if i := strings.Index(s, "://"); i >= 0 && i <= 32 && validScheme(s[:i]) {
		s = s[i+3:]
	} else if strings.HasPrefix(s, "//") {
		s = s[2:]
	}
	host, rest := splitAuthority(s)
	host = strings.TrimPrefix(host, "www.")
	if host == "" || !validHost(host) {
		return Referrer{}
	}
	site := strings.TrimPrefix(lowerASCII(strings.TrimSuffix(siteHost, ".")), "www.")
	if host == site {
		return Referrer{}
	}
	path := rest
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if path == "/" {
		path = ""
	}
	r := Referrer{Host: host, Source: sourceOf(host)}
	// host and path are contiguous in s unless user info, a port, a
	// trailing dot or upper case letters were removed.
	if j := strings.Index(s, host); j >= 0 && strings.HasPrefix(s[j+len(host):], path) {
		r.URL = s[j : j+len(host)+len(path)]
	} else {
		r.URL = host + path
	}
	return r
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

// sourceOf maps a lower-case host without "www." to a source name.
func sourceOf(host string) string {
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
			return s
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
			return s
		}
		labels = after
	}
	return host
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
	"search.brave.com": "Brave Search",
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
	"youtube.com":          "YouTube",
	"youtu.be":             "YouTube",
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
	"vk.com":               "VKontakte",
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
	"web.whatsapp.com":       "WhatsApp",
	"whatsapp.com":           "WhatsApp",
	"wa.me":                  "WhatsApp",
	"t.me":                   "Telegram",
	"web.telegram.org":       "Telegram",
	"org.telegram.messenger": "Telegram",
	"discord.com":            "Discord",
	"discordapp.com":         "Discord",
	"slack.com":              "Slack",
	"com.slack":              "Slack",
	"mail.google.com":        "Gmail",
	"com.google.android.gm":  "Gmail",
	"outlook.live.com":       "Outlook.com",
	"outlook.office.com":     "Outlook.com",
	"outlook.office365.com":  "Outlook.com",
	"mail.yahoo.com":         "Yahoo! Mail",
	"mail.proton.me":         "Proton Mail",
	"mail.yandex.ru":         "Yandex Mail",
	"mail.ru":                "Mail.ru",
	"e.mail.ru":              "Mail.ru",
	// AI assistants
	"chatgpt.com":           "ChatGPT",
	"chat.openai.com":       "ChatGPT",
	"perplexity.ai":         "Perplexity",
	"claude.ai":             "Claude",
	"gemini.google.com":     "Gemini",
	"bard.google.com":       "Gemini",
	"copilot.microsoft.com": "Microsoft Copilot",
	"chat.deepseek.com":     "DeepSeek",
	"you.com":               "You.com",
	"phind.com":             "Phind",
	"chat.mistral.ai":       "Mistral",
	"grok.com":              "Grok",
	"meta.ai":               "Meta AI",
	// developers
	"github.com":        "GitHub",
	"gitlab.com":        "GitLab",
	"stackoverflow.com": "Stack Overflow",
	"dev.to":            "DEV",
	"hashnode.com":      "Hashnode",
}
