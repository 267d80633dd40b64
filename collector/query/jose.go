package query

import (
	"encoding/json"
)

// The JOSE header and the claims set of a token are decoded by exact member
// name, and an object that names a member twice is refused. encoding/json
// alone would do neither: it matches field names case-insensitively (a
// "WID" member would fill the wid claim) and keeps the last of two equal
// names (a second "wid" would choose the workspace, a second "jti" would
// escape revocation). RFC 7515 section 4 and RFC 7519 section 4 let a
// verifier refuse duplicate names; we do, in both objects and in every
// object nested in them.

// joseHeader is the part of a token's JOSE header that Verify reads.
type joseHeader struct {
	Alg  string
	Kid  string
	Crit bool // a crit member is present, whatever its value
}

// decodeHeader decodes a token's JOSE header. Its errors are *AuthError
// with code unauthenticated and never carry a header value.
func decodeHeader(data []byte) (joseHeader, error) {
	m, err := strictObject(data)
	if err != nil {
		return joseHeader{}, authErr("unauthenticated", "malformed token header")
	}
	var h joseHeader
	for _, f := range []struct {
		name string
		dst  *string
	}{{"alg", &h.Alg}, {"kid", &h.Kid}} {
		if raw, ok := m[f.name]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return joseHeader{}, authErr("unauthenticated", "malformed token header")
			}
		}
	}
	_, h.Crit = m["crit"]
	return h, nil
}

// decodeClaims decodes a token's claims set: each claim of Claims from the
// member of exactly its name, other members ignored. Its errors are
// *AuthError with code unauthenticated and never carry a claim value.
func decodeClaims(data []byte) (*Claims, error) {
	m, err := strictObject(data)
	if err != nil {
		return nil, authErr("unauthenticated", "malformed token claims")
	}
	c := new(Claims)
	for _, f := range []struct {
		name string
		dst  *string
	}{{"jti", &c.JTI}, {"dsid", &c.DSID}, {"wid", &c.WID}, {"db", &c.DB}, {"url", &c.URL}, {"iss", &c.Iss}} {
		if raw, ok := m[f.name]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return nil, authErr("unauthenticated", "malformed token claims")
			}
		}
	}
	for _, f := range []struct {
		name string
		dst  **NumericDate
	}{{"exp", &c.Exp}, {"nbf", &c.Nbf}, {"iat", &c.Iat}} {
		if raw, ok := m[f.name]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return nil, authErr("unauthenticated", "token claim "+f.name+" is not a NumericDate (a number of seconds)")
			}
		}
	}
	return c, nil
}
