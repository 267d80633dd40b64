package collector

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/enrich/geotest"
	"github.com/kyomi/collector/collector/ratelimit"
	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/serving"
	"github.com/kyomi/collector/internal/syncbuf"
	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/salt"
	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/spool"
)

const testWorkspaces = `
tiers:
  free: { retention_days: 30 }
  pro:  { retention_days: 395 }
workspaces:
  - id: ws_acme
    tier: pro
    domains: [acme.example, shop.acme.example]
  - id: ws_globex
    tier: free
    domains: [globex.example]
`

const chromeUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"

// syncBuffer collects log or process output while the test reads it.
type syncBuffer = syncbuf.Buffer

// faultSpool wraps the real spool and fails appends while fail is set.
type faultSpool struct {
	sp   *spool.Spool
	mu   sync.Mutex
	fail error
}

func (f *faultSpool) AppendAll(recs [][]byte) error {
	f.mu.Lock()
	err := f.fail
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.sp.AppendAll(recs)
}

func (f *faultSpool) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

// failingSalt is a salt source that has no salt, as a Redis source during an outage at start.
type failingSalt struct{}

func (failingSalt) Salt(time.Time) (*salt.Salt, error) { return nil, salt.ErrUnavailable }

type harness struct {
	t       *testing.T
	dir     string
	addr    string
	spool   *spool.Spool
	faults  *faultSpool
	reg     *prometheus.Registry
	logs    *syncBuffer
	srv     *Server
	workCfg string
	closed  sync.Map // client address (the server's remote address) → struct{}, once the server closed that connection

	errorsExpected bool // the test provokes error-level logs (spool or salt failures)
}

type harnessOptions struct {
	clientRate float64
	salts      salt.Source
	routes     map[string]fasthttp.RequestHandler
	refused    map[string]func(*fasthttp.RequestCtx, int)
	ready      []func() error
	workspaces string                // the workspaces file; testWorkspaces when empty
	geo        map[string]enrich.Geo // added to the test GeoIP database (CIDR → location)
}

// newHarness starts the event endpoint on a loopback TCP port with the real spool, salt file,
// workspace registry, UA parser, GeoIP database, bot filter and client IP resolver (127.0.0.1 is a
// trusted proxy, so tests set the client address with X-Forwarded-For).
func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	leakcheck.Register(t)
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	h.workCfg = filepath.Join(dir, "workspaces.yaml")
	wsFile := testWorkspaces
	if o.workspaces != "" {
		wsFile = o.workspaces
	}
	testkit.WriteFile(t, h.workCfg, []byte(wsFile))
	registry, err := workspace.Open(h.workCfg, workspace.RegistryConfig{Logger: log, Registerer: h.reg, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	geoPath := filepath.Join(dir, "geo.mmdb")
	geoEntries := map[string]enrich.Geo{
		"203.0.113.0/24": {CountryCode: "NZ", Region: "AUK", City: "Auckland"},
		"2001:db8::/32":  {CountryCode: "DE", Region: "BE", City: "Berlin"},
	}
	for k, v := range o.geo {
		geoEntries[k] = v
	}
	if err := geotest.Write(geoPath, geoEntries); err != nil {
		t.Fatal(err)
	}
	geo, err := enrich.OpenGeoDB(geoPath)
	if err != nil {
		t.Fatal(err)
	}
	filter, err := bot.NewFilter(bot.Config{})
	if err != nil {
		t.Fatal(err)
	}
	salts := o.salts
	var local *salt.Local
	if salts == nil {
		local, err = salt.NewLocal(filepath.Join(dir, "salt"), salt.WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		salts = local
	}
	h.spool, err = spool.Open(spool.Config{Dir: filepath.Join(dir, "spool"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h.faults = &faultSpool{sp: h.spool}
	trusted, err := clientip.ParsePrefixes("127.0.0.1/32, ::1/128")
	if err != nil {
		t.Fatal(err)
	}
	clientRate, err := ratelimit.New(ratelimit.Config{Rate: o.clientRate, MaxKeys: 1024}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.srv, err = NewServer(Config{
		Logger:     log,
		Registerer: h.reg,
		Gatherer:   h.reg,
		Registry:   registry,
		Resolver:   clientip.NewResolver(trusted),
		UA:         enrich.NewUAParser(1000),
		Geo:        geo,
		Bots:       filter,
		Salts:      salts,
		Spool:      h.faults,
		ClientRate: clientRate,
		Routes:     o.routes,
		Refused:    o.refused,
		Ready:      o.ready,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	hs := h.srv.HTTPServer(discardLogger{}) // the request limits and ErrorHandler the binary serves with
	hs.ReadTimeout = 5 * time.Second
	// Idle workers exit after this; the default (10 s) would outlive the leak check.
	hs.MaxIdleWorkerDuration = 20 * time.Millisecond
	hs.ConnState = func(c net.Conn, st fasthttp.ConnState) {
		if st == fasthttp.StateClosed {
			h.closed.Store(c.RemoteAddr().String(), struct{}{})
		}
	}
	stop := serving.Start(hs, ln)
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		if err := stop(); err != nil {
			t.Errorf("http server: %v", err)
		}
		if err := h.spool.Close(); err != nil {
			t.Errorf("spool close: %v", err)
		}
		if local != nil {
			local.Close()
		}
		registry.Close()
		geo.Close()
		if strings.Contains(h.logs.String(), `"level":"ERROR"`) && !t.Failed() && !h.errorsExpected {
			t.Errorf("error-level log lines:\n%s", h.logs.String())
		}
	})
	return h
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// request is one HTTP request to the harness.
type request struct {
	method  string // default POST
	path    string // default /api/event
	body    string
	ctype   string // default text/plain; "-" for none
	ip      string // X-Forwarded-For
	ua      string // default chromeUA; "-" for none
	origin  string
	headers map[string]string
}

func (h *harness) do(r request) (int, http.Header, string) {
	h.t.Helper()
	if r.method == "" {
		r.method = "POST"
	}
	if r.path == "" {
		r.path = "/api/event"
	}
	req, err := http.NewRequest(r.method, "http://"+h.addr+r.path, strings.NewReader(r.body))
	if err != nil {
		h.t.Fatal(err)
	}
	switch r.ctype {
	case "":
		req.Header.Set("Content-Type", "text/plain")
	case "-":
	default:
		req.Header.Set("Content-Type", r.ctype)
	}
	switch r.ua {
	case "":
		req.Header.Set("User-Agent", chromeUA)
	case "-":
		req.Header.Set("User-Agent", "")
	default:
		req.Header.Set("User-Agent", r.ua)
	}
	req.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	if r.ip != "" {
		req.Header.Set("X-Forwarded-For", r.ip)
	}
	if r.origin != "" {
		req.Header.Set("Origin", r.origin)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// events returns every event in the spool.
func (h *harness) events() []row.Event {
	h.t.Helper()
	rd := h.spool.NewReader(h.spool.Checkpoint())
	var out []row.Event
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			h.t.Fatal(err)
		}
		var ev row.Event
		if err := row.DecodeEvent(rec.Data, &ev); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, ev)
	}
}

// waitClosed waits until the server has closed the connection whose client end is c: it is done
// with it, answers and counts included.
func (h *harness) waitClosed(c net.Conn) {
	h.t.Helper()
	client := c.LocalAddr().String()
	testkit.Eventually(h.t, 5*time.Second, "the server to close the connection from "+client, func() bool {
		_, ok := h.closed.Load(client)
		return ok
	})
}

// metric returns the value of the series name with the given label name/value pairs, 0 when it
// has not moved yet.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	return testkit.MetricOrZero(h.t, h.reg, name, labels...)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
