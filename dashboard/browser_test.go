package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/collector/query"
	"github.com/kyomi/collector/internal/serving"
	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/engine/enginetest"
)

// rig is the dashboard and a real query path over a ClickHouse server holding a fixed dataset,
// behind one HTTP server, as the collector mounts them.
type rig struct {
	addr       string
	tokenA     string // ws_a
	tokenB     string // ws_b
	mu         sync.Mutex
	uris       []string // every request URI the server saw
	authorized int      // /api/query requests that carried a bearer token
}

// dataset writes a fixed set of events relative to today (UTC): every day of the last week has
// a known number of visitors and page views, and two visitors are live (last 30 minutes).
// Workspace ws_b has its own rows, which ws_a's token must never show.
func dataset(now time.Time) string {
	type ev struct {
		ws, ts, path, source, campaign, country, device, browser, os string
		visitor                                                      int
		engaged                                                      int // ms; > 0: an engagement event, not a page view
		scroll                                                       int
	}
	pages := []string{"/", "/pricing", "/blog/launch", "/docs", "/about"}
	sources := []string{"Google", "", "Twitter", "Google", "Hacker News", "Bing"}
	campaigns := []string{"", "", "launch", "", "winter-sale"}
	countries := []string{"DE", "US", "FR", "GB", "DE", "JP", "US"}
	devices := []string{"Desktop", "Mobile", "Desktop", "Tablet"}
	browsers := []string{"Chrome", "Firefox", "Safari", "Chrome", "Edge"}
	oses := []string{"Windows", "Mac", "iOS", "Linux", "Android", "Windows"}
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	var evs []ev
	visitor := 0
	for day := 6; day >= 1; day-- {
		n := 3 + (day*5)%7 // 3..9 visitors a day
		for i := 0; i < n; i++ {
			visitor++
			start := today.AddDate(0, 0, -day).Add(time.Duration(8+i) * time.Hour)
			views := 1 + (visitor % 3)
			for v := 0; v < views; v++ {
				at := start.Add(time.Duration(v) * 2 * time.Minute)
				e := ev{"ws_a", at.Format("2006-01-02 15:04:05.000"),
					pages[(visitor+v)%len(pages)], sources[visitor%len(sources)], campaigns[visitor%len(campaigns)],
					countries[visitor%len(countries)], devices[visitor%len(devices)], browsers[visitor%len(browsers)], oses[visitor%len(oses)], 1000 + visitor, 0, 0}
				evs = append(evs, e)
				// Leaving the page: Plausible's engagement event, with scroll depth and engaged time.
				e.ts, e.engaged, e.scroll = at.Add(90*time.Second).Format("2006-01-02 15:04:05.000"), 4000+(visitor*7919)%60000, 10+(visitor*37)%91
				evs = append(evs, e)
			}
		}
	}
	// Live: two visitors in the last 30 minutes, on two pages (today, or late yesterday just
	// after midnight: both are in the 7-day range).
	for i, ago := range []time.Duration{5 * time.Minute, 12 * time.Minute} {
		evs = append(evs, ev{"ws_a", now.Add(-ago).Format("2006-01-02 15:04:05.000"), pages[i+1], "Google", "launch", "DE", "Desktop", "Chrome", "Mac", 5000 + i, 0, 0})
	}
	evs = append(evs,
		ev{"ws_b", today.AddDate(0, 0, -1).Add(9 * time.Hour).Format("2006-01-02 15:04:05.000"), "/b-only", "DuckDuckGo", "", "NL", "Desktop", "Firefox", "Linux", 9001, 0, 0},
		ev{"ws_b", today.AddDate(0, 0, -2).Add(9 * time.Hour).Format("2006-01-02 15:04:05.000"), "/b-only", "DuckDuckGo", "", "NL", "Desktop", "Firefox", "Linux", 9002, 0, 0})
	var b strings.Builder
	for _, e := range evs {
		name := "pageview"
		if e.engaged > 0 {
			name = "engagement"
		}
		row, _ := json.Marshal(map[string]any{
			"workspace_id": e.ws, "retention_days": 3650, "domain": e.ws + ".example", "ts": e.ts, "name": name,
			"pathname": e.path, "visitor_id": e.visitor, "referrer_source": e.source, "utm_campaign": e.campaign,
			"country_code": e.country, "device": e.device, "browser": e.browser, "os": e.os, "interactive": e.engaged == 0,
			"scroll_depth": e.scroll, "engagement_time": e.engaged,
		})
		b.Write(row)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestMain lets the test binary serve as the launcher of the engine newRig starts.
func TestMain(m *testing.M) {
	enginetest.RunLauncher()
	os.Exit(m.Run())
}

// newRig starts a ClickHouse server (enginetest: from the engine library, or the one
// CLICKHOUSE_ADDR names, whose analytics.events it empties first) with the dataset, the query
// path over it and the dashboard.
func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	ch, err := enginetest.Start(enginetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Close)
	store, err := sink.OpenServer(ch.DSN("default"))
	if err != nil {
		t.Fatalf("cannot open the ClickHouse server: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	ctx := context.Background()
	if err := sink.Migrate(ctx, store, sink.SchemaConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := store.Exec(ctx, "TRUNCATE TABLE analytics.events"); err != nil {
		t.Fatal(err)
	}
	if err := store.Exec(ctx, "INSERT INTO analytics.events FORMAT JSONEachRow\n"+dataset(time.Now().UTC())); err != nil {
		t.Fatal(err)
	}
	key, _, err := query.OpenLocalKey(filepath.Join(dir, "query"))
	if err != nil {
		t.Fatal(err)
	}
	qh, err := query.NewHandler(query.Config{}, query.Deps{Store: store, Verifier: &query.Verifier{Keys: key},
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(qh.Close)
	r := &rig{}
	if r.tokenA, _, err = key.Issue(query.TokenRequest{WID: "ws_a"}); err != nil {
		t.Fatal(err)
	}
	if r.tokenB, _, err = key.Issue(query.TokenRequest{WID: "ws_b"}); err != nil {
		t.Fatal(err)
	}
	routes := map[string]fasthttp.RequestHandler{}
	Register(routes)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		r.mu.Lock()
		r.uris = append(r.uris, string(ctx.RequestURI()))
		if bytes.HasPrefix(ctx.Request.Header.Peek("Authorization"), []byte("Bearer ")) {
			r.authorized++
		}
		r.mu.Unlock()
		p := string(ctx.Path())
		switch {
		case p == "/api/query":
			qh.HTTP(ctx)
		case p == "/":
			routes["/"](ctx)
		case strings.HasPrefix(p, PathPrefix):
			routes[PathPrefix](ctx)
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
		}
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := serving.Start(srv, ln)
	t.Cleanup(func() { _ = stop() })
	r.addr = ln.Addr().String()
	return r
}

// report asks the report op over HTTP, as any client would, and returns the rows as strings.
func (r *rig) report(t *testing.T, token string, params map[string]any) ([]string, [][]string, error) {
	t.Helper()
	return r.call(t, token, "report", params)
}

func (r *rig) call(t *testing.T, token, op string, params map[string]any) ([]string, [][]string, error) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"id": "t", "op": op, "params": params})
	req, _ := http.NewRequest("POST", "http://"+r.addr+"/api/query", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m struct {
		Type   string
		Result struct {
			Columns []struct{ Name string }
			Rows    [][]any
		}
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("undecodable answer %s", raw)
	}
	if m.Type != "result" {
		return nil, nil, fmt.Errorf("%s: %s", m.Error.Code, m.Error.Message)
	}
	var cols []string
	for _, c := range m.Result.Columns {
		cols = append(cols, c.Name)
	}
	var rows [][]string
	for _, row := range m.Result.Rows {
		var out []string
		for _, v := range row {
			out = append(out, fmt.Sprint(v))
		}
		rows = append(rows, out)
	}
	return cols, rows, nil
}

// rendered is what the page shows, read from the DOM.
type rendered struct {
	Stats   map[string]string     `json:"stats"`
	Tables  map[string][][]string `json:"tables"` // dim -> rows of [name, metric texts...]
	Series  [][]string            `json:"series"` // [time, visitors, pageviews]
	Live    map[string]string     `json:"live"`
	Filters []string              `json:"filters"`
	Hash    string                `json:"hash"`
	Stored  bool                  `json:"stored"`
	Error   string                `json:"error"`
	Switch  []string              `json:"switch"` // workspace switcher options when it shows
	Loaded  string                `json:"loaded"`
}

const readDOM = `(() => {
  const out = {stats: {}, tables: {}, series: [], live: {}, filters: [], hash: location.hash,
    stored: !!sessionStorage.getItem('kyomi_dashboard_tokens'), error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
    switch: document.getElementById('workspace').hidden ? [] : [...document.getElementById('workspace').options].map(o => o.value),
    loaded: document.body.dataset.loaded || ''};
  document.querySelectorAll('#stats .stat').forEach(s => out.stats[s.dataset.metric] = s.querySelector('.value').textContent);
  document.querySelectorAll('#live .stat').forEach(s => out.live[s.dataset.metric] = s.querySelector('.value').textContent);
  document.querySelectorAll('#tables section').forEach(sec => {
    out.tables[sec.dataset.dim] = [...sec.querySelectorAll('tbody tr')].map(tr => [...tr.children].map(td => td.textContent));
  });
  document.querySelectorAll('#series tbody tr').forEach(tr => out.series.push([...tr.children].map(td => td.textContent)));
  document.querySelectorAll('#filters .chip').forEach(c => out.filters.push(c.dataset.dim));
  return out;
})()`

func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1400),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("cannot start chromium: %v", err)
	}
	return ctx
}

// waitLoaded waits until the page has rendered generation gen (or later) and the live view.
func waitLoaded(t *testing.T, ctx context.Context, after string) rendered {
	t.Helper()
	var got rendered
	testkit.Eventually(t, 60*time.Second, fmt.Sprintf("a rendering other than %q, with the live view", after), func() bool {
		var err error
		if got, err = chromedp.Run(ctx, chromedp.Evaluate[rendered](readDOM)); err != nil {
			t.Fatal(err)
		}
		if got.Error != "" {
			t.Fatalf("the page shows an error: %s", got.Error)
		}
		return got.Loaded != "" && got.Loaded != after && len(got.Live) > 0
	})
	return got
}

// plain undoes the page's number formatting: "1,234" -> "1234", "45%" -> "45", "2m 5s" -> "125".
func plain(s string) string {
	s = strings.TrimSuffix(strings.ReplaceAll(s, ",", ""), "%")
	if m, rest, ok := strings.Cut(s, "m "); ok {
		mi, _ := strconv.Atoi(m)
		si, _ := strconv.Atoi(strings.TrimSuffix(rest, "s"))
		return strconv.Itoa(mi*60 + si)
	}
	if v, ok := strings.CutSuffix(s, "s"); ok {
		if _, err := strconv.Atoi(v); err == nil {
			return v
		}
	}
	return s
}

// checkAgainstReport compares what the page shows with the report op's answers for the same
// range and filters.
func checkAgainstReport(t *testing.T, r *rig, token string, got rendered, filters []any) {
	t.Helper()
	engagement := false
	if _, _, err := r.report(t, token, map[string]any{"metrics": []string{"time_on_page", "scroll_depth"}, "date_range": "7d"}); err == nil {
		engagement = true
	}
	top := []string{"visitors", "visits", "pageviews", "bounce_rate", "visit_duration"}
	if engagement {
		top = append(top, "time_on_page", "scroll_depth")
	}
	cols, rows, err := r.report(t, token, map[string]any{"metrics": top, "date_range": "7d", "filters": filters})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Stats) != len(cols) {
		t.Errorf("the page shows %d top figures %v, the report has %v", len(got.Stats), got.Stats, cols)
	}
	for i, c := range cols {
		if plain(got.Stats[c]) != rows[0][i] {
			t.Errorf("top figure %s: page %q, report %s", c, got.Stats[c], rows[0][i])
		}
	}
	for _, dim := range []string{"event:page", "visit:source", "visit:utm_campaign", "visit:country", "visit:device", "visit:browser", "visit:os"} {
		metrics := []string{"visitors"}
		if dim == "event:page" {
			metrics = append(metrics, "pageviews")
			if engagement {
				metrics = append(metrics, "time_on_page", "scroll_depth")
			}
		}
		_, rows, err := r.report(t, token, map[string]any{"metrics": metrics, "dimensions": []string{dim}, "date_range": "7d",
			"filters": filters, "order_by": [][]string{{"visitors", "desc"}}, "limit": 10})
		if err != nil {
			t.Fatal(err)
		}
		page := got.Tables[dim]
		if len(page) != len(rows) {
			t.Errorf("%s: the page shows %d rows %v, the report has %d %v", dim, len(page), page, len(rows), rows)
			continue
		}
		for i := range rows {
			want := append([]string{}, rows[i]...)
			if want[0] == "" {
				want[0] = "(none)"
			}
			gotRow := make([]string, len(page[i]))
			for j, v := range page[i] {
				gotRow[j] = v
				if j > 0 {
					gotRow[j] = plain(v)
				}
			}
			if strings.Join(gotRow, "|") != strings.Join(want, "|") {
				t.Errorf("%s row %d: page %q, report %q", dim, i, gotRow, want)
			}
		}
	}
	_, series, err := r.report(t, token, map[string]any{"metrics": []string{"visitors", "pageviews"}, "dimensions": []string{"time:day"},
		"date_range": "7d", "filters": filters})
	if err != nil {
		t.Fatal(err)
	}
	byDay := map[string][]string{}
	for _, s := range series {
		byDay[s[0][:10]] = s
	}
	if len(got.Series) != 7 {
		t.Errorf("the chart has %d days, want 7: %v", len(got.Series), got.Series)
	}
	for _, p := range got.Series {
		want := []string{p[0], "0", "0"}
		if s, ok := byDay[p[0]]; ok {
			want = []string{p[0], s[1], s[2]}
		}
		if strings.Join(p, "|") != strings.Join(want, "|") {
			t.Errorf("chart point %v, report %v", p, want)
		}
		delete(byDay, p[0])
	}
	if len(byDay) > 0 {
		t.Errorf("report days missing from the chart: %v", byDay)
	}
}

// saveShot saves a full-page screenshot of the tab in the test's artifacts (kept with
// go test -artifacts -outputdir DIR), and in DASHBOARD_SCREENSHOT_DIR when set, and logs where.
func saveShot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("DASHBOARD_SCREENSHOT_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// TestDashboardInChromium opens the dashboard in headless Chromium against the query path over
// a fixed dataset and checks that every figure, table row and chart point it renders is what
// the report op answers; then filters by clicking a row, switches workspaces, and checks the
// page without a token.
func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium and a ClickHouse server")
	}
	r := newRig(t)
	ctx := newBrowser(t)
	// Script errors and Content-Security-Policy violations, recorded by listeners installed in
	// every document before any of its scripts run.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
window.__problems = [];
document.addEventListener('securitypolicyviolation', e => window.__problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI));
window.addEventListener('error', e => window.__problems.push('error ' + e.message));
window.addEventListener('unhandledrejection', e => window.__problems.push('rejection ' + e.reason));`}); err != nil {
		t.Fatal(err)
	}

	base := "http://" + r.addr + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"#token="+r.tokenA)); err != nil {
		t.Fatal(err)
	}
	got := waitLoaded(t, ctx, "")
	if got.Hash != "" || !got.Stored {
		t.Errorf("after load: hash %q (want the token gone from the address), stored in sessionStorage %v", got.Hash, got.Stored)
	}
	if len(got.Switch) != 0 {
		t.Errorf("one token, yet a workspace switcher: %v", got.Switch)
	}
	checkAgainstReport(t, r, r.tokenA, got, []any{})
	for _, rows := range got.Tables {
		for _, row := range rows {
			if strings.Contains(row[0], "b-only") || strings.Contains(row[0], "DuckDuckGo") {
				t.Fatalf("ws_b's rows show with ws_a's token: %v", row)
			}
		}
	}
	// Live view: the two visitors of the last 30 minutes, as execute_query counts them.
	_, live, err := r.call(t, r.tokenA, "execute_query", map[string]any{"sql": "SELECT uniqExact(visitor_id), countIf(name = 'pageview') FROM events WHERE ts >= now64(3) - INTERVAL 30 MINUTE"})
	if err != nil {
		t.Fatal(err)
	}
	if live[0][0] != "2" || got.Live["live_visitors"] != "2" || got.Live["live_pageviews"] != live[0][1] {
		t.Errorf("live view %v, execute_query %v (want 2 visitors)", got.Live, live)
	}

	saveShot(t, ctx, "dashboard.png")

	// Filter by clicking the first row of the sources table.
	source := got.Tables["visit:source"][0][0]
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`section[data-dim="visit:source"] tbody tr:first-child`))); err != nil {
		t.Fatal(err)
	}
	filtered := waitLoaded(t, ctx, got.Loaded)
	if len(filtered.Filters) != 1 || filtered.Filters[0] != "visit:source" {
		t.Fatalf("after a click on %q: filters %v", source, filtered.Filters)
	}
	if filtered.Stats["visitors"] == got.Stats["visitors"] {
		t.Errorf("filtering by %s left the visitors at %s", source, got.Stats["visitors"])
	}
	checkAgainstReport(t, r, r.tokenA, filtered, []any{[]any{"is", "visit:source", []string{source}}})
	saveShot(t, ctx, "filtered.png")

	// A second token in the same tab: the switcher shows both workspaces and switches.
	// A second link pasted into the same tab: only the fragment changes, the page does not reload.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash = '#token=`+r.tokenB+`'`)); err != nil {
		t.Fatal(err)
	}
	gotB := waitLoaded(t, ctx, filtered.Loaded)
	if strings.Join(gotB.Switch, ",") != "ws_a,ws_b" {
		t.Fatalf("two tokens, switcher %v", gotB.Switch)
	}
	checkAgainstReport(t, r, r.tokenB, gotB, []any{})
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const s = document.getElementById('workspace'); s.value = 'ws_a'; return s.dispatchEvent(new Event('change')); })()`)); err != nil {
		t.Fatal(err)
	}
	back := waitLoaded(t, ctx, gotB.Loaded)
	checkAgainstReport(t, r, r.tokenA, back, []any{})

	// A fresh tab has no token: two sentences on how to get one, and the script tag.
	tab, cancel := chromedp.NewContext(ctx)
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	landing, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("landing")))
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("snippet")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(landing, "collector token issue -wid WORKSPACE") || !strings.Contains(landing, "#token=") {
		t.Errorf("landing text: %q", landing)
	}
	if want := `<script defer data-domain="example.com" src="` + strings.TrimSuffix(base, "/") + `/js/script.js"></script>`; snippet != want {
		t.Errorf("snippet %q, want %q", snippet, want)
	}
	saveShot(t, tab, "landing.png")

	// The token travelled only in the Authorization header: no request URI carried it.
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.uris {
		if strings.Contains(u, "token") || strings.Contains(u, strings.Split(r.tokenA, ".")[2]) {
			t.Errorf("a request URI carries the token: %s", u)
		}
	}
	if r.authorized == 0 {
		t.Error("no query carried a bearer token")
	}
	for _, c := range []context.Context{ctx, tab} {
		problems, err := chromedp.Run(c, chromedp.Evaluate[[]string](`window.__problems`))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("the page reported: %s", p)
		}
	}
}

// TestPageSize keeps the dashboard small: the page, its script and style and the chart library
// together, as served with brotli. It prints the table the README quotes.
func TestPageSize(t *testing.T) {
	var id, gz, br int
	sizes := Sizes()
	sort.Slice(sizes, func(i, j int) bool { return sizes[i].Path < sizes[j].Path })
	for _, s := range sizes {
		t.Logf("| `%s` | %d | %d | %d |", s.Path, s.Identity, s.Gzip, s.Brot)
		id, gz, br = id+s.Identity, gz+s.Gzip, br+s.Brot
	}
	t.Logf("| total | %d | %d | %d |", id, gz, br)
	if len(sizes) != 5 {
		t.Errorf("%d assets, want the page, its script and style, uPlot and its style", len(sizes))
	}
	const budget = 40 << 10
	if br > budget {
		t.Fatalf("the dashboard is %d bytes with brotli, over its %d-byte budget", br, budget)
	}
}

// TestVendoredUPlot checks that the vendored chart library is the version the Makefile pins
// (`make dashboard-vendor` fetches it) and that its MIT licence ships beside it.
func TestVendoredUPlot(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	var pin string
	for _, line := range strings.Split(string(mk), "\n") {
		if v, ok := strings.CutPrefix(line, "UPLOT_VERSION := "); ok {
			pin = strings.TrimSpace(v)
		}
	}
	if pin == "" {
		t.Fatal("the Makefile pins no UPLOT_VERSION")
	}
	js, err := static.ReadFile("static/vendor/uPlot.iife.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if banner := "/*! https://github.com/leeoniya/uPlot (v" + pin + ") */"; !bytes.HasPrefix(js, []byte(banner)) {
		t.Fatalf("vendored uPlot does not start %q: run make dashboard-vendor", banner)
	}
	lic, err := static.ReadFile("static/vendor/LICENSE.uPlot")
	if err != nil || !bytes.Contains(lic, []byte("The MIT License")) {
		t.Fatalf("uPlot's MIT licence is not beside it: %v", err)
	}
}
