package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/engine"
	"github.com/kyomi/collector/sink/engine/enginetest"
)

// startServer starts a ClickHouse server (the built binary's engine subcommand) on the given
// ports, or free ones when they are 0, and returns it; it stops with the test.
func startServer(t *testing.T, tcp, http int) *engine.Engine {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := engine.Start(ctx, engine.Config{
		Dir: filepath.Join(dir, "engine"), DataPath: filepath.Join(dir, "clickhouse"), TCPPort: tcp, HTTPPort: http,
		Credentials: engine.Credentials{User: "operator", Password: "pw-e2e"},
		Command:     []string{binPath, "engine"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

// TestServerModeStartsWhileDown: with -clickhouse naming a server that is not running, the
// collector starts, is ready (its spool takes events) and acknowledges events; once the server
// comes up it creates the database, migrates and ships them.
func TestServerModeStartsWhileDown(t *testing.T) {
	ports, err := engine.FreePorts("127.0.0.1", 2)
	if err != nil {
		t.Fatal(err)
	}
	_, args := e2eEnv(t)
	dsn := fmt.Sprintf("clickhouse://operator:pw-e2e@127.0.0.1:%d/analytics?http_port=%d&dial_timeout=1s", ports[0], ports[1])
	p := startCollector(t, nil, append(args, "-clickhouse", dsn)...)
	for i := range 5 {
		b := beacon{body: fmt.Sprintf(`{"n":"pageview","u":"https://acme.example/down-%d","d":"acme.example"}`, i), ip: "203.0.113.7", ua: chromeUA}
		if code, h, body := p.send(t, b); code != 202 || h.Get("X-Collector-Dropped") != "" {
			t.Fatalf("event %d while ClickHouse is down: %d %q", i, code, body)
		}
	}
	startServer(t, ports[0], ports[1])
	testkit.Eventually(t, time.Minute, "the 5 events shipped once the server is up", func() bool {
		out, err := exec.Command(binPath, "sql", "-clickhouse", dsn, "SELECT count() FROM analytics.events WHERE startsWith(pathname, '/down-')").CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "5"
	})
	if err := p.stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.logs.String())
	}
}

// TestVerifySchemaRefusesMismatch: with -clickhouse-verify-schema the collector applies no
// migration and refuses to start on a database without the events table, naming what is missing;
// once the schema is there it starts.
func TestVerifySchemaRefusesMismatch(t *testing.T) {
	e := startServer(t, 0, 0)
	_, args := e2eEnv(t)
	dsn := e.DSN("analytics")
	p := startCollectorNoWait(t, nil, append(args, "-clickhouse", dsn, "-clickhouse-verify-schema")...)
	select {
	case err := <-p.done:
		if code := exitCode(err); code != 1 || !strings.Contains(p.logs.String(), "analytics.events does not exist") {
			t.Fatalf("exit %d, want 1 naming the missing table:\n%s", code, p.logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("collector still running with no schema:\n%s", p.logs.String())
	}
	// The schema an operator makes: here, the collector's own migrations.
	p2 := startCollector(t, nil, append(args, "-clickhouse", dsn)...)
	if err := p2.stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatal(err)
	}
	p3 := startCollector(t, nil, append(args, "-clickhouse", dsn, "-clickhouse-verify-schema")...)
	if err := p3.stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestEngineDiesWithCollector: the managed engine is the collector's child; when the collector is
// SIGKILLed (no chance to stop it), the engine ends too, and the next start on the same data
// directory works and keeps the rows.
func TestEngineDiesWithCollector(t *testing.T) {
	dataDir, args := e2eEnv(t)
	p := startCollector(t, nil, args...)
	b := beacon{body: `{"n":"pageview","u":"https://acme.example/orphan","d":"acme.example"}`, ip: "203.0.113.9", ua: chromeUA}
	if code, _, body := p.send(t, b); code != 202 {
		t.Fatalf("event: %d %q", code, body)
	}
	pid := enginePID(dataDir)
	if pid == 0 {
		t.Fatal("no engine pid recorded")
	}
	_ = p.stop(syscall.SIGKILL, 30*time.Second)
	t.Cleanup(func() {
		if engine.ProcessRunning(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("engine %d to exit with its collector", pid), func() bool {
		return !engine.ProcessRunning(pid)
	})
	p2 := startCollector(t, nil, args...)
	if err := p2.stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := sql(t, dataDir, "SELECT count() FROM analytics.events WHERE pathname = '/orphan'"); len(got) != 1 || got[0] != "1" {
		t.Fatalf("after the restart: %v, want 1 row", got)
	}
}

// TestParityManagedAndServer sends the same events to a collector on the managed engine and to
// one writing to a ClickHouse server (-clickhouse): the stored rows are the same on every column
// but ts, visitor_id (the local salt differs) and batch_token.
func TestParityManagedAndServer(t *testing.T) {
	e := startServer(t, 0, 0)
	dsn := e.DSN("analytics")
	dirA, argsA := e2eEnv(t)
	_, argsB := e2eEnv(t)
	managed := startCollector(t, nil, argsA...)
	server := startCollector(t, nil, append(argsB, "-clickhouse", dsn)...)
	beacons := []beacon{
		{body: `{"n":"pageview","u":"https://acme.example/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=launch","d":"acme.example","r":"https://www.google.com/search?q=x"}`, ip: "203.0.113.7", ua: chromeUA},
		{body: `{"n":"Signup","u":"https://acme.example/signup","d":"acme.example","p":{"plan":"pro","author":"ünïcode"},"$":{"amount":"12.5","currency":"EUR"}}`, ip: "203.0.113.7", ua: chromeUA},
		{body: `{"n":"engagement","u":"https://acme.example/pricing","d":"acme.example","sd":73,"e":5400,"v":36}`, ip: "2001:db8::1", ua: chromeUA},
		{body: `{"n":"pageview","u":"https://www.acme.example/#/app","d":"www.acme.example","h":1,"i":false}`, ip: "198.51.100.4", ua: chromeUA},
	}
	for _, p := range []*proc{managed, server} {
		for i, b := range beacons {
			if code, h, body := p.send(t, b); code != 202 || h.Get("X-Collector-Dropped") != "" {
				t.Fatalf("beacon %d: %d %q", i, code, body)
			}
		}
		if err := p.stop(syscall.SIGTERM, time.Minute); err != nil {
			t.Fatalf("SIGTERM: %v\n%s", err, p.logs.String())
		}
	}
	const q = "SELECT * EXCEPT (ts, visitor_id, batch_token) FROM analytics.events ORDER BY name, pathname FORMAT TSV"
	a := sql(t, dirA, q)
	out, err := exec.Command(binPath, "sql", "-clickhouse", dsn, q).CombinedOutput()
	if err != nil {
		t.Fatalf("collector sql -clickhouse: %v\n%s", err, out)
	}
	b := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(a) != len(beacons) || strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("managed engine rows:\n%s\nserver rows:\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
}

// TestPinnedEnginePorts runs the managed engine on ports the operator pins (for Grafana's
// ClickHouse data source): the start line names them, an HTTP client with the credentials file's
// user reads the rows there, the passwordless default user is refused, and a pinned port that is
// taken refuses the start with one sentence naming it.
func TestPinnedEnginePorts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary and its engine; run without -short")
	}
	ports, err := engine.FreePorts("127.0.0.1", 2)
	if err != nil {
		t.Fatal(err)
	}
	dataDir, args := e2eEnv(t)
	pin := []string{"-engine-native-port", strconv.Itoa(ports[0]), "-engine-http-port", strconv.Itoa(ports[1])}
	p := startCollector(t, nil, append(args, pin...)...)
	logs := p.logs.String()
	wantHTTP := fmt.Sprintf(`"engine_http":"127.0.0.1:%d"`, ports[1])
	wantNative := fmt.Sprintf(`"engine_native":"127.0.0.1:%d"`, ports[0])
	if !strings.Contains(logs, wantHTTP) || !strings.Contains(logs, wantNative) {
		t.Fatalf("start line does not name the pinned ports %s, %s:\n%s", wantHTTP, wantNative, logs)
	}
	if code, _, body := p.send(t, beacon{body: `{"n":"pageview","u":"https://acme.example/pinned","d":"acme.example"}`, ip: "203.0.113.8", ua: chromeUA}); code != 202 {
		t.Fatalf("event: %d %s", code, body)
	}
	creds, err := os.ReadFile(filepath.Join(dataDir, "engine", "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	user, pass, _ := strings.Cut(strings.TrimSpace(string(creds)), ":")
	ask := func(user, pass string) (int, string) {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/", ports[1]),
			strings.NewReader("SELECT count() FROM analytics.events WHERE pathname = '/pinned'"))
		req.Header.Set("X-ClickHouse-User", user)
		if pass != "" {
			req.Header.Set("X-ClickHouse-Key", pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	testkit.Eventually(t, 30*time.Second, "the row readable on the pinned HTTP port", func() bool {
		code, body := ask(user, pass)
		return code == 200 && body == "1"
	})
	if code, _ := ask("default", ""); code == 200 {
		t.Fatal("the passwordless default user can read the engine")
	}
	// A second collector with another data directory but the same pinned ports cannot start.
	_, args2 := e2eEnv(t)
	p2 := startCollectorNoWait(t, nil, append(args2, pin...)...)
	select {
	case err := <-p2.done:
		if code := exitCode(err); code != 1 || !strings.Contains(p2.logs.String(), fmt.Sprintf("cannot use the pinned engine port %d", ports[0])) {
			t.Fatalf("exit %d, want 1 naming the taken port:\n%s", code, p2.logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("second collector started on taken pinned ports:\n%s", p2.logs.String())
	}
	if err := p.stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.logs.String())
	}
}

// TestBinaryThroughDistributed: the built binary on a 2-shard cluster whose schema an operator
// made (a MergeTree events_local on each shard and a Distributed events over them, as
// ReplicatedMergeTree cannot run here). With -clickhouse-cluster and -clickhouse-verify-schema it
// starts without migrating, its events land on both shards by cityHash64(workspace_id), a SIGTERM
// ships every acknowledged one, and a token of one workspace reads that workspace's rows, and no
// other's, through the Distributed table.
func TestBinaryThroughDistributed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers and the built binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stmts, err := sink.MigrationSQL(sink.SchemaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := enginetest.StartOperatorCluster("kyomi_e2e", 2, sink.Database, stmts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	shards := make([]*sink.Server, len(c.Shards))
	for i, srv := range c.Shards {
		if shards[i], err = sink.OpenServer(srv.DSN("default")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { shards[i].Close() })
	}

	// Eight workspaces: cityHash64 puts some on each shard (checked below).
	const workspaces, per = 8, 5
	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("tiers:\n  free: { retention_days: 30 }\nworkspaces:\n")
	for w := range workspaces {
		fmt.Fprintf(&cfg, "  - { id: ws_e2e_%d, tier: free, domains: [w%d.example] }\n", w, w)
	}
	cfgPath := filepath.Join(dir, "workspaces.yaml")
	testkit.WriteFile(t, cfgPath, []byte(cfg.String()))
	dataDir := filepath.Join(dir, "data")
	p := startCollector(t, nil, "-config", cfgPath, "-data-dir", dataDir, "-trusted-proxies", "127.0.0.1/32",
		"-batch-age", "200ms", "-clickhouse", c.Shards[0].DSN(sink.Database),
		"-clickhouse-cluster", c.Name, "-clickhouse-verify-schema")
	for w := range workspaces {
		for i := range per {
			b := beacon{body: fmt.Sprintf(`{"n":"pageview","u":"https://w%d.example/p-%d","d":"w%d.example"}`, w, i, w),
				ip: fmt.Sprintf("198.51.100.%d", 10*w+i), ua: chromeUA}
			if code, _, body := p.send(t, b); code != 202 {
				t.Fatalf("event %d of ws_e2e_%d: %d %q", i, w, code, body)
			}
		}
	}

	// The query path reads through the Distributed table, scoped to the token's workspace.
	token, _, code := tokenCLI(t, "issue", "-wid", "ws_e2e_0", "-data-dir", dataDir)
	if code != 0 {
		t.Fatalf("token issue: exit %d", code)
	}
	token = strings.TrimSpace(token)
	read := `{"id":"r","op":"execute_query","params":{"sql":"SELECT count(), uniqExact(workspace_id), any(workspace_id) FROM events"}}`
	testkit.Eventually(t, 30*time.Second, "ws_e2e_0's events readable through the Distributed table", func() bool {
		status, a := postQuery(t, p.addr, token, read)
		if status != 200 || a.Type != "result" {
			t.Fatalf("query: %d %+v", status, a)
		}
		return len(a.Result.Rows) == 1 && fmt.Sprint(a.Result.Rows[0][0]) == fmt.Sprint(per)
	})
	status, a := postQuery(t, p.addr, token, read)
	if status != 200 || len(a.Result.Rows) != 1 || fmt.Sprint(a.Result.Rows[0][1]) != "1" || a.Result.Rows[0][2] != "ws_e2e_0" {
		t.Fatalf("a ws_e2e_0 token read %d %+v, want its own %d rows only", status, a, per)
	}
	if err := p.stop(syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.logs.String())
	}

	total := 0
	for i, s := range shards {
		res, err := s.Select(ctx, fmt.Sprintf("SELECT count(), countIf(cityHash64(workspace_id) %% 2 != %d) FROM %s.events_local", i, sink.Database), nil)
		if err != nil {
			t.Fatal(err)
		}
		n, wrong := fmt.Sprint(res.Rows[0][0]), fmt.Sprint(res.Rows[0][1])
		if n == "0" || wrong != "0" {
			t.Fatalf("shard %d holds %s rows, %s of them of the other shard's workspaces", i+1, n, wrong)
		}
		k, _ := strconv.Atoi(n)
		total += k
	}
	if total != workspaces*per {
		t.Fatalf("the shards hold %d rows, want every acknowledged event once: %d", total, workspaces*per)
	}
	res, err := shards[1].Select(ctx, "SELECT workspace_id, count() FROM "+sink.Database+".events GROUP BY workspace_id ORDER BY workspace_id", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != workspaces {
		t.Fatalf("through the Distributed table: %v, want %d workspaces", res.Rows, workspaces)
	}
	for _, r := range res.Rows {
		if fmt.Sprint(r[1]) != fmt.Sprint(per) {
			t.Fatalf("through the Distributed table: %v, want %d rows of each workspace", res.Rows, per)
		}
	}
}
