package script

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/internal/testkit"
)

// The browser resolves these names to 127.0.0.1 (--host-resolver-rules), so pages have real,
// non-local hostnames: the script's localhost guard and the collector's domain check see what
// they would see in production. Pages and collector are different origins (different ports
// and hosts), so every beacon is a cross-origin request.
const (
	siteHost      = "acme.example"
	referrerHost  = "news.example"
	otherHost     = "elsewhere.example"
	collectorHost = "collector.example"
	resolverRules = "MAP acme.example 127.0.0.1, MAP news.example 127.0.0.1, " +
		"MAP elsewhere.example 127.0.0.1, MAP collector.example 127.0.0.1"
)

// newBrowser starts headless Chromium with a fresh profile and returns a context whose tabs
// share that browser. extra options are added to the defaults (e.g. a user agent). The browser
// stops when the test ends.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	profile := t.TempDir() // removed after the browser has exited (cleanups run in reverse)
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("host-resolver-rules", resolverRules),
		chromedp.UserDataDir(profile),
	}, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	if _, err := chromedp.Run(browserCtx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("cannot start chromium: %v", err)
	}
	return browserCtx
}

// request is one request the recording collector received, copied out of fasthttp.
type request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// event is the JSON body of a beacon, with the field names of Plausible's Events API.
type event struct {
	N       string            `json:"n"`
	U       string            `json:"u"`
	D       string            `json:"d"`
	R       *string           `json:"r"`
	P       map[string]string `json:"p"`
	Revenue map[string]any    `json:"$"`
	H       any               `json:"h"`
	I       *bool             `json:"i"`
	SD      *int              `json:"sd"` // engagement: scroll depth in percent
	E       *int              `json:"e"`  // engagement: engaged milliseconds
}

// recorder is a stand-in collector: it serves the real script handler under /js/ and records
// every other request, answering beacons 202 with the CORS header a collector sends.
type recorder struct {
	mu   sync.Mutex
	reqs []request
}

func (r *recorder) handle(ctx *fasthttp.RequestCtx) {
	if ctx.IsGet() && strings.HasPrefix(string(ctx.Path()), PathPrefix) {
		Serve(ctx)
		return
	}
	req := request{
		Method: string(ctx.Method()),
		Path:   string(ctx.Path()),
		Header: http.Header{},
		Body:   append([]byte(nil), ctx.PostBody()...),
	}
	for k, v := range ctx.Request.Header.All() {
		req.Header.Add(string(k), string(v))
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	if origin := ctx.Request.Header.Peek("Origin"); len(origin) > 0 {
		ctx.Response.Header.SetBytesV("Access-Control-Allow-Origin", origin)
	}
	switch {
	case ctx.IsOptions():
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	case ctx.IsPost() && req.Path == "/api/event":
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	default:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
	}
}

func (r *recorder) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// page is one fixture page of a harness site.
type page struct {
	Variant  string            // script base name, "script" when empty
	NoScript bool              // a page of another site: no tracking script at all
	SelfHost bool              // load the script from the site itself (data-api then names the collector)
	Attrs    template.HTMLAttr // extra attributes of the script tag
	Stub     bool              // queue calls with the documented stub before the script loads
	Queued   template.JS       // calls made through the stub
	CSP      bool              // strict Content-Security-Policy allowing only the collector
	Body     template.HTML
	Status   int // answer with this status and no body (e.g. 204 for a download)
	// Content, when set, is the whole answer (e.g. a JavaScript module), of type ContentType.
	Content     []byte
	ContentType string
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>fixture</title>
{{if not .Page.NoScript}}{{if .Page.Stub}}<script>
window.kyomi = window.kyomi || function () { (window.kyomi.q = window.kyomi.q || []).push(arguments) };
window.plausible = window.plausible || function () { (window.plausible.q = window.plausible.q || []).push(arguments) };
{{.Page.Queued}}
</script>{{end}}
<script defer data-domain="acme.example" src="{{if not .Page.SelfHost}}{{.Collector}}{{end}}/js/{{.Variant}}.js" {{.Page.Attrs}}></script>{{end}}
</head><body>{{.Page.Body}}</body></html>
`))

// harness is one site served to the browser plus the collector its pages report to.
type harness struct {
	t         *testing.T
	tab       context.Context
	port      string // port of the pages server, shared by every site hostname
	collector string // collector base URL, e.g. http://collector.example:PORT
	rec       *recorder
	sent      atomic.Int64 // beacons (POST /api/event to the collector) the tab has sent, as it reports them
	mu        sync.Mutex
	site      map[string]page
}

// newHarness opens a tab in a fresh browser context (no cookies or storage from other tests)
// and starts the pages server. collector is the base URL pages load the script from and
// report to; when empty, a recording collector is started and h.rec is set. An end-to-end
// test passes the address of a real collector instead and checks its stored rows.
func newHarness(t *testing.T, browser context.Context, collector string) *harness {
	t.Helper()
	h := &harness{t: t, collector: collector, site: map[string]page{}}
	if collector == "" {
		h.rec = &recorder{}
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(serve(t, h.rec.handle), "http://"))
		h.collector = "http://" + collectorHost + ":" + port
	}
	_, h.port, _ = net.SplitHostPort(strings.TrimPrefix(serve(t, h.servePage), "http://"))
	tab, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if _, err := chromedp.Run(tab, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("cannot open tab: %v", err)
	}
	beacons := h.collector + "/api/event"
	if err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && e.Request.Method == http.MethodPost && strings.HasPrefix(e.Request.URL, beacons) {
			h.sent.Add(1)
		}
	}); err != nil {
		t.Fatalf("cannot follow the tab's requests: %v", err)
	}
	h.tab = tab
	return h
}

// url returns the address of path on host (siteHost when empty) as the browser sees it.
func (h *harness) url(host, path string) string {
	if host == "" {
		host = siteHost
	}
	return "http://" + host + ":" + h.port + path
}

func (h *harness) add(path string, p page) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.site[path] = p
}

func (h *harness) servePage(ctx *fasthttp.RequestCtx) {
	if strings.HasPrefix(string(ctx.Path()), PathPrefix) {
		Serve(ctx) // the site proxies the script (SelfHost pages)
		return
	}
	h.mu.Lock()
	p, ok := h.site[string(ctx.Path())]
	h.mu.Unlock()
	switch {
	case !ok:
		ctx.Error("not found", fasthttp.StatusNotFound)
		return
	case p.Status != 0:
		ctx.SetStatusCode(p.Status)
		return
	case p.Content != nil:
		ctx.SetContentType(p.ContentType)
		ctx.SetBody(p.Content)
		return
	}
	if p.CSP {
		ctx.Response.Header.Set("Content-Security-Policy", fmt.Sprintf(
			"default-src 'none'; script-src %s; connect-src %s; base-uri 'none'; form-action 'none'",
			h.collector, h.collector))
	}
	variant := p.Variant
	if variant == "" {
		variant = "script"
	}
	ctx.SetContentType("text/html; charset=utf-8")
	err := pageTemplate.Execute(ctx, map[string]any{"Page": p, "Collector": h.collector, "Variant": variant})
	if err != nil {
		h.t.Errorf("cannot render page: %v", err)
	}
}

func (h *harness) run(a chromedp.Action[chromedp.Void]) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.tab, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, a); err != nil {
		h.t.Fatalf("browser action failed: %v", err)
	}
}

// eval evaluates expr in the page and decodes its JSON value into out (nil to ignore).
func (h *harness) eval(expr string, out any) {
	h.t.Helper()
	if err := h.tryEval(expr, out); err != nil {
		h.t.Fatal(err)
	}
}

// tryEval is eval that returns its error.
func (h *harness) tryEval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(h.tab, 20*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return fmt.Errorf("cannot evaluate %q: %w", expr, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("cannot decode result %s of %q: %w", raw, expr, err)
		}
	}
	return nil
}

// waitJS polls expr from Go (no in-page polling code, which a strict CSP could block) until
// it is true. A navigation started just before (a click on a link) can replace the page while
// an evaluation runs ("Inspected target navigated or closed"), so a failed evaluation is
// retried like a false one until the deadline.
func (h *harness) waitJS(expr string) {
	h.t.Helper()
	testkit.Eventually(h.t, 10*time.Second, expr, func() bool {
		var ok bool
		return h.tryEval("!!("+expr+")", &ok) == nil && ok
	})
}

// eventsByName is events(n) keyed by event name; of beacons with the same name the last wins.
func (h *harness) eventsByName(n int) map[string]event {
	h.t.Helper()
	byName := map[string]event{}
	for _, ev := range h.events(n) {
		byName[ev.N] = ev
	}
	return byName
}

// events waits until the recorder holds at least n beacons and every beacon the tab has sent (once
// the page ran the tasks queued so far, such as event handlers), and returns every beacon decoded.
// It checks the transport on the way: each is a POST with a text/plain body and no cookie, and no
// preflight ever arrived.
func (h *harness) events(n int) []event {
	h.t.Helper()
	beacons := func() int {
		k := 0
		for _, r := range h.rec.requests() {
			if r.Method == http.MethodPost && r.Path == "/api/event" {
				k++
			}
		}
		return k
	}
	testkit.Eventually(h.t, 10*time.Second, fmt.Sprintf("%d beacons", n), func() bool { return beacons() >= n })
	// A beacon that a handler queued before now is sent by the time a task queued now runs, and the
	// tab reports it before the answer to this evaluation (a page that cannot evaluate, say while it
	// navigates, has queued nothing of ours).
	_ = h.tryEval(`new Promise(r => setTimeout(() => r(true)))`, nil)
	testkit.Eventually(h.t, 10*time.Second, "every beacon the tab sent to arrive", func() bool {
		return int64(beacons()) >= h.sent.Load()
	})
	var out []event
	for _, r := range h.rec.requests() {
		if r.Method != http.MethodPost || r.Path != "/api/event" {
			h.t.Errorf("collector received %s %s (preflight or stray request)", r.Method, r.Path)
			continue
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			h.t.Errorf("beacon Content-Type %q, want text/plain", ct)
		}
		if c := r.Header.Get("Cookie"); c != "" {
			h.t.Errorf("beacon carried a cookie")
		}
		if o := r.Header.Get("Origin"); o != h.url("", "") && o != h.url("127.0.0.1", "") {
			h.t.Errorf("beacon Origin %q, want the page's origin %q", o, h.url("", ""))
		}
		var e event
		if err := json.Unmarshal(r.Body, &e); err != nil {
			h.t.Errorf("beacon body %q is not JSON: %v", r.Body, err)
			continue
		}
		out = append(out, e)
	}
	if len(out) != n {
		h.t.Fatalf("collector received %d beacons, want %d: %+v", len(out), n, out)
	}
	return out
}

// checkNoTraces asserts the page left no cookie and no storage behind.
func (h *harness) checkNoTraces() {
	h.t.Helper()
	var traces struct {
		Cookie  string `json:"cookie"`
		Local   int    `json:"local"`
		Session int    `json:"session"`
	}
	h.eval(`({cookie: document.cookie, local: localStorage.length, session: sessionStorage.length})`, &traces)
	if traces.Cookie != "" || traces.Local != 0 || traces.Session != 0 {
		h.t.Errorf("page left traces: %+v", traces)
	}
}
