package segments

import "testing"

func TestCut(t *testing.T) {
	tmpl := `a;/*!+x*/b;/*!-y*/c;/*!end*//*!end*/d;/*!-x*/e;/*!end*/`
	tests := []struct {
		name string
		on   map[string]bool
		want string
	}{
		{name: "none", on: map[string]bool{}, want: "a;d;e;"},
		{name: "x", on: map[string]bool{"x": true}, want: "a;b;c;d;"},
		{name: "x and y", on: map[string]bool{"x": true, "y": true}, want: "a;b;d;"},
		{name: "y", on: map[string]bool{"y": true}, want: "a;d;e;"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Cut([]byte(tmpl), func(n string) bool { return tc.on[n] })
			if err != nil || string(got) != tc.want {
				t.Fatalf("Cut = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	names, err := Names([]byte(tmpl))
	if err != nil || len(names) != 2 || names[0] != "x" || names[1] != "y" {
		t.Fatalf("Names = %v, %v", names, err)
	}
}

func TestCutRejectsMalformed(t *testing.T) {
	for _, tmpl := range []string{`a/*!+x*/b`, `a/*!end*/`, `a/*!+x`, `/*! license */`, `/*!+*/x/*!end*/`} {
		t.Run(tmpl, func(t *testing.T) {
			if _, err := Cut([]byte(tmpl), func(string) bool { return true }); err == nil {
				t.Fatalf("Cut(%q) succeeded", tmpl)
			}
		})
	}
}
