// Package enrich turns what a beacon request carries into the columns the
// collector stores: browser, OS and device from the user agent (with the
// verdict of bot's user-agent lists, cached with the parse), country/region/
// city from a GeoIP database, the page URL's host, path, UTM parameters and
// click id, and the referrer's source. It keeps no raw user agent or address
// beyond a bounded in-memory parse cache and never logs.
package enrich

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mssola/useragent"

	"github.com/kyomi/collector/collector/bot"
)

// Device classes set in UA.Device, spelt as Plausible stores its screen size.
const (
	DeviceDesktop = "Desktop"
	DeviceMobile  = "Mobile"
	DeviceTablet  = "Tablet"
)

// UA is the parsed form of a user agent. Its strings are immutable and may
// be shared by every caller that parsed the same user agent.
//
// Names and versions follow what Plausible stores (its UAInspector names,
// lib/plausible/ingestion/event.ex): "Mac" and "GNU/Linux", in-app browsers
// as "Mobile App", versions as major.minor ("70.0", "10.13").
type UA struct {
	Browser        string // "Chrome", "Firefox", "Safari", "Microsoft Edge", "Mobile App", ...; empty when unknown
	BrowserVersion string // major.minor ("124.0"), or the major version when that is all the agent sends
	OS             string // "Windows", "Mac", "iOS", "Android", "GNU/Linux", "Chrome OS", ...
	OSVersion      string // "10", "14", "17.4", "10.15"; empty when unknown
	Device         string // DeviceDesktop, DeviceMobile or DeviceTablet
	Bot            bool   // true when the user agent is automated
	BotReason      string // bot.AgentReason's verdict: bot.ReasonEmptyUA, ReasonBotUA or ReasonHeadless when Bot
}

const (
	// uaShards spreads the cache over independently locked maps so that
	// parallel fasthttp workers rarely wait on each other.
	uaShards = 16
	// maxCachedUA is the longest user agent that is cached; longer ones
	// (real browsers send 100 to 300 bytes) are parsed every time, so that
	// no request can make the parser work on a huge header for every entry.
	maxCachedUA = 1024
	// maxParsedUA caps what is handed to the parser; the handler limits
	// headers further, this only keeps the parse cost bounded on any input.
	maxParsedUA = 4096
	// DefaultUACacheSize is a cache size for NewUAParser that holds the
	// distinct user agents of a busy site's day in a few megabytes.
	DefaultUACacheSize = 20000
)

// UAParser parses user agents with mssola/useragent behind a bounded cache;
// safe for concurrent use. A cache hit does not allocate.
//
// The cache is keyed by a 64-bit hash of the user agent (maphash, with a
// random seed per parser), not by the user agent: a hit hashes the header
// once and compares no strings (the key compare was a cache miss on the
// stored key under load), and the cache keeps only the parsed fields, never
// a raw user agent. Two different user agents share an entry only if their
// hashes collide: about 2^-64 per pair, and nobody can aim for it without
// the seed.
type UAParser struct {
	seed     maphash.Seed
	perShard int
	shards   [uaShards]uaShard
}

type uaShard struct {
	mu     sync.RWMutex
	m      map[uint64]UA
	hits   atomic.Uint64
	misses atomic.Uint64
	_      [64]byte // keep shards on separate cache lines
}

// NewUAParser returns a parser whose cache holds about cacheSize user
// agents (rounded up to a multiple of 16); when a shard is full a random
// entry is evicted. cacheSize <= 0 disables the cache.
func NewUAParser(cacheSize int) *UAParser {
	p := &UAParser{seed: maphash.MakeSeed()}
	if cacheSize > 0 {
		p.perShard = (cacheSize + uaShards - 1) / uaShards
		for i := range p.shards {
			p.shards[i].m = make(map[uint64]UA, min(p.perShard, 1024))
		}
	}
	return p
}

// Parse returns the parsed user agent. The returned strings are owned and
// immutable (cached); ua is not retained. A cache hit does not allocate.
func (p *UAParser) Parse(ua []byte) UA {
	if p.perShard == 0 || len(ua) > maxCachedUA {
		return ParseUA(string(ua))
	}
	h := maphash.Bytes(p.seed, ua)
	sh := &p.shards[h%uaShards]
	sh.mu.RLock()
	v, ok := sh.m[h]
	sh.mu.RUnlock()
	if ok {
		sh.hits.Add(1)
		return v
	}
	sh.misses.Add(1)
	v = ParseUA(string(ua))
	// ParseUA's strings may alias its argument: copies keep the raw user
	// agent out of the cache.
	v.Browser, v.BrowserVersion = strings.Clone(v.Browser), strings.Clone(v.BrowserVersion)
	v.OS, v.OSVersion = strings.Clone(v.OS), strings.Clone(v.OSVersion)
	sh.mu.Lock()
	if len(sh.m) >= p.perShard {
		// Map iteration starts at a random entry: random eviction, O(1).
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[h] = v
	sh.mu.Unlock()
	return v
}

// CacheStats returns the number of cache hits and misses since the parser
// was made, for a metrics collector to export.
func (p *UAParser) CacheStats() (hits, misses uint64) {
	for i := range p.shards {
		hits += p.shards[i].hits.Load()
		misses += p.shards[i].misses.Load()
	}
	return hits, misses
}

// CacheLen returns the number of cached user agents.
func (p *UAParser) CacheLen() int {
	n := 0
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// ParseUA parses one user agent without a cache. The returned strings may
// alias s. It is safe on any input.
func ParseUA(s string) UA {
	t := strings.TrimSpace(s)
	if t == "" {
		return UA{Device: DeviceDesktop, Bot: true, BotReason: bot.ReasonEmptyUA}
	}
	if len(t) > maxParsedUA {
		t = t[:maxParsedUA]
	}
	var u UA
	u.BotReason = bot.AgentReason(t)
	u.Bot = u.BotReason != ""
	// mssola/useragent names what the token lists below do not know; it is parsed only then.
	var mua *useragent.UserAgent
	u.Browser, u.BrowserVersion = detectBrowser(t)
	if u.Browser == "" && !u.Bot {
		mua = useragent.New(t)
		name, version := mua.Browser()
		if name = plainName(name); name != "" {
			u.Browser, u.BrowserVersion = name, majorMinor(version)
		}
	}
	u.OS, u.OSVersion = detectOS(t)
	if u.OS == "" {
		if mua == nil {
			mua = useragent.New(t)
		}
		u.OS = plainName(mua.OSInfo().Name)
	}
	u.Device = detectDevice(t)
	return u
}

// plainName returns a name the parser took from free text of the user
// agent only when it is short and plain; anything else is dropped so that
// crafted user agents cannot put arbitrary text into stored columns.
func plainName(s string) string {
	if len(s) > 24 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == ' ' || c == '.' || c == '_' || c == '-') {
			return ""
		}
	}
	return s
}

// browserTokens are checked in order; the first token found names the
// browser and the digits after it give the major version. Order matters:
// Chromium-based browsers also send "Chrome/" and "Safari/".
var browserTokens = [...]struct{ token, name string }{
	{"EdgA/", "Microsoft Edge"},
	{"EdgiOS/", "Microsoft Edge"},
	{"Edg/", "Microsoft Edge"},
	{"Edge/", "Microsoft Edge"},
	{"OPR/", "Opera"},
	{"OPiOS/", "Opera"},
	{"OPT/", "Opera"},
	{"OPX/", "Opera"},
	{"Opera Mini/", "Opera"},
	{"SamsungBrowser/", "Samsung Browser"},
	{"YaBrowser/", "Yandex Browser"},
	{"UCBrowser/", "UC Browser"},
	{"Vivaldi/", "Vivaldi"},
	{"HuaweiBrowser/", "Huawei Browser"},
	{"MiuiBrowser/", "MIUI Browser"},
	{"Silk/", "Amazon Silk"},
	{"coc_coc_browser/", "Coc Coc"},
	{"Whale/", "Whale Browser"},
	{"DuckDuckGo/", "DuckDuckGo Privacy Browser"},
	{"Ddg/", "DuckDuckGo Privacy Browser"},
	{"FBAV/", MobileApp},
	{"Instagram ", MobileApp},
	{"GSA/", MobileApp},
	{"FxiOS/", "Firefox"},
	{"Firefox/", "Firefox"},
	{"CriOS/", "Chrome"},
	{"HeadlessChrome/", "Headless Chrome"},
	{"Chromium/", "Chromium"},
	{"Chrome/", "Chrome"},
}

// MobileApp is the browser of in-app web views (Facebook, Instagram, the Google app), as
// Plausible names them; their version is not kept.
const MobileApp = "Mobile App"

func detectBrowser(s string) (name, version string) {
	if strings.HasPrefix(s, "Opera/") {
		return "Opera", versionAfter(s, "Version/")
	}
	for _, b := range browserTokens {
		if i := strings.Index(s, b.token); i >= 0 {
			if b.name == MobileApp {
				return b.name, ""
			}
			return b.name, majorMinor(s[i+len(b.token):])
		}
	}
	if strings.Contains(s, "Trident/") || strings.Contains(s, "MSIE ") {
		if v := versionAfter(s, "rv:"); v != "" {
			return "Internet Explorer", v
		}
		return "Internet Explorer", versionAfter(s, "MSIE ")
	}
	if strings.Contains(s, "AppleWebKit/") {
		if strings.Contains(s, "Android") && strings.Contains(s, "Safari/") {
			// The stock browser of Android before Chrome: WebKit, Version/ and Safari/.
			return "Android Browser", versionAfter(s, "Version/")
		}
		if strings.Contains(s, "Safari/") {
			return "Safari", versionAfter(s, "Version/")
		}
		if strings.Contains(s, "iPhone") || strings.Contains(s, "iPad") || strings.Contains(s, "Macintosh") {
			// An Apple WebView (in-app browser) runs Safari's engine and
			// omits the Safari token.
			return "Safari", ""
		}
	}
	return "", ""
}

// versionAfter returns the major.minor version that follows token in s.
func versionAfter(s, token string) string {
	i := strings.Index(s, token)
	if i < 0 {
		return ""
	}
	return majorMinor(s[i+len(token):])
}

// majorMinor returns the first two dot-separated numbers that start s
// ("124.0.6367" → "124.0", "17" → "17"), as Plausible keeps versions. It
// returns a substring of s.
func majorMinor(s string) string {
	n := len(majorVersion(s))
	if n == 0 {
		return ""
	}
	if n < len(s) && s[n] == '.' {
		if m := len(majorVersion(s[n+1:])); m > 0 {
			return s[:n+1+m]
		}
	}
	return s[:n]
}

// majorVersion returns the leading digits of s ("124.0.6367" → "124").
func majorVersion(s string) string {
	n := 0
	for n < len(s) && n < 8 && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return s[:n]
}

// versionRun returns up to parts dot- or underscore-separated numbers that
// start s, joined with dots ("10_15_7" with parts 2 → "10.15").
func versionRun(s string, parts int) string {
	var b [24]byte
	out := b[:0]
	for p := 0; p < parts; p++ {
		n := majorVersion(s)
		if n == "" {
			break
		}
		if p > 0 {
			out = append(out, '.')
		}
		out = append(out, n...)
		s = s[len(n):]
		if len(s) == 0 || (s[0] != '.' && s[0] != '_') {
			break
		}
		s = s[1:]
	}
	return string(out)
}

var windowsVersions = map[string]string{
	"10.0": "10", "6.3": "8.1", "6.2": "8", "6.1": "7", "6.0": "Vista", "5.2": "XP", "5.1": "XP",
}

func detectOS(s string) (name, version string) {
	switch {
	case strings.Contains(s, "Windows Phone"):
		return "Windows Phone", versionAfter(s, "Windows Phone ")
	case strings.Contains(s, "Windows NT "):
		i := strings.Index(s, "Windows NT ") + len("Windows NT ")
		return "Windows", windowsVersions[versionRun(s[i:], 2)]
	case strings.Contains(s, "Windows"):
		return "Windows", ""
	case strings.Contains(s, "iPhone") || strings.Contains(s, "iPad") || strings.Contains(s, "iPod"):
		for _, tok := range [...]string{"iPhone OS ", "CPU OS ", "OS "} {
			if i := strings.Index(s, tok); i >= 0 {
				if v := versionRun(s[i+len(tok):], 2); v != "" {
					return "iOS", v
				}
			}
		}
		return "iOS", ""
	case strings.Contains(s, "Android"):
		i := strings.Index(s, "Android ")
		if i < 0 {
			return "Android", ""
		}
		return "Android", versionRun(s[i+len("Android "):], 2)
	case strings.Contains(s, "CrOS"):
		return "Chrome OS", ""
	case strings.Contains(s, "Mac OS X"):
		i := strings.Index(s, "Mac OS X") + len("Mac OS X")
		rest := strings.TrimLeft(s[i:], " ")
		return "Mac", versionRun(rest, 2)
	case strings.Contains(s, "KAIOS"):
		return "KaiOS", ""
	case strings.Contains(s, "FreeBSD"):
		return "FreeBSD", ""
	case strings.Contains(s, "OpenBSD"):
		return "OpenBSD", ""
	case strings.Contains(s, "Linux") || strings.Contains(s, "X11"):
		return "GNU/Linux", ""
	}
	return "", ""
}

func detectDevice(s string) string {
	switch {
	case strings.Contains(s, "iPad") || strings.Contains(s, "Tablet") || strings.Contains(s, "Kindle") ||
		strings.Contains(s, "Silk/") || strings.Contains(s, "PlayBook"):
		return DeviceTablet
	case strings.Contains(s, "Android") && !strings.Contains(s, "Mobi"):
		return DeviceTablet
	case strings.Contains(s, "Android") && (strings.Contains(s, " TAB ") || strings.Contains(s, " Tab ") ||
		strings.Contains(s, "MediaPad") || strings.Contains(s, "Lenovo TB")):
		// Tablets whose browser says "Mobile" all the same, known by their model name.
		return DeviceTablet
	case strings.Contains(s, "Mobi") || strings.Contains(s, "iPhone") || strings.Contains(s, "iPod") ||
		strings.Contains(s, "Windows Phone") || strings.Contains(s, "Opera Mini") ||
		strings.Contains(s, "BlackBerry") || strings.Contains(s, "KAIOS"):
		return DeviceMobile
	}
	return DeviceDesktop
}
