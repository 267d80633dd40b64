// Command loadgen replays a realistic mix of Plausible-style beacon events against a collector's
// POST /api/event on loopback and reports accepted events per second, drops by reason, errors
// and latency percentiles. With -baseline-server it first measures an empty fasthttp handler in
// a separate process with the same flags, so the ceiling and the collector are measured by the
// same tool in the same run. With -server-pid it also reports the CPU time per answer of the
// server and of itself, and the ratio by CPU, which a shared machine disturbs less than rates.
//
//	loadgen -print-config -domains 500 > /tmp/ws.yaml
//	collector serve -config /tmp/ws.yaml -trusted-proxies 127.0.0.1/32,::1/128 &
//	loadgen -config /tmp/ws.yaml -target http://127.0.0.1:8080 -c 64 -duration 20s -baseline-server -server-pid $!
//	loadgen baseline -listen 127.0.0.1:9090   # the empty handler alone, e.g. for wrk
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the flags of a load run.
type options struct {
	target      string
	config      string
	domains     int
	printConfig bool
	concurrency int
	requests    int64
	duration    time.Duration
	rate        float64
	keepAlive   bool
	timeout     time.Duration
	bots        float64
	ipv6        float64
	unique      int
	seed        uint64
	json        bool
	baseline    bool
	serverPID   int
	freshness   time.Duration
}

func newFlags(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.target, "target", "http://127.0.0.1:8080", "collector base URL; loopback addresses only (127.0.0.0/8, ::1, or a name resolving only to them)")
	fs.StringVar(&o.config, "config", "", "workspaces file (DESIGN 3.1 YAML) whose domains the events use; empty generates -domains domains")
	fs.IntVar(&o.domains, "domains", 200, "domains to generate when -config is empty (1..100000); print the matching workspaces file with -print-config")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the workspaces file for the generated domains (same -domains and -seed) and exit")
	fs.IntVar(&o.concurrency, "c", 64, "connections in flight (1..10000); each sends one request at a time")
	fs.Int64Var(&o.requests, "n", 10_000_000, "stop after this many requests (>0); -duration applies as well")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "stop after this long (0 < d <= 1h); -n applies as well")
	fs.Float64Var(&o.rate, "rate", 0, "target requests per second over all connections (e.g. half of the measured maximum for latency runs); 0 = as fast as answers come; latency then counts from the scheduled send time")
	fs.BoolVar(&o.keepAlive, "keepalive", true, "reuse connections; false opens one connection per request (Connection: close)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "per request: connect, write and read the answer")
	fs.Float64Var(&o.bots, "bots", 0.03, "fraction of requests with a crawler or script user agent (0..1)")
	fs.Float64Var(&o.ipv6, "ipv6", 0.3, "fraction of requests from IPv6 clients (0..1); addresses go in X-Forwarded-For")
	fs.IntVar(&o.unique, "unique", 20000, "distinct prepared requests cycled through (100..1000000); each has its own client address, so more keeps per-client rate limits out of the way")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed for the generated domains and events")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON instead of text")
	fs.BoolVar(&o.baseline, "baseline-server", false, "first run the same load against an empty fasthttp handler started in a separate process (loadgen baseline), and report the ratio")
	fs.IntVar(&o.serverPID, "server-pid", 0, "process id of the target server (Linux): report its CPU time per answer, read from /proc before and after the run, and with -baseline-server the ratio by CPU; 0 = off")
	fs.DurationVar(&o.freshness, "freshness", 0, "after the run, wait this long for the last batch to be inserted (e.g. 3s with the default 1s batch age), then report how long the run's events took from their 202 to being queryable, from the collector's "+visibleMetric+" histogram at TARGET/metrics (scraped before and after); 0 = off")
	return fs
}

func (o *options) validate() error {
	var errs []error
	if o.concurrency < 1 || o.concurrency > 10000 {
		errs = append(errs, fmt.Errorf("-c %d is out of range 1..10000", o.concurrency))
	}
	if o.requests < 1 {
		errs = append(errs, fmt.Errorf("-n %d must be positive: every run is bounded in count", o.requests))
	}
	if o.duration <= 0 || o.duration > time.Hour {
		errs = append(errs, fmt.Errorf("-duration %s is out of range (0, 1h]: every run is bounded in time", o.duration))
	}
	if o.freshness < 0 || o.freshness > time.Minute {
		errs = append(errs, fmt.Errorf("-freshness %s is out of range [0, 1m]", o.freshness))
	}
	if o.serverPID < 0 {
		errs = append(errs, fmt.Errorf("-server-pid %d must not be negative", o.serverPID))
	}
	if o.rate < 0 {
		errs = append(errs, fmt.Errorf("-rate %g must not be negative", o.rate))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout %s must be positive", o.timeout))
	}
	if o.bots < 0 || o.bots > 1 {
		errs = append(errs, fmt.Errorf("-bots %g is out of range 0..1", o.bots))
	}
	if o.ipv6 < 0 || o.ipv6 > 1 {
		errs = append(errs, fmt.Errorf("-ipv6 %g is out of range 0..1", o.ipv6))
	}
	if o.unique < 100 || o.unique > 1_000_000 {
		errs = append(errs, fmt.Errorf("-unique %d is out of range 100..1000000", o.unique))
	}
	if o.config == "" && (o.domains < 1 || o.domains > 100000) {
		errs = append(errs, fmt.Errorf("-domains %d is out of range 1..100000", o.domains))
	}
	return errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "baseline" {
		return runBaseline(ctx, args[1:], stdout, stderr)
	}
	var o options
	fs := newFlags(&o, stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "loadgen: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "loadgen: invalid flags:\n%v\n", err)
		return 2
	}
	var ws *workspacesFile
	if o.config != "" {
		var err error
		if ws, err = readWorkspaces(o.config); err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 1
		}
	} else {
		ws = generateWorkspaces(o.domains, o.seed)
	}
	if o.printConfig {
		b, err := ws.marshal()
		if err == nil {
			_, err = stdout.Write(b)
		}
		if err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 1
		}
		return 0
	}
	addr, host, err := loopbackTarget(ctx, o.target)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	m := mix{domains: ws.domains(), botRate: o.bots, v6Rate: o.ipv6}
	cfg := loadConfig{
		Addr: addr, Concurrency: o.concurrency, MaxRequests: o.requests, Duration: o.duration,
		Rate: o.rate, KeepAlive: o.keepAlive, Timeout: o.timeout,
	}

	var rep fullReport
	if o.baseline {
		b, err := startBaseline(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 1
		}
		bcfg := cfg
		bcfg.Addr = b.addr
		reqs := buildRequests(m, o.unique, o.seed, b.addr, o.keepAlive)
		meter := cpuMeter{serverPID: b.cmd.Process.Pid}
		meter.start()
		res := runLoad(ctx, bcfg, reqs)
		br := makeReport("http://"+b.addr+" (empty handler)", bcfg, res)
		if err := meter.stop(&br); err != nil {
			fmt.Fprintf(stderr, "loadgen: warning: no CPU figures for the empty handler: %v\n", err)
		}
		if err := b.stop(); err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 1
		}
		rep.Baseline = &br
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "loadgen: interrupted")
		return 1
	}
	metricsURL := "http://" + addr + "/metrics"
	var before []bucket
	if o.freshness > 0 {
		if before, err = scrapeHistogram(ctx, metricsURL, visibleMetric); err != nil {
			fmt.Fprintf(stderr, "loadgen: -freshness: %v\n", err)
			return 1
		}
	}
	reqs := buildRequests(m, o.unique, o.seed, host, o.keepAlive)
	meter := cpuMeter{serverPID: o.serverPID}
	meter.start()
	res := runLoad(ctx, cfg, reqs)
	rep.Run = makeReport(o.target, cfg, res)
	if err := meter.stop(&rep.Run); err != nil {
		fmt.Fprintf(stderr, "loadgen: warning: -server-pid: no CPU figures for the target: %v\n", err)
	}
	if o.freshness > 0 {
		select {
		case <-time.After(o.freshness):
		case <-ctx.Done():
		}
		after, err := scrapeHistogram(ctx, metricsURL, visibleMetric)
		if err != nil {
			fmt.Fprintf(stderr, "loadgen: -freshness: %v\n", err)
			return 1
		}
		f := freshnessBetween(before, after)
		rep.Freshness = &f
	}
	if rep.Baseline != nil && rep.Baseline.AnsweredPerSec > 0 {
		rep.RatioAnswered = rep.Run.AnsweredPerSec / rep.Baseline.AnsweredPerSec
		rep.RatioAccepted = rep.Run.AcceptedPerSec / rep.Baseline.AnsweredPerSec
		b, r := rep.Baseline, rep.Run
		if b.ServerCPUMicros > 0 && r.ServerCPUMicros > 0 && r.AnsweredPerSec > 0 {
			rep.RatioCPU = (b.ServerCPUMicros + b.LoadgenCPUMicros) / (r.ServerCPUMicros + r.LoadgenCPUMicros) *
				r.AcceptedPerSec / r.AnsweredPerSec
		}
	}
	if o.json {
		err = writeJSON(stdout, rep)
	} else {
		err = writeText(stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	return 0
}

// loopbackTarget checks that target points at this machine only and returns the address to
// dial and the Host header to send. A load generator aimed elsewhere is a denial-of-service
// tool, so names are resolved and every address they resolve to must be loopback.
func loopbackTarget(ctx context.Context, target string) (addr, host string, err error) {
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil {
		return "", "", fmt.Errorf("cannot parse -target: %w", err)
	}
	if u.Scheme != "http" {
		return "", "", fmt.Errorf("-target scheme %q is not supported: point loadgen at the plain-HTTP listener on loopback", u.Scheme)
	}
	h, port := u.Hostname(), u.Port()
	if h == "" {
		return "", "", errors.New("-target has no host")
	}
	if port == "" {
		port = "80"
	}
	ip, perr := netip.ParseAddr(h)
	if perr != nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ips, lerr := net.DefaultResolver.LookupNetIP(rctx, "ip", h)
		if lerr != nil {
			return "", "", fmt.Errorf("cannot resolve -target host %q: %w", h, lerr)
		}
		for _, a := range ips {
			if !a.Unmap().IsLoopback() {
				return "", "", fmt.Errorf("-target host %q resolves to a non-loopback address: loadgen only sends to 127.0.0.0/8 or ::1", h)
			}
		}
		if len(ips) == 0 {
			return "", "", fmt.Errorf("-target host %q resolves to no address", h)
		}
		ip = ips[0]
	}
	if !ip.Unmap().IsLoopback() {
		return "", "", fmt.Errorf("-target %s is not a loopback address: loadgen only sends to 127.0.0.0/8 or ::1", h)
	}
	return net.JoinHostPort(ip.Unmap().String(), port), u.Host, nil
}

// baselineProc is a running `loadgen baseline` child process.
type baselineProc struct {
	cmd  *exec.Cmd
	addr string
}

// startBaseline starts this executable as `loadgen baseline` on a free loopback port in its
// own process, so the empty handler does not share the generator's Go scheduler.
func startBaseline(ctx context.Context) (*baselineProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the loadgen executable to start the baseline server: %w", err)
	}
	cmd := exec.Command(exe, "baseline", "-listen", "127.0.0.1:0")
	// LOADGEN_CHILD tells a test binary standing in for loadgen (see TestMain) to act as it.
	cmd.Env = append(os.Environ(), "LOADGEN_CHILD=baseline")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("cannot start the baseline server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start the baseline server: %w", err)
	}
	p := &baselineProc{cmd: cmd}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out) // keep the pipe drained until the child exits
	}()
	select {
	case line, ok := <-lines:
		if a, found := strings.CutPrefix(line, "listening "); ok && found {
			p.addr = a
			return p, nil
		}
		_ = p.stop()
		return nil, fmt.Errorf("baseline server did not report its address (got %q)", line)
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	_ = p.stop()
	return nil, errors.New("baseline server did not start within 10s")
}

// stop ends the child with SIGTERM and waits for it.
func (p *baselineProc) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("cannot stop the baseline server: %w", err)
	}
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("baseline server failed: %w", err)
	}
	return nil
}

// runBaseline serves the empty handler: every request's body is read and answered 202 with no
// body, which is the least any event endpoint can do. It prints "listening ADDR" once bound.
func runBaseline(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to serve the empty handler on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, _, err := loopbackTarget(ctx, *listen); err != nil {
		fmt.Fprintf(stderr, "loadgen baseline: -listen: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen baseline: cannot listen on %s: %v\n", *listen, err)
		return 1
	}
	srv := newBaselineServer()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	select {
	case <-ctx.Done():
	case err := <-errc:
		fmt.Fprintf(stderr, "loadgen baseline: %v\n", err)
		return 1
	}
	if err := srv.ShutdownWithContext(context.Background()); err != nil {
		fmt.Fprintf(stderr, "loadgen baseline: cannot shut down: %v\n", err)
		return 1
	}
	// Shutdown closes only the listeners Serve has registered: stopped before the Serve
	// goroutine ran, Serve would then block in Accept. Closing ln ends it either way.
	_ = ln.Close()
	<-errc
	return 0
}

// newBaselineServer is the empty handler: the ceiling for any handler on this machine.
func newBaselineServer() *fasthttp.Server {
	return &fasthttp.Server{
		Name: "loadgen-baseline",
		Handler: func(ctx *fasthttp.RequestCtx) {
			_ = ctx.PostBody() // read (already buffered by fasthttp), as a real handler must
			ctx.SetStatusCode(fasthttp.StatusAccepted)
		},
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		IdleTimeout:  60 * time.Second,
	}
}
