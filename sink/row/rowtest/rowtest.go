// Package rowtest makes sample rows for tests of the packages that encode,
// ship and store them. It is imported by tests only.
package rowtest

import (
	"fmt"
	"time"

	"github.com/kyomi/collector/sink/row"
)

// Events returns n pageview rows of workspace ws, one millisecond apart from
// ts, with retention days. Every field is set, with strings that need quoting
// or escaping (quotes, backslashes, a newline, non-ASCII) and values that
// vary with the row's index (path, visitor, scroll depth, engaged time), so a
// round trip through any encoder or store exercises each column. The caller
// owns the returned slice.
func Events(ws string, n int, ts time.Time, days uint16) []row.Event {
	out := make([]row.Event, n)
	for i := range out {
		out[i] = row.Event{
			WorkspaceID: ws, Domain: "acme.example", TS: ts.Add(time.Duration(i) * time.Millisecond),
			Name: "pageview", Hostname: "www.acme.example", Pathname: fmt.Sprintf("/blog/post-%d", i%50),
			VisitorID: uint64(i)*2654435761 + 1, RetentionDays: days,
			Referrer: "news.ycombinator.com/item", ReferrerSource: "Hacker News",
			UTMSource: "hn", UTMMedium: "social", UTMCampaign: "launch", UTMContent: "c\"1", UTMTerm: "t\\2",
			ClickIDParam: "gclid", CountryCode: "DE", Region: "DE-BE", City: "Berlin",
			Browser: "Firefox", BrowserVersion: "131", OS: "Linux", OSVersion: "", Device: "desktop",
			Interactive: i%2 == 0, RevenueAmount: 12.5, RevenueCurrency: "EUR",
			PropKeys: []string{"plan", "author"}, PropValues: []string{"pro", "ünïcode\n'x'"},
			ScrollDepth: uint8(i % 101), EngagementTime: uint32(i) * 1500, TrackerVersion: 36,
		}
	}
	return out
}
