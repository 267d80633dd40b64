package query

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/salt/redistest"
	"github.com/redis/go-redis/v9"
)

func TestTokenBattery(t *testing.T) {
	dir := t.TempDir()
	good := testkit.NewKey(t, "k1")
	other := testkit.NewKey(t, "k2") // not published
	jwks := filepath.Join(dir, "jwks.json")
	testkit.WriteFile(t, jwks, testkit.JWKS(t, good))
	revoked := filepath.Join(dir, "revoked")
	testkit.WriteFile(t, revoked, []byte("# revoked tokens\njti-revoked\n"))
	v := &Verifier{Keys: &JWKS{Location: jwks}, Revoker: &FileRevoker{Path: revoked}, Skew: 60 * time.Second}
	es := map[string]any{"alg": "ES256", "typ": "JWT", "kid": "k1"}
	valid := good.Sign(t, es, testkit.ConnectClaims("ws_a", nil))

	// HS256 with the public key bytes as the HMAC secret (key confusion).
	pub, _ := good.Public().Bytes()
	hb, _ := json.Marshal(map[string]any{"alg": "HS256", "kid": "k1"})
	cb, _ := json.Marshal(testkit.ConnectClaims("ws_a", nil))
	in := b64.EncodeToString(hb) + "." + b64.EncodeToString(cb)
	mac := hmac.New(sha256.New, pub)
	mac.Write([]byte(in))
	hs256 := in + "." + b64.EncodeToString(mac.Sum(nil))
	none, _ := json.Marshal(map[string]any{"alg": "none", "kid": "k1"})
	algNone := b64.EncodeToString(none) + "." + b64.EncodeToString(cb) + "."
	forged := forgeClaims(valid, testkit.ConnectClaims("ws_b", nil))
	// Claims and headers written by hand, validly signed, to repeat a member or vary its case.
	iat := strconv.FormatInt(time.Now().Unix()-10, 10)
	raw := func(header, members string) string {
		return good.SignRaw(t, header, `{"dsid":"ds-1","db":"analytics","iss":"kyomi","iat":`+iat+`,`+members+`}`)
	}
	esRaw := `{"alg":"ES256","typ":"JWT","kid":"k1"}`

	tests := []struct {
		name, token, code, wid string
	}{
		{"valid", valid, "", "ws_a"},
		{"valid no exp", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": nil})), "", "ws_a"},
		{"valid future exp", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": time.Now().Add(time.Hour).Unix()})), "", "ws_a"},
		{"expired", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})), "token_expired", ""},
		{"expired 30 s ago, within skew", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": time.Now().Add(-30 * time.Second).Unix()})), "token_expired", ""},
		{"exp in 60 s", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": time.Now().Add(60 * time.Second).Unix()})), "", "ws_a"},
		{"nbf 30 s ahead, within skew", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"nbf": time.Now().Add(30 * time.Second).Unix()})), "", "ws_a"},
		{"iat 30 s ahead, within skew", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"iat": time.Now().Add(30 * time.Second).Unix()})), "", "ws_a"},
		{"fractional exp in future", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": float64(time.Now().Unix()) + 3600.5})), "", "ws_a"},
		{"fractional exp in past", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": float64(time.Now().Unix()) - 1.5})), "token_expired", ""},
		{"fractional nbf and iat", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"nbf": float64(time.Now().Unix()) - 0.5, "iat": float64(time.Now().Unix()) - 10.25})), "", "ws_a"},
		{"fractional nbf in future", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"nbf": float64(time.Now().Add(time.Hour).Unix()) + 0.5})), "unauthenticated", ""},
		{"string exp", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"exp": strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)})), "unauthenticated", ""},
		{"nbf in future", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"nbf": time.Now().Add(time.Hour).Unix()})), "unauthenticated", ""},
		{"iat in future", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"iat": time.Now().Add(time.Hour).Unix()})), "unauthenticated", ""},
		{"forged claims", forged, "unauthenticated", ""},
		{"signed by unpublished key", other.Sign(t, es, testkit.ConnectClaims("ws_a", nil)), "unauthenticated", ""},
		{"unknown kid", other.Sign(t, map[string]any{"alg": "ES256", "kid": "k9"}, testkit.ConnectClaims("ws_a", nil)), "unauthenticated", ""},
		{"alg none", algNone, "unauthenticated", ""},
		{"alg none no signature", strings.TrimSuffix(algNone, "."), "unauthenticated", ""},
		{"HS256 with public key", hs256, "unauthenticated", ""},
		{"RS256 header", good.Sign(t, map[string]any{"alg": "RS256", "kid": "k1"}, testkit.ConnectClaims("ws_a", nil)), "unauthenticated", ""},
		{"ES384 header", good.Sign(t, map[string]any{"alg": "ES384", "kid": "k1"}, testkit.ConnectClaims("ws_a", nil)), "unauthenticated", ""},
		{"missing wid", good.Sign(t, es, testkit.ConnectClaims("", nil)), "unauthenticated", ""},
		{"wid with quote", good.Sign(t, es, testkit.ConnectClaims("ws_a' OR 1", nil)), "unauthenticated", ""},
		{"revoked jti", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"jti": "jti-revoked"})), "token_revoked", ""},
		{"missing jti with revocation", good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"jti": nil})), "unauthenticated", ""},
		{"crit header", good.Sign(t, map[string]any{"alg": "ES256", "kid": "k1", "crit": []string{"x"}}, testkit.ConnectClaims("ws_a", nil)), "unauthenticated", ""},
		{"raw claims, control", raw(esRaw, `"jti":"jti-1","wid":"ws_a"`), "", "ws_a"},
		{"duplicate wid", raw(esRaw, `"jti":"jti-1","wid":"ws_a","wid":"ws_b"`), "unauthenticated", ""},
		{"duplicate wid, same value", raw(esRaw, `"jti":"jti-1","wid":"ws_a","wid":"ws_a"`), "unauthenticated", ""},
		{"duplicate wid, escaped name", raw(esRaw, `"jti":"jti-1","wid":"ws_a","wi\u0064":"ws_b"`), "unauthenticated", ""},
		{"wid then WID reads wid", raw(esRaw, `"jti":"jti-1","wid":"ws_a","WID":"ws_b"`), "", "ws_a"},
		{"WID then wid reads wid", raw(esRaw, `"jti":"jti-1","WID":"ws_b","wid":"ws_a"`), "", "ws_a"},
		{"Wid only is no wid", raw(esRaw, `"jti":"jti-1","Wid":"ws_a"`), "unauthenticated", ""},
		{"WID only is no wid", raw(esRaw, `"jti":"jti-1","WID":"ws_a"`), "unauthenticated", ""},
		{"duplicate jti, revoked first", raw(esRaw, `"jti":"jti-revoked","jti":"jti-1","wid":"ws_a"`), "unauthenticated", ""},
		{"duplicate jti, revoked last", raw(esRaw, `"jti":"jti-1","jti":"jti-revoked","wid":"ws_a"`), "unauthenticated", ""},
		{"JTI only is no jti", raw(esRaw, `"JTI":"jti-1","wid":"ws_a"`), "unauthenticated", ""},
		{"jti plus revoked JTI reads jti", raw(esRaw, `"jti":"jti-1","JTI":"jti-revoked","wid":"ws_a"`), "", "ws_a"},
		{"revoked jti plus JTI stays revoked", raw(esRaw, `"jti":"jti-revoked","JTI":"jti-1","wid":"ws_a"`), "token_revoked", ""},
		{"EXP is not exp", raw(esRaw, `"jti":"jti-1","wid":"ws_a","EXP":1`), "", "ws_a"},
		{"duplicate exp", raw(esRaw, `"jti":"jti-1","wid":"ws_a","exp":1,"exp":9999999999`), "unauthenticated", ""},
		{"duplicate in a nested claim", raw(esRaw, `"jti":"jti-1","wid":"ws_a","ext":[{"a":1,"a":2}]`), "unauthenticated", ""},
		{"same name in sibling objects", raw(esRaw, `"jti":"jti-1","wid":"ws_a","x":{"wid":"ws_b"},"y":{"wid":"ws_c"}`), "", "ws_a"},
		{"claims followed by more JSON", good.SignRaw(t, esRaw, `{"jti":"jti-1","wid":"ws_a"}{"wid":"ws_b"}`), "unauthenticated", ""},
		{"claims not an object", good.SignRaw(t, esRaw, `["wid","ws_a"]`), "unauthenticated", ""},
		{"duplicate alg in header", raw(`{"alg":"ES256","alg":"ES256","kid":"k1"}`, `"jti":"jti-1","wid":"ws_a"`), "unauthenticated", ""},
		{"duplicate kid in header", raw(`{"alg":"ES256","kid":"k9","kid":"k1"}`, `"jti":"jti-1","wid":"ws_a"`), "unauthenticated", ""},
		{"duplicate kid in header, same value", raw(`{"alg":"ES256","kid":"k1","kid":"k1"}`, `"jti":"jti-1","wid":"ws_a"`), "unauthenticated", ""},
		{"ALG is not alg", raw(`{"ALG":"ES256","kid":"k1"}`, `"jti":"jti-1","wid":"ws_a"`), "unauthenticated", ""},
		{"Kid is not kid", raw(`{"alg":"ES256","Kid":"k9"}`, `"jti":"jti-1","wid":"ws_a"`), "", "ws_a"},
		{"CRIT is not crit", raw(`{"alg":"ES256","kid":"k1","CRIT":["x"]}`, `"jti":"jti-1","wid":"ws_a"`), "", "ws_a"},
		{"garbage", "not.a.token", "unauthenticated", ""},
		{"empty", "", "unauthenticated", ""},
		{"truncated signature", valid[:len(valid)-4], "unauthenticated", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.token)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.WID != tt.wid {
					t.Fatalf("wid %q, want %q", c.WID, tt.wid)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Code != tt.code {
				t.Fatalf("got %v, want code %s", err, tt.code)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatal("error echoes the token")
			}
			if msg := err.Error(); strings.Contains(msg, "ws_") || strings.Contains(msg, "jti-") || strings.Contains(msg, "k9") {
				t.Fatalf("error %q echoes a claim or header value", msg)
			}
		})
	}

	// A date claim that is not a number is named in the reason, not lumped with malformed JSON.
	t.Run("non-number dates named", func(t *testing.T) {
		for _, claim := range []string{"exp", "nbf", "iat"} {
			for _, val := range []any{"1790000000", true, []int{1}, map[string]int{"s": 1}} {
				_, err := v.Verify(context.Background(), good.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{claim: val})))
				var ae *AuthError
				if !errors.As(err, &ae) || ae.Code != "unauthenticated" || !strings.Contains(ae.Reason, "claim "+claim+" is not a NumericDate") {
					t.Errorf("%s = %v: got %v, want unauthenticated naming the claim", claim, val, err)
				}
			}
		}
	})

	// Revocation file reloads when it changes.
	t.Run("revocation file reload", func(t *testing.T) {
		fr := &FileRevoker{Path: revoked, CheckEvery: time.Nanosecond}
		if r, _ := fr.Revoked(context.Background(), "jti-1"); r {
			t.Fatal("jti-1 revoked before it was listed")
		}
		testkit.WriteFile(t, revoked, []byte("jti-revoked\njti-1\n"))
		if r, _ := fr.Revoked(context.Background(), "jti-1"); !r {
			t.Fatal("jti-1 not revoked after the file changed")
		}
	})
}

// TestTokenWithoutKid: kid is optional (RFC 7515 4.1.4). A token without one is accepted when any
// key of the JWKS verifies it; a kid that is present but unknown is still refused, even when a
// published key signed the token.
func TestTokenWithoutKid(t *testing.T) {
	k1, k2 := testkit.NewKey(t, "k1"), testkit.NewKey(t, "k2")
	anon1, anon2 := testkit.NewKey(t, ""), testkit.NewKey(t, "") // published without a kid
	unpublished := testkit.NewKey(t, "k1")
	noKid := map[string]any{"alg": "ES256", "typ": "JWT"}
	emptyKid := map[string]any{"alg": "ES256", "kid": ""}
	tests := []struct {
		name  string
		keys  []*testkit.Key // the JWKS
		token string
		code  string // "" accepted
	}{
		{"one key, no kid", []*testkit.Key{k1}, k1.Sign(t, noKid, testkit.ConnectClaims("ws_a", nil)), ""},
		{"one key, empty kid", []*testkit.Key{k1}, k1.Sign(t, emptyKid, testkit.ConnectClaims("ws_a", nil)), ""},
		{"two keys, second signed", []*testkit.Key{k1, k2}, k2.Sign(t, noKid, testkit.ConnectClaims("ws_a", nil)), ""},
		{"two keys without kids, first signed", []*testkit.Key{anon1, anon2}, anon1.Sign(t, noKid, testkit.ConnectClaims("ws_a", nil)), ""},
		{"two keys, none signed", []*testkit.Key{k1, k2}, unpublished.Sign(t, noKid, testkit.ConnectClaims("ws_a", nil)), "unauthenticated"},
		{"no kid, claims forged", []*testkit.Key{k1, k2}, forgeClaims(k2.Sign(t, noKid, testkit.ConnectClaims("ws_a", nil)), testkit.ConnectClaims("ws_b", nil)), "unauthenticated"},
		{"unknown kid, published key signed", []*testkit.Key{k1, k2}, k2.Sign(t, map[string]any{"alg": "ES256", "kid": "k9"}, testkit.ConnectClaims("ws_a", nil)), "unauthenticated"},
		{"no kid, expired", []*testkit.Key{k1}, k1.Sign(t, noKid, testkit.ConnectClaims("ws_a", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})), "token_expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "jwks.json")
			testkit.WriteFile(t, path, testkit.JWKS(t, tt.keys...))
			v := &Verifier{Keys: &JWKS{Location: path}}
			c, err := v.Verify(context.Background(), tt.token)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.WID != "ws_a" {
					t.Fatalf("wid %q, want ws_a", c.WID)
				}
				return
			}
			var ae *AuthError
			if !errors.As(err, &ae) || ae.Code != tt.code {
				t.Fatalf("got %v, want code %s", err, tt.code)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Fatal("error echoes the token")
			}
		})
	}
}

// forgeClaims replaces the claims of token, keeping its header and signature.
func forgeClaims(token string, c map[string]any) string {
	parts := strings.Split(token, ".")
	cb, _ := json.Marshal(c)
	return parts[0] + "." + b64.EncodeToString(cb) + "." + parts[2]
}

func TestJWKSURLRefreshRateLimited(t *testing.T) {
	k1 := testkit.NewKey(t, "k1")
	k2 := testkit.NewKey(t, "k2")
	var fetches atomic.Int32
	var publish atomic.Value
	publish.Store(testkit.JWKS(t, k1))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Write(publish.Load().([]byte))
	}))
	defer srv.Close()
	j := &JWKS{Location: srv.URL, MinRefresh: 200 * time.Millisecond}
	v := &Verifier{Keys: j}
	ctx := context.Background()
	es := func(kid string) map[string]any { return map[string]any{"alg": "ES256", "kid": kid} }
	if _, err := v.Verify(ctx, k1.Sign(t, es("k1"), testkit.ConnectClaims("ws_a", nil))); err != nil {
		t.Fatal(err)
	}
	// An attacker sending many unknown kids, or tokens without a kid that no key verifies, causes
	// at most one fetch per MinRefresh.
	noKid := map[string]any{"alg": "ES256"}
	unknownKid, unverifiable := k2.Sign(t, es("nope"), testkit.ConnectClaims("ws_a", nil)), k2.Sign(t, noKid, testkit.ConnectClaims("ws_a", nil))
	for i := 0; i < 50; i++ {
		v.Verify(ctx, unknownKid)
		v.Verify(ctx, unverifiable)
	}
	if n := fetches.Load(); n > 2 {
		t.Fatalf("%d JWKS fetches for 50 unknown kids and 50 unverifiable tokens without a kid, want <= 2", n)
	}
	// A rotated key is picked up after MinRefresh.
	publish.Store(testkit.JWKS(t, k1, k2))
	rotated := k2.Sign(t, es("k2"), testkit.ConnectClaims("ws_a", nil))
	testkit.Eventually(t, 10*time.Second, "the rotated key to be picked up", func() bool {
		_, err := v.Verify(ctx, rotated)
		return err == nil
	})
	if n := fetches.Load(); n > 3 {
		t.Fatalf("%d JWKS fetches once the rotated key was picked up, want <= 3", n)
	}
	// So is one that signs tokens without a kid.
	k3 := testkit.NewKey(t, "k3")
	publish.Store(testkit.JWKS(t, k1, k2, k3))
	withoutKid := k3.Sign(t, noKid, testkit.ConnectClaims("ws_a", nil))
	testkit.Eventually(t, 10*time.Second, "the rotated key to be picked up for a token without a kid", func() bool {
		_, err := v.Verify(ctx, withoutKid)
		return err == nil
	})
	if n := fetches.Load(); n > 4 {
		t.Fatalf("%d JWKS fetches once the second rotated key was picked up, want <= 4", n)
	}
}

func TestRedisRevoker(t *testing.T) {
	addr, stop := redistest.Start(t)
	defer stop()
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer client.Close()
	ctx := context.Background()
	if err := client.SAdd(ctx, "revoked_jti", "jti-bad").Err(); err != nil {
		t.Fatal(err)
	}
	k := testkit.NewKey(t, "k1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	testkit.WriteFile(t, path, testkit.JWKS(t, k))
	v := &Verifier{Keys: &JWKS{Location: path}, Revoker: &RedisRevoker{Client: client}}
	es := map[string]any{"alg": "ES256", "kid": "k1"}
	tests := []struct {
		name, jti, code string
	}{
		{"not revoked", "jti-ok", ""},
		{"revoked", "jti-bad", "token_revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(ctx, k.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"jti": tt.jti})))
			var ae *AuthError
			switch {
			case tt.code == "" && err != nil:
				t.Fatal(err)
			case tt.code != "" && (!errors.As(err, &ae) || ae.Code != tt.code):
				t.Fatalf("got %v, want %s", err, tt.code)
			}
		})
	}
	// Redis down: fail closed with an error that is not an AuthError.
	stop()
	_, err := v.Verify(ctx, k.Sign(t, es, testkit.ConnectClaims("ws_a", map[string]any{"jti": "jti-ok"})))
	var ae *AuthError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("redis down: got %v, want an internal error", err)
	}
}
