package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/kyomi/collector/internal/testkit"
)

// connectKeys is an ES256 signing key published in a JWKS file, as Kyomi Connect publishes its own.
type connectKeys struct {
	*testkit.ConnectKey
	jwks string // path of the JWKS file
}

func newConnectKeys(t *testing.T) *connectKeys {
	t.Helper()
	k := testkit.NewConnectKey(t)
	return &connectKeys{ConnectKey: k, jwks: k.JWKS}
}

// tokenFile signs a Connect token for workspace wid whose url claim is u, writes it to a file with
// a trailing newline (as `echo` would) and returns the token and the file.
func (k *connectKeys) tokenFile(t *testing.T, wid, u string) (token, path string) {
	t.Helper()
	token = k.Token(t, wid, "jti-e2e", u)
	path = filepath.Join(t.TempDir(), "connect.jwt")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return token, path
}

// TestConnectTokenConfig checks -connect-token in `config check`: it needs -jwks and a token file,
// the token must verify, and its url must be ws:// or wss://; problems are listed with the others.
func TestConnectTokenConfig(t *testing.T) {
	keys := newConnectKeys(t)
	_, good := keys.tokenFile(t, "ws_acme", "wss://connect.example/agent/v1")
	httpsToken, https := keys.tokenFile(t, "ws_acme", "https://connect.example/agent/v1?secret=QSECRET")
	empty := filepath.Join(t.TempDir(), "empty.jwt")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		code  int
		wants []string
	}{
		{"valid", []string{"-jwks", keys.jwks, "-connect-token", good}, nil, 0, []string{"configuration is valid"}},
		{"valid from the environment", []string{"-jwks", keys.jwks}, map[string]string{"COLLECTOR_CONNECT_TOKEN": good}, 0, []string{"configuration is valid"}},
		{"without -jwks, listed with other problems", []string{"-connect-token", good, "-batch-rows", "0"}, nil, 2,
			[]string{"-connect-token: needs -jwks", "-batch-rows: must be between"}},
		{"missing file", []string{"-jwks", keys.jwks, "-connect-token", filepath.Join(t.TempDir(), "nope")}, nil, 2, []string{"-connect-token: cannot read the token file"}},
		{"empty file", []string{"-jwks", keys.jwks, "-connect-token", empty}, nil, 2, []string{"-connect-token: " + empty + " is empty"}},
		{"https url", []string{"-jwks", keys.jwks, "-connect-token", https}, nil, 2, []string{"-connect-token:", "ws:// or wss://", `"https"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"config", "check", "-config", "../../testdata/workspaces.example.yaml"}, tc.args...)
			code := run(context.Background(), args, envOf(tc.env), &out, &errOut)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, errOut.String())
			}
			all := out.String() + errOut.String()
			for _, w := range tc.wants {
				if !strings.Contains(all, w) {
					t.Errorf("output lacks %q:\n%s", w, all)
				}
			}
			if strings.Contains(all, httpsToken) || strings.Contains(all, "QSECRET") {
				t.Errorf("output repeats the token or its URL:\n%s", all)
			}
		})
	}
}

// TestConnectAgentE2E runs the binary in agent mode against an in-test Connect backend: it dials
// out with the bearer token from COLLECTOR_CONNECT_TOKEN, answers the backend's requests for its
// workspace (an event sent to the collector shows up in a count), reports itself connected, redials
// with the token written to the file after the backend drops it (rotation, no restart), and stops
// cleanly on SIGTERM without logging the token or the URL's query string. A token whose url
// is https:// refuses the start.
func TestConnectAgentE2E(t *testing.T) {
	keys := newConnectKeys(t)
	var want atomic.Pointer[string]
	conns := make(chan *websocket.Conn, 4)
	up := websocket.Upgrader{}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := want.Load(); tok == nil || r.Header.Get("Authorization") != "Bearer "+*tok {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		if c, err := up.Upgrade(w, r, nil); err == nil {
			conns <- c
		}
	}))
	defer backend.Close()
	token, tokenFile := keys.tokenFile(t, "ws_acme", "ws://"+backend.Listener.Addr().String()+"/agent/v1?secret=QSECRET")
	want.Store(&token)

	_, args := e2eEnv(t)
	p := startCollector(t, []string{"COLLECTOR_CONNECT_TOKEN=" + tokenFile}, append(args, "-jwks", keys.jwks)...)
	// accept waits for the collector's next connection to the backend.
	accept := func(what string) *websocket.Conn {
		t.Helper()
		select {
		case c := <-conns:
			t.Cleanup(func() { c.Close() })
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			return c
		case <-time.After(30 * time.Second):
			t.Fatalf("the collector did not %s\n%s", what, p.logs.String())
			return nil
		}
	}
	c := accept("dial the backend")
	ask := func(id, msg string) string {
		t.Helper()
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("no answer to %s: %v\n%s", id, err, p.logs.String())
		}
		if !strings.Contains(string(data), `"id":"`+id+`"`) {
			t.Fatalf("answer %s is not for %s", data, id)
		}
		return string(data)
	}
	if a := ask("p", `{"id":"p","op":"ping"}`); !strings.Contains(a, `"workspace":"ws_acme"`) {
		t.Fatalf("ping: %s", a)
	}
	if code, _, body := p.send(t, beacon{body: `{"n":"pageview","u":"https://acme.example/agent","d":"acme.example"}`,
		ip: "203.0.113.7", ua: chromeUA, origin: "https://acme.example"}); code != 202 {
		t.Fatalf("beacon: %d %s", code, body)
	}
	queries := 0
	testkit.Eventually(t, 30*time.Second, "the event visible through the agent", func() bool {
		id := fmt.Sprintf("q%d", queries)
		queries++
		a := ask(id, `{"id":"`+id+`","op":"execute_query","params":{"sql":"SELECT count() AS n FROM events WHERE pathname = '/agent'"}}`)
		if !strings.Contains(a, `"rows":[["1"]]`) && !strings.Contains(a, `"rows":[["0"]]`) {
			t.Fatalf("count: %s", a)
		}
		return strings.Contains(a, `"rows":[["1"]]`)
	})
	if v := testkit.Metric(t, p.metrics(), "collector_connect_agent_connected"); v != 1 {
		t.Fatalf("collector_connect_agent_connected = %v", v)
	}

	// Rotation: the file now holds token B and the backend takes only B. The open connection is
	// dropped by the backend; the collector reads the file again and redials with B (A would get
	// 401), with no restart.
	tokenB, fileB := keys.tokenFile(t, "ws_acme", "ws://"+backend.Listener.Addr().String()+"/agent/v1?secret=QSECRET")
	rotated, err := os.ReadFile(fileB)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, rotated, 0o600); err != nil {
		t.Fatal(err)
	}
	want.Store(&tokenB)
	c.Close()
	c = accept("redial with the rotated token")
	if a := ask("p2", `{"id":"p2","op":"ping"}`); !strings.Contains(a, `"workspace":"ws_acme"`) {
		t.Fatalf("ping after rotation: %s", a)
	}

	if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Fatalf("collector exited with %v after SIGTERM\n%s", err, p.logs.String())
	}
	logs := p.logs.String()
	if !strings.Contains(logs, "connect agent connected") {
		t.Errorf("no connect log:\n%s", logs)
	}
	if strings.Contains(logs, token) || strings.Contains(logs, tokenB) || strings.Contains(logs, "QSECRET") {
		t.Errorf("logs carry a token or the URL query string:\n%s", logs)
	}

	_, httpsFile := keys.tokenFile(t, "ws_acme", "https://"+backend.Listener.Addr().String()+"/agent/v1")
	bad := startCollectorNoWait(t, nil, append(args, "-jwks", keys.jwks, "-connect-token", httpsFile)...)
	select {
	case err := <-bad.done:
		if exitCode(err) != 1 || !strings.Contains(bad.logs.String(), "ws:// or wss://") {
			t.Fatalf("exit %v with an https url, want 1 naming ws:// or wss://\n%s", err, bad.logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the collector started with an https url\n%s", bad.logs.String())
	}
}
