package query

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// The JOSE header and the claims set of a token are decoded by exact member
// name, and an object that names a member twice is refused. encoding/json
// alone would do neither: it matches field names case-insensitively (a
// "WID" member would fill the wid claim) and keeps the last of two equal
// names (a second "wid" would choose the workspace, a second "jti" would
// escape revocation). RFC 7515 section 4 and RFC 7519 section 4 let a
// verifier refuse duplicate names; we do, in both objects and in every
// object nested in them.

// errDuplicateMember is returned by strictObject for a repeated member name.
var errDuplicateMember = errors.New("duplicate member name")

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

// strictObject decodes data, which must be exactly one JSON object, into
// its members keyed by their exact (unescaped) names. It refuses a member
// name that appears twice in that object or in any object nested in it.
func strictObject(data []byte) (map[string]json.RawMessage, error) {
	if err := checkMembers(data); err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage // map keys are matched exactly, unlike struct fields
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// checkMembers walks the tokens of data and refuses anything but one JSON
// object with no member name repeated in any of its objects.
func checkMembers(data []byte) error {
	type frame struct {
		names   map[string]struct{} // nil for an array
		wantKey bool                // in an object, the next token is a member name or '}'
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // a number too large for a float64 is still JSON
	var stack []frame
	for first := true; first || len(stack) > 0; first = false {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if first && tok != json.Delim('{') {
			return errors.New("not a JSON object")
		}
		if n := len(stack); n > 0 && stack[n-1].wantKey {
			if name, ok := tok.(string); ok {
				if _, dup := stack[n-1].names[name]; dup {
					return errDuplicateMember
				}
				stack[n-1].names[name] = struct{}{}
				stack[n-1].wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{names: make(map[string]struct{}), wantKey: true})
			continue // the object is a value only once it closes
		case json.Delim('['):
			stack = append(stack, frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: in an object, a member name comes next.
		if n := len(stack); n > 0 && stack[n-1].names != nil {
			stack[n-1].wantKey = true
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}
