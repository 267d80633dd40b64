package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/salt/redistest"
)

// tokenCLI runs `collector token ARGS...` and returns its stdout and stderr.
func tokenCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"token"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), exitCode(err)
}

// queryAnswer is one answer of POST /api/query.
type queryAnswer struct {
	Type   string `json:"type"`
	Result struct {
		Columns []struct{ Name string }
		Rows    [][]any `json:"rows"`
	} `json:"result"`
	Error struct{ Code, Message string } `json:"error"`
}

// postQuery sends one request message to /api/query with a bearer token.
func postQuery(t *testing.T, addr, token, msg string) (int, queryAnswer) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+"/api/query", strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /api/query: %v", err)
	}
	defer resp.Body.Close()
	var a queryAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("POST /api/query: status %d, undecodable answer: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, a
}

var jtiLine = regexp.MustCompile(`jti (\S+),`)

// TestLocalToken is the first five minutes of the query path: `token issue` makes the data
// directory's key and prints a token; serve without -jwks trusts it on /api/query and
// /connect/v1; `token revoke` refuses it from then on; the token never shows in the logs.
func TestLocalToken(t *testing.T) {
	dataDir, args := e2eEnv(t)
	keyPath := filepath.Join(dataDir, "query", "signing-key.pem")

	token, info, code := tokenCLI(t, "issue", "-wid", "ws_acme", "-data-dir", dataDir)
	token = strings.TrimSpace(token)
	if code != 0 || strings.Count(token, ".") != 2 || !strings.Contains(info, "created the signing key") {
		t.Fatalf("token issue: exit %d, stdout %q, stderr %q", code, token, info)
	}
	if strings.Contains(info, token) || strings.Contains(info, strings.Split(token, ".")[2]) {
		t.Fatal("token issue repeats the token on stderr")
	}
	m := jtiLine.FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("token issue names no jti: %q", info)
	}
	jti := m[1]
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %#o, want 0600", st.Mode().Perm())
	}
	key, _ := os.ReadFile(keyPath)

	// Connect's claims, with exp only when -ttl is given.
	var claims map[string]any
	body, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err := json.Unmarshal(body, &claims); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"jti", "dsid", "wid", "db", "url", "iss", "iat"} {
		if _, ok := claims[name]; !ok {
			t.Errorf("claim %s missing: %s", name, body)
		}
	}
	if claims["wid"] != "ws_acme" || claims["jti"] != jti || claims["exp"] != nil {
		t.Errorf("claims %s", body)
	}

	// A second issue reuses the key, with a -ttl.
	ttlToken, info2, code := tokenCLI(t, "issue", "-wid", "ws_acme", "-ttl", "1h", "-data-dir", dataDir)
	ttlToken = strings.TrimSpace(ttlToken)
	if code != 0 || strings.Contains(info2, "created") || !strings.Contains(info2, "expires ") {
		t.Fatalf("second token issue: exit %d, stderr %q", code, info2)
	}
	if again, _ := os.ReadFile(keyPath); !bytes.Equal(again, key) {
		t.Fatal("the second issue replaced the key")
	}
	body, _ = base64.RawURLEncoding.DecodeString(strings.Split(ttlToken, ".")[1])
	claims = nil
	_ = json.Unmarshal(body, &claims)
	if exp, ok := claims["exp"].(float64); !ok || time.Until(time.Unix(int64(exp), 0)) > time.Hour || time.Until(time.Unix(int64(exp), 0)) < 50*time.Minute {
		t.Errorf("-ttl 1h: claims %s", body)
	}

	// A token of another data directory's key.
	foreign, _, code := tokenCLI(t, "issue", "-wid", "ws_acme", "-data-dir", filepath.Join(t.TempDir(), "other"))
	if code != 0 {
		t.Fatal("token issue in another data directory failed")
	}

	p := startCollector(t, nil, args...)
	page := `{"n":"pageview","u":"https://acme.example/pricing","d":"acme.example","r":"https://www.google.com/"}`
	if code, _, _ := p.send(t, beacon{body: page, ip: "203.0.113.9", ua: chromeUA}); code != 202 {
		t.Fatalf("event: %d", code)
	}
	count := `{"id":"c","op":"execute_query","params":{"sql":"SELECT count() FROM events"}}`
	testkit.Eventually(t, 30*time.Second, "the page view visible to the issued token", func() bool {
		status, a := postQuery(t, p.addr, token, count)
		if status != 200 || a.Type != "result" {
			t.Fatalf("query with the issued token: %d %+v", status, a)
		}
		return len(a.Result.Rows) == 1 && fmt.Sprint(a.Result.Rows[0][0]) == "1"
	})
	status, a := postQuery(t, p.addr, ttlToken, `{"id":"r","op":"report","params":{"metrics":["visitors","pageviews"],"dimensions":["event:page"],"date_range":"day"}}`)
	if status != 200 || a.Type != "result" || len(a.Result.Rows) != 1 || a.Result.Rows[0][0] != "/pricing" {
		t.Fatalf("report with the -ttl token: %d %+v", status, a)
	}
	if status, a := postQuery(t, p.addr, strings.TrimSpace(foreign), count); status != 401 || a.Error.Code != "unauthenticated" {
		t.Fatalf("another data directory's token: %d %+v, want 401 unauthenticated", status, a)
	}

	// The WebSocket transport trusts the same key.
	hdr := http.Header{"Authorization": []string{"Bearer " + token}}
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+p.addr+"/connect/v1", hdr)
	if err != nil {
		t.Fatalf("dial /connect/v1: %v (%v)", err, resp)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"p","op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	ws.Close()
	if err != nil || !strings.Contains(string(msg), `"workspace":"ws_acme"`) {
		t.Fatalf("ping over /connect/v1: %s, %v", msg, err)
	}

	// Revoked while serve runs: refused within the file's re-read interval.
	out, errOut, code := tokenCLI(t, "revoke", "-data-dir", dataDir, jti)
	if code != 0 || !strings.Contains(out, "revoked "+jti) {
		t.Fatalf("token revoke: exit %d, %q %q", code, out, errOut)
	}
	testkit.Eventually(t, 10*time.Second, "the revoked token refused", func() bool {
		status, a := postQuery(t, p.addr, token, count)
		return status == 401 && a.Error.Code == "token_revoked"
	})
	if status, a := postQuery(t, p.addr, ttlToken, count); status != 200 || a.Type != "result" {
		t.Fatalf("the other token after one revocation: %d %+v", status, a)
	}
	if st, err := os.Stat(filepath.Join(dataDir, "query", "revoked-jti")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("revocation file: %v", err)
	}

	if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Fatalf("collector exit: %v", err)
	}
	logs := p.logs.String()
	for _, tok := range []string{token, ttlToken} {
		if strings.Contains(logs, strings.Split(tok, ".")[2]) || strings.Contains(logs, strings.Split(tok, ".")[1]) {
			t.Fatal("a token shows in the collector's logs")
		}
	}
	if !strings.Contains(logs, "query path trusts the data directory's own key") {
		t.Errorf("no log line says which key the query path trusts:\n%s", logs)
	}
}

// TestTokenUsage checks the token command's refusals.
func TestTokenUsage(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no subcommand", nil, 2, "usage: collector token issue"},
		{"issue without -wid", []string{"issue", "-data-dir", dir}, 2, "usage: collector token issue"},
		{"issue with a bad wid", []string{"issue", "-wid", "ws'x", "-data-dir", dir}, 2, "workspace id"},
		{"issue with a negative ttl", []string{"issue", "-wid", "ws_acme", "-ttl", "-1h", "-data-dir", dir}, 2, "-ttl: must not be negative"},
		{"revoke without an id", []string{"revoke", "-data-dir", dir}, 2, "usage: collector token revoke"},
		{"revoke a bad id", []string{"revoke", "-data-dir", dir, "a b"}, 2, "printable"},
		{"revoke an id that begins with '-' without --", []string{"revoke", "-data-dir", dir, "-abc"}, 2, "flag provided but not defined: -abc"},
		{"revoke with -jwks and no list", []string{"revoke", "-data-dir", dir, "-jwks", "https://example.invalid/jwks", "j1"}, 2, "give -revoked-jti or -redis"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := tokenCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
}

// TestTokenRevokeRedis: with -redis, `token revoke` also adds the id to the shared set every node
// checks.
func TestTokenRevokeRedis(t *testing.T) {
	addr, _ := redistest.Start(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	out, errOut, code := tokenCLI(t, "revoke", "-data-dir", dataDir, "-redis", "redis://"+addr, "jti-shared")
	if code != 0 || !strings.Contains(out, "Redis set revoked_jti") {
		t.Fatalf("exit %d, %q %q", code, out, errOut)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if ok, err := rdb.SIsMember(context.Background(), "revoked_jti", "jti-shared").Result(); !ok || err != nil {
		t.Fatalf("SISMEMBER revoked_jti jti-shared: %v %v", ok, err)
	}
	if data, err := os.ReadFile(filepath.Join(dataDir, "query", "revoked-jti")); err != nil || string(data) != "jti-shared\n" {
		t.Fatalf("data directory's list: %q %v", data, err)
	}
}

// TestTokenRevokeDashID: an id from elsewhere (Kyomi Connect's are base64url) may begin with '-';
// after "--" it is an id, not a flag.
func TestTokenRevokeDashID(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	out, errOut, code := tokenCLI(t, "revoke", "-data-dir", dataDir, "--", "-rRmYvVNr-g7")
	if code != 0 || !strings.Contains(out, "revoked -rRmYvVNr-g7") {
		t.Fatalf("exit %d, %q %q", code, out, errOut)
	}
	if data, err := os.ReadFile(filepath.Join(dataDir, "query", "revoked-jti")); err != nil || string(data) != "-rRmYvVNr-g7\n" {
		t.Fatalf("data directory's list: %q %v", data, err)
	}
}
