package query

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
)

// Every JSON object the query path reads from outside (a token's header and claims, a request
// message and its params, a JWKS) is decoded by exact member name, and an object that names a
// member twice, at any depth, is refused. encoding/json alone matches names case-insensitively
// ({"OP":"auth"} would be read as op, "WID" as the wid claim) and keeps the last of two equal
// names.

// errDuplicateMember is returned by strictObject for a repeated member name.
var errDuplicateMember = errors.New("duplicate member name")

// decodeExact decodes data, which must be one JSON object, into the struct *v: each field from
// the member named exactly as its json tag (or its Go name without a tag), by encoding/json.
// Members with no such field are refused when strict, ignored otherwise. A value of the wrong
// type is refused as "field NAME has the wrong type"; errors never carry a value.
func decodeExact(data []byte, v any, strict bool) error {
	m, err := strictObject(data)
	if err != nil {
		if errors.Is(err, errDuplicateMember) {
			return err
		}
		return errors.New("malformed JSON")
	}
	rv := reflect.ValueOf(v).Elem()
	rt := rv.Type()
	known := make(map[string]bool, rt.NumField())
	for i := 0; i < rt.NumField(); i++ {
		name := memberName(rt.Field(i))
		if name == "" {
			continue
		}
		known[name] = true
		if raw, ok := m[name]; ok {
			if err := json.Unmarshal(raw, rv.Field(i).Addr().Interface()); err != nil {
				return fmt.Errorf("field %s has the wrong type", name)
			}
		}
	}
	if strict {
		names := make([]string, 0, len(m))
		for name := range m {
			if !known[name] {
				names = append(names, name)
			}
		}
		if len(names) > 0 {
			slices.Sort(names)
			if len(names[0]) > 64 {
				return errors.New("unknown field")
			}
			return fmt.Errorf("unknown field %q", names[0])
		}
	}
	return nil
}

// memberName is the JSON member name of a struct field: its json tag's name, or its Go name.
// An unexported field or a tag of "-" has none ("").
func memberName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch tag {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return tag
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
