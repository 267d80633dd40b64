package query

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/kyomi/collector/internal/syncbuf"
	"github.com/kyomi/collector/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
)

// syncBuffer collects log or process output while the test reads it.
type syncBuffer = syncbuf.Buffer

// agentEnv is a Handler over store with a JWKS file and a revocation file
// that is re-read on every check, and the key that signs its tokens.
type agentEnv struct {
	h       *Handler
	key     *testkit.Key
	reg     *prometheus.Registry
	revoked string // path of the revocation file
	logs    *syncBuffer
}

func newAgentEnv(t *testing.T, store Store) *agentEnv {
	t.Helper()
	dir := t.TempDir()
	key := testkit.NewKey(t, "k1")
	jwks := filepath.Join(dir, "jwks.json")
	testkit.WriteFile(t, jwks, testkit.JWKS(t, key))
	revoked := filepath.Join(dir, "revoked")
	testkit.WriteFile(t, revoked, []byte("\n"))
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	h, err := NewHandler(Config{}, Deps{
		Store:      store,
		Verifier:   &Verifier{Keys: &JWKS{Location: jwks}, Revoker: &FileRevoker{Path: revoked, CheckEvery: time.Nanosecond}},
		Logger:     slog.New(slog.NewJSONHandler(logs, nil)),
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &agentEnv{h: h, key: key, reg: reg, revoked: revoked, logs: logs}
}

// token signs a Connect token for workspace wid whose url claim is u.
func (e *agentEnv) token(t *testing.T, wid, u string) string {
	t.Helper()
	return e.key.Sign(t, e.key.Header(), testkit.ConnectClaims(wid, map[string]any{"url": u}))
}

// static is a token source that always yields token.
func static(token string) func() (string, error) {
	return func() (string, error) { return token, nil }
}

// fileSource is the token source agent mode uses: the file read again at every call.
func fileSource(path string) func() (string, error) {
	return func() (string, error) { return ReadTokenFile(path) }
}

// runFileAgent writes token to a fresh token file and runs e's agent with cfg, reading that file
// (cfg.Token is set here). It returns the file, the cancel that stops the agent, and the channel
// that receives Run's result.
func runFileAgent(t *testing.T, e *agentEnv, token string, cfg AgentConfig) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "connect.jwt")
	testkit.WriteFile(t, file, []byte(token+"\n"))
	cfg.Token = fileSource(file)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return file, cancel, run(ctx, e.agent(t, cfg))
}

// waitLog waits until the agent's logs hold msg at least n times.
func waitLog(t *testing.T, e *agentEnv, msg string, n int) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%d log lines %q", n, msg), func() bool {
		return strings.Count(e.logs.String(), msg) >= n
	})
}

// agent makes an Agent with fast test timings; cfg.Token must be set.
func (e *agentEnv) agent(t *testing.T, cfg AgentConfig) *Agent {
	t.Helper()
	cfg.Registerer = e.reg
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = 10 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 50 * time.Millisecond
	}
	a, err := e.h.NewAgent(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// run starts a.Run and returns a channel with its result.
func run(ctx context.Context, a *Agent) <-chan error {
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return done
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop")
		return nil
	}
}

// backend is an in-test Kyomi Connect backend: it accepts agents' WebSocket
// upgrades that carry the expected bearer token and hands each connection
// to the test. Upgrades with another token get 401.
type backend struct {
	srv     *httptest.Server
	url     string // ws:// URL with a query string the logs must never show
	path    string // url's path, unique to this backend
	want    atomic.Pointer[string]
	conns   chan *websocket.Conn
	dials   atomic.Int32 // upgrade requests seen, accepted or not
	mu      sync.Mutex
	dialAt  []time.Time
	headers []string // Authorization headers seen
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{conns: make(chan *websocket.Conn, 16), path: "/agent/v1/" + rand.Text()}
	up := websocket.Upgrader{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Tests of other packages, run at the same time, poll ports they
		// found free (cmd/collector's /readyz), and their agents redial
		// backends that are gone: such a request may reach this server if
		// it took that port. Only this backend's own path counts.
		if r.URL.Path != b.path {
			http.NotFound(w, r)
			return
		}
		b.dials.Add(1)
		auth := r.Header.Get("Authorization")
		b.mu.Lock()
		b.dialAt = append(b.dialAt, time.Now())
		b.headers = append(b.headers, auth)
		b.mu.Unlock()
		if want := b.want.Load(); want == nil || auth != "Bearer "+*want {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.conns <- conn
	}))
	t.Cleanup(b.srv.Close)
	b.url = "ws://" + b.srv.Listener.Addr().String() + b.path + "?secret=QSECRET"
	return b
}

func (b *backend) accept(t *testing.T) *websocket.Conn {
	t.Helper()
	select {
	case c := <-b.conns:
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not connect")
		return nil
	}
}

// ask sends one request on c and reads one answer.
func ask(t *testing.T, c *websocket.Conn, msg string) Response {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	var r Response
	if err := c.ReadJSON(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// resultJSON is r's result as JSON, to look for a field in.
func resultJSON(r Response) string {
	data, _ := json.Marshal(r.Result)
	return string(data)
}

// waitGauge waits until the gauge name has value want.
func waitGauge(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%s = %v", name, want), func() bool {
		return testkit.Metric(t, reg, name) == want
	})
}

// TestAgentServesBackend drives the agent from a backend that sends many
// execute_query, ping and list_tables messages at once on one connection:
// every id gets exactly its own answer, statements run concurrently, and
// results hold the token's workspace only.
func TestAgentServesBackend(t *testing.T) {
	leakCheck(t)
	store := &slowStore{Store: testStore, delay: 20 * time.Millisecond}
	e := newAgentEnv(t, store)
	b := startBackend(t)
	token := e.token(t, "ws_a", b.url)
	b.want.Store(&token)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := run(ctx, e.agent(t, AgentConfig{Token: static(token)}))
	c := b.accept(t)

	type check struct {
		msg  string
		want string // substring of the answer
	}
	checks := map[string]check{}
	for i := 0; i < 12; i++ {
		checks[fmt.Sprintf("q%d", i)] = check{fmt.Sprintf(`{"id":"q%d","op":"execute_query","params":{"sql":"SELECT %d AS i, count() AS n FROM events"}}`, i, i), fmt.Sprintf(`"rows":[[%d,"8"]]`, i)}
		checks[fmt.Sprintf("p%d", i)] = check{fmt.Sprintf(`{"id":"p%d","op":"ping"}`, i), `"workspace":"ws_a"`}
		checks[fmt.Sprintf("t%d", i)] = check{fmt.Sprintf(`{"id":"t%d","op":"list_tables"}`, i), `"rows":[["events"]]`}
	}
	checks["other"] = check{`{"id":"other","op":"execute_query","params":{"sql":"SELECT count() AS n FROM events WHERE workspace_id = 'ws_b'"}}`, `"rows":[["0"]]`}
	checks["wids"] = check{`{"id":"wids","op":"execute_query","params":{"sql":"SELECT DISTINCT workspace_id FROM events"}}`, `"rows":[["ws_a"]]`}
	checks["escape"] = check{`{"id":"escape","op":"execute_query","params":{"sql":"SELECT * FROM analytics.other"}}`, `"code":"query_refused"`}

	var wmu sync.Mutex
	var senders sync.WaitGroup
	ids := make([]string, 0, len(checks))
	for id := range checks {
		ids = append(ids, id)
	}
	for g := 0; g < 3; g++ {
		senders.Go(func() {
			for i := g; i < len(ids); i += 3 {
				wmu.Lock()
				err := c.WriteMessage(websocket.TextMessage, []byte(checks[ids[i]].msg))
				wmu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	seen := map[string]bool{}
	for len(seen) < len(checks) {
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %d answers: %v", len(seen), err)
		}
		var r Response
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("bad answer %s", data)
		}
		ck, ok := checks[r.ID]
		if !ok || seen[r.ID] {
			t.Fatalf("unexpected or duplicate answer id %q: %s", r.ID, data)
		}
		seen[r.ID] = true
		if !strings.Contains(string(data), ck.want) {
			t.Errorf("answer to %s is %s, want %s", r.ID, data, ck.want)
		}
		if leaked(string(data)) || strings.Contains(string(data), token) {
			t.Errorf("answer to %s leaks: %s", r.ID, data)
		}
	}
	senders.Wait()
	if m := store.max.Load(); m < 2 {
		t.Errorf("at most %d statement ran at once, want concurrent requests", m)
	}
	if g := testkit.Metric(t, e.reg, "collector_connect_agent_connected"); g != 1 {
		t.Errorf("collector_connect_agent_connected = %v while connected", g)
	}
	b.mu.Lock()
	hdr := b.headers[0]
	b.mu.Unlock()
	if hdr != "Bearer "+token {
		t.Errorf("Authorization header %q", hdr)
	}

	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if g := testkit.Metric(t, e.reg, "collector_connect_agent_connected"); g != 0 {
		t.Errorf("collector_connect_agent_connected = %v after stop", g)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "connect agent connected") || !strings.Contains(logs, "connect agent disconnected") {
		t.Errorf("connect and disconnect not logged:\n%s", logs)
	}
	if strings.Contains(logs, token) || strings.Contains(logs, "QSECRET") {
		t.Errorf("logs carry the token or the URL query string:\n%s", logs)
	}
	c.Close()
	b.srv.CloseClientConnections()
}

// TestAgentReconnectsWithBackoff has the backend drop the first connections
// at once: the agent redials after waits that grow, counts each reconnect,
// then serves the connection that stays. Closing the Handler stops it.
func TestAgentReconnectsWithBackoff(t *testing.T) {
	e := newAgentEnv(t, testStore)
	b := startBackend(t)
	token := e.token(t, "ws_a", b.url)
	b.want.Store(&token)
	const base = 40 * time.Millisecond
	done := run(context.Background(), e.agent(t, AgentConfig{Token: static(token), BackoffBase: base, BackoffMax: 4 * base, StableAfter: time.Hour}))
	const drops = 4
	for i := 0; i < drops; i++ {
		c := b.accept(t)
		waitGauge(t, e.reg, "collector_connect_agent_connected", 1)
		c.Close()
	}
	c := b.accept(t)
	if r := ask(t, c, `{"id":"after","op":"ping"}`); r.ID != "after" || r.Type != "result" {
		t.Fatalf("ping after reconnects: %+v", r)
	}
	if n := testkit.Metric(t, e.reg, "collector_connect_agent_reconnects_total"); n != drops {
		t.Errorf("collector_connect_agent_reconnects_total = %v, want %d", n, drops)
	}
	b.mu.Lock()
	at := append([]time.Time(nil), b.dialAt...)
	b.mu.Unlock()
	// Steps base, 2base, 4base, 4base (max); each wait is at least half its step.
	for i, step := range []time.Duration{base, 2 * base, 4 * base, 4 * base} {
		if gap := at[i+1].Sub(at[i]); gap < step/2 {
			t.Errorf("redial %d came %s after the previous dial, want >= %s", i+1, gap, step/2)
		}
	}
	e.h.Close()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run after Handler.Close: %v", err)
	}
}

// TestAgentRotatedToken rotates the token file while connected: the open
// connection keeps serving with token A and its workspace, and once the
// backend drops it, the agent redials with token B from the file and serves
// B's workspace (a rotation may change the workspace: the token defines the
// scope). No token reaches the logs.
func TestAgentRotatedToken(t *testing.T) {
	leakCheck(t)
	e := newAgentEnv(t, testStore)
	b := startBackend(t)
	tokenA := e.token(t, "ws_a", b.url)
	tokenB := e.key.Sign(t, e.key.Header(), testkit.ConnectClaims("ws_b", map[string]any{"url": b.url, "jti": "jti-b"}))
	b.want.Store(&tokenA)
	file, cancel, done := runFileAgent(t, e, tokenA, AgentConfig{PingInterval: 200 * time.Millisecond})

	c := b.accept(t)
	if r := ask(t, c, `{"id":"a1","op":"ping"}`); r.Type != "result" || !strings.Contains(resultJSON(r), `"workspace":"ws_a"`) {
		t.Fatalf("ping with token A: %+v", r)
	}
	testkit.WriteFile(t, file, []byte(tokenB+"\n"))
	b.want.Store(&tokenB)
	// The open connection keeps token A: through a ping of the agent (sent after its token check)
	// and the requests around it. A ping read after the answer to a request sent after the
	// rotation was itself sent after the rotation: the frames of a connection arrive in order.
	var pings atomic.Int32
	c.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	askA := func(id string) {
		t.Helper()
		if r := ask(t, c, `{"id":"`+id+`","op":"ping"}`); r.Type != "result" || !strings.Contains(resultJSON(r), `"workspace":"ws_a"`) {
			t.Fatalf("ping %s on the open connection after rotation: %+v", id, r)
		}
	}
	askA("a2")
	pings.Store(0)
	testkit.Eventually(t, 10*time.Second, "a ping of the agent after the rotation", func() bool {
		askA("a3")
		return pings.Load() > 0
	})
	c.Close()

	c = b.accept(t)
	if r := ask(t, c, `{"id":"b1","op":"ping"}`); r.Type != "result" || !strings.Contains(resultJSON(r), `"workspace":"ws_b"`) {
		t.Fatalf("ping after reconnect: %+v", r)
	}
	b.mu.Lock()
	headers := append([]string(nil), b.headers...)
	b.mu.Unlock()
	if len(headers) != 2 || headers[0] != "Bearer "+tokenA || headers[1] != "Bearer "+tokenB {
		t.Fatalf("backend saw %d dials, want A then B", len(headers))
	}
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "another workspace") {
		t.Errorf("workspace change not logged:\n%s", logs)
	}
	if strings.Contains(logs, tokenA) || strings.Contains(logs, tokenB) || strings.Contains(logs, "QSECRET") {
		t.Errorf("logs carry a token or the URL query string:\n%s", logs)
	}
	c.Close()
	b.srv.CloseClientConnections()
}

// TestAgentBadTokenFile breaks the token file before the backend drops the
// connection: a missing file, garbage, and tokens that are expired, signed
// by an unknown key or name an https url. The agent never dials with them,
// logs each retry without the file's content, and connects with the good
// token written next.
func TestAgentBadTokenFile(t *testing.T) {
	es := map[string]any{"alg": "ES256", "kid": "k1"}
	tests := []struct {
		name string
		bad  func(e *agentEnv, b *backend) string // the file's content; "" removes the file
		log  string                               // logged at each retry
	}{
		{"missing file", func(*agentEnv, *backend) string { return "" }, "cannot get the connect token"},
		{"garbage", func(*agentEnv, *backend) string { return "GARBAGE-QSECRET-not.a.token" }, "connect agent token refused"},
		{"expired", func(e *agentEnv, b *backend) string {
			return e.key.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"url": b.url, "exp": time.Now().Add(-time.Hour).Unix()}))
		}, "connect agent token refused"},
		{"bad signature", func(_ *agentEnv, b *backend) string {
			return testkit.NewKey(t, "k1").Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"url": b.url}))
		}, "connect agent token refused"},
		{"https url", func(e *agentEnv, b *backend) string {
			return e.token(t, "ws_a", strings.Replace(b.url, "ws://", "https://", 1))
		}, "connect agent token refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newAgentEnv(t, testStore)
			b := startBackend(t)
			good := e.token(t, "ws_a", b.url)
			b.want.Store(&good)
			file, cancel, done := runFileAgent(t, e, good, AgentConfig{})
			c := b.accept(t)

			bad := tt.bad(e, b)
			if bad == "" {
				if err := os.Remove(file); err != nil {
					t.Fatal(err)
				}
			} else {
				testkit.WriteFile(t, file, []byte(bad+"\n"))
			}
			c.Close()
			waitLog(t, e, tt.log, 3)
			if n := b.dials.Load(); n != 1 {
				t.Fatalf("backend saw %d dials, want 1 (none with the bad file)", n)
			}

			fresh := e.key.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"url": b.url, "jti": "jti-2"}))
			b.want.Store(&fresh)
			testkit.WriteFile(t, file, []byte(fresh+"\n"))
			c = b.accept(t)
			if r := ask(t, c, `{"id":"again","op":"ping"}`); r.Type != "result" {
				t.Fatalf("ping after restoring a good token: %+v", r)
			}
			cancel()
			if err := waitRun(t, done); err != nil {
				t.Fatalf("Run: %v", err)
			}
			logs := e.logs.String()
			for _, secret := range []string{good, fresh, "QSECRET", "GARBAGE"} {
				if strings.Contains(logs, secret) {
					t.Fatalf("logs carry the token file's content or the URL query string:\n%s", logs)
				}
			}
			if bad != "" && strings.Contains(logs, bad) {
				t.Fatalf("logs carry the bad token:\n%s", logs)
			}
		})
	}
}

// TestAgentRevokedHangsUp revokes the token while connected: the next
// request is refused at once, and at the next ping check the agent hangs up
// though the backend kept the connection open. It never redials with the
// revoked token, logs the refusal without the token, and connects again as
// soon as the token file holds a new token.
func TestAgentRevokedHangsUp(t *testing.T) {
	e := newAgentEnv(t, testStore)
	b := startBackend(t)
	token := e.token(t, "ws_a", b.url)
	b.want.Store(&token)
	file, cancel, done := runFileAgent(t, e, token, AgentConfig{PingInterval: 50 * time.Millisecond})
	c := b.accept(t)
	if r := ask(t, c, `{"id":"before","op":"ping"}`); r.Type != "result" {
		t.Fatalf("before revocation: %+v", r.Error)
	}
	testkit.WriteFile(t, e.revoked, []byte("jti-1\n"))
	if r := ask(t, c, `{"id":"after","op":"ping"}`); r.Type != "error" || r.Error.Code != CodeTokenRevoked || r.ID != "after" {
		t.Fatalf("after revocation: %+v", r)
	}
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("the agent left the connection open")
	}
	waitLog(t, e, "connect agent token refused", 3)
	if n := b.dials.Load(); n != 1 {
		t.Fatalf("backend saw %d dials, want 1 (no redial with a revoked token)", n)
	}
	if g := testkit.Metric(t, e.reg, "collector_connect_agent_connected"); g != 0 {
		t.Fatalf("collector_connect_agent_connected = %v after the hang-up", g)
	}

	fresh := e.key.Sign(t, e.key.Header(), testkit.ConnectClaims("ws_a", map[string]any{"url": b.url, "jti": "jti-2"}))
	b.want.Store(&fresh)
	testkit.WriteFile(t, file, []byte(fresh+"\n"))
	c = b.accept(t)
	if r := ask(t, c, `{"id":"fresh","op":"ping"}`); r.Type != "result" {
		t.Fatalf("with the new token: %+v", r.Error)
	}
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if logs := e.logs.String(); strings.Contains(logs, token) || strings.Contains(logs, fresh) || strings.Contains(logs, "QSECRET") {
		t.Fatalf("logs carry a token or the URL query string:\n%s", logs)
	}
}

// TestAgentDropsSilentBackend has the backend stop reading (so it answers
// no ping) without closing: the agent gives up on the connection after two
// ping intervals and redials, as it must behind a NAT that forgot the flow.
func TestAgentDropsSilentBackend(t *testing.T) {
	e := newAgentEnv(t, testStore)
	b := startBackend(t)
	token := e.token(t, "ws_a", b.url)
	b.want.Store(&token)
	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx, e.agent(t, AgentConfig{Token: static(token), PingInterval: 50 * time.Millisecond}))
	b.accept(t) // never read: pings go unanswered
	c := b.accept(t)
	if r := ask(t, c, `{"id":"again","op":"ping"}`); r.ID != "again" || r.Type != "result" {
		t.Fatalf("ping on the new connection: %+v", r)
	}
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestAgentRefusesToken checks tokens the agent must not use: a url that
// is not ws:// or wss://, and tokens the Verifier refuses. Check refuses
// them; Run never dials with them but logs the refusal at error level and
// asks its token source again after each backoff wait, until stopped.
// Neither the error nor the logs name the token or the URL.
func TestAgentRefusesToken(t *testing.T) {
	e := newAgentEnv(t, testStore)
	b := startBackend(t)
	hostPort := b.srv.Listener.Addr().String()
	other := testkit.NewKey(t, "k1") // same kid, key not in the JWKS
	testkit.WriteFile(t, e.revoked, []byte("jti-gone\n"))
	es := map[string]any{"alg": "ES256", "kid": "k1"}
	// Validly signed claims that repeat a member: the agent verifies with the same strict decoder.
	urlJSON, _ := json.Marshal(b.url)
	dup := func(members string) string {
		return e.key.SignRaw(t, `{"alg":"ES256","kid":"k1"}`, `{"dsid":"ds-1","db":"analytics","url":`+string(urlJSON)+`,`+members+`}`)
	}
	tests := []struct {
		name   string
		token  string
		badURL bool
	}{
		{"duplicate wid", dup(`"jti":"jti-1","wid":"ws_a","wid":"ws_b"`), false},
		{"duplicate jti", dup(`"jti":"jti-gone","jti":"jti-1","wid":"ws_a"`), false},
		{"WID only", dup(`"jti":"jti-1","WID":"ws_a"`), false},
		{"https url", e.token(t, "ws_a", "https://"+hostPort+"/agent?secret=QSECRET"), true},
		{"http url", e.token(t, "ws_a", "http://"+hostPort+"/agent?secret=QSECRET"), true},
		{"ftp url", e.token(t, "ws_a", "ftp://"+hostPort+"/agent"), true},
		{"no url", e.token(t, "ws_a", ""), true},
		{"no host", e.token(t, "ws_a", "ws:///agent?secret=QSECRET"), true},
		{"user info", e.token(t, "ws_a", "ws://u:QSECRET@"+hostPort+"/agent"), true},
		{"revoked", e.key.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"url": b.url, "jti": "jti-gone"})), false},
		{"expired", e.key.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"url": b.url, "exp": time.Now().Add(-time.Hour).Unix()})), false},
		{"bad signature", other.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"url": b.url})), false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.want.Store(&tt.token)
			reg := prometheus.NewRegistry()
			logs := &syncBuffer{}
			a, err := e.h.NewAgent(AgentConfig{Token: static(tt.token), Registerer: reg, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
				Logger: slog.New(slog.NewJSONHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = a.Check(context.Background())
			if !Refused(err) || errors.Is(err, ErrBadConnectURL) != tt.badURL {
				t.Fatalf("Check: %v, want a refusal (bad url: %v)", err, tt.badURL)
			}
			if strings.Contains(err.Error(), tt.token) || strings.Contains(err.Error(), "QSECRET") {
				t.Fatalf("error repeats the token or the URL: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := run(ctx, a)
			testkit.Eventually(t, 10*time.Second, "three refusals logged", func() bool {
				return strings.Count(logs.String(), "connect agent token refused") >= 3
			})
			cancel()
			if err := waitRun(t, done); err != nil {
				t.Fatalf("Run: %v", err)
			}
			out := logs.String()
			if n := strings.Count(out, "connect agent token refused"); n < 3 || !strings.Contains(out, `"level":"ERROR"`) {
				t.Fatalf("refusal logged %d times, want >= 3 at error level:\n%s", n, out)
			}
			if strings.Contains(out, tt.token) || strings.Contains(out, "QSECRET") {
				t.Fatalf("logs repeat the token or the URL:\n%s", out)
			}
			if n := b.dials.Load(); n != 0 {
				t.Fatalf("case %d: backend saw %d dials, want none", i, n)
			}
		})
	}
}

// TestAgentRetriesRefusedUpgrade has the backend refuse the upgrade (401):
// that is the backend's answer, not the token's verdict, so the agent keeps
// retrying with backoff until it is stopped.
func TestAgentRetriesRefusedUpgrade(t *testing.T) {
	e := newAgentEnv(t, testStore)
	b := startBackend(t) // b.want unset: every upgrade gets 401
	token := e.token(t, "ws_a", b.url)
	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx, e.agent(t, AgentConfig{Token: static(token), BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond}))
	testkit.Eventually(t, 20*time.Second, "three dials", func() bool { return b.dials.Load() >= 3 })
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := b.dials.Load(); n < 3 {
		t.Fatalf("backend saw %d dials, want retries", n)
	}
	if n := testkit.Metric(t, e.reg, "collector_connect_agent_reconnects_total"); n < 2 {
		t.Fatalf("collector_connect_agent_reconnects_total = %v, want >= 2", n)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "status 401") || strings.Contains(logs, token) || strings.Contains(logs, "QSECRET") {
		t.Fatalf("logs:\n%s", logs)
	}
}

// TestBackoff checks the waits: doubling from base up to max, each between
// half its step and the step, and back to base after reset.
func TestBackoff(t *testing.T) {
	b := backoff{base: time.Second, max: 60 * time.Second}
	steps := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for round := 0; round < 2; round++ {
		for i, s := range steps {
			step := s * time.Second
			if d := b.next(); d < step/2 || d > step {
				t.Fatalf("round %d wait %d: %s, want %s..%s", round, i, d, step/2, step)
			}
		}
		b.reset()
	}
}

// TestNewAgentConfig checks that every invalid setting is reported at once.
func TestNewAgentConfig(t *testing.T) {
	e := newAgentEnv(t, testStore)
	_, err := e.h.NewAgent(AgentConfig{BackoffBase: -1, PingInterval: -1})
	for _, want := range []string{"AgentConfig.Token is required", "AgentConfig.Registerer is required", "AgentConfig.BackoffBase must be >= 0", "AgentConfig.PingInterval must be >= 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
	if _, err := e.h.NewAgent(AgentConfig{Token: static("t"), Registerer: e.reg, BackoffBase: time.Minute, BackoffMax: time.Second}); err == nil {
		t.Error("max below base accepted")
	}
}
