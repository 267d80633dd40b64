package workspace

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/syncbuf"
	"github.com/kyomi/collector/internal/testkit"
)

const goodYAML = `
tiers:
  free: { retention_days: 30 }
  pro:  { retention_days: 395 }
workspaces:
  - id: ws_acme
    tier: pro
    domains: [Acme.Example, www.acme.example]
  - id: ws_globex
    tier: free
    domains: [globex.example:8443, "shop.globex.example."]
  - id: ws_initech
    tier: free
    domains: [www.initech.example]
  - id: ws_split_a
    tier: free
    domains: [split.example]
  - id: ws_split_b
    tier: pro
    domains: [www.split.example]
  - id: ws_idn
    tier: free
    domains: [xn--bcher-kva.example, localhost]
`

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // every fragment must appear in the one error
	}{
		{"empty file", ``, []string{"empty"}},
		{"not yaml", `tiers: [`, []string{"cannot parse YAML"}},
		{"unknown key", "tiers:\n  free: {retention_days: 1, retention: 2}\nworkspaces: []\n", []string{"retention"}},
		{"no tiers no workspaces", "tiers: {}\nworkspaces: []\n", []string{"no tiers defined", "no workspaces defined"}},
		{"all problems at once", `
tiers:
  free: { retention_days: 0 }
  pro: { retention_days: 3651 }
  "bad tier": { retention_days: 10 }
  none: {}
workspaces:
  - id: ws_a
    tier: gold
    domains: [a.example]
  - id: "bad id!"
    tier: none
    domains: []
  - tier: free
    domains: [b.example]
  - id: ws_a
    tier: pro
    domains: ["https://c.example/", "a.example", "d.example", "D.example", "*.e.example", "f..example", "g.example:99999"]
`, []string{
			`tier "free": retention_days 0 is outside 1..3650`,
			`tier "pro": retention_days 3651 is outside 1..3650`,
			`tier "bad tier": name must be`,
			`tier "none": retention_days is missing`,
			`unknown tier "gold"`,
			`workspace 2 ("bad id!"): id must be`,
			`workspace 2 ("bad id!"): domains is empty`,
			`workspace 3: id is missing`,
			`id already used by workspace 1`,
			`domain "https://c.example/": must be a bare host name`,
			`domain "a.example" already belongs to workspace "ws_a"`,
			`domain "d.example" is listed twice`,
			`domain "*.e.example"`,
			`domain "f..example"`,
			`domain "g.example:99999"`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse accepted the file: %+v", s.Workspaces())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLookup(t *testing.T) {
	s, err := Parse([]byte(goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, domain, wantWS, wantDomain string
	}{
		{"exact", "acme.example", "ws_acme", "acme.example"},
		{"upper case", "ACME.Example", "ws_acme", "acme.example"},
		{"explicit www", "www.acme.example", "ws_acme", "www.acme.example"},
		{"port ignored", "acme.example:8080", "ws_acme", "acme.example"},
		{"trailing dot", "acme.example.", "ws_acme", "acme.example"},
		{"configured with port", "globex.example", "ws_globex", "globex.example"},
		{"www alias of bare", "www.globex.example", "ws_globex", "globex.example"},
		{"configured trailing dot", "shop.globex.example", "ws_globex", "shop.globex.example"},
		{"bare alias of www", "initech.example", "ws_initech", "www.initech.example"},
		{"explicit beats alias bare", "split.example", "ws_split_a", "split.example"},
		{"explicit beats alias www", "www.split.example", "ws_split_b", "www.split.example"},
		{"punycode as given", "xn--bcher-kva.example", "ws_idn", "xn--bcher-kva.example"},
		{"single label", "localhost:3000", "ws_idn", "localhost"},
		{"no www alias for single label", "www.localhost", "", ""},
		{"unknown", "evil.example", "", ""},
		{"subdomain is not the domain", "blog.acme.example", "", ""},
		{"suffix attack", "evilacme.example", "", ""},
		{"empty", "", "", ""},
		{"garbage", "acme.example/path", "", ""},
		{"double www", "www.www.acme.example", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, ok := s.Lookup(tc.domain)
			if ok != (tc.wantWS != "") || ws.ID != tc.wantWS {
				t.Fatalf("Lookup(%q) = %q, %v; want %q", tc.domain, ws.ID, ok, tc.wantWS)
			}
			_, d, _ := s.Match(tc.domain)
			if d != tc.wantDomain {
				t.Fatalf("Match(%q) domain %q, want %q", tc.domain, d, tc.wantDomain)
			}
		})
	}
	ws, _ := s.Lookup("acme.example")
	if ws.RetentionDays != 395 || ws.Tier != "pro" || len(ws.Domains) != 2 {
		t.Fatalf("workspace %+v", ws)
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	s, err := Parse([]byte(goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"acme.example", "WWW.Globex.Example:443", "nope.example"} {
		if n := testing.AllocsPerRun(100, func() { s.Match(d) }); n != 0 {
			t.Errorf("Match(%q) allocates %v times", d, n)
		}
	}
}

func TestRegistryReload(t *testing.T) {
	leakcheck.Register(t) // the watcher goroutine stops at Close
	path := filepath.Join(t.TempDir(), "workspaces.yaml")
	testkit.WriteFile(t, path, []byte(goodYAML))
	reg := prometheus.NewRegistry()
	var logMu syncbuf.Buffer
	r, err := Open(path, RegistryConfig{
		Logger:       slog.New(slog.NewJSONHandler(&logMu, nil)),
		Registerer:   reg,
		PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var changes atomic.Int32
	var lastRetention atomic.Int32
	r.OnChange(func(old, new *Snapshot) {
		changes.Add(1)
		ws, _ := new.Lookup("acme.example")
		lastRetention.Store(int32(ws.RetentionDays))
	})
	reloads := func(result string) float64 {
		return testkit.MetricOrZero(t, reg, "collector_config_reloads_total", "result", result)
	}

	// A file change is picked up by polling.
	testkit.WriteFile(t, path, []byte(strings.Replace(goodYAML, "395", "400", 1)))
	testkit.Eventually(t, 5*time.Second, "poll reload", func() bool { return changes.Load() == 1 })
	if lastRetention.Load() != 400 {
		t.Fatalf("retention after reload %d", lastRetention.Load())
	}
	if reloads("success") != 1 {
		t.Fatalf("success reloads %v", reloads("success"))
	}

	// A bad file keeps the previous configuration, counts one failure and logs once.
	testkit.WriteFile(t, path, []byte("tiers: {}\nworkspaces: []\n"))
	testkit.Eventually(t, 5*time.Second, "failure", func() bool { return reloads("failure") == 1 })
	checked := testkit.Metric(t, reg, "collector_config_checks_total")
	testkit.Eventually(t, 5*time.Second, "three more polls of the same bad content", func() bool {
		return testkit.Metric(t, reg, "collector_config_checks_total") >= checked+3
	})
	if reloads("failure") != 1 {
		t.Fatalf("a bad file was counted %v times", reloads("failure"))
	}
	if ws, ok := r.Lookup("acme.example"); !ok || ws.RetentionDays != 400 {
		t.Fatalf("previous config not in force: %+v %v", ws, ok)
	}
	if g := testkit.MetricOrZero(t, reg, "collector_config_last_reload_success"); g != 0 {
		t.Fatalf("last_reload_success %v, want 0", g)
	}
	if n := strings.Count(logMu.String(), "workspaces file rejected"); n != 1 {
		t.Fatalf("rejection logged %d times:\n%s", n, logMu.String())
	}
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "no tiers defined") {
		t.Fatalf("explicit Reload of a bad file: %v", err)
	}

	// Removing the file keeps the configuration too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a missing file succeeded")
	}
	if _, ok := r.Lookup("globex.example"); !ok {
		t.Fatal("config lost after the file disappeared")
	}

	// A good file again (SIGHUP path): in force at once, gauge back to 1.
	testkit.WriteFile(t, path, []byte(strings.Replace(goodYAML, "globex.example:8443", "globex2.example", 1)))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Lookup("globex2.example"); !ok {
		t.Fatal("new domain not in force")
	}
	if _, ok := r.Lookup("globex.example"); ok {
		t.Fatal("removed domain still in force")
	}
	if g := testkit.MetricOrZero(t, reg, "collector_config_last_reload_success"); g != 1 {
		t.Fatalf("last_reload_success %v, want 1", g)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}

func TestOpenRejectsBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.yaml")
	testkit.WriteFile(t, path, []byte("tiers:\n  free: {retention_days: 30}\nworkspaces:\n  - id: a\n    tier: gold\n    domains: [a.example]\n"))
	if _, err := Open(path, RegistryConfig{PollInterval: -1}); err == nil || !strings.Contains(err.Error(), `unknown tier "gold"`) {
		t.Fatalf("Open: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.yaml"), RegistryConfig{}); err == nil {
		t.Fatal("Open of a missing file succeeded")
	}
	if _, err := LoadFile("../../testdata/workspaces.example.yaml"); err != nil {
		t.Fatalf("example file: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodYAML))
	f.Add([]byte("tiers: {a: {retention_days: 1}}\nworkspaces: [{id: x, tier: a, domains: [x.example]}]"))
	f.Add([]byte("tiers: [\n"))
	f.Add([]byte("workspaces:\n  - id: &a x\n    tier: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		// A valid snapshot is self-consistent: every configured domain looks up to its workspace
		// and every workspace has a valid tier retention.
		for _, ws := range s.Workspaces() {
			if ws.RetentionDays < 1 || ws.RetentionDays > MaxRetentionDays || len(ws.Domains) == 0 {
				t.Fatalf("invalid workspace accepted: %+v", ws)
			}
			for _, d := range ws.Domains {
				got, ok := s.Lookup(d)
				if !ok || got.ID != ws.ID {
					t.Fatalf("domain %q looks up to %q, want %q", d, got.ID, ws.ID)
				}
			}
		}
	})
}

// TestConcurrentLookupAndReload runs lookups while the file is reloaded (for the race detector):
// every lookup sees one complete configuration, old or new.
func TestConcurrentLookupAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workspaces.yaml")
	testkit.WriteFile(t, path, []byte(goodYAML))
	r, err := Open(path, RegistryConfig{PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ws, ok := r.Lookup("www.acme.example")
				if !ok || (ws.RetentionDays != 395 && ws.RetentionDays != 400) {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 50 {
		days := "395"
		if i%2 == 0 {
			days = "400"
		}
		testkit.WriteFile(t, path, []byte(strings.Replace(goodYAML, "395", days, 1)))
		if err := r.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d lookups saw an inconsistent configuration", bad.Load())
	}
}

func BenchmarkLookup(b *testing.B) {
	s, err := Parse([]byte(goodYAML))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Match("www.acme.example")
	}
}
