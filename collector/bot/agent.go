package bot

import (
	_ "embed"
	"strings"

	"github.com/mssola/useragent"
)

// maxAgentBytes caps the user agent AgentReason reads, as enrich caps what it parses: the
// handler limits headers further, this only bounds the cost on any input.
const maxAgentBytes = 4096

// AgentReason judges a user agent by bot's lists and by its shape: ReasonEmptyUA when it is
// empty or white space, ReasonHeadless for a headless or automated browser, ReasonBotUA for a
// crawler, tool or library (by the crawler list, by not starting as every browser does, or by
// mssola/useragent's verdict), and "" for a browser. It allocates: enrich's UAParser keeps its
// answer per user agent, and the event handler hands that to Check.
func AgentReason(ua string) string {
	t := strings.TrimSpace(ua)
	if t == "" {
		return ReasonEmptyUA
	}
	if len(t) > maxAgentBytes {
		t = t[:maxAgentBytes]
	}
	if bot, reason := botVerdict(t); bot {
		return reason
	}
	if useragent.New(t).Bot() {
		return ReasonBotUA
	}
	return ""
}

//go:embed crawlers.txt
var crawlersTxt string

// crawlerList is the parsed crawlers.txt: bot's list of crawler markers, refreshed by
// internal/crawlersync (`make crawlers`).
var crawlerList = parseCrawlerList(crawlersTxt)

type crawlers struct {
	markers    []string // lower-case substrings that mark a bot
	exceptions []string // lower-case browser tokens removed before matching

	// Markers indexed by their first two bytes, with a bitset of the pairs
	// in use: one scan of the user agent tests only the markers that can
	// start at each position, instead of searching for every marker.
	pairSeen [1 << 16 / 64]uint64
	byPair   map[uint16][]string
}

// match reports whether a marker occurs in the lower-case s.
func (c *crawlers) match(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		k := uint16(s[i])<<8 | uint16(s[i+1])
		if c.pairSeen[k>>6]&(1<<(k&63)) == 0 {
			continue
		}
		for _, m := range c.byPair[k] {
			if strings.HasPrefix(s[i:], m) {
				return true
			}
		}
	}
	return false
}

func parseCrawlerList(txt string) *crawlers {
	c := crawlers{byPair: map[uint16][]string{}}
	seen := map[string]bool{}
	for _, line := range strings.Split(txt, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == '#' || seen[line] {
			continue
		}
		seen[line] = true
		if line[0] == '!' {
			c.exceptions = append(c.exceptions, line[1:])
			continue
		}
		c.markers = append(c.markers, line)
		if len(line) < 2 {
			continue // rejected by TestCrawlerListWellFormed
		}
		k := uint16(line[0])<<8 | uint16(line[1])
		c.pairSeen[k>>6] |= 1 << (k & 63)
		c.byPair[k] = append(c.byPair[k], line)
	}
	return &c
}

// headlessMarkers name headless and automated browsers; they are reported
// as ReasonHeadless rather than ReasonBotUA.
var headlessMarkers = [...]string{
	"headlesschrome", "headless", "phantomjs", "puppeteer", "playwright", "selenium",
	"webdriver", "slimerjs", "htmlunit", "cypress", "nightmare", "lighthouse", "zombie.js",
}

// botVerdict classifies a non-empty user agent by markers and by shape.
func botVerdict(s string) (bool, string) {
	low := strings.ToLower(s)
	for _, m := range headlessMarkers {
		if strings.Contains(low, m) {
			return true, ReasonHeadless
		}
	}
	for _, e := range crawlerList.exceptions {
		if strings.Contains(low, e) {
			low = strings.ReplaceAll(low, e, "")
		}
	}
	if crawlerList.match(low) {
		return true, ReasonBotUA
	}
	// Every browser of the last twenty years starts with "Mozilla/"
	// (Presto Opera with "Opera/"); anything else is a program.
	if !strings.HasPrefix(s, "Mozilla/") && !strings.HasPrefix(s, "Opera/") {
		return true, ReasonBotUA
	}
	return false, ""
}
