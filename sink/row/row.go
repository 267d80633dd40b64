// Package row holds the row type of analytics.events, Event, and its compact
// binary encoding: the record the HTTP side appends to the spool and the
// shipper decodes before an insert. It imports no storage driver, so the
// HTTP side links none; the column mapping and the insert encoders that need
// ClickHouse stay in package sink.
package row

import "time"

// EngagementName is the event name of an engagement event, stored as is: reports leave such rows
// out of events, pageviews, visits and bounce rate, and read scroll depth and time on page from
// them.
const EngagementName = "engagement"

// NoScrollDepth is the stored scroll depth of an engagement event that reported engaged time but
// no scroll depth, as Plausible stores it (255); reports skip it.
const NoScrollDepth = 255

// Event is one accepted, enriched and already-anonymised beacon event: the
// row written to analytics.events. It never holds an IP address or a raw user
// agent; the visitor is known only by VisitorID, a keyed hash made with the
// day's salt.
//
// An Event is a plain value. Code on the hot path may point its strings at
// pooled buffers as long as the Event is encoded before the buffers are
// reused; everything that keeps an Event must own its memory.
type Event struct {
	WorkspaceID   string    // workspace the domain belongs to
	Domain        string    // configured domain the event was sent for
	TS            time.Time // receive time, UTC, millisecond precision
	Name          string    // "pageview" or a custom event name
	Hostname      string    // host of the page URL
	Pathname      string    // path of the page URL, no query; with the fragment in hash mode
	VisitorID     uint64    // keyed hash of (workspace, domain, IP, UA) with the day's salt
	RetentionDays uint16    // from the workspace's tier at ingest; drives the TTL

	Referrer       string // referrer host and path, no query string, no trailing slash
	ReferrerSource string // "Google", "Twitter", ...; the URL's tag under its known name first; empty for direct traffic
	UTMSource      string // utm_source, else source, else ref, as sent
	UTMMedium      string // "(gclid)" or "(msclkid)" for an untagged Google or Bing ad click
	UTMCampaign    string
	UTMContent     string
	UTMTerm        string
	ClickIDParam   string // name of the click id parameter seen (gclid, fbclid, ...), never its value

	CountryCode string // ISO 3166-1 alpha-2, empty when unknown
	Region      string // ISO 3166-2 subdivision code or name, empty when unknown
	City        string

	Browser        string
	BrowserVersion string // major.minor, as Plausible stores it
	OS             string
	OSVersion      string
	Device         string // "Desktop", "Mobile", "Tablet" (Plausible's screen size)

	Interactive     bool    // false for non-interactive events (Plausible "i": false)
	RevenueAmount   float64 // 0 when the event carries no revenue
	RevenueCurrency string  // ISO 4217, empty when the event carries no revenue

	PropKeys   []string // custom properties, PropKeys[i] goes with PropValues[i]
	PropValues []string

	// Engagement, as Plausible's engagement event carries it (name "engagement"); zero on other
	// events. ScrollDepth is the deepest scroll in percent (0-100), or NoScrollDepth when the
	// engagement event sent none; EngagementTime is the engaged milliseconds it reports.
	ScrollDepth    uint8
	EngagementTime uint32
	// TrackerVersion is the tracker script's version (Plausible's "v"), 0 when not sent.
	TrackerVersion uint16

	// BatchToken names the batch that stored the row (column batch_token). The store's Insert
	// sets it; it is not kept in the spool.
	BatchToken string
}
