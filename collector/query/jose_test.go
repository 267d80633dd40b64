package query

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestStrictObject(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
		members  int
	}{
		{"empty object", `{}`, true, 0},
		{"flat", `{"a":1,"b":"x","c":null,"d":true}`, true, 4},
		{"names differ only in case", `{"wid":"a","WID":"b","Wid":"c"}`, true, 3},
		{"same name at two levels", `{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}`, true, 2},
		{"nested empty containers", `{"a":{},"b":[],"c":[[],[{}]]}`, true, 3},
		{"huge number", `{"a":1e400}`, true, 1},
		{"white space around", " \n{\"a\":1}\t\n", true, 1},
		{"duplicate", `{"a":1,"a":1}`, false, 0},
		{"duplicate after a nested object", `{"a":{"b":1},"c":2,"a":3}`, false, 0},
		{"duplicate after a nested array", `{"a":[1,{"a":1}],"a":3}`, false, 0},
		{"duplicate through an escape", `{"wid":1,"\u0077id":2}`, false, 0},
		{"duplicate in a nested object", `{"x":{"b":1,"b":2}}`, false, 0},
		{"duplicate in an object in an array", `{"x":[1,[{"b":1,"b":2}]]}`, false, 0},
		{"array", `[{"a":1}]`, false, 0},
		{"string", `"a"`, false, 0},
		{"two objects", `{"a":1}{"b":2}`, false, 0},
		{"trailing garbage", `{"a":1} x`, false, 0},
		{"unclosed", `{"a":1`, false, 0},
		{"empty", ``, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := strictObject([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok %v", err, tt.ok)
			}
			if tt.ok && len(m) != tt.members {
				t.Fatalf("%d members, want %d", len(m), tt.members)
			}
		})
	}
}

// FuzzStrictObject checks that strictObject never panics, accepts only one
// valid JSON object, and keeps every member it accepts: re-encoding the
// members gives an object with as many members as the input's top level.
// Found crashers are kept in testdata/fuzz/FuzzStrictObject.
func FuzzStrictObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"wid":"a","wid":"b"}`, `{"wid":"a","WID":"b"}`, `{"a":[{"b":1,"b":2}]}`, `{"a":1}{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := strictObject(data)
		if err != nil {
			return
		}
		trimmed := bytes.TrimSpace(data)
		if !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("accepted %q, which is not one JSON object", data)
		}
		var top []json.RawMessage
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.Token() // '{'
		for dec.More() {
			var v json.RawMessage
			if _, err := dec.Token(); err != nil { // the member name
				t.Fatal(err)
			}
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			top = append(top, v)
		}
		if len(top) != len(m) {
			t.Fatalf("accepted %q with %d members, decoded %d: a duplicate was kept", data, len(top), len(m))
		}
	})
}
