package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kyomi/collector/internal/testkit"
)

// TestDashboardE2E is the quick tour in a browser: page views sent to the built binary, a token
// from `collector token issue`, and the dashboard at /#token=... in headless Chromium showing
// the pages and sources that were sent. Without a token, / says how to get one.
func TestDashboardE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium and the collector binary")
	}
	dataDir, args := e2eEnv(t)
	p := startCollector(t, nil, args...)
	base := "http://" + p.addr + "/"

	resp, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "collector token issue -wid WORKSPACE") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /: %d %q, CSP %q", resp.StatusCode, body, resp.Header.Get("Content-Security-Policy"))
	}
	if resp, err := http.Get(base + "nothing-here"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("GET /nothing-here: %v %v, want 404 (the dashboard answers / only)", err, resp)
	}

	sent := []struct{ path, ref, ip string }{
		{"/pricing", "https://www.google.com/", "203.0.113.1"},
		{"/pricing", "https://twitter.com/", "203.0.113.2"},
		{"/docs/start", "https://www.google.com/", "203.0.113.3"},
	}
	for _, s := range sent {
		b := fmt.Sprintf(`{"n":"pageview","u":"https://acme.example%s","d":"acme.example","r":%q}`, s.path, s.ref)
		if code, _, _ := p.send(t, beacon{body: b, ip: s.ip, ua: chromeUA}); code != 202 {
			t.Fatalf("event: %d", code)
		}
	}
	token, _, code := tokenCLI(t, "issue", "-wid", "ws_acme", "-data-dir", dataDir)
	token = strings.TrimSpace(token)
	if code != 0 {
		t.Fatal("token issue failed")
	}
	testkit.Eventually(t, 30*time.Second, "the 3 page views visible", func() bool {
		_, a := postQuery(t, p.addr, token, `{"id":"c","op":"execute_query","params":{"sql":"SELECT count() FROM events"}}`)
		return len(a.Result.Rows) == 1 && fmt.Sprint(a.Result.Rows[0][0]) == "3"
	})

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath("/usr/bin/chromium"), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-background-networking", true),
		chromedp.UserDataDir(t.TempDir()))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("cannot start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
window.__problems = [];
document.addEventListener('securitypolicyviolation', e => window.__problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI));
window.addEventListener('error', e => window.__problems.push('error ' + e.message));`}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"#token="+token)); err != nil {
		t.Fatal(err)
	}
	type shown struct {
		Loaded   string              `json:"loaded"`
		Error    string              `json:"error"`
		Tables   map[string][]string `json:"tables"`
		Problems []string            `json:"problems"`
	}
	const read = `(() => {
  const out = {loaded: document.body.dataset.loaded || '', error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
    tables: {}, problems: window.__problems};
  document.querySelectorAll('#tables section').forEach(s => out.tables[s.dataset.dim] = [...s.querySelectorAll('tbody tr')].map(tr => tr.dataset.value));
  return out;
})()`
	var got shown
	testkit.Eventually(t, 60*time.Second, "the dashboard to render", func() bool {
		var err error
		if got, err = chromedp.Run(ctx, chromedp.Evaluate[shown](read)); err != nil {
			t.Fatal(err)
		}
		return got.Loaded != "" || got.Error != ""
	})
	if got.Error != "" || len(got.Problems) > 0 {
		t.Fatalf("the dashboard shows %q, reports %v", got.Error, got.Problems)
	}
	if pages := got.Tables["event:page"]; !slices.Equal(pages, []string{"/pricing", "/docs/start"}) {
		t.Errorf("top pages %v, want /pricing then /docs/start", pages)
	}
	if sources := got.Tables["visit:source"]; !slices.Equal(sources, []string{"Google", "Twitter"}) {
		t.Errorf("sources %v, want Google then Twitter", sources)
	}
	if logs := p.logs.String(); strings.Contains(logs, strings.Split(token, ".")[2]) {
		t.Error("the token shows in the collector's logs")
	}
}
