// Package segments cuts a script template down to one variant.
//
// A template is minified JavaScript in which optional statements sit between markers that the
// minifier kept as legal comments:
//
//	/*!+tagged-events*/ ...kept when tagged-events is on... /*!end*/
//	/*!-manual*/ ...kept when manual is off... /*!end*/
//
// Markers are statement-level in the source, so cutting whole segments leaves a valid script.
// Segments nest; a segment inside a cut one is cut with it. The package is shared by the build
// (script/internal/minify checks every template) and the server (script assembles variants).
package segments

import (
	"bytes"
	"fmt"
)

// Marker delimiters as the minifier writes them.
var (
	open  = []byte("/*!")
	close = []byte("*/")
)

// Names returns, in order of first appearance and without duplicates, the extension names the
// markers of tmpl refer to. It fails when the markers are malformed or unbalanced.
func Names(tmpl []byte) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	_, err := walk(tmpl, func(string) bool { return true }, func(name string) {
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	})
	return names, err
}

// Cut returns tmpl without the markers, keeping the segments that on selects: a "+name" segment
// when on(name), a "-name" segment when !on(name). It fails when the markers are malformed or
// unbalanced. The result is a new slice; tmpl is not modified.
func Cut(tmpl []byte, on func(name string) bool) ([]byte, error) {
	return walk(tmpl, on, func(string) {})
}

func walk(tmpl []byte, on func(string) bool, saw func(string)) ([]byte, error) {
	out := make([]byte, 0, len(tmpl))
	// keep[i] says whether the i-th open segment (and so everything inside it) is kept.
	keep := []bool{true}
	rest := tmpl
	for {
		i := bytes.Index(rest, open)
		if i < 0 {
			break
		}
		if keep[len(keep)-1] {
			out = append(out, rest[:i]...)
		}
		rest = rest[i+len(open):]
		j := bytes.Index(rest, close)
		if j < 0 {
			return nil, fmt.Errorf("unterminated marker at offset %d", len(tmpl)-len(rest)-len(open))
		}
		marker := string(rest[:j])
		rest = rest[j+len(close):]
		switch {
		case marker == "end":
			if len(keep) == 1 {
				return nil, fmt.Errorf("end marker without a segment at offset %d", len(tmpl)-len(rest))
			}
			keep = keep[:len(keep)-1]
		case len(marker) > 1 && (marker[0] == '+' || marker[0] == '-'):
			name := marker[1:]
			saw(name)
			keep = append(keep, keep[len(keep)-1] && on(name) == (marker[0] == '+'))
		default:
			return nil, fmt.Errorf("unknown marker /*!%s*/", marker)
		}
	}
	if len(keep) != 1 {
		return nil, fmt.Errorf("%d segments not closed", len(keep)-1)
	}
	return append(out, rest...), nil
}
