package script

import (
	"context"
	"fmt"
	"html/template"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/testkit"
)

// engagementPage is a page 2000 px tall (with the 1280×800 viewport of trackerViewport, 800 px
// seen is 40 %, scrolled to 400 px 60 %) whose Date.now is a clock the test moves with
// advanceClock(ms), so the engaged time the script sends is exact. The clock is set before the
// deferred script runs.
const engagementPage = template.HTML(`<style>html, body { margin: 0 } #tall { height: 2000px }</style>
<div id="tall"></div>
<script>(function () { var now = Date.now(); Date.now = function () { return now }; window.advanceClock = function (ms) { now += ms } })();</script>`)

// setMinimized minimizes or restores the tab's browser window: minimized, the page is hidden
// (visibilitychange), as when the visitor switches tabs or apps.
func setMinimized(h *harness, minimized bool) {
	h.t.Helper()
	state := browser.WindowStateNormal
	if minimized {
		state = browser.WindowStateMinimized
	}
	h.run(chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		w, err := cdp.Call(ctx, tgt, browser.GetWindowForTarget, browser.GetWindowForTargetParams{})
		if err != nil {
			return err
		}
		_, err = cdp.Call(ctx, tgt, browser.SetWindowBounds, browser.SetWindowBoundsParams{WindowID: w.WindowID, Bounds: &browser.Bounds{WindowState: state}})
		return err
	}))
	want := "visible"
	if minimized {
		want = "hidden"
	}
	h.waitJS(`document.visibilityState == '` + want + `'`)
}

// engagementEvent is the part of a beacon the engagement checks compare.
type engagementEvent struct {
	N, Path string
	SD, E   int // -1 when absent
}

// engagementEvents returns the beacons in a canonical order, checking their common fields.
func engagementEvents(t *testing.T, evs []event) []engagementEvent {
	t.Helper()
	var out []engagementEvent
	for _, ev := range evs {
		u, err := url.Parse(ev.U)
		if err != nil {
			t.Fatalf("event URL %q: %v", ev.U, err)
		}
		e := engagementEvent{N: ev.N, Path: u.Path, SD: -1, E: -1}
		if ev.SD != nil {
			e.SD = *ev.SD
		}
		if ev.E != nil {
			e.E = *ev.E
		}
		if ev.D != siteHost || ev.P != nil || ev.H != nil || ev.I != nil || ev.Revenue != nil {
			t.Errorf("%s beacon %+v: want d=%s and no props, hash, interactive or revenue", ev.N, ev, siteHost)
		}
		out = append(out, e)
	}
	// Beacons sent together (an engagement and the next page view) may overtake each other.
	sortEngagement(out)
	return out
}

// sortEngagement puts events in a canonical order.
func sortEngagement(evs []engagementEvent) {
	slices.SortFunc(evs, func(a, b engagementEvent) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
}

// TestScriptEngagement drives the engagement extension in Chromium against the recording
// collector and checks Plausible's rules, beacon by beacon: the first engagement of a page view
// is always sent; later ones only when the visitor scrolled deeper than last sent or was engaged
// for at least 3 s since; engaged time counts only while the page is visible; a SPA navigation
// sends the previous page's engagement (with its URL) before the new page view; leaving the
// page sends it too; no engagement without a page view sent (an excluded path); the default
// script sends none.
func TestScriptEngagement(t *testing.T) {
	leakcheck.Register(t)
	br := newBrowser(t)

	t.Run("visibility, SPA navigation and leaving", func(t *testing.T) {
		h := newHarness(t, br, "")
		h.run(chromedp.EmulateViewport(trackerViewportW, trackerViewportH))
		h.add("/e/a", page{Variant: "script.engagement", Body: engagementPage})
		h.add("/bye", page{NoScript: true})
		h.run(chromedp.Navigate(h.url("", "/e/a")))
		h.waitJS(`typeof kyomi == 'function' && document.readyState == 'complete'`)
		scrollTo(h, 400) // 60 %
		scrollTo(h, 0)
		h.eval(`advanceClock(1000)`, nil)
		setMinimized(h, true) // engagement: the first of the page view, 60 %, 1000 ms
		h.eval(`advanceClock(60000)`, nil)
		setMinimized(h, false) // hidden time does not count
		h.eval(`advanceClock(2000)`, nil)
		setMinimized(h, true) // nothing: no deeper scroll, 2000 ms < 3 s
		setMinimized(h, false)
		h.eval(`advanceClock(1500)`, nil)
		h.eval(`history.pushState({}, '', '/e/b')`, nil) // engagement of /e/a: 2000 + 1500 ms; page view /e/b
		h.eval(`advanceClock(500)`, nil)
		h.run(chromedp.Navigate(h.url(otherHost, "/bye"))) // engagement of /e/b: 40 %, 500 ms
		got := engagementEvents(t, h.events(5))
		want := []engagementEvent{
			{"pageview", "/e/a", -1, -1},
			{"engagement", "/e/a", 60, 1000},
			{"engagement", "/e/a", 60, 3500},
			{"pageview", "/e/b", -1, -1},
			{"engagement", "/e/b", 40, 500},
		}
		if sortEngagement(want); !slices.Equal(got, want) {
			t.Errorf("beacons %+v, want %+v", got, want)
		}
	})

	t.Run("no engagement without a page view", func(t *testing.T) {
		h := newHarness(t, br, "")
		h.run(chromedp.EmulateViewport(trackerViewportW, trackerViewportH))
		h.add("/admin/x", page{Variant: "script.engagement", Attrs: `data-exclude="/admin/*"`, Body: engagementPage})
		h.add("/bye", page{NoScript: true})
		h.run(chromedp.Navigate(h.url("", "/admin/x")))
		h.waitJS(`typeof kyomi == 'function' && document.readyState == 'complete'`)
		h.eval(`advanceClock(5000)`, nil)
		setMinimized(h, true)
		setMinimized(h, false)
		h.eval(`history.pushState({}, '', '/shop')`, nil) // a page view, and no engagement for /admin/x
		h.eval(`advanceClock(4000)`, nil)
		h.run(chromedp.Navigate(h.url(otherHost, "/bye")))
		got := engagementEvents(t, h.events(2))
		want := []engagementEvent{{"pageview", "/shop", -1, -1}, {"engagement", "/shop", 40, 4000}}
		if sortEngagement(want); !slices.Equal(got, want) {
			t.Errorf("beacons %+v, want %+v", got, want)
		}
	})

	t.Run("the default script sends no engagement", func(t *testing.T) {
		h := newHarness(t, br, "")
		h.add("/plain", page{Body: engagementPage})
		h.add("/bye", page{NoScript: true})
		h.run(chromedp.Navigate(h.url("", "/plain")))
		h.waitJS(`typeof kyomi == 'function' && document.readyState == 'complete'`)
		h.eval(`advanceClock(5000)`, nil)
		setMinimized(h, true)
		setMinimized(h, false)
		h.run(chromedp.Navigate(h.url(otherHost, "/bye")))
		if got := engagementEvents(t, h.events(1)); got[0].N != "pageview" {
			t.Errorf("beacons %+v, want the page view only", got)
		}
	})
}

// TestScriptEngagementStored loads the engagement variant from the real collector binary and
// checks that its engagement beacons are stored as engagement rows with their scroll depth and
// engaged time, and that the report counts them as neither events nor page views.
func TestScriptEngagementStored(t *testing.T) {
	leakcheck.Register(t)
	keys := testkit.NewConnectKey(t)
	coll := startCollectorProc(t, "-jwks", keys.JWKS)
	rp := &recordingProxy{}
	collectorURL := rp.start(t, coll.addr)
	h := newHarness(t, newBrowser(t, chromedp.UserAgent(e2eUA)), collectorURL)
	h.run(chromedp.EmulateViewport(trackerViewportW, trackerViewportH))
	h.add("/e/a", page{Variant: "script.engagement", Body: engagementPage})
	h.add("/bye", page{NoScript: true})
	day := time.Now().UTC().Format(time.DateOnly)
	h.run(chromedp.Navigate(h.url("", "/e/a")))
	h.waitJS(`typeof kyomi == 'function' && document.readyState == 'complete'`)
	scrollTo(h, 1200) // the bottom: 100 %
	h.eval(`advanceClock(4000)`, nil)
	h.eval(`history.pushState({}, '', '/e/b')`, nil)
	h.eval(`advanceClock(3000)`, nil)
	setMinimized(h, true)
	setMinimized(h, false)
	h.eval(`advanceClock(1000)`, nil)
	h.run(chromedp.Navigate(h.url(otherHost, "/bye")))
	rp.waitBeacons(h, 0, 4, "")

	token := keys.Token(t, "ws_acme", "jti-tracker", "wss://connect.example/agent/v1")
	want := []string{
		"pageview /e/a sd=0 e=0",
		"engagement /e/a sd=100 e=4000",
		"pageview /e/b sd=0 e=0",
		// The SPA's next page starts scrolled to the bottom; the second hide (1000 ms, no deeper
		// scroll) sends nothing.
		"engagement /e/b sd=100 e=3000",
	}
	var got []string
	testkit.Eventually(t, 20*time.Second, fmt.Sprintf("%d stored rows", len(want)), func() bool {
		res := coll.ask(t, token, "execute_query", map[string]any{
			"sql": "SELECT name, pathname, scroll_depth, engagement_time FROM events"})
		got = got[:0]
		for i := range res.Rows {
			var name, path string
			res.decode(t, i, "name", &name)
			res.decode(t, i, "pathname", &path)
			got = append(got, fmt.Sprintf("%s %s sd=%g e=%g", name, path, res.num(t, i, "scroll_depth"), res.num(t, i, "engagement_time")))
		}
		return len(got) >= len(want)
	})
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("stored rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	res := coll.ask(t, token, "report", map[string]any{
		"metrics": []string{"events", "pageviews"}, "date_range": []string{day, time.Now().UTC().Format(time.DateOnly)}})
	if ev, pv := res.num(t, 0, "events"), res.num(t, 0, "pageviews"); ev != 2 || pv != 2 {
		t.Errorf("report: events %g, pageviews %g; want 2 and 2 (engagement is neither)", ev, pv)
	}
	coll.stop()
}
