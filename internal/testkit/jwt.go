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

// ConnectKey is an ES256 signing key whose public half is published in a JWKS file (kid "k1"),
// as Kyomi Connect publishes its own: give JWKS to the collector's -jwks and sign tokens it trusts.
type ConnectKey struct {
	priv *ecdsa.PrivateKey
	// JWKS is the path of the JWKS file, in the test's temporary directory.
	JWKS string
}

// NewConnectKey makes a key and writes its JWKS file.
func NewConnectKey(t testing.TB) *ConnectKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding
	set, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
		"x": b64.EncodeToString(raw[1:33]), "y": b64.EncodeToString(raw[33:]),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	WriteFile(t, path, set)
	return &ConnectKey{priv: k, JWKS: path}
}

// Token signs a token with Kyomi Connect's claims for workspace wid, with the given jti and url
// claims, issued ten seconds ago and without exp.
func (k *ConnectKey) Token(t testing.TB, wid, jti, url string) string {
	t.Helper()
	b64 := base64.RawURLEncoding
	hdr, _ := json.Marshal(map[string]any{"alg": "ES256", "kid": "k1", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{"jti": jti, "dsid": "ds-1", "wid": wid, "db": "analytics",
		"url": url, "iss": "kyomi", "iat": time.Now().Unix() - 10})
	input := b64.EncodeToString(hdr) + "." + b64.EncodeToString(claims)
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
