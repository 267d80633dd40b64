package bot

import (
	"strings"
	"testing"
)

func TestCrawlerListWellFormed(t *testing.T) {
	if n := len(crawlerList.markers); n < 300 {
		t.Fatalf("crawler list has %d markers, want >= 300", n)
	}
	for _, m := range append(append([]string{}, crawlerList.markers...), crawlerList.exceptions...) {
		if m != strings.ToLower(m) {
			t.Errorf("marker %q is not lower case; matching lower-cases the user agent", m)
		}
		if strings.TrimSpace(m) != m || len(m) < 2 {
			t.Errorf("marker %q has surrounding space or is too short to be specific", m)
		}
	}
}

// TestCrawlerIndex checks the pair index against a plain substring search.
func TestCrawlerIndex(t *testing.T) {
	inputs := append(readCorpus(t, "ua/browsers.txt"), readCorpus(t, "bots/bots.txt")...)
	for _, m := range crawlerList.markers {
		inputs = append(inputs, "x"+m+"y", m)
	}
	for _, in := range inputs {
		low := strings.ToLower(in)
		naive := false
		for _, m := range crawlerList.markers {
			if strings.Contains(low, m) {
				naive = true
				break
			}
		}
		if got := crawlerList.match(low); got != naive {
			t.Errorf("match(%q) = %v, plain search says %v", low, got, naive)
		}
	}
}

// TestAgentReason checks the user-agent verdict on the shapes it knows.
func TestAgentReason(t *testing.T) {
	tests := []struct {
		name, ua, want string
	}{
		{name: "browser", ua: chromeUA, want: ""},
		{name: "empty", ua: "", want: ReasonEmptyUA},
		{name: "white space", ua: " \t ", want: ReasonEmptyUA},
		{name: "headless", ua: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36", want: ReasonHeadless},
		{name: "crawler", ua: "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", want: ReasonBotUA},
		{name: "not a browser's shape", ua: "python-requests/2.31.0", want: ReasonBotUA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := AgentReason(tc.ua); got != tc.want {
				t.Fatalf("AgentReason = %q, want %q", got, tc.want)
			}
		})
	}
}
