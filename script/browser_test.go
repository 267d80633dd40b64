package script

import (
	"html/template"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kyomi/collector/internal/leakcheck"
)

// TestBrowser drives headless Chromium against pages that embed the served script and a
// recording collector on another origin. One browser serves every case; each case gets its own
// browser context (fresh cookies and storage), pages server and collector.
func TestBrowser(t *testing.T) {
	leakcheck.Register(t)
	browser := newBrowser(t)

	t.Run("page view with referrer and UTM", func(t *testing.T) {
		h := newHarness(t, browser, "")
		landing := "/landing?utm_source=newsletter&utm_medium=email&utm_campaign=launch"
		h.add("/landing", page{})
		h.add("/article", page{NoScript: true, Body: template.HTML(`<a id="go" href="` + h.url("", landing) + `">go</a>`)})
		// The referrer page is on another site, without the script.
		h.run(chromedp.Navigate(h.url(referrerHost, "/article")))
		h.run(chromedp.Click(chromedp.CSS("#go")))
		ev := h.events(1)[0]
		if ev.N != "pageview" || ev.D != siteHost || ev.U != h.url("", landing) {
			t.Errorf("page view %+v, want n=pageview d=%s u=%s", ev, siteHost, h.url("", landing))
		}
		if ev.R == nil || *ev.R != h.url(referrerHost, "/") {
			t.Errorf("referrer %v, want %s (origin only under the default referrer policy)", ev.R, h.url(referrerHost, "/"))
		}
		u, err := url.Parse(ev.U)
		if err != nil || u.Query().Get("utm_source") != "newsletter" || u.Query().Get("utm_campaign") != "launch" {
			t.Errorf("UTM parameters lost from %q", ev.U)
		}
		if ev.P != nil || ev.Revenue != nil || ev.H != nil || ev.I != nil {
			t.Errorf("page view carries optional fields: %+v", ev)
		}
		h.checkNoTraces()
	})

	t.Run("SPA navigation counts each new path once", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/app/", page{})
		h.run(chromedp.Navigate(h.url("", "/app/")))
		h.waitJS(`typeof kyomi == 'function' && !kyomi.q`)
		h.eval(`history.pushState({}, '', '/app/a')`, nil)
		h.eval(`history.replaceState({}, '', '/app/a?tab=2')`, nil) // same path: not counted
		h.eval(`history.pushState({}, '', '/app/a')`, nil)          // same path again: not counted
		h.eval(`history.replaceState({}, '', '/app/b')`, nil)       // new path: counted
		h.eval(`history.pushState({}, '', '/app/c')`, nil)
		h.eval(`new Promise(r => { addEventListener('popstate', r, {once: true}); history.back() })`, nil)
		events := h.events(5)
		var paths []string
		for _, ev := range events {
			u, err := url.Parse(ev.U)
			if err != nil || ev.N != "pageview" {
				t.Fatalf("unexpected event %+v", ev)
			}
			paths = append(paths, u.Path)
		}
		sort.Strings(paths) // beacons may overtake each other on the wire
		want := []string{"/app/", "/app/a", "/app/b", "/app/b", "/app/c"}
		if len(paths) != len(want) {
			t.Fatalf("paths %v, want %v", paths, want)
		}
		for i := range want {
			if paths[i] != want[i] {
				t.Fatalf("paths %v, want %v (back to /app/b is a new view)", paths, want)
			}
		}
		h.checkNoTraces()
	})

	t.Run("script included twice counts once", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/twice", page{Body: template.HTML(`<script defer data-domain="acme.example" src="` + h.collector + `/js/script.js"></script>`)})
		h.run(chromedp.Navigate(h.url("", "/twice")))
		h.waitJS(`typeof kyomi == 'function' && document.readyState == 'complete'`)
		h.eval(`history.pushState({}, '', '/twice/next')`, nil)
		h.events(2)
	})

	t.Run("custom events, queue stub and plausible alias", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/shop", page{Stub: true, Queued: `kyomi('Signup', {props: {plan: 'pro'}});
plausible('Legacy', {props: {from: 'plausible'}});`})
		h.run(chromedp.Navigate(h.url("", "/shop")))
		h.waitJS(`typeof kyomi == 'function' && !kyomi.q && plausible === kyomi`)
		h.eval(`new Promise(r => kyomi('Purchase', {props: {sku: 'A-1'}, revenue: {amount: 9.99, currency: 'EUR'},
			interactive: false, callback: r}))`, nil)
		var status struct{ Status int }
		h.eval(`new Promise(r => plausible('Done', {callback: r}))`, &status)
		if status.Status != 202 {
			t.Errorf("callback got status %d, want 202", status.Status)
		}
		byName := h.eventsByName(5)
		if _, ok := byName["pageview"]; !ok {
			t.Errorf("no page view among %v", byName)
		}
		if ev := byName["Signup"]; ev.P["plan"] != "pro" || ev.D != siteHost {
			t.Errorf("queued kyomi call %+v", ev)
		}
		if ev := byName["Legacy"]; ev.P["from"] != "plausible" {
			t.Errorf("queued plausible call %+v", ev)
		}
		ev := byName["Purchase"]
		if ev.P["sku"] != "A-1" || ev.Revenue["amount"] != 9.99 || ev.Revenue["currency"] != "EUR" {
			t.Errorf("custom event %+v lacks props or revenue", ev)
		}
		if ev.I == nil || *ev.I {
			t.Errorf("interactive: false not sent: %+v", ev)
		}
		h.checkNoTraces()
	})

	t.Run("outbound link and file download", func(t *testing.T) {
		h := newHarness(t, browser, "")
		out := h.url(otherHost, "/partner?ref=acme")
		h.add("/links", page{
			Variant: "script.outbound-links.file-downloads",
			Body: template.HTML(`<a id="pdf" href="/files/report.pdf?v=2">report</a>
<a id="local" href="/links#top">same site</a>
<a id="out" href="` + out + `">partner</a>`),
		})
		h.add("/files/report.pdf", page{Status: 204}) // 204: the browser stays on the page
		h.add("/partner", page{NoScript: true})
		h.run(chromedp.Navigate(h.url("", "/links")))
		h.waitJS(`typeof kyomi == 'function'`)
		h.run(chromedp.Click(chromedp.CSS("#pdf")))
		h.run(chromedp.Click(chromedp.CSS("#local")))
		h.checkNoTraces()
		// The outbound click navigates away at once; keepalive carries the beacon anyway.
		h.run(chromedp.Click(chromedp.CSS("#out")))
		h.waitJS(`location.host == '` + otherHost + `:` + h.port + `'`)
		byName := h.eventsByName(3)
		if ev := byName["File Download"]; ev.P["url"] != h.url("", "/files/report.pdf") {
			t.Errorf("file download %+v", ev)
		}
		// The query string of the link stays out of the event: it can carry tokens.
		if want := h.url(otherHost, "/partner"); byName["Outbound Link: Click"].P["url"] != want || byName["Outbound Link: Click"].D != siteHost {
			t.Errorf("outbound click %+v, want url %s", byName["Outbound Link: Click"], want)
		}
	})

	t.Run("strict CSP allowing only the collector", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/secure", page{CSP: true})
		h.run(chromedp.Navigate(h.url("", "/secure")))
		if ev := h.events(1)[0]; ev.N != "pageview" || ev.U != h.url("", "/secure") {
			t.Fatalf("page view under CSP %+v", ev)
		}
		h.eval(`new Promise(r => kyomi('Under CSP', {callback: r}))`, nil)
		if ev := h.events(2)[1]; ev.N != "Under CSP" {
			t.Fatalf("custom event under CSP %+v", ev)
		}
		h.checkNoTraces()
	})

	t.Run("hash routing", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/docs", page{Attrs: `data-hash`})
		h.run(chromedp.Navigate(h.url("", "/docs#/intro")))
		h.waitJS(`typeof kyomi == 'function'`)
		h.eval(`new Promise(r => { addEventListener('hashchange', r, {once: true}); location.hash = '#/setup' })`, nil)
		got := map[string]bool{}
		for _, ev := range h.events(2) {
			if ev.H != float64(1) {
				t.Errorf("hash-mode event without h=1: %+v", ev)
			}
			got[ev.U] = true
		}
		for _, want := range []string{h.url("", "/docs#/intro"), h.url("", "/docs#/setup")} {
			if !got[want] {
				t.Errorf("no page view for %s in %v", want, got)
			}
		}
	})

	t.Run("manual mode", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/user/42", page{Attrs: `data-manual`})
		h.run(chromedp.Navigate(h.url("", "/user/42")))
		h.waitJS(`typeof kyomi == 'function'`)
		h.eval(`history.pushState({}, '', '/user/43')`, nil) // no automatic SPA page views either
		h.eval(`new Promise(r => kyomi('pageview', {u: location.origin + '/user/:id', callback: r}))`, nil)
		if ev := h.events(1)[0]; ev.N != "pageview" || ev.U != h.url("", "/user/:id") {
			t.Fatalf("manual page view %+v", ev)
		}
	})

	// Pages that must send nothing; the callback still runs so forms and links keep working.
	ignored := []struct {
		name  string
		host  string
		path  string
		page  page
		setup string
	}{
		{name: "excluded path", path: "/admin/users", page: page{Attrs: `data-exclude="/blog/**, /admin/*"`}},
		{name: "excluded deep path", path: "/blog/2026/11/post", page: page{Attrs: `data-exclude="/blog/**, /admin/*"`}},
		{name: "loopback address", host: "127.0.0.1", path: "/local", page: page{}},
		{name: "owner opt-out", path: "/mine", page: page{}, setup: `localStorage.kyomi_ignore = 'true'`},
	}
	for _, tc := range ignored {
		t.Run("ignored: "+tc.name, func(t *testing.T) {
			h := newHarness(t, browser, "")
			h.add(tc.path, tc.page)
			if tc.setup != "" {
				h.run(chromedp.Navigate(h.url(tc.host, "/nothing-here")))
				h.eval(tc.setup, nil)
			}
			h.run(chromedp.Navigate(h.url(tc.host, tc.path)))
			h.waitJS(`typeof kyomi == 'function'`)
			var arg any = "unset"
			h.eval(`new Promise(r => kyomi('Click', {callback: a => r(a === undefined ? null : a)}))`, &arg)
			if arg != nil {
				t.Errorf("callback got %v, want no argument (ignored)", arg)
			}
			h.events(0)
		})
	}

	t.Run("data-api overrides the endpoint", func(t *testing.T) {
		h := newHarness(t, browser, "")
		// Without data-api the beacon would go to the site's own origin, which records nothing.
		h.add("/proxied", page{SelfHost: true, Attrs: template.HTMLAttr(`data-api="` + h.collector + `/api/event"`)})
		h.run(chromedp.Navigate(h.url("", "/proxied")))
		if ev := h.events(1)[0]; ev.N != "pageview" || ev.U != h.url("", "/proxied") {
			t.Fatalf("page view %+v", ev)
		}
	})

	t.Run("ignored: file page", func(t *testing.T) {
		h := newHarness(t, browser, "")
		file := filepath.Join(t.TempDir(), "page.html")
		html := `<!doctype html><script defer data-domain="acme.example" src="` + h.collector + `/js/script.js"></script>`
		if err := os.WriteFile(file, []byte(html), 0o644); err != nil {
			t.Fatal(err)
		}
		h.run(chromedp.Navigate("file://" + file))
		h.waitJS(`typeof kyomi == 'function'`)
		var arg any = "unset"
		h.eval(`new Promise(r => kyomi('Click', {callback: a => r(a === undefined ? null : a)}))`, &arg)
		if arg != nil {
			t.Errorf("callback got %v, want no argument (ignored)", arg)
		}
		h.events(0)
	})

	t.Run("loopback allowed with data-allow-local", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/local", page{Attrs: `data-allow-local`})
		h.run(chromedp.Navigate(h.url("127.0.0.1", "/local")))
		if ev := h.events(1)[0]; ev.U != h.url("127.0.0.1", "/local") {
			t.Fatalf("page view %+v", ev)
		}
	})
}

// TestBrowserExtensions drives the variants of Plausible's other extensions (cut from templates
// by the server) in Chromium, one case per behaviour.
func TestBrowserExtensions(t *testing.T) {
	leakcheck.Register(t)
	browser := newBrowser(t)

	t.Run("manual: no automatic page view, plausible('pageview') works", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/user/42", page{Variant: "script.manual"})
		h.run(chromedp.Navigate(h.url("", "/user/42")))
		h.waitJS(`typeof plausible == 'function' && document.readyState == 'complete'`)
		h.eval(`history.pushState({}, '', '/user/43')`, nil)
		h.eval(`new Promise(r => plausible('pageview', {u: location.origin + '/user/:id', callback: r}))`, nil)
		if ev := h.events(1)[0]; ev.N != "pageview" || ev.U != h.url("", "/user/:id") {
			t.Fatalf("manual page view %+v", ev)
		}
	})

	t.Run("local: tracks on a loopback address", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/local", page{Variant: "script.local"})
		h.run(chromedp.Navigate(h.url("127.0.0.1", "/local")))
		if ev := h.events(1)[0]; ev.N != "pageview" || ev.U != h.url("127.0.0.1", "/local") {
			t.Fatalf("page view %+v", ev)
		}
	})

	t.Run("tagged-events: clicks, forms and revenue", func(t *testing.T) {
		h := newHarness(t, browser, "")
		out := h.url(otherHost, "/partner?token=secret")
		h.add("/tags", page{
			Variant: "script.tagged-events.outbound-links.revenue",
			Body: template.HTML(`<button id="signup" class="big plausible-event-name=Signup plausible-event-plan=pro+plan">sign up</button>
<div class="plausible-event-name--Purchase plausible-event-revenue-amount=9.99 plausible-event-revenue-currency=EUR"><span id="buy">buy</span></div>
<form class="plausible-event-name=Newsletter" action="/thanks"><button id="send" class="plausible-event-name=Inside">send</button></form>
<a id="partner" class="plausible-event-name=Partner" href="` + out + `">partner</a>`),
		})
		h.add("/thanks", page{Status: 204})
		h.add("/partner", page{NoScript: true})
		h.run(chromedp.Navigate(h.url("", "/tags")))
		h.waitJS(`typeof plausible == 'function'`)
		h.run(chromedp.Click(chromedp.CSS("#signup")))
		h.run(chromedp.Click(chromedp.CSS("#buy")))
		h.run(chromedp.Click(chromedp.CSS("#send"))) // a click inside a form counts only as the submission
		h.checkNoTraces()
		h.run(chromedp.Click(chromedp.CSS("#partner")))
		h.waitJS(`location.host == '` + otherHost + `:` + h.port + `'`)
		byName := h.eventsByName(5)
		if ev, ok := byName["Signup"]; !ok || len(ev.P) != 1 || ev.P["plan"] != "pro plan" || ev.Revenue != nil {
			t.Errorf("tagged button %+v", ev)
		}
		if ev := byName["Purchase"]; ev.Revenue["amount"] != "9.99" || ev.Revenue["currency"] != "EUR" || len(ev.P) != 0 {
			t.Errorf("tagged revenue %+v", ev)
		}
		if _, ok := byName["Newsletter"]; !ok {
			t.Errorf("no event for the tagged form in %v", byName)
		}
		// The tagged link sends its own event, not an outbound click too, and its URL prop has
		// no query string, as for outbound links.
		if ev := byName["Partner"]; ev.P["url"] != h.url(otherHost, "/partner") {
			t.Errorf("tagged link %+v, want url %s", ev, h.url(otherHost, "/partner"))
		}
		if _, ok := byName["pageview"]; !ok {
			t.Errorf("no page view in %v", byName)
		}
	})

	t.Run("pageview-props: event-* attributes are props", func(t *testing.T) {
		h := newHarness(t, browser, "")
		h.add("/article", page{Variant: "script.pageview-props", Attrs: `event-author="Jane Doe" event-section="news"`})
		h.run(chromedp.Navigate(h.url("", "/article")))
		h.waitJS(`typeof plausible == 'function'`)
		h.eval(`new Promise(r => plausible('Share', {props: {section: 'sports'}, callback: r}))`, nil)
		byName := h.eventsByName(2)
		if ev := byName["pageview"]; len(ev.P) != 2 || ev.P["author"] != "Jane Doe" || ev.P["section"] != "news" {
			t.Errorf("page view props %+v", ev.P)
		}
		if ev := byName["Share"]; ev.P["author"] != "Jane Doe" || ev.P["section"] != "sports" {
			t.Errorf("custom event props %+v, want the call's section to win", ev.P)
		}
	})

	t.Run("exclusions: data-exclude and data-include", func(t *testing.T) {
		h := newHarness(t, browser, "")
		attrs := template.HTMLAttr(`data-include="/docs/**" data-exclude="/docs/private/*"`)
		for _, p := range []string{"/docs/private/plan", "/pricing", "/docs/intro/setup"} {
			h.add(p, page{Variant: "script.exclusions", Attrs: attrs})
			h.run(chromedp.Navigate(h.url("", p)))
			h.waitJS(`typeof plausible == 'function' && document.readyState == 'complete'`)
		}
		if ev := h.events(1)[0]; ev.N != "pageview" || ev.U != h.url("", "/docs/intro/setup") {
			t.Fatalf("page view %+v, want only the included, not excluded path", ev)
		}
	})

	t.Run("compat: found by id without document.currentScript", func(t *testing.T) {
		h := newHarness(t, browser, "")
		// A module script runs with document.currentScript == null.
		h.add("/module", page{Variant: "script.compat", Attrs: `id="plausible" type="module"`})
		h.add("/module-base", page{Attrs: `id="plausible" type="module"`})
		h.run(chromedp.Navigate(h.url("", "/module-base")))
		h.waitJS(`document.readyState == 'complete'`)
		h.run(chromedp.Navigate(h.url("", "/module")))
		if ev := h.events(1)[0]; ev.N != "pageview" || ev.U != h.url("", "/module") {
			t.Fatalf("page view %+v, want one from the compat variant only", ev)
		}
	})
}
