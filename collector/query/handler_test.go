package query

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/kyomi/collector/internal/serving"
	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// slowStore is a fault-injection wrapper: it delays every statement and
// records how many run at once.
type slowStore struct {
	Store
	delay         time.Duration
	inFlight, max atomic.Int32
}

func (s *slowStore) Select(ctx context.Context, sql string, settings map[string]string) (*sink.Result, error) {
	defer s.enter()()
	return s.Store.Select(ctx, sql, settings)
}

func (s *slowStore) Raw(ctx context.Context, sql, format string) ([]byte, error) {
	defer s.enter()()
	return s.Store.Raw(ctx, sql, format)
}

// enter counts a statement in, sleeps, and returns the function counting it out.
func (s *slowStore) enter() func() {
	n := s.inFlight.Add(1)
	for {
		m := s.max.Load()
		if n <= m || s.max.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(s.delay)
	return func() { s.inFlight.Add(-1) }
}

type testServer struct {
	addr  string
	h     *Handler
	reg   *prometheus.Registry
	key   *testkit.Key
	token string
}

func startServer(t *testing.T, store Store, cfg Config) *testServer {
	t.Helper()
	key := testkit.NewKey(t, "k1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	testkit.WriteFile(t, path, testkit.JWKS(t, key))
	reg := prometheus.NewRegistry()
	h, err := NewHandler(cfg, Deps{
		Store: store, Verifier: &Verifier{Keys: &JWKS{Location: path}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(rc *fasthttp.RequestCtx) {
		switch string(rc.Path()) {
		case "/api/query":
			h.HTTP(rc)
		case "/connect/v1":
			h.WebSocket(rc)
		default:
			rc.SetStatusCode(404)
		}
	}}
	stop := serving.Start(srv, ln)
	t.Cleanup(func() {
		h.Close()
		_ = stop()
	})
	return &testServer{addr: ln.Addr().String(), h: h, reg: reg, key: key,
		token: key.Sign(t, key.Header(), testkit.ConnectClaims("ws_a", nil))}
}

func (s *testServer) post(t *testing.T, token, body string) (int, Response) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.addr+"/api/query", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Response
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("bad answer %s: %v", data, err)
	}
	return resp.StatusCode, r
}

func TestHTTP(t *testing.T) {
	s := startServer(t, testStore, Config{})
	other := s.key.Sign(t, s.key.Header(), testkit.ConnectClaims("ws_b", nil))
	tests := []struct {
		name, token, body string
		status            int
		code              string // error code, "" for a result
		want              string // substring of the JSON answer
	}{
		{"ping", s.token, `{"id":"1","op":"ping"}`, 200, "", `"pong":true`},
		{"count", s.token, `{"id":"2","op":"execute_query","params":{"sql":"SELECT count() AS n FROM events"}}`, 200, "", `"rows":[["8"]]`},
		{"other workspace token", other, `{"id":"3","op":"execute_query","params":{"sql":"SELECT count() AS n FROM events"}}`, 200, "", `"rows":[["2"]]`},
		{"max_rows 1", s.token, `{"id":"4","op":"execute_query","params":{"sql":"SELECT name FROM events ORDER BY ts","max_rows":1}}`, 200, "", `"truncated":true`},
		{"arrow", s.token, `{"id":"5","op":"execute_query","params":{"sql":"SELECT 1 AS x","format":"arrow"}}`, 200, "", `"format":"arrow"`},
		{"refused", s.token, `{"id":"6","op":"execute_query","params":{"sql":"SELECT * FROM system.tables"}}`, 200, "query_refused", ""},
		{"engine error", s.token, `{"id":"7","op":"execute_query","params":{"sql":"SELECT nope FROM events"}}`, 200, "query_failed", "nope"},
		{"list tables", s.token, `{"id":"8","op":"list_tables"}`, 200, "", `[["events"]]`},
		{"describe", s.token, `{"id":"9","op":"describe_table","params":{"table":"events"}}`, 200, "", `"visitor_id","UInt64"`},
		{"describe other", s.token, `{"id":"10","op":"describe_table","params":{"table":"other"}}`, 200, "forbidden", ""},
		{"unknown op", s.token, `{"id":"11","op":"drop"}`, 200, "unknown_op", ""},
		{"bad params", s.token, `{"id":"12","op":"execute_query","params":{"sql":1}}`, 200, "invalid_request", ""},
		{"no token", "", `{"id":"13","op":"ping"}`, 401, "unauthenticated", ""},
		{"bad token", "x.y.z", `{"id":"14","op":"ping"}`, 401, "unauthenticated", ""},
		{"malformed", s.token, `{`, 400, "invalid_request", ""},
		// Member names are matched exactly and never twice: encoding/json alone would read
		// "OP" as op and keep the last of two ops.
		{"op in capitals", s.token, `{"id":"17","OP":"execute_query","params":{"sql":"SELECT 1"}}`, 200, "unknown_op", ""},
		{"op twice", s.token, `{"id":"18","op":"ping","op":"execute_query","params":{"sql":"SELECT 1"}}`, 400, "invalid_request", ""},
		{"param in capitals", s.token, `{"id":"19","op":"execute_query","params":{"SQL":"SELECT 1"}}`, 200, "invalid_request", `unknown field \"SQL\"`},
		{"param twice", s.token, `{"id":"20","op":"execute_query","params":{"sql":"SELECT 1","sql":"SELECT 2"}}`, 400, "invalid_request", ""},
		{"sink bookkeeping hidden", s.token, `{"id":"16","op":"execute_query","params":{"sql":"SELECT batch_token FROM events"}}`, 200, "query_failed", "batch_token"},
		{"report", s.token, `{"id":"15","op":"report","params":{"metrics":["visitors"],"date_range":["2026-01-01","2026-01-31"]}}`, 200, "", `"rows":[["3"]]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, r := s.post(t, tt.token, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d", status, tt.status)
			}
			out, _ := json.Marshal(r)
			if tt.code != "" {
				if r.Type != "error" || r.Error.Code != tt.code {
					t.Fatalf("got %s, want error %s", out, tt.code)
				}
			} else if r.Type != "result" {
				t.Fatalf("got %s, want a result", out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("answer %s does not contain %s", out, tt.want)
			}
			if leaked(string(out)) {
				t.Fatalf("answer leaks: %s", out)
			}
			if tt.token != "" && strings.Contains(string(out), tt.token) {
				t.Fatal("answer echoes the token")
			}
		})
	}
	for _, body := range []string{
		`{"id":"17","op":"describe_table","params":{"table":"events"}}`,
		`{"id":"18","op":"execute_query","params":{"sql":"SELECT * FROM events LIMIT 1"}}`,
	} {
		_, r := s.post(t, s.token, body)
		out, _ := json.Marshal(r)
		if r.Type != "result" || !strings.Contains(string(out), "visitor_id") || strings.Contains(string(out), "batch_token") {
			t.Fatalf("%s: %s shows the sink's batch_token column (or no columns)", body, out)
		}
	}
	if n := testkit.Metric(t, s.reg, "collector_query_requests_total", "code", "query_refused", "op", "execute_query"); n != 1 {
		t.Fatalf("collector_query_requests_total{op=execute_query,code=query_refused} = %v, want 1", n)
	}
	if n := testkit.Metric(t, s.reg, "collector_query_errors_total", "code", "unauthenticated"); n != 2 {
		t.Fatalf("collector_query_errors_total{code=unauthenticated} = %v, want 2", n)
	}
}

func dialWS(t *testing.T, s *testServer, token string) *websocket.Conn {
	t.Helper()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	c, _, err := websocket.DefaultDialer.Dial("ws://"+s.addr+"/connect/v1", hdr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWebSocketConcurrent(t *testing.T) {
	leakCheck(t)
	store := &slowStore{Store: testStore, delay: 20 * time.Millisecond}
	s := startServer(t, store, Config{MaxInFlight: 3})
	c := dialWS(t, s, s.token)
	defer c.Close()
	const n = 24
	var wmu sync.Mutex
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf(`{"id":"q%d","op":"execute_query","params":{"sql":"SELECT %d AS i, count() AS n FROM events"}}`, i, i)
		wmu.Lock()
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		wmu.Unlock()
	}
	seen := map[string]bool{}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for len(seen) < n {
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			ID     string `json:"id"`
			Type   string `json:"type"`
			Result Result `json:"result"`
		}
		if err := json.Unmarshal(data, &r); err != nil || r.Type != "result" {
			t.Fatalf("bad answer %s", data)
		}
		var i int
		fmt.Sscanf(r.ID, "q%d", &i)
		want := fmt.Sprintf(`[%d,"8"]`, i)
		if len(r.Result.Rows) != 1 || string(r.Result.Rows[0]) != want {
			t.Fatalf("answer for %s is %s, want %s", r.ID, r.Result.Rows, want)
		}
		if seen[r.ID] {
			t.Fatalf("duplicate answer for %s", r.ID)
		}
		seen[r.ID] = true
	}
	if m := store.max.Load(); m > 3 || m < 2 {
		t.Fatalf("max concurrent statements %d, want 2..3 (MaxInFlight 3)", m)
	}
	c.Close()
	s.h.Close()
}

func TestWebSocketAuth(t *testing.T) {
	s := startServer(t, testStore, Config{AuthTimeout: time.Second})
	expired := s.key.Sign(t, s.key.Header(), testkit.ConnectClaims("ws_a", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	tests := []struct {
		name  string
		first string // first message; the token is sent in it
		code  string
	}{
		{"auth message", `{"id":"a","op":"auth","params":{"token":"` + s.token + `"}}`, ""},
		{"expired token", `{"id":"a","op":"auth","params":{"token":"` + expired + `"}}`, "token_expired"},
		{"no auth first", `{"id":"a","op":"ping"}`, "unauthenticated"},
		{"op in capitals", `{"id":"a","OP":"auth","params":{"token":"` + s.token + `"}}`, "unauthenticated"},
		{"token in capitals", `{"id":"a","op":"auth","params":{"TOKEN":"` + s.token + `"}}`, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialWS(t, s, "")
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.WriteMessage(websocket.TextMessage, []byte(tt.first))
			var r Response
			if err := c.ReadJSON(&r); err != nil {
				t.Fatal(err)
			}
			if tt.code != "" {
				if r.Type != "error" || r.Error.Code != tt.code {
					t.Fatalf("got %+v, want %s", r, tt.code)
				}
				if _, _, err := c.ReadMessage(); err == nil {
					t.Fatal("connection still open after failed auth")
				}
				return
			}
			c.WriteMessage(websocket.TextMessage, []byte(`{"id":"p","op":"ping"}`))
			if err := c.ReadJSON(&r); err != nil || r.ID != "p" || r.Type != "result" {
				t.Fatalf("ping after auth: %+v %v", r, err)
			}
		})
	}
	t.Run("bad header refused at upgrade", func(t *testing.T) {
		hdr := http.Header{"Authorization": {"Bearer " + expired}}
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+s.addr+"/connect/v1", hdr)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("upgrade with expired token: %v", err)
		}
	})
}

// TestWebSocketRevokedMidConnection checks that a token revoked while its
// connection is open stops working at the next request.
func TestWebSocketRevokedMidConnection(t *testing.T) {
	s := startServer(t, testStore, Config{})
	revoked := filepath.Join(t.TempDir(), "revoked")
	testkit.WriteFile(t, revoked, []byte("\n"))
	s.h.ver.Revoker = &FileRevoker{Path: revoked, CheckEvery: time.Nanosecond}
	c := dialWS(t, s, s.token)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ask := func(id string) Response {
		t.Helper()
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":"`+id+`","op":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		var r Response
		if err := c.ReadJSON(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask("before"); r.Type != "result" {
		t.Fatalf("before revocation: %+v", r.Error)
	}
	testkit.WriteFile(t, revoked, []byte("jti-1\n"))
	if r := ask("after"); r.Type != "error" || r.Error.Code != CodeTokenRevoked || r.ID != "after" {
		t.Fatalf("after revocation: %+v", r)
	}
}
