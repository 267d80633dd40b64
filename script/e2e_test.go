package script

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/startline"
	"github.com/kyomi/collector/internal/syncbuf"
	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/internal/testring"
)

// e2eUA is the user agent of the end-to-end browser. Headless Chromium announces itself as
// "HeadlessChrome", which the collector rightly drops as automated traffic; the stored-row checks
// need the events of an ordinary desktop Chrome.
const e2eUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// e2eBinary is the collector binary, built at most once per test run and removed by TestMain.
var e2eBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	removeRing, err := testring.Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	removeRing()
	if e2eBinary.dir != "" {
		_ = os.RemoveAll(e2eBinary.dir)
	}
	os.Exit(code)
}

// collectorBinary builds ./cmd/collector into a temporary directory on first use.
func collectorBinary(t *testing.T) string {
	t.Helper()
	e2eBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "kyomi-script-e2e-")
		if err != nil {
			e2eBinary.err = err
			return
		}
		e2eBinary.dir = dir
		e2eBinary.path = filepath.Join(dir, "collector")
		out, err := exec.Command("go", "build", "-o", e2eBinary.path, "github.com/kyomi/collector/cmd/collector").CombinedOutput()
		if err != nil {
			e2eBinary.err = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if e2eBinary.err != nil {
		t.Fatalf("cannot build the collector binary: %v", e2eBinary.err)
	}
	return e2eBinary.path
}

// syncBuffer collects log or process output while the test reads it.
type syncBuffer = syncbuf.Buffer

// collectorProc is one `collector serve` process with an embedded store in its own data directory.
type collectorProc struct {
	t       *testing.T
	bin     string
	dataDir string
	addr    string // 127.0.0.1:PORT
	cmd     *exec.Cmd
	logs    *syncBuffer
	done    chan error    // Wait's result, for whoever waits for the exit
	exited  chan struct{} // closed once the process has exited
	client  *http.Client
}

// startCollectorProc runs the real binary with the example workspaces file (acme.example belongs
// to ws_acme, tier pro) and waits until /readyz answers 200. args are added to `serve`'s flags.
func startCollectorProc(t *testing.T, args ...string) *collectorProc {
	t.Helper()
	bin := collectorBinary(t)
	dir := t.TempDir()
	ws, err := os.ReadFile(filepath.Join("..", "testdata", "workspaces.example.yaml"))
	if err != nil {
		t.Fatalf("cannot read the example workspaces file: %v", err)
	}
	cfg := filepath.Join(dir, "workspaces.yaml")
	if err := os.WriteFile(cfg, ws, 0o644); err != nil {
		t.Fatal(err)
	}
	p := &collectorProc{
		t: t, bin: bin, dataDir: filepath.Join(dir, "data"),
		logs: &syncBuffer{}, done: make(chan error, 1), exited: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second},
	}
	// Port 0, read back from the startup log line: see package startline.
	p.cmd = exec.Command(bin, append([]string{"serve", "-listen", "127.0.0.1:0", "-config", cfg, "-data-dir", p.dataDir, "-batch-age", "200ms"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("cannot start the collector: %v", err)
	}
	go func() {
		p.done <- p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("collector log:\n%s", p.logs.String())
		}
	})
	testkit.Eventually(t, 60*time.Second, "the collector to be ready", func() bool {
		select {
		case err := <-p.done:
			t.Fatalf("collector exited before it was ready: %v\n%s", err, p.logs.String())
		default:
		}
		if p.addr == "" {
			p.addr = startline.Addr(p.logs.String())
		}
		if p.addr == "" {
			return false
		}
		resp, err := p.client.Get("http://" + p.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// eventRequests returns collector_http_requests_total{handler="event"} by status code, as the
// collector itself counted them; codes never answered are left out.
func (p *collectorProc) eventRequests() map[string]int {
	p.t.Helper()
	families, err := testkit.Scraped("http://" + p.addr + "/metrics").Gather()
	if err != nil {
		p.t.Fatal(err)
	}
	counts := map[string]int{}
	for _, mf := range families {
		if mf.GetName() != "collector_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var handler, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "handler":
					handler = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			if n := int(m.GetCounter().GetValue()); handler == "event" && n > 0 { // codes start at 0
				counts[code] += n
			}
		}
	}
	return counts
}

// stop sends SIGTERM (the collector then flushes its spool into the embedded store) and waits for
// a clean exit.
func (p *collectorProc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatalf("collector exited with %v after SIGTERM\n%s", err, p.logs.String())
		}
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("collector did not exit within 60s of SIGTERM\n%s", p.logs.String())
	}
}

// query runs `collector sql` on the stopped collector's data directory and returns stdout.
func (p *collectorProc) query(sql string) []byte {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bin, "sql", "-data-dir", p.dataDir, sql)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("collector sql %q: %v\n%s", sql, err, stderr.String())
	}
	return out
}

// exchange is one request the recording proxy passed to the collector, and the answer.
type exchange struct {
	Method      string
	Path        string
	ContentType string
	Origin      string
	Cookie      bool // the request carried a Cookie header
	Status      int
	Dropped     string // X-Collector-Dropped of the answer
	SetCookie   bool   // the answer tried to set a cookie
}

// recordingProxy sits between the browser and the real collector and records every exchange, so
// the test sees exactly what reached the collector (preflights included) and what it answered.
type recordingProxy struct {
	mu  sync.Mutex
	log []exchange
}

// start serves the proxy on a free loopback port in front of target (host:port) and returns the
// base URL under the collector's browser-visible name: http://collector.example:PORT.
func (rp *recordingProxy) start(t *testing.T, target string) string {
	t.Helper()
	tr := &http.Transport{}
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(&url.URL{Scheme: "http", Host: target}) },
		Transport: tr,
		ModifyResponse: func(resp *http.Response) error {
			rp.record(resp.Request, resp.StatusCode, resp.Header)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			rp.record(r, http.StatusBadGateway, http.Header{})
			t.Errorf("proxy cannot reach the collector for %s %s: %v", r.Method, r.URL.Path, err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("cannot shut down the proxy: %v", err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("proxy stopped with: %v", err)
		}
		tr.CloseIdleConnections()
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "http://" + collectorHost + ":" + port
}

func (rp *recordingProxy) record(r *http.Request, status int, h http.Header) {
	ex := exchange{
		Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"),
		Origin: r.Header.Get("Origin"), Cookie: r.Header.Get("Cookie") != "",
		Status: status, Dropped: h.Get("X-Collector-Dropped"), SetCookie: len(h.Values("Set-Cookie")) > 0,
	}
	rp.mu.Lock()
	rp.log = append(rp.log, ex)
	rp.mu.Unlock()
}

func (rp *recordingProxy) exchanges() []exchange {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return slices.Clone(rp.log)
}

// beacons returns the exchanges on /api/event from index from on.
func (rp *recordingProxy) beacons(from int) []exchange {
	var out []exchange
	for _, ex := range rp.exchanges()[from:] {
		if ex.Path == "/api/event" {
			out = append(out, ex)
		}
	}
	return out
}

// waitBeacons waits until n beacons sent by h's pages have reached the collector after index
// from of the proxy's log, and every beacon h's tab sent (once the page ran the tasks queued so
// far) has. Each must be a CORS simple request (POST, text/plain, no cookie) from the page's
// origin, answered 202 with dropped as the X-Collector-Dropped reason ("" when stored) and no
// cookie.
func (rp *recordingProxy) waitBeacons(h *harness, from, n int, dropped string) {
	h.t.Helper()
	testkit.Eventually(h.t, 10*time.Second, fmt.Sprintf("%d beacons", n), func() bool { return len(rp.beacons(from)) >= n })
	// As in harness.events; the proxy serves every harness of a test, each pages origin its own.
	_ = h.tryEval(`new Promise(r => setTimeout(() => r(true)))`, nil)
	testkit.Eventually(h.t, 10*time.Second, "every beacon the tab sent to reach the collector", func() bool {
		k := 0
		for _, ex := range rp.beacons(0) {
			if ex.Method == http.MethodPost && ex.Origin == h.url("", "") {
				k++
			}
		}
		return int64(k) >= h.sent.Load()
	})
	got := rp.beacons(from)
	if len(got) != n {
		h.t.Fatalf("collector received %d beacons, want %d: %+v", len(got), n, got)
	}
	for _, ex := range got {
		switch {
		case ex.Method != http.MethodPost:
			h.t.Errorf("collector received %s %s (a preflight or stray request)", ex.Method, ex.Path)
		case !strings.HasPrefix(ex.ContentType, "text/plain"):
			h.t.Errorf("beacon Content-Type %q, want text/plain", ex.ContentType)
		case ex.Cookie:
			h.t.Errorf("beacon carried a cookie")
		case ex.Origin != h.url("", ""):
			h.t.Errorf("beacon Origin %q, want the page's origin %q", ex.Origin, h.url("", ""))
		case ex.Status != http.StatusAccepted || ex.Dropped != dropped:
			h.t.Errorf("collector answered %d (dropped %q), want 202 (dropped %q)", ex.Status, ex.Dropped, dropped)
		case ex.SetCookie:
			h.t.Errorf("collector answer set a cookie")
		}
	}
}

// checkNoCookies asserts the browser holds no cookie for the site or the collector.
func checkNoCookies(h *harness) {
	h.t.Helper()
	urls := []string{h.url("", "/"), h.collector + "/"}
	var cookies []*network.Cookie
	h.run(chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		res, err := cdp.Call(ctx, tgt, network.GetCookies, network.GetCookiesParams{URLs: urls})
		cookies = res.Cookies
		return err
	}))
	if len(cookies) != 0 {
		h.t.Errorf("browser holds %d cookies for %v", len(cookies), urls)
	}
}

// storedRow is one row of analytics.events as `collector sql` prints it in JSONEachRow.
type storedRow struct {
	WorkspaceID     string            `json:"workspace_id"`
	Domain          string            `json:"domain"`
	Hostname        string            `json:"hostname"`
	Name            string            `json:"name"`
	Pathname        string            `json:"pathname"`
	Referrer        string            `json:"referrer"`
	ReferrerSource  string            `json:"referrer_source"`
	UTMSource       string            `json:"utm_source"`
	UTMMedium       string            `json:"utm_medium"`
	UTMCampaign     string            `json:"utm_campaign"`
	Interactive     bool              `json:"interactive"`
	RevenueAmount   float64           `json:"revenue_amount"`
	RevenueCurrency string            `json:"revenue_currency"`
	Props           map[string]string `json:"props"`
	// Common to every row of this test; checked apart from the per-event fields above.
	RetentionDays int    `json:"retention_days"`
	Browser       string `json:"browser"`
	OS            string `json:"os"`
	Device        string `json:"device"`
	VisitorID     string `json:"visitor_id"`
	Day           string `json:"day"`
}

// key is the per-event part of the row, for comparing multisets of rows.
func (r storedRow) key() string {
	props := make([]string, 0, len(r.Props))
	for _, k := range slices.Sorted(maps.Keys(r.Props)) {
		props = append(props, k+"="+r.Props[k])
	}
	return fmt.Sprintf("%s %s | ws=%s domain=%s host=%s | ref=%q src=%q | utm=%q/%q/%q | interactive=%t revenue=%g %q | props={%s}",
		r.Name, r.Pathname, r.WorkspaceID, r.Domain, r.Hostname, r.Referrer, r.ReferrerSource,
		r.UTMSource, r.UTMMedium, r.UTMCampaign, r.Interactive, r.RevenueAmount, r.RevenueCurrency,
		strings.Join(props, ","))
}

// TestEndToEnd drives headless Chromium against pages that embed the script served by the real
// collector binary, through a recording reverse proxy, then stops the collector and reads what it
// stored. One collector, one browser; each case has its own paths, pages server and browser
// context.
func TestEndToEnd(t *testing.T) {
	leakcheck.Register(t)
	coll := startCollectorProc(t)
	rp := &recordingProxy{}
	collectorURL := rp.start(t, coll.addr)
	browser := newBrowser(t, chromedp.UserAgent(e2eUA))

	// want collects the rows every case expects to be stored; key() of each.
	var want []string
	expect := func(r storedRow) {
		if r.WorkspaceID == "" {
			r.WorkspaceID, r.Domain, r.Hostname = "ws_acme", siteHost, siteHost
		}
		if r.Props == nil {
			r.Props = map[string]string{}
		}
		want = append(want, r.key())
	}
	// ok counts the cases that ran to the end; the stored rows are only compared when all did.
	ok := 0
	cases := 0
	run := func(name string, f func(t *testing.T)) {
		cases++
		if t.Run(name, f) {
			ok++
		}
	}

	run("page view with referrer and UTM", func(t *testing.T) {
		h := newHarness(t, browser, collectorURL)
		from := len(rp.exchanges())
		landing := "/e2e/landing?utm_source=newsletter&utm_medium=email&utm_campaign=launch&secret=1"
		h.add("/e2e/landing", page{})
		h.add("/e2e/article", page{NoScript: true, Body: template.HTML(`<a id="go" href="` + h.url("", landing) + `">go</a>`)})
		h.run(chromedp.Navigate(h.url(referrerHost, "/e2e/article")))
		h.run(chromedp.Click(chromedp.CSS("#go")))
		h.waitJS(`typeof kyomi == 'function' && document.readyState == 'complete'`)
		rp.waitBeacons(h, from, 1, "")
		h.checkNoTraces()
		checkNoCookies(h)
		// The default referrer policy sends the origin only; the collector keeps host and path.
		expect(storedRow{Name: "pageview", Pathname: "/e2e/landing", Interactive: true,
			Referrer: referrerHost, ReferrerSource: "newsletter", // utm_source wins over the referrer
			UTMSource: "newsletter", UTMMedium: "email", UTMCampaign: "launch"})
	})

	run("SPA navigation stores one page view per new path", func(t *testing.T) {
		h := newHarness(t, browser, collectorURL)
		from := len(rp.exchanges())
		h.add("/e2e/app/", page{})
		h.run(chromedp.Navigate(h.url("", "/e2e/app/")))
		h.waitJS(`typeof kyomi == 'function' && !kyomi.q`)
		h.eval(`history.pushState({}, '', '/e2e/app/a')`, nil)
		h.eval(`history.replaceState({}, '', '/e2e/app/a?tab=2')`, nil) // same path: not counted
		h.eval(`history.pushState({}, '', '/e2e/app/a')`, nil)          // same path again: not counted
		h.eval(`history.pushState({}, '', '/e2e/app/b')`, nil)
		rp.waitBeacons(h, from, 3, "")
		h.checkNoTraces()
		checkNoCookies(h)
		for _, p := range []string{"/e2e/app/", "/e2e/app/a", "/e2e/app/b"} {
			expect(storedRow{Name: "pageview", Pathname: p, Interactive: true})
		}
	})

	run("custom events with props and revenue", func(t *testing.T) {
		h := newHarness(t, browser, collectorURL)
		from := len(rp.exchanges())
		h.add("/e2e/shop", page{Stub: true, Queued: `kyomi('Signup', {props: {plan: 'pro'}});`})
		h.run(chromedp.Navigate(h.url("", "/e2e/shop")))
		h.waitJS(`typeof kyomi == 'function' && !kyomi.q`)
		var status struct{ Status int }
		h.eval(`new Promise(r => kyomi('Purchase', {props: {sku: 'A-1', color: 'blue'},
			revenue: {amount: 9.99, currency: 'EUR'}, interactive: false, callback: r}))`, &status)
		// The callback reads the status only because the collector allows the page's origin.
		if status.Status != http.StatusAccepted {
			t.Errorf("callback got status %d, want 202 from the collector", status.Status)
		}
		rp.waitBeacons(h, from, 3, "")
		h.checkNoTraces()
		checkNoCookies(h)
		expect(storedRow{Name: "pageview", Pathname: "/e2e/shop", Interactive: true})
		expect(storedRow{Name: "Signup", Pathname: "/e2e/shop", Interactive: true, Props: map[string]string{"plan": "pro"}})
		expect(storedRow{Name: "Purchase", Pathname: "/e2e/shop", Interactive: false,
			Props: map[string]string{"sku": "A-1", "color": "blue"}, RevenueAmount: 9.99, RevenueCurrency: "EUR"})
	})

	run("outbound link click", func(t *testing.T) {
		h := newHarness(t, browser, collectorURL)
		from := len(rp.exchanges())
		out := h.url(otherHost, "/e2e/partner?ref=acme")
		h.add("/e2e/links", page{Variant: "script.outbound-links",
			Body: template.HTML(`<a id="local" href="/e2e/links#top">same site</a> <a id="out" href="` + out + `">partner</a>`)})
		h.add("/e2e/partner", page{NoScript: true})
		h.run(chromedp.Navigate(h.url("", "/e2e/links")))
		h.waitJS(`typeof kyomi == 'function'`)
		h.run(chromedp.Click(chromedp.CSS("#local"))) // same host: not an outbound click
		h.checkNoTraces()
		checkNoCookies(h)
		// The click navigates away at once; keepalive carries the beacon anyway.
		h.run(chromedp.Click(chromedp.CSS("#out")))
		h.waitJS(`location.host == '` + otherHost + `:` + h.port + `'`)
		rp.waitBeacons(h, from, 2, "")
		expect(storedRow{Name: "pageview", Pathname: "/e2e/links", Interactive: true})
		expect(storedRow{Name: "Outbound Link: Click", Pathname: "/e2e/links", Interactive: true,
			Props: map[string]string{"url": h.url(otherHost, "/e2e/partner")}}) // no query string
	})

	run("tagged events, revenue and script props through an assembled variant", func(t *testing.T) {
		h := newHarness(t, browser, collectorURL)
		from := len(rp.exchanges())
		// The collector routes every ordering of the extensions to the script handler.
		h.add("/e2e/tags", page{Variant: "script.tagged-events.pageview-props.revenue", Attrs: `event-author="Jane"`,
			Body: template.HTML(`<button id="signup" class="plausible-event-name=Signup plausible-event-plan=pro+plan">sign up</button>
<button id="buy" class="plausible-event-name=Purchase plausible-event-revenue-amount=9.99 plausible-event-revenue-currency=EUR">buy</button>`)})
		h.run(chromedp.Navigate(h.url("", "/e2e/tags")))
		h.waitJS(`typeof kyomi == 'function'`)
		h.run(chromedp.Click(chromedp.CSS("#signup")))
		h.run(chromedp.Click(chromedp.CSS("#buy")))
		rp.waitBeacons(h, from, 3, "")
		h.checkNoTraces()
		checkNoCookies(h)
		expect(storedRow{Name: "pageview", Pathname: "/e2e/tags", Interactive: true, Props: map[string]string{"author": "Jane"}})
		expect(storedRow{Name: "Signup", Pathname: "/e2e/tags", Interactive: true, Props: map[string]string{"author": "Jane", "plan": "pro plan"}})
		expect(storedRow{Name: "Purchase", Pathname: "/e2e/tags", Interactive: true, Props: map[string]string{"author": "Jane"},
			RevenueAmount: 9.99, RevenueCurrency: "EUR"})
	})

	run("strict CSP allowing only the collector", func(t *testing.T) {
		h := newHarness(t, browser, collectorURL)
		from := len(rp.exchanges())
		h.add("/e2e/secure", page{CSP: true})
		h.add("/e2e/open", page{})
		// The probe: a no-cors fetch to a third origin succeeds on an ordinary page and is
		// refused under the policy, so the policy really is in force where the beacons still go.
		probe := `fetch('` + h.url(otherHost, "/e2e/open") + `', {mode: 'no-cors'}).then(() => 'sent', () => 'blocked')`
		var res string
		h.run(chromedp.Navigate(h.url("", "/e2e/open")))
		h.eval(probe, &res)
		if res != "sent" {
			t.Fatalf("probe without CSP: %s, want sent", res)
		}
		h.run(chromedp.Navigate(h.url("", "/e2e/secure")))
		h.waitJS(`typeof kyomi == 'function'`)
		h.eval(probe, &res)
		if res != "blocked" {
			t.Fatalf("probe under CSP: %s, want blocked (the policy is not in force)", res)
		}
		var status struct{ Status int }
		h.eval(`new Promise(r => kyomi('Under CSP', {callback: r}))`, &status)
		if status.Status != http.StatusAccepted {
			t.Errorf("callback under CSP got status %d, want 202", status.Status)
		}
		rp.waitBeacons(h, from, 3, "") // /e2e/open, /e2e/secure, Under CSP
		h.checkNoTraces()
		checkNoCookies(h)
		expect(storedRow{Name: "pageview", Pathname: "/e2e/open", Interactive: true})
		expect(storedRow{Name: "pageview", Pathname: "/e2e/secure", Interactive: true})
		expect(storedRow{Name: "Under CSP", Pathname: "/e2e/secure", Interactive: true})
	})

	run("headless user agent is dropped, not stored", func(t *testing.T) {
		h := newHarness(t, browser, collectorURL)
		from := len(rp.exchanges())
		h.run(chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
			_, err := cdp.Call(ctx, tgt, emulation.SetUserAgentOverride, emulation.SetUserAgentOverrideParams{
				UserAgent: strings.Replace(e2eUA, "Chrome/", "HeadlessChrome/", 1)})
			return err
		}))
		h.add("/e2e/headless", page{})
		h.run(chromedp.Navigate(h.url("", "/e2e/headless")))
		rp.waitBeacons(h, from, 1, "headless")
	})

	// Nothing but the script's GETs and POST beacons reached the collector, and the collector
	// counted exactly the beacons the proxy passed: no preflight, nothing around the proxy.
	all := rp.exchanges()
	beacons := 0
	for _, ex := range all {
		switch {
		case ex.Path == "/api/event" && ex.Method == http.MethodPost:
			beacons++
		case strings.HasPrefix(ex.Path, PathPrefix) && ex.Method == http.MethodGet:
			if ex.SetCookie {
				t.Errorf("script answer for %s set a cookie", ex.Path)
			}
		default:
			t.Errorf("collector received %s %s; want only GET %s* and POST /api/event", ex.Method, ex.Path, PathPrefix)
		}
	}
	counted := coll.eventRequests()
	if len(counted) != 1 || counted["202"] != beacons {
		t.Errorf("collector counted event requests by code %v, want only 202: %d (the beacons the proxy passed)", counted, beacons)
	}

	coll.stop()
	if ok != cases {
		t.Fatalf("%d of %d browser cases failed; stored rows not compared", cases-ok, cases)
	}
	out := coll.query(`SELECT workspace_id, domain, hostname, name, pathname, referrer, referrer_source,
		utm_source, utm_medium, utm_campaign, interactive, toFloat64(revenue_amount) AS revenue_amount,
		revenue_currency, props, retention_days, browser, os, device, toString(visitor_id) AS visitor_id,
		toString(toDate(ts)) AS day
		FROM analytics.events ORDER BY ts FORMAT JSONEachRow`)
	var got []string
	visitors, days := map[string]bool{}, map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var r storedRow
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("cannot decode stored rows %s: %v", out, err)
		}
		got = append(got, r.key())
		if r.RetentionDays != 395 || r.Browser != "Chrome" || r.OS != "GNU/Linux" || r.Device != "Desktop" || r.VisitorID == "0" {
			t.Errorf("row %s: retention %d, browser %q, os %q, device %q, visitor %s; want 395, Chrome, GNU/Linux, Desktop, non-zero",
				r.key(), r.RetentionDays, r.Browser, r.OS, r.Device, r.VisitorID)
		}
		visitors[r.VisitorID], days[r.Day] = true, true
	}
	// One browser, one address, one user agent: one visitor per UTC day (the salt rotates daily).
	if len(visitors) != len(days) {
		t.Errorf("%d distinct visitor ids over %d days, want one per day", len(visitors), len(days))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("stored rows:\n%s\nwant exactly:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
