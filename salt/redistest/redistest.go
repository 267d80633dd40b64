// Package redistest starts a real redis-server for tests: on a free loopback
// port, without persistence (--save "" --appendonly no), stopped when the
// test ends. It needs the redis-server binary (Debian package redis-server)
// on PATH or in /usr/bin.
package redistest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// Start runs a redis-server on a free 127.0.0.1 port with the extra
// command-line arguments args (for example "--requirepass", "secret") and
// returns its address (host:port) and a stop function. stop kills the
// process (SIGKILL, as a crash would) and waits for it; it may be called
// more than once and is also called when the test ends. Start fails the
// test if the server does not answer within 10 s.
func Start(t testing.TB, args ...string) (addr string, stop func()) {
	t.Helper()
	var lastErr error
	for range 3 { // the free port may be taken between probe and start
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("cannot find a free port: %v", err)
		}
		addr = ln.Addr().String()
		_ = ln.Close()
		stop, lastErr = start(t, addr, args, nil)
		if lastErr == nil {
			return addr, stop
		}
	}
	t.Fatalf("cannot start redis-server: %v", lastErr)
	return "", nil
}

// StartAt runs a redis-server on addr (a host:port that a previous Start
// returned, to simulate a restart, or the absolute path of a Unix socket,
// which no other process can take first) with the extra arguments args. The
// server starts empty. It returns the stop function, as Start does.
func StartAt(t testing.TB, addr string, args ...string) (stop func()) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		stop, err := start(t, addr, args, nil)
		if err == nil {
			return stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot start redis-server on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartTLS is Start for a server that speaks only TLS (rediss://) with the
// PEM certificate and key in certFile and keyFile (certFile also serves as
// the CA file Redis insists on); clients are not asked for certificates.
func StartTLS(t testing.TB, certFile, keyFile string, args ...string) (addr string, stop func()) {
	t.Helper()
	var lastErr error
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("cannot find a free port: %v", err)
		}
		addr = ln.Addr().String()
		_ = ln.Close()
		stop, lastErr = start(t, addr, args, &[2]string{certFile, keyFile})
		if lastErr == nil {
			return addr, stop
		}
	}
	t.Fatalf("cannot start redis-server with TLS: %v", lastErr)
	return "", nil
}

func start(t testing.TB, addr string, args []string, tlsFiles *[2]string) (func(), error) {
	t.Helper()
	var argv []string
	if isSocket(addr) {
		argv = []string{"--port", "0", "--unixsocket", addr, "--unixsocketperm", "700"}
	} else {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("cannot split %q: %w", addr, err)
		}
		argv = []string{"--port", port, "--bind", host}
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
	}
	argv = append(argv, "--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--loglevel", "warning")
	if tlsFiles != nil {
		_, port, _ := net.SplitHostPort(addr) // TLS servers are started on host:port only
		argv = append(argv, "--port", "0", "--tls-port", port, "--tls-cert-file", tlsFiles[0],
			"--tls-key-file", tlsFiles[1], "--tls-ca-cert-file", tlsFiles[0], "--tls-auth-clients", "no")
	}
	argv = append(argv, args...)
	cmd := exec.Command(bin, argv...)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Kill)
			<-exited
		})
	}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("redis-server exited: %s", strings.TrimSpace(out.String()))
		default:
		}
		if ping(addr, tlsFiles != nil) {
			t.Cleanup(stop)
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("redis-server on %s did not answer within %s", addr, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isSocket reports whether addr is the path of a Unix socket rather than a host:port.
func isSocket(addr string) bool { return strings.HasPrefix(addr, "/") }

// ping reports whether a Redis answers on addr. A server with requirepass
// answers PING with -NOAUTH, which still proves it is up.
func ping(addr string, useTLS bool) bool {
	var c net.Conn
	var err error
	switch {
	case useTLS:
		// Only a liveness probe: the test's client verifies the certificate.
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	case isSocket(addr):
		c, err = net.DialTimeout("unix", addr, time.Second)
	default:
		c, err = net.DialTimeout("tcp", addr, time.Second)
	}
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}
