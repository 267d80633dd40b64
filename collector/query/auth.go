package query

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Claims are the claims of a Kyomi Connect query token that the query path
// uses. WID is the only workspace the bearer may read.
type Claims struct {
	JTI  string `json:"jti"`
	DSID string `json:"dsid"`
	WID  string `json:"wid"`
	DB   string `json:"db"`
	URL  string `json:"url"`
	Iss  string `json:"iss"`
	Iat  *int64 `json:"iat,omitempty"`
	Exp  *int64 `json:"exp,omitempty"`
	Nbf  *int64 `json:"nbf,omitempty"`
}

// AuthError is a refused token. Code is one of the stable protocol error
// codes ("unauthenticated", "token_expired", "token_revoked"); the message
// never contains the token.
type AuthError struct {
	Code   string
	Reason string
}

// Error returns the code and reason; it never contains the token.
func (e *AuthError) Error() string { return e.Code + ": " + e.Reason }

func authErr(code, reason string) error { return &AuthError{Code: code, Reason: reason} }

// Revoker says whether a token id has been revoked. Implementations are safe
// for concurrent use.
type Revoker interface {
	Revoked(ctx context.Context, jti string) (bool, error)
}

// KeySource yields the ES256 public keys that sign query tokens, by key id.
type KeySource interface {
	// Key returns the key with the given kid. refresh asks the source to
	// re-read its keys first when it may (rate-limited by the source).
	Key(ctx context.Context, kid string, refresh bool) (*ecdsa.PublicKey, error)
}

// Verifier checks bearer tokens: ES256 only, key by kid, wid required, jti
// not revoked. exp is enforced when present with no leeway: a token is
// refused (token_expired) from the second its exp names. nbf and iat, when
// present, may be up to Skew ahead of our clock, so that a token minted just
// now by an issuer whose clock runs slightly fast is not refused; Skew never
// extends exp. A Verifier is safe for concurrent use.
type Verifier struct {
	Keys    KeySource
	Revoker Revoker          // nil: no revocation list
	Skew    time.Duration    // how far ahead of ours the issuer's clock may be, for nbf and iat only
	Now     func() time.Time // nil: time.Now
}

// maxTokenBytes bounds the work done on an unauthenticated input.
const maxTokenBytes = 8 << 10

var b64 = base64.RawURLEncoding

// Verify checks token and returns its claims, or an *AuthError.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	if len(token) == 0 || len(token) > maxTokenBytes {
		return nil, authErr("unauthenticated", "missing or oversized token")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, authErr("unauthenticated", "malformed token")
	}
	hb, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, authErr("unauthenticated", "malformed token header")
	}
	var hdr struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, authErr("unauthenticated", "malformed token header")
	}
	if hdr.Alg != "ES256" {
		return nil, authErr("unauthenticated", "unsupported token algorithm")
	}
	if hdr.Crit != nil {
		return nil, authErr("unauthenticated", "unsupported critical header")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, authErr("unauthenticated", "malformed token signature")
	}
	key, err := v.Keys.Key(ctx, hdr.Kid, false)
	if errors.Is(err, errUnknownKid) {
		key, err = v.Keys.Key(ctx, hdr.Kid, true)
	}
	if err != nil {
		if errors.Is(err, errUnknownKid) {
			return nil, authErr("unauthenticated", "unknown signing key")
		}
		return nil, fmt.Errorf("cannot load signing keys: %w", err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(key, digest[:], r, s) {
		return nil, authErr("unauthenticated", "bad token signature")
	}
	pb, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, authErr("unauthenticated", "malformed token claims")
	}
	var c Claims
	if err := json.Unmarshal(pb, &c); err != nil {
		return nil, authErr("unauthenticated", "malformed token claims")
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now().Unix()
	skew := int64(v.Skew / time.Second)
	if c.Exp != nil && t >= *c.Exp { // RFC 7519 4.1.4: valid only before exp
		return nil, authErr("token_expired", "token expired")
	}
	if c.Nbf != nil && t+skew < *c.Nbf {
		return nil, authErr("unauthenticated", "token not yet valid")
	}
	if c.Iat != nil && t+skew < *c.Iat {
		return nil, authErr("unauthenticated", "token issued in the future")
	}
	if !validWID(c.WID) {
		return nil, authErr("unauthenticated", "token has no valid wid claim")
	}
	if v.Revoker != nil {
		if c.JTI == "" {
			return nil, authErr("unauthenticated", "token has no jti claim")
		}
		revoked, err := v.Revoker.Revoked(ctx, c.JTI)
		if err != nil {
			return nil, fmt.Errorf("cannot check token revocation: %w", err)
		}
		if revoked {
			return nil, authErr("token_revoked", "token revoked")
		}
	}
	return &c, nil
}

// validWID accepts workspace ids made of letters, digits, '_', '-' and '.',
// which is what the workspaces file allows; anything else is refused so the
// id can be quoted into SQL safely.
func validWID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

var errUnknownKid = errors.New("unknown kid")

// JWKS is a KeySource reading a JSON Web Key Set from an http(s) URL or a
// file. Keys are cached; an unknown kid triggers a re-read at most once per
// MinRefresh so that tokens with made-up kids cannot make us hammer the
// source. It is safe for concurrent use.
type JWKS struct {
	Location   string        // http://, https:// URL or file path
	MinRefresh time.Duration // minimum time between two re-reads; 0 means 30s
	Client     *http.Client  // nil: a client with a 10s timeout

	fetch   sync.Mutex // one read of the source at a time; held without mu
	mu      sync.Mutex // guards the fields below; never held during a read
	keys    map[string]*ecdsa.PublicKey
	fetched time.Time
	loaded  bool
}

// Key implements KeySource. A caller whose kid is cached never waits for a
// read of the source that another caller started.
func (j *JWKS) Key(ctx context.Context, kid string, refresh bool) (*ecdsa.PublicKey, error) {
	if k, ok, due := j.cached(kid, refresh); !due {
		if !ok {
			return nil, errUnknownKid
		}
		return k, nil
	}
	j.fetch.Lock()
	defer j.fetch.Unlock()
	if _, _, due := j.cached(kid, refresh); due { // another caller may have read it meanwhile
		keys, err := j.load(ctx)
		j.mu.Lock()
		j.fetched = time.Now()
		if err == nil {
			j.keys, j.loaded = keys, true
		}
		loaded := j.loaded
		j.mu.Unlock()
		if err != nil && !loaded {
			return nil, err
		}
	}
	k, ok, _ := j.cached(kid, false)
	if !ok {
		return nil, errUnknownKid
	}
	return k, nil
}

// cached returns the cached key for kid and whether the source is due for
// a read: never read yet, or refresh asked and MinRefresh passed.
func (j *JWKS) cached(kid string, refresh bool) (k *ecdsa.PublicKey, ok, due bool) {
	minRefresh := j.MinRefresh
	if minRefresh == 0 {
		minRefresh = 30 * time.Second
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.loaded || (refresh && time.Since(j.fetched) >= minRefresh) {
		return nil, false, true
	}
	k, ok = j.keys[kid]
	return k, ok, false
}

func (j *JWKS) load(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	var data []byte
	if strings.HasPrefix(j.Location, "http://") || strings.HasPrefix(j.Location, "https://") {
		client := j.Client
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.Location, nil)
		if err != nil {
			return nil, fmt.Errorf("cannot build JWKS request: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("cannot fetch JWKS: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("cannot fetch JWKS: status %d", resp.StatusCode)
		}
		data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("cannot read JWKS: %w", err)
		}
	} else {
		var err error
		data, err = os.ReadFile(j.Location)
		if err != nil {
			return nil, fmt.Errorf("cannot read JWKS file: %w", err)
		}
	}
	return ParseJWKS(data)
}

// ParseJWKS decodes a JSON Web Key Set and returns its P-256 EC keys by kid.
// Keys of other types or curves are ignored.
func ParseJWKS(data []byte) (map[string]*ecdsa.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty, Crv, Kid, X, Y, Use, Alg string
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("cannot decode JWKS: %w", err)
	}
	out := make(map[string]*ecdsa.PublicKey)
	for _, k := range set.Keys {
		if k.Kty != "EC" || k.Crv != "P-256" || (k.Alg != "" && k.Alg != "ES256") || (k.Use != "" && k.Use != "sig") {
			continue
		}
		x, errX := b64.DecodeString(k.X)
		y, errY := b64.DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("cannot decode JWKS key %q: bad coordinates", k.Kid)
		}
		raw := append([]byte{4}, append(x, y...)...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
		if err != nil {
			return nil, fmt.Errorf("cannot decode JWKS key %q: %w", k.Kid, err)
		}
		out[k.Kid] = pub
	}
	return out, nil
}
