package script

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/testkit"
)

// plausibleTrackerVersion is the pinned official tracker, PLAUSIBLE_TRACKER_VERSION in the
// Makefile. Version 0.4.6 sends v:36 and engagement events.
const plausibleTrackerVersion = "0.4.6"

// plausibleTracker returns the official tracker's ES module (plausible.js) from the package
// directory that `make deps` fetches: $KYOMI_PLAUSIBLE_TRACKER, which the Makefile sets, or the
// Makefile's default cache directory. A missing or different package fails the test: the
// tracker is the compatibility oracle and can always be fetched here.
func plausibleTracker(t *testing.T) []byte {
	t.Helper()
	dir := os.Getenv("KYOMI_PLAUSIBLE_TRACKER")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("KYOMI_PLAUSIBLE_TRACKER is not set and there is no home directory: %v", err)
		}
		dir = filepath.Join(home, ".cache", "kyomi", "plausible-tracker-"+plausibleTrackerVersion)
	}
	var pkg struct{ Name, Version string }
	raw, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err == nil {
		err = json.Unmarshal(raw, &pkg)
	}
	if err != nil {
		t.Fatalf("Plausible's tracker is not in %s (%v): run `make deps`, which fetches @plausible-analytics/tracker@%s there, "+
			"or set KYOMI_PLAUSIBLE_TRACKER to the extracted package directory", dir, err, plausibleTrackerVersion)
	}
	if pkg.Name != "@plausible-analytics/tracker" || pkg.Version != plausibleTrackerVersion {
		t.Fatalf("%s holds %s@%s, want @plausible-analytics/tracker@%s: run `make deps`", dir, pkg.Name, pkg.Version, plausibleTrackerVersion)
	}
	js, err := os.ReadFile(filepath.Join(dir, "plausible.js"))
	if err != nil {
		t.Fatalf("cannot read the tracker module: %v: run `make deps`", err)
	}
	return js
}

// trackerViewport is the browser window of the tracker test. Its pages are 2000 px tall, so the
// scroll depth the tracker reports is exact: 800 px seen of 2000 is 40 %, with 400 px scrolled
// 60 %, at the bottom 100 %.
const (
	trackerViewportW = 1280
	trackerViewportH = 800
)

// trackerPage is a page of the tracker test's site: body, 2000 px tall, then the scripts a site
// using the npm package would have, the package served from the site itself as an ES module.
func trackerPage(endpoint string, hash bool, body string) template.HTML {
	return template.HTML(`<style>html, body { margin: 0 } #tall { height: 2000px }</style>
<div id="tall">` + body + `</div>
<script>
// A clock the test moves with advanceClock(ms): the tracker measures engaged time with Date.now,
// so the engagement_time it sends is exactly what the test chose, not what the machine's speed gives.
(function () { var now = Date.now(); Date.now = function () { return now }; window.advanceClock = function (ms) { now += ms } })();
// The tracker ignores every event when navigator.webdriver is set (browser automation) unless
// window.__plausible is set, which is how Plausible's own tracker tests run it.
window.__plausible = true;
// The queue stub of Plausible's web snippet, and a call made through it before init.
window.plausible = window.plausible || function () { (plausible.q = plausible.q || []).push(arguments) }, plausible.init = plausible.init || function (i) { plausible.o = i || {} };
plausible('Queued Before Init', {props: {queued: 'yes'}});
window.stub = window.plausible;
</script>
<script type="module">
import { init, track } from '/vendor/plausible.js';
init({ domain: '` + siteHost + `', endpoint: '` + endpoint + `', outboundLinks: true, fileDownloads: true,
  formSubmissions: true, hashBasedRouting: ` + strconv.FormatBool(hash) + ` });
window.track = track;
</script>`)
}

// trackerSite registers the tracker test's pages on h, with the tracker module, and sets the
// tab's viewport.
func trackerSite(h *harness, tracker []byte, endpoint string) {
	h.t.Helper()
	h.add("/vendor/plausible.js", page{Content: tracker, ContentType: "text/javascript; charset=utf-8"})
	h.add("/t/landing", page{NoScript: true, Body: trackerPage(endpoint, false, `
<button id="tagged" class="plausible-event-name=Tagged+Click plausible-event-position=hero">tagged</button>
<button id="tagged-revenue" class="plausible-event-name=Tagged+Purchase plausible-revenue-amount=5 plausible-revenue-currency=USD">buy</button>
<a id="download" href="/t/files/guide.pdf?v=2">guide</a>
<form action="/t/thanks"><input name="q" value="x"><button id="send">send</button></form>
<a id="out" href="`+h.url(otherHost, "/partner?ref=acme")+`">partner</a>`)})
	h.add("/t/hash", page{NoScript: true, Body: trackerPage(endpoint, true, "")})
	h.add("/t/files/guide.pdf", page{Status: http.StatusNoContent}) // no navigation
	h.add("/t/thanks", page{Status: http.StatusNoContent})
	h.add("/partner", page{NoScript: true})
	h.add("/t/bye", page{NoScript: true})
	h.run(chromedp.EmulateViewport(trackerViewportW, trackerViewportH))
}

// waitTracker waits until the page's tracker is initialised.
func waitTracker(h *harness) {
	h.t.Helper()
	h.waitJS(`window.track && window.plausible && window.plausible.l`)
}

// scrollTo scrolls the page to y and returns once the page saw the scroll event, that is after
// the tracker's own scroll listener (registered earlier on the same target) has run.
func scrollTo(h *harness, y int) {
	h.t.Helper()
	h.eval(fmt.Sprintf(`new Promise(r => { document.addEventListener('scroll', () => r(scrollY), {once: true}); scrollTo(0, %d) })`, y), nil)
}

// trackerRow is one stored row of the tracker test, as the query path returns it.
type trackerRow struct {
	OS              string
	Name            string
	Pathname        string
	Props           map[string]string
	RevenueAmount   float64
	RevenueCurrency string
	Interactive     bool
	ScrollDepth     int
	EngagementTime  int
	TrackerVersion  int
	VisitorID       string
}

// key is the row without its visitor id, for comparing multisets. Engagement rows leave the
// interactive flag out: Plausible gives engagement no such flag, it never counts as interaction.
func (r trackerRow) key() string {
	props := make([]string, 0, len(r.Props))
	for _, k := range slices.Sorted(maps.Keys(r.Props)) {
		props = append(props, k+"="+r.Props[k])
	}
	interactive := strconv.FormatBool(r.Interactive)
	if r.Name == "engagement" {
		interactive = "-"
	}
	return fmt.Sprintf("%s | %s %s | props={%s} revenue=%g %q interactive=%s | sd=%d e=%d v=%d",
		r.OS, r.Name, r.Pathname, strings.Join(props, ","), r.RevenueAmount, r.RevenueCurrency, interactive,
		r.ScrollDepth, r.EngagementTime, r.TrackerVersion)
}

// TestPlausibleTracker drives Plausible's official npm tracker (@plausible-analytics/tracker,
// pinned in the Makefile) in headless Chromium against the real collector binary and its
// embedded store, then checks the stored rows and the report op for that fixed browser session.
//
// Two visitors, on one day:
//
//	visitor 1 (Linux), one visit:
//	  /t/landing     page view; a call queued by the web snippet's stub before init (the npm
//	                 tracker never replays it); plausible('After Init'); track('Signup', props);
//	                 track('Purchase', props, revenue 9.99 EUR); scrolled to 400 px (60 %) and
//	                 back; 12 s engaged; then pushState to
//	  /t/pricing     page view (SPA), engagement of /t/landing (sd 60, e 12000); clicks: a tagged
//	                 button without revenue classes (sends "$":{}), one with them (5 USD), a PDF
//	                 link, a form submission; 5 s engaged; an outbound link, which leaves the page:
//	                 engagement of /t/pricing (sd 40, e 5000)
//	  /t/hash#/home  page load with hash routing, page view; scrolled to the bottom (100 %) and
//	                 back; 9 s engaged; hash change to
//	  /t/hash#/about page view, engagement of #/home (sd 100, e 9000); 4 s engaged; leaves the
//	                 page: engagement of #/about (sd 40, e 4000)
//	visitor 2 (Windows), one visit:
//	  /t/landing     page view; track('Autoplay', {interactive: false}); 2 s engaged; the tab is
//	                 hidden: engagement (sd 40, e 2000); shown again, 4 s engaged; leaves: engagement
//	                 (sd 40, e 4000; sent again since it is at least 3 s)
func TestPlausibleTracker(t *testing.T) {
	leakcheck.Register(t)
	tracker := plausibleTracker(t)
	keys := testkit.NewConnectKey(t)
	coll := startCollectorProc(t, "-jwks", keys.JWKS)
	rp := &recordingProxy{}
	collectorURL := rp.start(t, coll.addr)
	endpoint := collectorURL + "/api/event"
	browser := newBrowser(t, chromedp.UserAgent(e2eUA))
	firstDay := time.Now().UTC()

	var want []string
	expect := func(r trackerRow) {
		if r.Props == nil {
			r.Props = map[string]string{}
		}
		r.Interactive = r.Interactive || r.Name != "Autoplay"
		r.TrackerVersion = 36
		want = append(want, r.key())
	}

	// Visitor 1.
	h := newHarness(t, browser, collectorURL)
	trackerSite(h, tracker, endpoint)
	from := len(rp.exchanges())
	h.run(chromedp.Navigate(h.url("", "/t/landing")))
	waitTracker(h)
	// The npm tracker binds track to window.plausible (bindToWindow) and leaves the stub's queue
	// alone: a call made before init is never sent. Plausible's script tags replay the queue; the
	// npm package does not, so there is nothing for a collector to store.
	var stub struct {
		S        string
		V        int
		Queued   int
		Replaced bool
	}
	h.eval(`({S: plausible.s, V: plausible.v, Queued: stub.q.length, Replaced: plausible !== stub})`, &stub)
	if stub.S != "npm" || stub.V != 36 || stub.Queued != 1 || !stub.Replaced {
		t.Errorf("after init, window.plausible is %+v; want the npm tracker's track (s npm, v 36) replacing the stub, which keeps its 1 queued call", stub)
	}
	h.eval(`plausible('After Init')`, nil)
	h.eval(`track('Signup', {props: {plan: 'pro'}})`, nil)
	h.eval(`track('Purchase', {props: {sku: 'A-1'}, revenue: {amount: 9.99, currency: 'EUR'}})`, nil)
	scrollTo(h, 400) // 400 + 800 of 2000 px: 60 %
	scrollTo(h, 0)   // the deepest point seen counts
	h.eval(`advanceClock(12000)`, nil)
	h.eval(`history.pushState({}, '', '/t/pricing')`, nil)
	h.run(chromedp.Click(chromedp.CSS("#tagged")))
	h.run(chromedp.Click(chromedp.CSS("#tagged-revenue")))
	h.run(chromedp.Click(chromedp.CSS("#download")))
	h.run(chromedp.Click(chromedp.CSS("#send")))
	h.eval(`advanceClock(5000)`, nil)
	h.run(chromedp.Click(chromedp.CSS("#out")))
	h.waitJS(`location.host == '` + otherHost + `:` + h.port + `'`)
	h.run(chromedp.Navigate(h.url("", "/t/hash#/home")))
	waitTracker(h)
	scrollTo(h, 1200) // the bottom: 100 %
	scrollTo(h, 0)
	h.eval(`advanceClock(9000)`, nil)
	// The tracker's hashchange listener runs before this one, registered later.
	h.eval(`new Promise(r => { addEventListener('hashchange', r, {once: true}); location.hash = '/about' })`, nil)
	h.eval(`advanceClock(4000)`, nil)
	h.run(chromedp.Navigate(h.url(otherHost, "/t/bye")))
	rp.waitBeacons(h, from, 16, "")

	const v1, v2 = "GNU/Linux", "Windows" // as Plausible names them
	expect(trackerRow{OS: v1, Name: "pageview", Pathname: "/t/landing"})
	expect(trackerRow{OS: v1, Name: "After Init", Pathname: "/t/landing"})
	expect(trackerRow{OS: v1, Name: "Signup", Pathname: "/t/landing", Props: map[string]string{"plan": "pro"}})
	expect(trackerRow{OS: v1, Name: "Purchase", Pathname: "/t/landing", Props: map[string]string{"sku": "A-1"},
		RevenueAmount: 9.99, RevenueCurrency: "EUR"})
	expect(trackerRow{OS: v1, Name: "engagement", Pathname: "/t/landing", ScrollDepth: 60, EngagementTime: 12000})
	expect(trackerRow{OS: v1, Name: "pageview", Pathname: "/t/pricing"})
	expect(trackerRow{OS: v1, Name: "Tagged Click", Pathname: "/t/pricing", Props: map[string]string{"position": "hero"}})
	expect(trackerRow{OS: v1, Name: "Tagged Purchase", Pathname: "/t/pricing", RevenueAmount: 5, RevenueCurrency: "USD"})
	expect(trackerRow{OS: v1, Name: "File Download", Pathname: "/t/pricing",
		Props: map[string]string{"url": h.url("", "/t/files/guide.pdf")}}) // the tracker cuts the query string
	expect(trackerRow{OS: v1, Name: "Form: Submission", Pathname: "/t/pricing"})
	expect(trackerRow{OS: v1, Name: "Outbound Link: Click", Pathname: "/t/pricing",
		Props: map[string]string{"url": h.url(otherHost, "/partner?ref=acme")}}) // sent whole
	expect(trackerRow{OS: v1, Name: "engagement", Pathname: "/t/pricing", ScrollDepth: 40, EngagementTime: 5000})
	expect(trackerRow{OS: v1, Name: "pageview", Pathname: "/t/hash#/home"})
	expect(trackerRow{OS: v1, Name: "engagement", Pathname: "/t/hash#/home", ScrollDepth: 100, EngagementTime: 9000})
	expect(trackerRow{OS: v1, Name: "pageview", Pathname: "/t/hash#/about"})
	expect(trackerRow{OS: v1, Name: "engagement", Pathname: "/t/hash#/about", ScrollDepth: 40, EngagementTime: 4000})

	// Visitor 2: another user agent, so another visitor id. It is the browser's own (a second
	// browser), not a per-tab override: Chromium sends a keepalive request that outlives its page
	// with the browser's user agent, so the engagement of a tab with an override would be stored
	// under visitor 1.
	windows := newBrowser(t, chromedp.UserAgent(strings.Replace(e2eUA, "X11; Linux x86_64", "Windows NT 10.0; Win64; x64", 1)))
	h2 := newHarness(t, windows, collectorURL)
	trackerSite(h2, tracker, endpoint)
	from = len(rp.exchanges())
	h2.run(chromedp.Navigate(h2.url("", "/t/landing")))
	waitTracker(h2)
	h2.eval(`track('Autoplay', {interactive: false})`, nil)
	h2.eval(`advanceClock(2000)`, nil)
	setMinimized(h2, true) // the tab is hidden: engagement
	setMinimized(h2, false)
	h2.eval(`advanceClock(4000)`, nil)
	h2.run(chromedp.Navigate(h2.url(otherHost, "/t/bye"))) // 4 s more: engagement again
	rp.waitBeacons(h2, from, 4, "")
	expect(trackerRow{OS: v2, Name: "pageview", Pathname: "/t/landing"})
	expect(trackerRow{OS: v2, Name: "Autoplay", Pathname: "/t/landing", Interactive: false})
	expect(trackerRow{OS: v2, Name: "engagement", Pathname: "/t/landing", ScrollDepth: 40, EngagementTime: 2000})
	expect(trackerRow{OS: v2, Name: "engagement", Pathname: "/t/landing", ScrollDepth: 40, EngagementTime: 4000})

	token := keys.Token(t, "ws_acme", "jti-tracker", "wss://connect.example/agent/v1")
	// The shipper flushes every 200 ms; wait until every accepted beacon is a row.
	testkit.Eventually(t, 20*time.Second, fmt.Sprintf("%d stored rows", len(want)), func() bool {
		res := coll.ask(t, token, "execute_query", map[string]any{"sql": "SELECT count() AS n FROM events"})
		return int(res.num(t, 0, "n")) == len(want)
	})
	lastDay := time.Now().UTC()
	if firstDay.Format(time.DateOnly) != lastDay.Format(time.DateOnly) {
		t.Fatalf("the session crossed midnight UTC, where the daily salt changes every visitor id: run the test again")
	}

	res := coll.ask(t, token, "execute_query", map[string]any{"sql": `SELECT os, name, pathname, props,
		toFloat64(revenue_amount) AS revenue_amount, revenue_currency, interactive, scroll_depth, engagement_time,
		tracker_version, toString(visitor_id) AS visitor_id FROM events ORDER BY ts`})
	var got []string
	visitors := map[string]map[string]bool{} // os → visitor ids
	for i := range res.Rows {
		var r trackerRow
		res.decode(t, i, "os", &r.OS)
		res.decode(t, i, "name", &r.Name)
		res.decode(t, i, "pathname", &r.Pathname)
		res.decode(t, i, "props", &r.Props)
		res.decode(t, i, "revenue_currency", &r.RevenueCurrency)
		res.decode(t, i, "interactive", &r.Interactive)
		res.decode(t, i, "visitor_id", &r.VisitorID)
		r.RevenueAmount = res.num(t, i, "revenue_amount")
		r.ScrollDepth = int(res.num(t, i, "scroll_depth"))
		r.EngagementTime = int(res.num(t, i, "engagement_time"))
		r.TrackerVersion = int(res.num(t, i, "tracker_version"))
		got = append(got, r.key())
		if visitors[r.OS] == nil {
			visitors[r.OS] = map[string]bool{}
		}
		visitors[r.OS][r.VisitorID] = true
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("stored rows:\n%s\nwant exactly (each action once):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	t.Logf("stored rows:\n%s", strings.Join(got, "\n"))
	if len(visitors[v1]) != 1 || len(visitors[v2]) != 1 {
		t.Errorf("visitor ids by OS %v, want one per visitor", visitors)
	}

	// The report op over the session, beside what Plausible's definitions give for it:
	//   events       every event but engagement (Plausible: countIf(name != 'engagement')):
	//                visitor 1: 4 page views + After Init, Signup, Purchase, Tagged Click,
	//                Tagged Purchase, File Download, Form: Submission, Outbound Link: Click = 12;
	//                visitor 2: page view + Autoplay = 2; 14 in all (the 6 engagement rows excluded).
	//   pageviews    4 + 1 = 5; visitors 2; visits 2.
	//   bounce_rate  a visit with one page view and no interactive event is a bounce; engagement
	//                is neither. Visit 1 has 4 page views, visit 2 one page view, a
	//                non-interactive event and two engagements: 1 bounce of 2 visits = 50 %.
	dateRange := []string{firstDay.Format(time.DateOnly), lastDay.Format(time.DateOnly)}
	agg := coll.ask(t, token, "report", map[string]any{
		"metrics":    []string{"visitors", "visits", "pageviews", "events", "bounce_rate"},
		"date_range": dateRange,
	})
	for metric, want := range map[string]float64{"visitors": 2, "visits": 2, "pageviews": 5, "events": 14, "bounce_rate": 50} {
		if got := agg.num(t, 0, metric); got != want {
			t.Errorf("report %s = %g, want %g (Plausible's definition)", metric, got, want)
		}
	}
	t.Logf("report: visitors %g, visits %g, pageviews %g, events %g, bounce_rate %g",
		agg.num(t, 0, "visitors"), agg.num(t, 0, "visits"), agg.num(t, 0, "pageviews"), agg.num(t, 0, "events"), agg.num(t, 0, "bounce_rate"))

	// The event breakdown lists no "engagement".
	byName := coll.ask(t, token, "report", map[string]any{
		"metrics": []string{"events"}, "dimensions": []string{"event:name"}, "date_range": dateRange,
	})
	names := map[string]float64{}
	for i := range byName.Rows {
		var name string
		byName.decode(t, i, "event:name", &name)
		names[name] = byName.num(t, i, "events")
	}
	wantNames := map[string]float64{"pageview": 5, "After Init": 1, "Signup": 1, "Purchase": 1, "Tagged Click": 1,
		"Tagged Purchase": 1, "File Download": 1, "Form: Submission": 1, "Outbound Link: Click": 1, "Autoplay": 1}
	if !maps.Equal(names, wantNames) {
		t.Errorf("report events by event:name %v, want %v", names, wantNames)
	}

	// Per page, Plausible's definitions (engagement rows only):
	//   scroll_depth  the mean over visits of the visit's deepest scroll depth on the page;
	//   time_on_page  the engaged seconds on the page (sum of e / 1000) over the visits that
	//                 sent engagement there.
	//   /t/landing      visits 1 and 2: depth (60 + 40) / 2 = 50, time (12 + 2 + 4) / 2 = 9 s
	//   /t/pricing      visit 1: 40, 5 s
	//   /t/hash#/home   visit 1: 100, 9 s
	//   /t/hash#/about  visit 1: 40, 4 s
	byPage := coll.ask(t, token, "report", map[string]any{
		"metrics":    []string{"pageviews", "scroll_depth", "time_on_page"},
		"dimensions": []string{"event:page"}, "date_range": dateRange,
	})
	pages := map[string][3]float64{}
	for i := range byPage.Rows {
		var p string
		byPage.decode(t, i, "event:page", &p)
		pages[p] = [3]float64{byPage.num(t, i, "pageviews"), byPage.num(t, i, "scroll_depth"), byPage.num(t, i, "time_on_page")}
	}
	wantPages := map[string][3]float64{
		"/t/landing":     {2, 50, 9},
		"/t/pricing":     {1, 40, 5},
		"/t/hash#/home":  {1, 100, 9},
		"/t/hash#/about": {1, 40, 4},
	}
	if !maps.Equal(pages, wantPages) {
		t.Errorf("report by event:page [pageviews scroll_depth time_on_page]:\n%v\nwant (Plausible's definitions):\n%v", pages, wantPages)
	}
	t.Logf("report by event:page [pageviews scroll_depth time_on_page]: %v", pages)
	coll.stop()
}

// queryResult is the result of one query-path request: column names and raw rows.
type queryResult struct {
	Columns []struct{ Name string } `json:"columns"`
	Rows    [][]json.RawMessage     `json:"rows"`
}

// ask sends one Kyomi Connect message to POST /api/query and returns its result; an error
// message fails the test.
func (p *collectorProc) ask(t *testing.T, token, op string, params any) *queryResult {
	t.Helper()
	body, err := json.Marshal(map[string]any{"id": "q1", "op": op, "params": params})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+p.addr+"/api/query", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	var msg struct {
		Type   string       `json:"type"`
		Result *queryResult `json:"result"`
		Error  *struct{ Code, Message string }
	}
	if err := json.Unmarshal(raw, &msg); err != nil || msg.Type != "result" || msg.Result == nil {
		t.Fatalf("%s %s: answer %d %s", op, body, resp.StatusCode, raw)
	}
	return msg.Result
}

// decode decodes the value of column name in row i into out.
func (r *queryResult) decode(t *testing.T, i int, name string, out any) {
	t.Helper()
	for c, col := range r.Columns {
		if col.Name == name {
			if i >= len(r.Rows) {
				t.Fatalf("no row %d in a result of %d rows", i, len(r.Rows))
			}
			if err := json.Unmarshal(r.Rows[i][c], out); err != nil {
				t.Fatalf("column %s of row %d (%s): %v", name, i, r.Rows[i][c], err)
			}
			return
		}
	}
	t.Fatalf("no column %s in the result (columns %v)", name, r.Columns)
}

// num returns the numeric value of column name in row i; 64-bit integers come as JSON strings.
func (r *queryResult) num(t *testing.T, i int, name string) float64 {
	t.Helper()
	var v json.RawMessage
	r.decode(t, i, name, &v)
	s := strings.Trim(string(v), `"`)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("column %s of row %d is %s, not a number", name, i, v)
	}
	return f
}
