package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/startline"
	"github.com/kyomi/collector/internal/syncbuf"
	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/internal/testring"
	"github.com/kyomi/collector/sink/engine/enginetest"
)

// binPath is the collector binary built once for the end-to-end tests in this package.
var binPath string

func TestMain(m *testing.M) {
	enginetest.RunLauncher() // the 2-shard tests' servers are this binary, started again
	dir, err := os.MkdirTemp("", "collector-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "collector")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot build the collector binary:", err)
		os.Exit(1)
	}
	removeRing, err := testring.Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	removeRing()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running collector process started by a test.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string // host:port it serves on; "" if it exited before it listened
	logs   *lockedBuffer
	done   chan error    // the exit, for the test to receive once
	exited chan struct{} // closed at the exit
}

// lockedBuffer collects log or process output while the test reads it.
type lockedBuffer = syncbuf.Buffer

// startCollector runs `collector serve` with args plus -listen, and waits until /readyz answers 200.
func startCollector(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := startCollectorNoWait(t, env, args...)
	p.waitReady(60 * time.Second)
	return p
}

// startCollectorNoWait runs `collector serve` with args on a port the kernel picks, and returns once
// the process listens (p.addr, from its "collector started" log line) or exits (p.addr ""); see
// package startline for why.
func startCollectorNoWait(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"serve", "-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start collector: %v", err)
	}
	p := &proc{t: t, cmd: cmd, logs: logs, done: make(chan error, 1), exited: make(chan struct{})}
	go func() {
		p.done <- cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("collector log:\n%s", logs.String())
		}
	})
	p.addr = p.listenAddr(60 * time.Second)
	return p
}

// listenAddr waits for the "collector started" log line and returns the address it names, or ""
// if the process exits first.
func (p *proc) listenAddr(limit time.Duration) string {
	p.t.Helper()
	var addr string
	testkit.Eventually(p.t, limit, "the collector's start line or its exit", func() bool {
		if addr = startline.Addr(p.logs.String()); addr != "" {
			return true
		}
		select {
		case <-p.exited:
			return true
		default:
			return false
		}
	})
	return addr
}

// waitReady waits until /readyz answers 200; the test fails at once if the process exits.
func (p *proc) waitReady(limit time.Duration) {
	p.t.Helper()
	p.waitAnswer(p.t, "/readyz", limit)
}

// waitAnswer waits until path answers 200 on p; the test fails at once if the process exits.
func (p *proc) waitAnswer(t *testing.T, path string, limit time.Duration) {
	t.Helper()
	testkit.Eventually(t, limit, path+" to answer 200", func() bool {
		select {
		case err := <-p.done:
			t.Fatalf("collector exited before %s answered 200: %v\n%s", path, err, p.logs.String())
		default:
		}
		resp, err := http.Get("http://" + p.addr + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// stop sends sig and waits for the process to exit, returning its exit error.
func (p *proc) stop(sig syscall.Signal, limit time.Duration) error {
	p.t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		return err
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("collector did not exit within %s of %v\n%s", limit, sig, p.logs.String())
		return nil
	}
}

// beacon is one POST /api/event.
type beacon struct {
	body   string
	ip     string // sent as X-Forwarded-For (the collector trusts 127.0.0.1)
	ua     string
	origin string
	ctype  string
}

const chromeUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

func (p *proc) send(t *testing.T, b beacon) (int, http.Header, string) {
	t.Helper()
	ctype := b.ctype
	if ctype == "" {
		ctype = "text/plain"
	}
	req, err := http.NewRequest("POST", "http://"+p.addr+"/api/event", strings.NewReader(b.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	if b.ua != "" {
		req.Header.Set("User-Agent", b.ua)
	}
	if b.ip != "" {
		req.Header.Set("X-Forwarded-For", b.ip)
	}
	if b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /api/event: %v", err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, body.String()
}

// sql runs `collector sql` against dataDir and returns the TSV lines.
func sql(t *testing.T, dataDir, query string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, "sql", "-data-dir", dataDir, query).CombinedOutput()
	if err != nil {
		t.Fatalf("collector sql %q: %v\n%s", query, err, out)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
