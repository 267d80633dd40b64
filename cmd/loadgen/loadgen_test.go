package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/internal/serving"
	"github.com/kyomi/collector/internal/testkit"
)

// TestMain lets the test binary stand in for the loadgen executable when -baseline-server
// starts `loadgen baseline` as a child process (os.Executable is the test binary here).
func TestMain(m *testing.M) {
	if os.Getenv("LOADGEN_CHILD") == "baseline" {
		main()
	}
	os.Exit(m.Run())
}

// beaconServer is a real fasthttp server on loopback that checks every beacon the way the
// collector's contract (DESIGN 3.2) reads it and answers with a fixed, countable policy.
type beaconServer struct {
	t       *testing.T
	addr    string
	domains map[string]bool

	mu       sync.Mutex
	received int
	accepted int
	dropped  map[string]int
	statuses map[int]int
	invalid  []string // first few validation failures
	nInvalid int
	bots     int
	v6       int
	ips      map[netip.Addr]bool
	seenDom  map[string]int
	names    map[string]int
	revenue  int
	longKeys int
	closes   int
}

var (
	shortKeys = map[string]string{"n": "name", "u": "url", "d": "domain", "r": "referrer", "p": "props", "$": "revenue"}
	otherKeys = map[string]bool{"h": true, "i": true}
)

func startBeaconServer(t *testing.T, domains []string) *beaconServer {
	t.Helper()
	s := &beaconServer{t: t, domains: map[string]bool{}, dropped: map[string]int{}, statuses: map[int]int{},
		ips: map[netip.Addr]bool{}, seenDom: map[string]int{}, names: map[string]int{}}
	for _, d := range domains {
		s.domains[d] = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %v", err)
	}
	s.addr = ln.Addr().String()
	srv := &fasthttp.Server{Handler: s.handle}
	stop := serving.Start(srv, ln)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("beacon server: %v", err)
		}
	})
	return s
}

func (s *beaconServer) handle(ctx *fasthttp.RequestCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received++
	seq := s.received
	if ctx.Request.Header.ConnectionClose() {
		s.closes++
	}
	if err := s.validate(ctx); err != nil {
		s.nInvalid++
		if len(s.invalid) < 5 {
			s.invalid = append(s.invalid, err.Error()+": "+string(ctx.PostBody()))
		}
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		s.statuses[400]++
		return
	}
	ua := string(ctx.UserAgent())
	switch {
	case slices.Contains(botUAs, ua):
		s.bots++
		s.dropped["bot"]++
		ctx.Response.Header.Set("X-Collector-Dropped", "bot")
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	case seq%13 == 5:
		s.statuses[429]++
		ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
	case seq%29 == 0:
		s.statuses[503]++
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
	case seq%31 == 0:
		s.dropped["spam_referrer"]++
		ctx.Response.Header.Set("X-Collector-Dropped", "spam_referrer")
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	default:
		s.accepted++
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	}
}

// validate checks one beacon: Plausible field names only, one spelling of each, the required
// fields, the domain configured, the URL on that domain, and headers a proxy would forward.
func (s *beaconServer) validate(ctx *fasthttp.RequestCtx) error {
	if string(ctx.Method()) != "POST" || string(ctx.Path()) != "/api/event" {
		return fmt.Errorf("request %s %s", ctx.Method(), ctx.Path())
	}
	if ct := string(ctx.Request.Header.ContentType()); ct != "text/plain" && ct != "application/json" {
		return fmt.Errorf("content type %q", ct)
	}
	if len(ctx.UserAgent()) == 0 {
		return fmt.Errorf("no user agent")
	}
	ip, err := netip.ParseAddr(string(ctx.Request.Header.Peek("X-Forwarded-For")))
	if err != nil || ip.IsPrivate() || ip.IsLoopback() || ip.IsMulticast() || !ip.IsGlobalUnicast() {
		return fmt.Errorf("X-Forwarded-For %q is not a public address", ctx.Request.Header.Peek("X-Forwarded-For"))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(ctx.PostBody(), &raw); err != nil {
		return fmt.Errorf("body is not a JSON object: %w", err)
	}
	fields := map[string]json.RawMessage{}
	for k, v := range raw {
		full, short := shortKeys[k]
		switch {
		case short:
		case otherKeys[k]:
			full = k
		case slices.Contains([]string{"name", "url", "domain", "referrer", "props", "revenue"}, k):
			full = k
			s.longKeys++
		default:
			return fmt.Errorf("unknown field %q", k)
		}
		if _, dup := fields[full]; dup {
			return fmt.Errorf("field %q given twice", full)
		}
		fields[full] = v
	}
	var name, page, domain string
	for k, dst := range map[string]*string{"name": &name, "url": &page, "domain": &domain} {
		if err := json.Unmarshal(fields[k], dst); err != nil || *dst == "" {
			return fmt.Errorf("field %s missing or not a string", k)
		}
	}
	if !s.domains[domain] {
		return fmt.Errorf("domain %q not configured", domain)
	}
	u, err := url.Parse(page)
	if err != nil || u.Scheme != "https" || u.Host != domain {
		return fmt.Errorf("url %q is not on %s", page, domain)
	}
	if o := string(ctx.Request.Header.Peek("Origin")); o != "" && o != "https://"+domain {
		return fmt.Errorf("origin %q for domain %s", o, domain)
	}
	if r, ok := fields["referrer"]; ok {
		var ref string
		if err := json.Unmarshal(r, &ref); err != nil {
			return fmt.Errorf("referrer is not a string")
		}
		if _, err := url.Parse(ref); err != nil {
			return fmt.Errorf("referrer %q: %w", ref, err)
		}
	}
	if p, ok := fields["props"]; ok {
		var props map[string]string
		if err := json.Unmarshal(p, &props); err != nil || len(props) == 0 {
			return fmt.Errorf("props are not a string map: %s", p)
		}
	}
	if r, ok := fields["revenue"]; ok {
		var rev struct {
			Amount   string `json:"amount"`
			Currency string `json:"currency"`
		}
		if err := json.Unmarshal(r, &rev); err != nil {
			return fmt.Errorf("revenue: %w", err)
		}
		if _, err := strconv.ParseFloat(rev.Amount, 64); err != nil || len(rev.Currency) != 3 {
			return fmt.Errorf("revenue %s", r)
		}
		s.revenue++
	}
	if i, ok := fields["i"]; ok && string(i) != "false" && string(i) != "true" {
		return fmt.Errorf("i is %s", i)
	}
	if h, ok := fields["h"]; ok && string(h) != "1" {
		return fmt.Errorf("h is %s", h)
	}
	if ip.Is6() {
		s.v6++
	}
	s.ips[ip] = true
	s.seenDom[domain]++
	s.names[name]++
	return nil
}

// runJSON runs loadgen with args plus -json and decodes its report.
func runJSON(t *testing.T, args ...string) fullReport {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), append(args, "-json"), &out, &errOut); code != 0 {
		t.Fatalf("loadgen %v exited %d: %s", args, code, errOut.String())
	}
	var rep fullReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("cannot decode report: %v\n%s", err, out.String())
	}
	return rep
}

// workerGoroutines counts goroutines running loadgen's own load or baseline code.
func workerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "main.(*worker)") || strings.Contains(g, "main.runLoad") || strings.Contains(g, "main.startBaseline") {
			n++
		}
	}
	return n
}

func checkNoLeak(t *testing.T) {
	t.Helper()
	testkit.Eventually(t, 3*time.Second, "the loadgen goroutines to end after the run returned", func() bool {
		return workerGoroutines() == 0
	})
}

func writeConfig(t *testing.T, domains int) (string, []string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-print-config", "-domains", strconv.Itoa(domains), "-seed", "7"}, &out, &errOut); code != 0 {
		t.Fatalf("-print-config exited %d: %s", code, errOut.String())
	}
	path := filepath.Join(t.TempDir(), "workspaces.yaml")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	ws, err := readWorkspaces(path)
	if err != nil {
		t.Fatalf("printed config does not read back: %v\n%s", err, out.String())
	}
	return path, ws.domains()
}

func TestPrintConfig(t *testing.T) {
	path, domains := writeConfig(t, 300)
	if len(domains) != 300 {
		t.Fatalf("got %d domains, want 300", len(domains))
	}
	seen := map[string]bool{}
	for _, d := range domains {
		if seen[d] {
			t.Fatalf("domain %s appears twice", d)
		}
		seen[d] = true
	}
	ws, err := readWorkspaces(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws.Workspaces) < 60 {
		t.Fatalf("only %d workspaces for 300 domains; want many tenants", len(ws.Workspaces))
	}
	for _, w := range ws.Workspaces {
		if _, ok := ws.Tiers[w.Tier]; !ok || !strings.HasPrefix(w.ID, "ws_") {
			t.Fatalf("workspace %+v has an unknown tier or a bad id", w)
		}
	}
}

func TestLoadAgainstValidatingServer(t *testing.T) {
	path, domains := writeConfig(t, 120)
	tests := []struct {
		name      string
		args      []string
		wantSent  int  // exact when > 0
		keepAlive bool // expect connection reuse
	}{
		{name: "keepalive bounded by count", args: []string{"-c", "8", "-n", "4000", "-duration", "60s"}, wantSent: 4000, keepAlive: true},
		{name: "one request per connection", args: []string{"-c", "4", "-n", "600", "-duration", "60s", "-keepalive=false"}, wantSent: 600},
		{name: "bounded by duration", args: []string{"-c", "4", "-n", "100000000", "-duration", "400ms"}, keepAlive: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startBeaconServer(t, domains)
			rep := runJSON(t, append([]string{"-target", "http://" + s.addr, "-config", path, "-unique", "5000"}, tc.args...)...)
			checkNoLeak(t)
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.nInvalid > 0 {
				t.Fatalf("%d invalid beacons, first: %q", s.nInvalid, s.invalid)
			}
			r := rep.Run
			if tc.wantSent > 0 && int(r.Sent) != tc.wantSent {
				t.Fatalf("sent %d, want %d", r.Sent, tc.wantSent)
			}
			if tc.wantSent == 0 {
				if r.ElapsedSeconds < 0.4 || r.ElapsedSeconds > 3 {
					t.Fatalf("a 400ms run took %.2fs", r.ElapsedSeconds)
				}
				if r.Sent < 100 {
					t.Fatalf("only %d requests in 400ms", r.Sent)
				}
			}
			// Every request sent was answered, or cut by the end of -duration; no transport errors.
			// The server may have answered a cut request with an error the run never read.
			serverErrors := uint64(s.statuses[429] + s.statuses[503])
			if r.Latency.Count+r.CutAtEnd != r.Sent || r.ErrorsTotal > serverErrors || serverErrors > r.ErrorsTotal+r.CutAtEnd {
				t.Fatalf("report sent %d answered %d cut %d errors %v; server statuses %v", r.Sent, r.Latency.Count, r.CutAtEnd, r.Errors, s.statuses)
			}
			if tc.wantSent > 0 && r.CutAtEnd != 0 {
				t.Fatalf("%d requests cut in a run bounded by count", r.CutAtEnd)
			}
			if int(r.Latency.Count) > s.received || s.received > int(r.Sent) || r.CutAtEnd > 8 {
				t.Fatalf("report sent %d answered %d cut %d; server received %d", r.Sent, r.Latency.Count, r.CutAtEnd, s.received)
			}
			// Answers the run read match the server's exactly; a cut request may have been
			// answered by the server after the run stopped reading, so those count on its side only.
			if r.CutAtEnd == 0 {
				if int(r.Sent) != s.received || int(r.Accepted) != s.accepted || int(r.Errors["status_429"]) != s.statuses[429] || int(r.Errors["status_503"]) != s.statuses[503] {
					t.Fatalf("report sent %d accepted %d errors %v; server received %d accepted %d statuses %v", r.Sent, r.Accepted, r.Errors, s.received, s.accepted, s.statuses)
				}
				for reason, n := range s.dropped {
					if int(r.Dropped[reason]) != n {
						t.Fatalf("report dropped %v; server dropped %v", r.Dropped, s.dropped)
					}
				}
				if len(r.Dropped) != len(s.dropped) {
					t.Fatalf("report dropped %v; server dropped %v", r.Dropped, s.dropped)
				}
			} else if int(r.Accepted) > s.accepted || int(r.Accepted)+int(r.CutAtEnd) < s.accepted {
				t.Fatalf("report accepted %d (cut %d); server accepted %d", r.Accepted, r.CutAtEnd, s.accepted)
			}
			if want := float64(r.Accepted) / r.ElapsedSeconds; math.Abs(r.AcceptedPerSec-want) > 1e-6*want+1e-9 {
				t.Fatalf("accepted_per_second %f, want %f", r.AcceptedPerSec, want)
			}
			if !(r.Latency.P50 <= r.Latency.P99 && r.Latency.P99 <= r.Latency.P999 && r.Latency.P999 <= r.Latency.Max && r.Latency.P50 > 0) {
				t.Fatalf("latency percentiles out of order: %+v", r.Latency)
			}
			if tc.keepAlive && s.closes != 0 || !tc.keepAlive && s.closes != s.received {
				t.Fatalf("%d of %d requests asked to close the connection (keepalive %v)", s.closes, s.received, tc.keepAlive)
			}
			// The mix: bots near 3%, IPv6 near 30%, many addresses, domains, event names, revenue.
			n := float64(s.received)
			if n >= 1000 {
				if f := float64(s.bots) / n; f < 0.01 || f > 0.06 {
					t.Fatalf("bot share %.3f, want about 0.03", f)
				}
				if f := float64(s.v6) / (n - float64(s.bots)); f < 0.2 || f > 0.4 {
					t.Fatalf("IPv6 share %.3f, want about 0.3", f)
				}
				// Requests cycle through -unique 5000 prepared ones, each with its own address: a
				// fast run of over 10 000 requests still sees at most 5000 addresses.
				if len(s.ips) < int(min(n, 5000)*0.5) || len(s.seenDom) < 30 || len(s.names) < 4 || s.revenue == 0 || s.longKeys == 0 {
					t.Fatalf("thin mix: %d addresses, %d domains, names %v, %d revenue events, %d long keys", len(s.ips), len(s.seenDom), s.names, s.revenue, s.longKeys)
				}
			}
		})
	}
}

// TestDurationBoundsSlowServer checks that -duration bounds the run even when answers take
// longer than the run: the requests in flight are cut, not waited for until -timeout.
func TestDurationBoundsSlowServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	}}
	stop := serving.Start(srv, ln)
	t.Cleanup(func() { close(release); _ = stop() })

	rep := runJSON(t, "-target", ln.Addr().String(), "-domains", "3", "-unique", "100", "-c", "3", "-duration", "300ms", "-timeout", "20s")
	checkNoLeak(t)
	if took := rep.Run.ElapsedSeconds; took > 1.5 {
		t.Fatalf("a 300ms run against a stalled server took %.2fs", took)
	}
	if r := rep.Run; r.Sent != 3 || r.CutAtEnd != 3 || r.ErrorsTotal != 0 || r.Latency.Count != 0 {
		t.Fatalf("sent %d cut %d errors %v answers %d; want 3 requests cut and nothing else", r.Sent, r.CutAtEnd, r.Errors, r.Latency.Count)
	}
}

func TestRateLimitedRun(t *testing.T) {
	_, domains := writeConfig(t, 10)
	s := startBeaconServer(t, domains)
	rep := runJSON(t, "-target", s.addr, "-domains", "10", "-seed", "7", "-rate", "400", "-c", "4", "-duration", "1s")
	checkNoLeak(t)
	// The schedule never runs ahead: at most rate*duration plus one request per connection.
	if rep.Run.Sent > 404 || rep.Run.Sent < 200 {
		t.Fatalf("sent %d at 400/s for 1s", rep.Run.Sent)
	}
	if rep.Run.TargetRate != 400 {
		t.Fatalf("report target rate %v", rep.Run.TargetRate)
	}
}

func TestBaselineServer(t *testing.T) {
	_, domains := writeConfig(t, 20)
	s := startBeaconServer(t, domains)
	rep := runJSON(t, "-target", s.addr, "-domains", "20", "-seed", "7", "-baseline-server", "-n", "2000", "-c", "8", "-duration", "60s")
	checkNoLeak(t)
	b := rep.Baseline
	if b == nil {
		t.Fatal("no baseline in the report")
	}
	if b.Sent != 2000 || b.Accepted != 2000 || b.ErrorsTotal != 0 || b.DroppedTotal != 0 {
		t.Fatalf("baseline: sent %d accepted %d errors %v dropped %v", b.Sent, b.Accepted, b.Errors, b.Dropped)
	}
	if rep.Run.Sent != 2000 || int(rep.Run.Accepted) != s.accepted {
		t.Fatalf("target: sent %d accepted %d, server accepted %d", rep.Run.Sent, rep.Run.Accepted, s.accepted)
	}
	want := rep.Run.AnsweredPerSec / b.AnsweredPerSec
	if rep.RatioAnswered <= 0 || math.Abs(rep.RatioAnswered-want) > 1e-9 || rep.RatioAccepted >= rep.RatioAnswered {
		t.Fatalf("ratios answered %v (want %v) accepted %v", rep.RatioAnswered, want, rep.RatioAccepted)
	}
}

// TestCPUPerAnswer runs against a server in this process (-server-pid is the test's own PID)
// with -baseline-server: both runs report the server's and loadgen's CPU per answer, and the
// ratio by CPU follows from them. A PID with no process leaves the server's figure out, with a
// warning, and the run still succeeds.
func TestCPUPerAnswer(t *testing.T) {
	_, domains := writeConfig(t, 20)
	s := startBeaconServer(t, domains)
	rep := runJSON(t, "-target", s.addr, "-domains", "20", "-seed", "7", "-baseline-server",
		"-server-pid", strconv.Itoa(os.Getpid()), "-n", "20000", "-c", "16", "-duration", "60s")
	checkNoLeak(t)
	b, r := rep.Baseline, rep.Run
	if b == nil {
		t.Fatal("no baseline in the report")
	}
	// 20 000 answers take well over the 10 ms resolution of /proc CPU times on either side.
	for name, v := range map[string]float64{
		"baseline server": b.ServerCPUMicros, "baseline loadgen": b.LoadgenCPUMicros,
		"target server": r.ServerCPUMicros, "target loadgen": r.LoadgenCPUMicros,
	} {
		if v <= 0 || v > 100_000 {
			t.Errorf("%s CPU per answer %v µs, want a positive figure", name, v)
		}
	}
	want := (b.ServerCPUMicros + b.LoadgenCPUMicros) / (r.ServerCPUMicros + r.LoadgenCPUMicros) * r.AcceptedPerSec / r.AnsweredPerSec
	if rep.RatioCPU <= 0 || math.Abs(rep.RatioCPU-want) > 1e-9 {
		t.Errorf("ratio by CPU %v, want %v", rep.RatioCPU, want)
	}
	var out bytes.Buffer
	if err := writeText(&out, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "accepted events by CPU") || !strings.Contains(out.String(), "µs per answer") {
		t.Errorf("text report lacks the CPU figures:\n%s", out.String())
	}

	var gone, warn bytes.Buffer
	code := run(context.Background(), []string{"-target", s.addr, "-domains", "20", "-seed", "7", "-server-pid", "999999999", "-n", "200", "-c", "4", "-json"}, &gone, &warn)
	var goneRep fullReport
	if err := json.Unmarshal(gone.Bytes(), &goneRep); code != 0 || err != nil {
		t.Fatalf("with a PID of no process: exit %d, %v, stderr %s", code, err, warn.String())
	}
	if goneRep.Run.ServerCPUMicros != 0 || goneRep.Run.Sent != 200 {
		t.Errorf("with a PID of no process: server CPU %v, sent %d; want 0 and 200", goneRep.Run.ServerCPUMicros, goneRep.Run.Sent)
	}
	if want := "-server-pid: no CPU figures for the target: cannot read the CPU time of process 999999999"; !strings.Contains(warn.String(), want) {
		t.Errorf("stderr %q does not warn %q", warn.String(), want)
	}
}

func TestStatCPUTicks(t *testing.T) {
	tests := []struct {
		name, line string
		want       uint64
		err        bool
	}{
		{name: "plain", line: "4242 (collector) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 30 0 99 0 0", want: 1801},
		{name: "name with spaces and parentheses", line: "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 5 0 0", want: 30},
		{name: "no name", line: "7 a R 1", err: true},
		{name: "short", line: "7 (x) R 1 2 3", err: true},
		{name: "not a number", line: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 ten 20 0 0", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statCPUTicks([]byte(tc.line))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("statCPUTicks = %d, %v; want %d, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestBaselineStopsAtOnce stops `loadgen baseline` before its server goroutine has run: fasthttp's
// Shutdown closes only the listeners Serve registered, so the command must close its own.
func TestBaselineStopsAtOnce(t *testing.T) {
	for i := range 50 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan int, 1)
		var out, errOut bytes.Buffer
		go func() { done <- runBaseline(ctx, nil, &out, &errOut) }()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("run %d: exit %d: %s", i, code, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: baseline still running 10 s after it was stopped", i)
		}
	}
	checkNoLeak(t)
}

func TestTextReport(t *testing.T) {
	_, domains := writeConfig(t, 5)
	s := startBeaconServer(t, domains)
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-target", s.addr, "-domains", "5", "-seed", "7", "-n", "300", "-c", "2"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"sent      300", "accepted  ", "status_429", "p99.9", "bot"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBadInvocations(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "public IPv4 target", args: []string{"-target", "http://10.1.2.3:8080"}, code: 2, want: "not a loopback address"},
		{name: "public IPv6 target", args: []string{"-target", "http://[2001:4860::1]:80"}, code: 2, want: "not a loopback address"},
		{name: "https target", args: []string{"-target", "https://127.0.0.1:8443"}, code: 2, want: "not supported"},
		{name: "unresolvable name", args: []string{"-target", "http://nonexistent.invalid:80"}, code: 2, want: "cannot resolve"},
		{name: "unbounded count", args: []string{"-n", "0"}, code: 2, want: "bounded in count"},
		{name: "unbounded time", args: []string{"-duration", "0s"}, code: 2, want: "bounded in time"},
		{name: "bad fractions", args: []string{"-bots", "2", "-ipv6", "-1"}, code: 2, want: "-ipv6 -1 is out of range"},
		{name: "negative server pid", args: []string{"-server-pid", "-1"}, code: 2, want: "-server-pid -1 must not be negative"},
		{name: "missing config", args: []string{"-config", "/nonexistent/ws.yaml"}, code: 1, want: "cannot read workspaces file"},
		{name: "baseline off loopback", args: []string{"baseline", "-listen", "0.0.0.0:0"}, code: 2, want: "not a loopback address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errOut.String(), tc.code, tc.want)
			}
		})
	}
}

func TestLoopbackTarget(t *testing.T) {
	tests := []struct {
		name, target, addr, host string
	}{
		{name: "bare address", target: "127.0.0.1:8080", addr: "127.0.0.1:8080", host: "127.0.0.1:8080"},
		{name: "IPv6 loopback", target: "http://[::1]:9000", addr: "[::1]:9000", host: "[::1]:9000"},
		{name: "mapped loopback", target: "http://[::ffff:127.0.0.2]:81", addr: "127.0.0.2:81", host: "[::ffff:127.0.0.2]:81"},
		{name: "default port", target: "http://127.0.0.1", addr: "127.0.0.1:80", host: "127.0.0.1"},
		{name: "localhost", target: "http://localhost:8080", host: "localhost:8080"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, host, err := loopbackTarget(context.Background(), tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if (tc.addr != "" && addr != tc.addr) || host != tc.host {
				t.Fatalf("got %s %s, want %s %s", addr, host, tc.addr, tc.host)
			}
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || !ap.Addr().IsLoopback() {
				t.Fatalf("dial address %s is not loopback", addr)
			}
		})
	}
}

func TestHistogram(t *testing.T) {
	t.Run("buckets cover values", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for range 100000 {
			v := r.Uint64() >> r.UintN(64)
			i := histIndex(v)
			if i >= histBuckets || histUpper(i) < v || (i > 0 && histUpper(i-1) >= v) {
				t.Fatalf("value %d in bucket %d [%d, %d]", v, i, histUpper(i-1)+1, histUpper(i))
			}
			if v > 1000 && float64(histUpper(i)-v) > float64(v)/64 {
				t.Fatalf("bucket of %d reports %d: more than 1/64 off", v, histUpper(i))
			}
		}
	})
	t.Run("quantiles of a known distribution", func(t *testing.T) {
		var h histogram
		vals := make([]time.Duration, 0, 100000)
		for i := 1; i <= 100000; i++ {
			d := time.Duration(i) * time.Microsecond
			vals = append(vals, d)
		}
		rand.Shuffle(len(vals), func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
		var parts [4]histogram // merged like the workers' histograms
		for i, v := range vals {
			parts[i%4].record(v)
		}
		for i := range parts {
			h.merge(&parts[i])
		}
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
			exact := time.Duration(math.Ceil(q*100000)) * time.Microsecond
			got := h.quantile(q)
			if got < exact || float64(got-exact) > float64(exact)/64 {
				t.Fatalf("q%v = %v, exact %v", q, got, exact)
			}
		}
		if h.max != uint64(100*time.Millisecond) || h.n != 100000 || h.mean() != 50000500*time.Nanosecond {
			t.Fatalf("max %d n %d mean %v", h.max, h.n, h.mean())
		}
	})
}

func TestRequestsAreDeterministic(t *testing.T) {
	m := mix{domains: []string{"a.example", "b.example"}, botRate: 0.03, v6Rate: 0.3}
	a := buildRequests(m, 200, 9, "127.0.0.1:1", true)
	b := buildRequests(m, 200, 9, "127.0.0.1:1", true)
	c := buildRequests(m, 200, 10, "127.0.0.1:1", true)
	same := 0
	for i := range a {
		if !bytes.Equal(a[i].wire, b[i].wire) {
			t.Fatalf("request %d differs for the same seed", i)
		}
		if bytes.Equal(a[i].wire, c[i].wire) {
			same++
		}
	}
	if same > 10 {
		t.Fatalf("%d of 200 requests equal across seeds", same)
	}
}

func BenchmarkBuildRequest(b *testing.B) {
	b.ReportAllocs()
	r := rand.New(rand.NewPCG(1, 2))
	m := mix{domains: generateWorkspaces(500, 1).domains(), botRate: 0.03, v6Rate: 0.3}
	for b.Loop() {
		_ = buildRequest(r, m, "127.0.0.1:8080", true)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	b.ReportAllocs()
	var h histogram
	var d atomic.Int64
	for b.Loop() {
		h.record(time.Duration(d.Add(997) % int64(time.Second)))
	}
}
