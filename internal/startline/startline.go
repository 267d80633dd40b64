// Package startline reads the address a collector process listens on from its logs. Tests start
// `collector serve -listen 127.0.0.1:0` and take the port the kernel picked from the
// "collector started" line: a port found free and handed to the process could be taken by another
// process first, and the test's requests would then reach that process.
package startline

import (
	"encoding/json"
	"strings"
)

// Addr returns the listen address named by the first "collector started" line of logs (slog JSON
// lines), or "" if there is none yet.
func Addr(logs string) string {
	for line := range strings.Lines(logs) {
		var l struct{ Msg, Listen string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "collector started" {
			return l.Listen
		}
	}
	return ""
}
