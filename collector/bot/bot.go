// Package bot decides whether a beacon request comes from automation or
// referrer spam rather than a person: user-agent verdicts (crawler list,
// headless browsers, empty agents; AgentReason), a referrer-spam domain list,
// header heuristics and, when configured, data-centre address ranges. Every
// drop has a short stable reason that the handler reports in the
// X-Collector-Dropped header and counts in a metric.
//
// The package owns its lists, embedded at build time: crawlers.txt (refreshed
// by internal/crawlersync, `make crawlers`), referrer_spam.txt (`make
// spam-referrers`) and spam_domains.txt (ours). enrich asks AgentReason when
// it parses a user agent and caches the answer with the parse.
package bot

import (
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// Drop reasons returned by Filter.Check. They are stable: they appear in
// the X-Collector-Dropped response header and as a metric label.
const (
	ReasonBotUA            = "bot_ua"             // crawler, tool or library user agent, by name or shape
	ReasonEmptyUA          = "empty_ua"           // no User-Agent header, or only white space
	ReasonHeadless         = "headless"           // headless or automated browser
	ReasonSpamReferrer     = "spam_referrer"      // referrer host on the spam list
	ReasonPrefetch         = "prefetch"           // prefetch, prerender or preview request
	ReasonNoAcceptLanguage = "no_accept_language" // no Accept-Language (strict mode only)
	ReasonDatacenterIP     = "datacenter_ip"      // client address in a configured data-centre range
)

// Reasons returns every reason Check can return, so that metrics can
// initialise their label values up front.
func Reasons() []string {
	return []string{ReasonBotUA, ReasonEmptyUA, ReasonHeadless, ReasonSpamReferrer,
		ReasonPrefetch, ReasonNoAcceptLanguage, ReasonDatacenterIP}
}

// Request is what Check looks at. Slices are only read during Check and
// not retained, so they may point into a recycled fasthttp request.
type Request struct {
	UA []byte // User-Agent header
	// UAReason is AgentReason's verdict on UA when the caller has it already (the event
	// handler passes enrich.UA.BotReason, which enrich's parser caches per user agent); nil
	// makes Check judge UA itself, which allocates.
	UAReason       *string
	ReferrerHost   string     // enrich.Referrer.Host of the event's referrer; empty for direct
	AcceptLanguage []byte     // Accept-Language header
	Purpose        []byte     // Purpose / Sec-Purpose / X-Moz / X-Purpose header
	ClientIP       netip.Addr // from clientip.Resolver; only compared, never kept or logged
}

// Config configures a Filter. The zero value is the default, and what the
// collector runs with unless told otherwise: embedded crawler and spam
// lists, no data-centre ranges, Accept-Language not required. NewFilter
// refuses a Config that Validate refuses.
type Config struct {
	// DatacenterFile is an optional file of data-centre CIDR prefixes (or
	// single addresses), one per line, "#" comments. Requests from these
	// ranges are dropped as ReasonDatacenterIP. Empty disables the check.
	DatacenterFile string
	// ExtraSpamDomains are added to the embedded referrer-spam list.
	ExtraSpamDomains []string
	// ExtraUAMarkers are extra case-insensitive user-agent substrings that
	// mark a bot (ReasonBotUA), for crawlers not yet on the embedded list.
	ExtraUAMarkers []string
	// Strict drops requests without an Accept-Language header
	// (ReasonNoAcceptLanguage). Off by default: browsers send the header
	// with sendBeacon and fetch, but server-side integrations of the
	// Plausible Events API usually do not, and privacy tools strip it, so
	// turning it on loses real events; it suits sites whose traffic comes
	// only from the tracking script.
	Strict bool
}

// Validate reports every invalid field of c at once.
func (c Config) Validate() error {
	var errs []error
	for _, d := range c.ExtraSpamDomains {
		if d == "" || strings.ContainsAny(d, " /:@\t") {
			errs = append(errs, fmt.Errorf("bot.Config.ExtraSpamDomains: %q is not a host name", d))
		}
	}
	for _, m := range c.ExtraUAMarkers {
		if strings.TrimSpace(m) == "" {
			errs = append(errs, errors.New("bot.Config.ExtraUAMarkers: a marker is empty"))
		}
	}
	if c.DatacenterFile != "" {
		if _, err := os.Stat(c.DatacenterFile); err != nil {
			errs = append(errs, fmt.Errorf("bot.Config.DatacenterFile: cannot use the data-centre list: %v", err))
		}
	}
	return errors.Join(errs...)
}

// Filter decides whether a request is automated or spam. It is immutable
// after NewFilter and safe for concurrent use.
type Filter struct {
	spam        map[string]struct{}
	uaMarkers   []string
	datacenters ranges
	strictLang  bool
}

// The referrer-spam lists: Matomo's maintained list, as data refreshed by `make spam-referrers`,
// and our own additions.
var (
	//go:embed referrer_spam.txt
	referrerSpamTxt string
	//go:embed spam_domains.txt
	spamDomainsTxt string
)

// NewFilter builds a Filter from cfg, reading the data-centre list file
// when one is configured.
func NewFilter(cfg Config) (*Filter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid bot filter configuration: %w", err)
	}
	f := &Filter{spam: map[string]struct{}{}, strictLang: cfg.Strict}
	for _, d := range append(listLines(referrerSpamTxt), listLines(spamDomainsTxt)...) {
		f.spam[d] = struct{}{}
	}
	for _, d := range cfg.ExtraSpamDomains {
		f.spam[strings.TrimPrefix(strings.ToLower(d), "www.")] = struct{}{}
	}
	for _, m := range cfg.ExtraUAMarkers {
		f.uaMarkers = append(f.uaMarkers, strings.ToLower(strings.TrimSpace(m)))
	}
	if cfg.DatacenterFile != "" {
		data, err := os.ReadFile(cfg.DatacenterFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read data-centre list: %w", err)
		}
		rs, err := parseRanges(string(data))
		if err != nil {
			return nil, fmt.Errorf("cannot parse data-centre list %s: %w", cfg.DatacenterFile, err)
		}
		f.datacenters = rs
	}
	return f, nil
}

// DatacenterRanges returns the number of merged data-centre ranges loaded,
// for a start-up log line.
func (f *Filter) DatacenterRanges() int { return len(f.datacenters) }

// Check returns the reason to drop r, or "" to keep it. Checks run
// cheapest and most telling first: the user agent, the purpose header, the
// referrer, the data-centre ranges, then Accept-Language in strict mode.
// Check does not allocate when r.UAReason is set.
func (f *Filter) Check(r *Request) (reason string) {
	if r.UAReason != nil {
		reason = *r.UAReason
	} else {
		reason = AgentReason(string(r.UA))
	}
	if reason != "" {
		return reason
	}
	if len(f.uaMarkers) > 0 {
		for _, m := range f.uaMarkers {
			if containsFold(r.UA, m) {
				return ReasonBotUA
			}
		}
	}
	if isPrefetch(r.Purpose) {
		return ReasonPrefetch
	}
	if r.ReferrerHost != "" && f.spamHost(r.ReferrerHost) {
		return ReasonSpamReferrer
	}
	if len(f.datacenters) > 0 && r.ClientIP.IsValid() && f.datacenters.contains(r.ClientIP.Unmap()) {
		return ReasonDatacenterIP
	}
	if f.strictLang && len(trimSpace(r.AcceptLanguage)) == 0 {
		return ReasonNoAcceptLanguage
	}
	return ""
}

// spamHost reports whether host or one of its parent domains is listed.
func (f *Filter) spamHost(host string) bool {
	h := strings.TrimSuffix(host, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			h = strings.ToLower(h)
			break
		}
	}
	h = strings.TrimPrefix(h, "www.")
	for {
		if _, ok := f.spam[h]; ok {
			return true
		}
		i := strings.IndexByte(h, '.')
		if i < 0 {
			return false
		}
		h = h[i+1:]
		if strings.IndexByte(h, '.') < 0 {
			// A bare top-level domain is never listed.
			return false
		}
	}
}

// isPrefetch reports whether a Purpose, Sec-Purpose, X-Moz or X-Purpose
// value marks a speculative request: Chrome sends "prefetch" and
// "prefetch;prerender", Firefox "prefetch", Safari "preview".
func isPrefetch(v []byte) bool {
	return containsFold(v, "prefetch") || containsFold(v, "prerender") || containsFold(v, "preview")
}

// containsFold reports whether lower-case ASCII needle occurs in b,
// ignoring ASCII case in b, without allocating.
func containsFold(b []byte, needle string) bool {
	n := len(needle)
	if n == 0 {
		return true
	}
	for i := 0; i+n <= len(b); i++ {
		j := 0
		for j < n {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != needle[j] {
				break
			}
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// listLines returns the non-comment, non-empty, trimmed lines of a list.
func listLines(txt string) []string {
	var out []string
	for _, line := range strings.Split(txt, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

// span is an inclusive address range.
type span struct{ lo, hi netip.Addr }

// ranges is a sorted list of disjoint spans, searched by binary search.
type ranges []span

// parseRanges parses a CIDR list into merged, sorted spans. Every bad line
// is reported.
func parseRanges(txt string) (ranges, error) {
	var spans []span
	var errs []error
	for n, line := range strings.Split(txt, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(line, "/") {
			p, err = netip.ParsePrefix(line)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(line)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n+1, err))
			continue
		}
		p = p.Masked()
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		spans = append(spans, span{lo: p.Addr(), hi: lastAddr(p)})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.Compare(b.lo) })
	var out ranges
	for _, s := range spans {
		if k := len(out) - 1; k >= 0 && out[k].hi.Is4() == s.lo.Is4() &&
			(s.lo.Compare(out[k].hi) <= 0 || out[k].hi.Next() == s.lo) {
			if s.hi.Compare(out[k].hi) > 0 {
				out[k].hi = s.hi
			}
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}

func (rs ranges) contains(ip netip.Addr) bool {
	// Find the last span whose lo <= ip.
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].lo.Compare(ip) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return false
	}
	s := rs[lo-1]
	return ip.Compare(s.hi) <= 0 && ip.BitLen() == s.lo.BitLen()
}
