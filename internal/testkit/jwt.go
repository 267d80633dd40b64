package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"
)

var b64 = base64.RawURLEncoding

// Key is an ES256 signing key with its key id, to sign test tokens and publish its public half in
// a JWKS (see JWKS).
type Key struct {
	// KID is the key id the JWKS publishes the key under.
	KID  string
	priv *ecdsa.PrivateKey
}

// NewKey makes a P-256 key published under kid.
func NewKey(t testing.TB, kid string) *Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{KID: kid, priv: k}
}

// Public returns the public half of k.
func (k *Key) Public() *ecdsa.PublicKey { return &k.priv.PublicKey }

// JWKS returns a JWK set that publishes the public half of each key, under its KID, as Kyomi
// Connect publishes its keys.
func JWKS(t testing.TB, keys ...*Key) []byte {
	t.Helper()
	set := struct {
		Keys []map[string]string `json:"keys"`
	}{Keys: []map[string]string{}}
	for _, k := range keys {
		raw, err := k.priv.PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, map[string]string{
			"kty": "EC", "crv": "P-256", "kid": k.KID, "alg": "ES256", "use": "sig",
			"x": b64.EncodeToString(raw[1:33]), "y": b64.EncodeToString(raw[33:]),
		})
	}
	out, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Header is the JWS header of a token signed by k: ES256 with k's key id.
func (k *Key) Header() map[string]any { return map[string]any{"alg": "ES256", "kid": k.KID} }

// Sign makes a compact JWS of the header and claims, signed ES256 by k. The header is taken as
// given: k.Header() for a token a verifier of k's JWKS accepts, or any other to test a refusal.
func (k *Key) Sign(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	hb, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return k.SignRaw(t, string(hb), string(cb))
}

// SignRaw is Sign of the header and claims JSON texts as given, to sign what a map cannot hold (a
// repeated member, a member that differs only in case).
func (k *Key) SignRaw(t testing.TB, header, claims string) string {
	t.Helper()
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(claims))
	d := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig)
}

// ConnectClaims returns the claims of a Kyomi Connect token for workspace wid, issued ten seconds
// ago and without exp, with jti "jti-1" and url "https://c.example". Each member of extra replaces
// the claim of its name, or removes it when its value is nil.
func ConnectClaims(wid string, extra map[string]any) map[string]any {
	c := map[string]any{"jti": "jti-1", "dsid": "ds-1", "wid": wid, "db": "analytics",
		"url": "https://c.example", "iss": "kyomi", "iat": time.Now().Unix() - 10}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// ConnectKey is a Key (kid "k1") whose public half is published in a JWKS file, as Kyomi Connect
// publishes its own: give JWKS to the collector's -jwks and sign tokens it trusts.
type ConnectKey struct {
	*Key
	// JWKS is the path of the JWKS file, in the test's temporary directory.
	JWKS string
}

// NewConnectKey makes a key and writes its JWKS file.
func NewConnectKey(t testing.TB) *ConnectKey {
	t.Helper()
	k := NewKey(t, "k1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	WriteFile(t, path, JWKS(t, k))
	return &ConnectKey{Key: k, JWKS: path}
}

// Token signs a token with Kyomi Connect's claims (ConnectClaims) for workspace wid, with the
// given jti and url claims.
func (k *ConnectKey) Token(t testing.TB, wid, jti, url string) string {
	t.Helper()
	h := k.Header()
	h["typ"] = "JWT"
	return k.Sign(t, h, ConnectClaims(wid, map[string]any{"jti": jti, "url": url}))
}
