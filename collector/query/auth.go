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
// uses. WID is the only workspace the bearer may read. Verify fills them
// from the members of exactly the names in the json tags (see decodeClaims),
// not through encoding/json's case-insensitive field matching.
type Claims struct {
	JTI  string       `json:"jti"`
	DSID string       `json:"dsid"`
	WID  string       `json:"wid"`
	DB   string       `json:"db"`
	URL  string       `json:"url"`
	Iss  string       `json:"iss"`
	Iat  *NumericDate `json:"iat,omitempty"`
	Exp  *NumericDate `json:"exp,omitempty"`
	Nbf  *NumericDate `json:"nbf,omitempty"`
}

// NumericDate is a JWT NumericDate (RFC 7519 section 2): seconds since
// 1970-01-01T00:00:00Z UTC, which may have a fraction ("exp": 1790000000.5).
// A JSON value that is not a number does not decode.
type NumericDate float64

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

// KeySource yields the ES256 public keys that sign query tokens, by key id
// or all of them. refresh asks the source to re-read its keys first when it
// may; the source rate-limits those re-reads, whoever asks.
type KeySource interface {
	// Key returns the key with the given kid.
	Key(ctx context.Context, kid string, refresh bool) (*ecdsa.PublicKey, error)
	// Keys returns every key, for a token without a kid. The slice is
	// shared: callers must not modify it. When no re-read happened, it is
	// the same slice as the previous call returned.
	Keys(ctx context.Context, refresh bool) ([]*ecdsa.PublicKey, error)
}

// Verifier checks bearer tokens: ES256 only, key by kid, wid required, jti
// not revoked. A token without a kid (kid is optional, RFC 7515 4.1.4) is
// accepted if any of the source's keys verifies its signature; an unknown
// kid is refused and never falls back to the other keys. exp is enforced
// when present with no leeway: a token is refused (token_expired) from the
// instant its exp names. nbf and iat, when present, may be up to Skew ahead
// of our clock, so that a token minted just now by an issuer whose clock
// runs slightly fast is not refused; Skew never extends exp. A Verifier is
// safe for concurrent use.
type Verifier struct {
	Keys    KeySource
	Revoker Revoker          // nil: no revocation list
	Skew    time.Duration    // how far ahead of ours the issuer's clock may be, for nbf and iat only
	Now     func() time.Time // nil: time.Now
}

// maxTokenBytes bounds the work done on an unauthenticated input.
const maxTokenBytes = 8 << 10

var b64 = base64.RawURLEncoding

// Verify checks token and returns its claims, or an *AuthError. A header
// or claims set that repeats a member name is refused like any malformed
// token.
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
	hdr, err := decodeHeader(hb)
	if err != nil {
		return nil, err
	}
	if hdr.Alg != "ES256" {
		return nil, authErr("unauthenticated", "unsupported token algorithm")
	}
	if hdr.Crit {
		return nil, authErr("unauthenticated", "unsupported critical header")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, authErr("unauthenticated", "malformed token signature")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	if hdr.Kid == "" {
		if err := v.verifyAnyKey(ctx, digest[:], r, s); err != nil {
			return nil, err
		}
	} else {
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
		if !ecdsa.Verify(key, digest[:], r, s) {
			return nil, authErr("unauthenticated", "bad token signature")
		}
	}
	pb, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, authErr("unauthenticated", "malformed token claims")
	}
	c, err := decodeClaims(pb)
	if err != nil {
		return nil, err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	// Seconds with their fraction: a float64 holds today's Unix time to well under a microsecond.
	t := float64(now().UnixNano()) / 1e9
	skew := v.Skew.Seconds()
	if c.Exp != nil && t >= float64(*c.Exp) { // RFC 7519 4.1.4: valid only before exp
		return nil, authErr("token_expired", "token expired")
	}
	if c.Nbf != nil && t+skew < float64(*c.Nbf) {
		return nil, authErr("unauthenticated", "token not yet valid")
	}
	if c.Iat != nil && t+skew < float64(*c.Iat) {
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
	return c, nil
}

// verifyAnyKey checks the signature of a token without a kid against every
// key of the source. If none verifies it, the source is asked to re-read its
// keys, as for an unknown kid (so a rotated key is picked up), under the same
// rate limit: such tokens cannot make it re-read more often than unknown kids
// can. The keys are tried again only if the re-read changed them.
func (v *Verifier) verifyAnyKey(ctx context.Context, digest []byte, r, s *big.Int) error {
	var tried []*ecdsa.PublicKey
	for _, refresh := range []bool{false, true} {
		keys, err := v.Keys.Keys(ctx, refresh)
		if err != nil {
			return fmt.Errorf("cannot load signing keys: %w", err)
		}
		if refresh && sameKeys(keys, tried) {
			break
		}
		for _, k := range keys {
			if ecdsa.Verify(k, digest, r, s) {
				return nil
			}
		}
		tried = keys
	}
	return authErr("unauthenticated", "bad token signature")
}

// sameKeys reports whether b is the very slice a is, which a KeySource
// returns when it did not re-read its keys.
func sameKeys(a, b []*ecdsa.PublicKey) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
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
// file. Keys are cached; a refresh (asked for an unknown kid, or a token
// without a kid that no key verifies) re-reads the source at most once per
// MinRefresh, so that made-up tokens cannot make us hammer the source. It is
// safe for concurrent use.
type JWKS struct {
	Location   string        // http://, https:// URL or file path
	MinRefresh time.Duration // minimum time between two re-reads; 0 means 30s
	Client     *http.Client  // nil: a client with a 10s timeout

	fetch   sync.Mutex // one read of the source at a time; held without mu
	mu      sync.Mutex // guards the fields below; never held during a read
	keys    keySet
	fetched time.Time
	loaded  bool
}

// keySet is one read of the source. It is never modified once read.
type keySet struct {
	byKid map[string]*ecdsa.PublicKey
	all   []*ecdsa.PublicKey // every key, in the set's order, with or without a kid
}

// Key implements KeySource. A caller whose kid is cached never waits for a
// read of the source that another caller started.
func (j *JWKS) Key(ctx context.Context, kid string, refresh bool) (*ecdsa.PublicKey, error) {
	ks, err := j.get(ctx, refresh)
	if err != nil {
		return nil, err
	}
	k, ok := ks.byKid[kid]
	if !ok {
		return nil, errUnknownKid
	}
	return k, nil
}

// Keys implements KeySource.
func (j *JWKS) Keys(ctx context.Context, refresh bool) ([]*ecdsa.PublicKey, error) {
	ks, err := j.get(ctx, refresh)
	if err != nil {
		return nil, err
	}
	return ks.all, nil
}

// get returns the cached keys, reading the source first if it is due (see
// cached). Only the caller that reads waits for the read.
func (j *JWKS) get(ctx context.Context, refresh bool) (keySet, error) {
	if ks, due := j.cached(refresh); !due {
		return ks, nil
	}
	j.fetch.Lock()
	defer j.fetch.Unlock()
	if _, due := j.cached(refresh); due { // another caller may have read it meanwhile
		ks, err := j.load(ctx)
		j.mu.Lock()
		j.fetched = time.Now()
		if err == nil {
			j.keys, j.loaded = ks, true
		}
		loaded := j.loaded
		j.mu.Unlock()
		if err != nil && !loaded {
			return keySet{}, err
		}
	}
	ks, _ := j.cached(false)
	return ks, nil
}

// cached returns the cached keys and whether the source is due for a read:
// never read yet, or refresh asked and MinRefresh passed.
func (j *JWKS) cached(refresh bool) (ks keySet, due bool) {
	minRefresh := j.MinRefresh
	if minRefresh == 0 {
		minRefresh = 30 * time.Second
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.loaded || (refresh && time.Since(j.fetched) >= minRefresh) {
		return keySet{}, true
	}
	return j.keys, false
}

func (j *JWKS) load(ctx context.Context) (keySet, error) {
	var data []byte
	if strings.HasPrefix(j.Location, "http://") || strings.HasPrefix(j.Location, "https://") {
		client := j.Client
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.Location, nil)
		if err != nil {
			return keySet{}, fmt.Errorf("cannot build JWKS request: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return keySet{}, fmt.Errorf("cannot fetch JWKS: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return keySet{}, fmt.Errorf("cannot fetch JWKS: status %d", resp.StatusCode)
		}
		data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return keySet{}, fmt.Errorf("cannot read JWKS: %w", err)
		}
	} else {
		var err error
		data, err = os.ReadFile(j.Location)
		if err != nil {
			return keySet{}, fmt.Errorf("cannot read JWKS file: %w", err)
		}
	}
	return parseJWKS(data)
}

// parseJWKS decodes a JSON Web Key Set and returns its ES256 signing keys
// (P-256 EC): all of them in order, and those with a kid by kid. Keys of
// other types, curves or uses are ignored.
func parseJWKS(data []byte) (keySet, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := decodeExact(data, &set, false); err != nil {
		return keySet{}, fmt.Errorf("cannot decode JWKS: %w", err)
	}
	out := keySet{byKid: make(map[string]*ecdsa.PublicKey)}
	for i, raw := range set.Keys {
		var k struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			Kid string `json:"kid"`
			X   string `json:"x"`
			Y   string `json:"y"`
			Use string `json:"use"`
			Alg string `json:"alg"`
		}
		if err := decodeExact(raw, &k, false); err != nil {
			return keySet{}, fmt.Errorf("cannot decode JWKS key %d: %w", i+1, err)
		}
		if k.Kty != "EC" || k.Crv != "P-256" || (k.Alg != "" && k.Alg != "ES256") || (k.Use != "" && k.Use != "sig") {
			continue
		}
		x, errX := b64.DecodeString(k.X)
		y, errY := b64.DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return keySet{}, fmt.Errorf("cannot decode JWKS key %q: bad coordinates", k.Kid)
		}
		raw := append([]byte{4}, append(x, y...)...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
		if err != nil {
			return keySet{}, fmt.Errorf("cannot decode JWKS key %q: %w", k.Kid, err)
		}
		out.byKid[k.Kid] = pub
		out.all = append(out.all, pub)
	}
	return out, nil
}
