package query

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LocalKeyFile is the name of a data directory's own signing key inside the directory given to
// OpenLocalKey: an ES256 (P-256) private key, PKCS #8 in PEM, mode 0600.
const LocalKeyFile = "signing-key.pem"

// LocalRevokedFile is the name of the revocation list that goes with the local key, inside the
// same directory: revoked token ids, one per line, read by a FileRevoker.
const LocalRevokedFile = "revoked-jti"

// LocalKey is a data directory's own ES256 key. It signs the tokens that `collector token issue`
// prints and, as a KeySource holding only its public half, verifies them when no JWKS is
// configured: a self-hoster reaches the query path with no identity provider. It is immutable
// and safe for concurrent use.
type LocalKey struct {
	priv *ecdsa.PrivateKey
	kid  string
	pub  []*ecdsa.PublicKey // the one public key, the same slice on every Keys call
	path string
}

// OpenLocalKey returns the key in dir/LocalKeyFile, creating dir (mode 0700) and the key first
// when there is none; created says whether this call made it. The key is made once: it is
// written to a temporary file and linked into place only if no key is there, so two processes
// that race (a `token issue` while `serve` starts) end up with the same key. A key file that
// others may read (any group or other permission bit) is refused, as ssh refuses one.
func OpenLocalKey(dir string) (k *LocalKey, created bool, err error) {
	path := filepath.Join(dir, LocalKeyFile)
	k, err = readLocalKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("cannot create the key directory: %w", err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("cannot generate a signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, false, fmt.Errorf("cannot encode the signing key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".signing-key-*")
	if err != nil {
		return nil, false, fmt.Errorf("cannot write the signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600; Chmod keeps it so whatever the umask.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("cannot write the signing key: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("cannot write the signing key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("cannot write the signing key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("cannot write the signing key: %w", err)
	}
	switch err := os.Link(tmp.Name(), path); {
	case err == nil:
		created = true
	case errors.Is(err, fs.ErrExist): // another process made it first: use theirs
	default:
		return nil, false, fmt.Errorf("cannot write the signing key: %w", err)
	}
	k, err = readLocalKey(path)
	return k, created && err == nil, err
}

// readLocalKey reads and checks a key file. Its errors name the file, never its content.
func readLocalKey(path string) (*LocalKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the signing key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s has mode %#o: others may read it; chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s is not a PEM PRIVATE KEY", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s does not decode (PKCS #8 wanted)", path)
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key %s is not a P-256 (ES256) key", path)
	}
	raw, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return &LocalKey{priv: priv, kid: thumbprint(raw), pub: []*ecdsa.PublicKey{&priv.PublicKey}, path: path}, nil
}

// thumbprint is the RFC 7638 JWK thumbprint of an uncompressed P-256 point: the key's kid, so
// the same key always has the same id.
func thumbprint(raw []byte) string {
	// The members in lexicographic order, no white space (RFC 7638 section 3.2).
	canon := `{"crv":"P-256","kty":"EC","x":"` + b64.EncodeToString(raw[1:33]) + `","y":"` + b64.EncodeToString(raw[33:65]) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return b64.EncodeToString(sum[:])
}

// KID is the key id tokens carry in their header: the key's RFC 7638 thumbprint.
func (k *LocalKey) KID() string { return k.kid }

// Path is the key file.
func (k *LocalKey) Path() string { return k.path }

// Key implements KeySource with the one public key.
func (k *LocalKey) Key(_ context.Context, kid string, _ bool) (*ecdsa.PublicKey, error) {
	if kid != k.kid {
		return nil, errUnknownKid
	}
	return k.pub[0], nil
}

// Keys implements KeySource with the one public key.
func (k *LocalKey) Keys(context.Context, bool) ([]*ecdsa.PublicKey, error) { return k.pub, nil }

// JWKS is the public key as a JSON Web Key Set, for a verifier elsewhere (-jwks of another
// process) that should trust this key's tokens.
func (k *LocalKey) JWKS() []byte {
	raw, _ := k.priv.PublicKey.Bytes() // cannot fail: readLocalKey encoded it once already
	out, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": k.kid, "alg": "ES256", "use": "sig",
		"x": b64.EncodeToString(raw[1:33]), "y": b64.EncodeToString(raw[33:65]),
	}}})
	return out
}

// TokenRequest describes a token to issue.
type TokenRequest struct {
	WID string        // the one workspace the token reads; required
	URL string        // the url claim: where the data source is reached (e.g. ws://127.0.0.1:8080/connect/v1)
	TTL time.Duration // >0: exp is iat+TTL; 0: no exp, as Connect's own tokens
	Now time.Time     // iat; zero: time.Now
}

// Issuer and data source of local tokens: the iss and dsid claims, fixed so that a reader of a
// token can tell a local one from one Kyomi Connect issued.
const (
	LocalIssuer = "kyomi-collector"
	LocalDSID   = "local"
	LocalDB     = "analytics"
)

// Issue signs a token with Connect's claims (jti, dsid, wid, db, url, iss, iat, and exp when a
// TTL is given) and returns it with its claims. jti is 128 random bits in hex, so it can be
// revoked on its own and never begins with '-', which a command line would read as a flag. The token is a credential: the caller prints it to its user and nowhere else.
func (k *LocalKey) Issue(r TokenRequest) (string, *Claims, error) {
	if !validWID(r.WID) {
		return "", nil, errors.New("cannot issue a token: the workspace id must be 1-64 letters, digits, '_', '-' or '.'")
	}
	if r.TTL < 0 {
		return "", nil, fmt.Errorf("cannot issue a token: ttl %s is negative", r.TTL)
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", nil, fmt.Errorf("cannot issue a token: %w", err)
	}
	iat := NumericDate(now.Unix())
	c := &Claims{JTI: hex.EncodeToString(id[:]), DSID: LocalDSID, WID: r.WID, DB: LocalDB, URL: r.URL, Iss: LocalIssuer, Iat: &iat}
	if r.TTL > 0 {
		exp := NumericDate(now.Add(r.TTL).Unix())
		c.Exp = &exp
	}
	hdr, err := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": k.kid})
	if err != nil {
		return "", nil, fmt.Errorf("cannot issue a token: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", nil, fmt.Errorf("cannot issue a token: %w", err)
	}
	input := b64.EncodeToString(hdr) + "." + b64.EncodeToString(body)
	digest := sha256.Sum256([]byte(input))
	rr, s, err := ecdsa.Sign(rand.Reader, k.priv, digest[:])
	if err != nil {
		return "", nil, fmt.Errorf("cannot sign a token: %w", err)
	}
	var sig [64]byte // JWS ES256: R and S, 32 bytes each, big-endian (RFC 7518 section 3.4)
	rr.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64.EncodeToString(sig[:]), c, nil
}
