package query

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kyomi/collector/salt/redistest"
)

func TestLocalKeyCreatedOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "query")
	k1, created, err := OpenLocalKey(dir)
	if err != nil || !created {
		t.Fatalf("first open: created %v, err %v", created, err)
	}
	st, err := os.Stat(filepath.Join(dir, LocalKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", st.Mode().Perm())
	}
	if dst, err := os.Stat(dir); err != nil || dst.Mode().Perm() != 0o700 {
		t.Errorf("key directory: %v, mode %#o, want 0700", err, dst.Mode().Perm())
	}
	before, _ := os.ReadFile(k1.Path())
	k2, created, err := OpenLocalKey(dir)
	if err != nil || created {
		t.Fatalf("second open: created %v, err %v", created, err)
	}
	after, _ := os.ReadFile(k2.Path())
	if k1.KID() != k2.KID() || string(before) != string(after) {
		t.Fatal("the second open made another key")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the key directory holds %d files, want the key only (no temporary file left)", len(entries))
	}
}

// TestLocalKeyRace opens a fresh key directory from many goroutines at once: exactly one makes
// the key, and everyone gets that one.
func TestLocalKeyRace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "query")
	const n = 16
	kids := make([]string, n)
	made := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, created, err := OpenLocalKey(dir)
			if err != nil {
				t.Error(err)
				return
			}
			kids[i], made[i] = k.KID(), created
		})
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if made[i] {
			creators++
		}
		if kids[i] != kids[0] {
			t.Fatalf("goroutine %d got key %s, goroutine 0 got %s", i, kids[i], kids[0])
		}
	}
	if creators != 1 {
		t.Fatalf("%d callers say they created the key, want 1", creators)
	}
}

func TestLocalKeyRefusesReadableFile(t *testing.T) {
	dir := t.TempDir()
	k, _, err := OpenLocalKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(k.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = OpenLocalKey(dir)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key: got %v, want a refusal", err)
	}
	if err := os.WriteFile(k.Path(), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err = OpenLocalKey(dir); err == nil || strings.Contains(err.Error(), "not a key") {
		t.Fatalf("a damaged key: got %v, want an error that does not quote the file", err)
	}
}

func TestLocalKeyIssue(t *testing.T) {
	k, _, err := OpenLocalKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := OpenLocalKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ctx := context.Background()
	v := &Verifier{Keys: k, Now: func() time.Time { return now.Add(time.Minute) }}

	token, c, err := k.Issue(TokenRequest{WID: "ws_acme", URL: "ws://127.0.0.1:8080/connect/v1", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(ctx, token)
	if err != nil {
		t.Fatalf("the local key's own token: %v", err)
	}
	if got.WID != "ws_acme" || got.JTI != c.JTI || len(got.JTI) < 20 || got.DSID != LocalDSID || got.DB != LocalDB ||
		got.URL != "ws://127.0.0.1:8080/connect/v1" || got.Iss != LocalIssuer || got.Iat == nil || float64(*got.Iat) != float64(now.Unix()) || got.Exp != nil {
		t.Fatalf("claims %+v", got)
	}
	// The claims as they travel: Connect's names, and no exp without a TTL.
	var raw map[string]any
	body, _ := b64.DecodeString(strings.Split(token, ".")[1])
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"jti", "dsid", "wid", "db", "url", "iss", "iat"} {
		if _, ok := raw[name]; !ok {
			t.Errorf("claim %s missing from %s", name, body)
		}
	}
	if _, ok := raw["exp"]; ok {
		t.Errorf("a token without a TTL carries exp: %s", body)
	}
	_, c2, _ := k.Issue(TokenRequest{WID: "ws_acme", Now: now})
	if c2.JTI == c.JTI {
		t.Error("two tokens share a jti")
	}
	// A jti is an argument of `collector token revoke`: one that began with '-' would be read as
	// a flag. 256 issues make a leading '-' of a base64url id (1 in 64) all but certain.
	for i := 0; i < 256; i++ {
		_, ci, err := k.Issue(TokenRequest{WID: "ws_acme", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if len(ci.JTI) != 32 || strings.Trim(ci.JTI, "0123456789abcdef") != "" {
			t.Fatalf("jti %q: want 32 lower-case hex digits", ci.JTI)
		}
	}

	// With a TTL: valid before exp, expired after.
	token, c, err = k.Issue(TokenRequest{WID: "ws_acme", TTL: time.Hour, Now: now})
	if err != nil || c.Exp == nil || float64(*c.Exp) != float64(now.Add(time.Hour).Unix()) {
		t.Fatalf("ttl: claims %+v, err %v", c, err)
	}
	if _, err := v.Verify(ctx, token); err != nil {
		t.Fatalf("ttl token within its hour: %v", err)
	}
	late := &Verifier{Keys: k, Now: func() time.Time { return now.Add(2 * time.Hour) }}
	var ae *AuthError
	if _, err := late.Verify(ctx, token); !errors.As(err, &ae) || ae.Code != CodeTokenExpired {
		t.Fatalf("ttl token after exp: got %v, want token_expired", err)
	}

	// Another data directory's token is refused: its kid is unknown here.
	foreign, _, err := other.Issue(TokenRequest{WID: "ws_acme", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, foreign); !errors.As(err, &ae) || ae.Code != CodeUnauthenticated {
		t.Fatalf("another key's token: got %v, want unauthenticated", err)
	}

	// The published JWKS verifies the key's tokens, as another process's -jwks would.
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, k.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	jv := &Verifier{Keys: &JWKS{Location: path}, Now: v.Now}
	if _, err := jv.Verify(ctx, token); err != nil {
		t.Fatalf("through the published JWKS: %v", err)
	}

	for _, bad := range []TokenRequest{{WID: ""}, {WID: "ws'acme"}, {WID: "ws_acme", TTL: -time.Second}} {
		if _, _, err := k.Issue(bad); err == nil {
			t.Errorf("Issue(%+v) succeeded", bad)
		}
	}
}

func TestFileRevokerRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "query", LocalRevokedFile)
	reader := &FileRevoker{Path: path, CheckEvery: time.Nanosecond}
	ctx := context.Background()
	if ok, err := reader.Revoked(ctx, "a"); ok || err != nil {
		t.Fatalf("no file yet: revoked %v, err %v", ok, err)
	}
	w := &FileRevoker{Path: path}
	for _, jti := range []string{"a", "b", "a"} {
		if err := w.Revoke(jti); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "a\nb\n" {
		t.Fatalf("file %q (%v), want each id once", data, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("revocation file mode %#o, want 0600", st.Mode().Perm())
	}
	for _, jti := range []string{"a", "b"} {
		if ok, err := reader.Revoked(ctx, jti); !ok || err != nil {
			t.Errorf("%s: revoked %v, err %v", jti, ok, err)
		}
	}
	if ok, _ := reader.Revoked(ctx, "c"); ok {
		t.Error("c is revoked")
	}
	for _, bad := range []string{"", "a b", "x\ny", "#c", strings.Repeat("x", 257)} {
		if err := w.Revoke(bad); err == nil {
			t.Errorf("Revoke(%q) succeeded", bad)
		}
	}
}

func TestRedisRevokerRevoke(t *testing.T) {
	addr, stop := redistest.Start(t)
	defer stop()
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	r := &RedisRevoker{Client: client}
	if err := r.Revoke(ctx, "jti-1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Revoked(ctx, "jti-1"); !ok || err != nil {
		t.Fatalf("revoked %v, err %v", ok, err)
	}
	if ok, _ := r.Revoked(ctx, "jti-2"); ok {
		t.Fatal("jti-2 is revoked")
	}
	stop()
	if err := r.Revoke(ctx, "jti-3"); err == nil {
		t.Fatal("Redis down: Revoke succeeded")
	}
}
