package engine_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink/engine"
	"github.com/kyomi/collector/sink/engine/enginetest"
)

// srv is the engine the tests of this package share.
var srv *enginetest.Server

func TestMain(m *testing.M) {
	enginetest.RunLauncher()
	if dir := os.Getenv("ENGINE_TEST_SUPERVISOR"); dir != "" { // child of TestNoOrphan
		os.Exit(superviseAndWait(dir))
	}
	var err error
	srv, err = enginetest.Start(enginetest.Options{Local: true, MaxRestartWait: 500 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

// httpQuery runs sql over the HTTP interface as user (no credentials when user is empty) and
// returns the status and body.
func httpQuery(t *testing.T, addr, user, pass, sql string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader(sql))
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestQueriesWithCredentials(t *testing.T) {
	code, body := httpQuery(t, srv.HTTP, srv.User, srv.Password, "SELECT version(), currentUser()")
	if code != 200 || !strings.HasPrefix(body, "26.") || !strings.HasSuffix(body, "\tkyomi") {
		t.Fatalf("HTTP answered %d %q", code, body)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{srv.Native}, Auth: clickhouse.Auth{Username: srv.User, Password: srv.Password}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var user string
	if err := conn.QueryRow(context.Background(), "SELECT currentUser()").Scan(&user); err != nil || user != "kyomi" {
		t.Fatalf("native: user %q err %v", user, err)
	}
}

// TestDefaultUserRefused: no login works without the password, the passwordless default user
// included (its one session is the launcher's).
func TestDefaultUserRefused(t *testing.T) {
	for _, tc := range []struct{ name, user, pass, want string }{
		{"no credentials", "", "", "USER_SESSION_LIMIT_EXCEEDED"},
		{"default user", "default", "", "USER_SESSION_LIMIT_EXCEEDED"},
		{"wrong password", srv.User, "nope", "AUTHENTICATION_FAILED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := httpQuery(t, srv.HTTP, tc.user, tc.pass, "SELECT 1")
			if code == 200 || !strings.Contains(body, tc.want) {
				t.Fatalf("HTTP answered %d %q, want a refusal with %s", code, body, tc.want)
			}
		})
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{srv.Native}, Auth: clickhouse.Auth{Username: srv.User, Password: "nope"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "code: 516") {
		t.Fatalf("native login with a wrong password: %v, want code 516", err)
	}
}

// waitRestarted waits until the engine runs again after its restart number n.
func waitRestarted(t *testing.T, e *engine.Engine, n int64) {
	t.Helper()
	testkit.Eventually(t, 2*time.Minute, fmt.Sprintf("the engine up after restart %d", n), func() bool {
		return e.Up() && e.Restarts() >= n
	})
}

// TestNativeDefaultLoginAbortsEngine pins down a weakness of clickhouse-local as a server: a
// native-protocol login as default is refused (the launcher holds default's one session), but
// the refusal escapes the connection's handler and aborts the whole engine ("Terminate called
// for uncaught exception"). HTTP refuses the same login cleanly. Any local user can do this; the
// supervisor starts the engine again, and the collector's spool holds events meanwhile.
func TestNativeDefaultLoginAbortsEngine(t *testing.T) {
	e := srv.Engine
	before := e.Restarts()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{srv.Native}, Auth: clickhouse.Auth{Username: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Ping(context.Background()); err == nil {
		t.Fatal("native login as default: accepted")
	}
	waitRestarted(t, e, before+1)
	if code, body := httpQuery(t, srv.HTTP, srv.User, srv.Password, "SELECT 1"); code != 200 || body != "1" {
		t.Fatalf("after the restart: %d %q", code, body)
	}
}

// TestRestartAfterKill: the supervisor starts a killed engine again on the same ports, and the
// stored rows are still there.
func TestRestartAfterKill(t *testing.T) {
	e := srv.Engine
	for _, q := range []string{
		"CREATE TABLE IF NOT EXISTS default.kill_test (n UInt64) ENGINE = MergeTree ORDER BY n",
		"INSERT INTO default.kill_test SELECT number FROM numbers(1000)",
	} {
		if code, body := httpQuery(t, srv.HTTP, srv.User, srv.Password, q); code != 200 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
	}
	before := e.Restarts()
	pid := e.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitRestarted(t, e, before+1)
	if e.PID() == pid {
		t.Fatalf("same launcher pid %d after the restart", pid)
	}
	code, body := httpQuery(t, srv.HTTP, srv.User, srv.Password, "SELECT count() FROM default.kill_test")
	if code != 200 || body != "1000" {
		t.Fatalf("after restart: %d %q, want 1000 rows", code, body)
	}
}

func TestCredentialsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "engine", "credentials")
	c, err := engine.LoadOrCreateCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || c.User != engine.DefaultUser || len(c.Password) != 32 {
		t.Fatalf("credentials %+v, file %v %v", c, st.Mode(), err)
	}
	again, err := engine.LoadOrCreateCredentials(path)
	if err != nil || again != c {
		t.Fatalf("second load %+v %v, want the same %+v", again, err, c)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.LoadOrCreateCredentials(path); err == nil || !strings.Contains(err.Error(), "mode 644") {
		t.Fatalf("a file readable by others: %v, want a refusal", err)
	}
}

// superviseAndWait starts an engine in dir, prints its launcher's pid, and waits to be killed.
func superviseAndWait(dir string) int {
	e, err := engine.Start(context.Background(), engine.Config{
		Dir: filepath.Join(dir, "engine"), DataPath: filepath.Join(dir, "clickhouse"),
		Credentials: engine.Credentials{User: "kyomi", Password: "pw"},
		Command:     []string{os.Args[0]}, Env: []string{"KYOMI_ENGINETEST_LAUNCHER=1"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("engine %d %s\n", e.PID(), e.HTTPAddr())
	select {}
}

// TestNoOrphan: when the supervising process dies by SIGKILL, its engine dies with it, and the
// next start on the same directory works.
func TestNoOrphan(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills processes")
	}
	dir := t.TempDir()
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "ENGINE_TEST_SUPERVISOR="+dir)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("round %d: supervisor said nothing: %v", round, err)
		}
		var pid int
		var addr string
		if _, err := fmt.Sscanf(line, "engine %d %s", &pid, &addr); err != nil {
			t.Fatalf("round %d: %q", round, line)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Cleanup(func() {
			if engine.ProcessRunning(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("round %d: engine %d to exit with its supervisor", round, pid), func() bool {
			return !engine.ProcessRunning(pid)
		})
		resp, err := http.Get("http://" + addr + "/ping")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("round %d: %s still answers %q (engine was %d)", round, addr, b, pid)
		}
	}
}

// TestConnectionResets measures how often a client connection cut with a TCP reset in the
// middle of a request aborts the engine (clickhouse-local lets some "Connection reset by peer"
// escape; a collector killed in the middle of an insert does this), on each protocol, and checks
// that the supervisor always brings it back. The counts are logged (go test -v -run
// TestConnectionResets ./sink/engine).
func TestConnectionResets(t *testing.T) {
	if testing.Short() {
		t.Skip("aborts and restarts the engine")
	}
	const rounds = 10
	e := srv.Engine
	auth := "Authorization: Basic " + basic(srv.User, srv.Password) + "\r\n"
	for _, tc := range []struct {
		name, addr string
		payload    []byte
	}{
		// An insert whose body stops a third of the way.
		{"http", srv.HTTP, []byte("POST /?query=INSERT%20INTO%20default.reset_test%20FORMAT%20TSV HTTP/1.1\r\nHost: x\r\n" + auth +
			"Content-Length: 3000000\r\n\r\n" + strings.Repeat("12345\n", 170000))},
		// A native hello cut short.
		{"native", srv.Native, []byte{0, 10, 'c', 'l', 'i', 'c', 'k', 'h'}},
	} {
		if code, body := httpQuery(t, srv.HTTP, srv.User, srv.Password, "CREATE TABLE IF NOT EXISTS default.reset_test (n UInt64) ENGINE = MergeTree ORDER BY n"); code != 200 {
			t.Fatal(body)
		}
		aborts := 0
		for range rounds {
			waitRestarted(t, e, e.Restarts())
			before := e.Restarts()
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write(tc.payload)
			time.Sleep(20 * time.Millisecond)
			_ = c.(*net.TCPConn).SetLinger(0) // close with a reset
			c.Close()
			time.Sleep(200 * time.Millisecond)
			if e.Restarts() > before || !e.Up() {
				aborts++
				waitRestarted(t, e, before+1)
			}
		}
		t.Logf("%s: %d of %d reset connections aborted the engine", tc.name, aborts, rounds)
	}
	if code, body := httpQuery(t, srv.HTTP, srv.User, srv.Password, "SELECT 1"); code != 200 || body != "1" {
		t.Fatalf("engine after the resets: %d %q", code, body)
	}
}

func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// TestGoKeepsSignalHandlers: the launcher keeps the engine's own signal handlers off, so the Go
// runtime still handles the faults it needs in the engine's process. A SIGABRT to a running
// engine is answered by Go's handler (its "SIGABRT: abort" report and goroutine dump in the
// engine's log), not by ClickHouse's fatal-signal handler ("Received signal").
func TestGoKeepsSignalHandlers(t *testing.T) {
	dir := t.TempDir()
	s, err := enginetest.Start(enginetest.Options{Local: true, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if code, body := httpQuery(t, s.HTTP, s.User, s.Password, "SELECT 1"); code != 200 || body != "1" {
		t.Fatalf("engine does not answer: %d %q", code, body)
	}
	if err := syscall.Kill(s.Engine.PID(), syscall.SIGABRT); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "engine", "engine.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("engine log:\n%s", b)
		}
	})
	testkit.Eventually(t, 30*time.Second, "Go's report of SIGABRT in the engine's log", func() bool {
		b, _ := os.ReadFile(logPath)
		log := string(b)
		if strings.Contains(log, "Received signal") {
			t.Fatalf("the engine's own handler took SIGABRT:\n%s", log)
		}
		return strings.Contains(log, "SIGABRT: abort") && strings.Contains(log, "goroutine ")
	})
}

// TestProcessRunning: this process runs; a child that exited but is not yet reaped (a zombie
// whose threads are all gone) does not, nor does one reaped.
func TestProcessRunning(t *testing.T) {
	if !engine.ProcessRunning(os.Getpid()) {
		t.Fatal("this process is not running")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	testkit.Eventually(t, 10*time.Second, "the child to exit (a zombie)", func() bool { return !engine.ProcessRunning(pid) })
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err != nil || !strings.Contains(string(st), ") Z ") {
		t.Fatalf("the child is not a zombie before it is reaped: %q %v", st, err)
	}
	_ = cmd.Wait()
	if engine.ProcessRunning(pid) {
		t.Fatal("a reaped child runs")
	}
}
