package chdb

import (
	"bytes"
	"strings"
)

// Scrub removes from an engine error message what may carry data: quoted
// literals that are not plain identifiers, the statement excerpt that
// syntax errors quote, and any line of the statement itself.
func Scrub(msg string, sql []byte) string {
	// Syntax errors quote the statement after "): " up to ". Expected".
	if i := strings.Index(msg, "failed at position"); i >= 0 {
		if j := strings.Index(msg[i:], "): "); j >= 0 {
			start := i + j + 3
			end := strings.Index(msg[start:], ". Expected")
			if end < 0 {
				end = strings.IndexAny(msg[start:], "\n")
			}
			if end < 0 {
				end = len(msg) - start
			}
			msg = msg[:start] + "<statement>" + msg[start+end:]
		}
	}
	msg = scrubQuoted(msg)
	// Safety net: no line of the statement survives verbatim.
	for line := range bytes.SplitSeq(sql, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) >= 8 && strings.Contains(msg, string(line)) {
			msg = strings.ReplaceAll(msg, string(line), "<statement>")
		}
	}
	return msg
}

// scrubQuoted replaces single-quoted segments with '<redacted>' unless they
// look like an identifier (letter or underscore first, then letters,
// digits, '_' or '.'), which table and column names do and IP addresses,
// user agents and free text do not.
func scrubQuoted(msg string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(msg, '\'')
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		j := strings.IndexByte(msg[i+1:], '\'')
		if j < 0 {
			b.WriteString(msg[:i])
			b.WriteString("'<redacted>")
			return b.String()
		}
		lit := msg[i+1 : i+1+j]
		b.WriteString(msg[:i+1])
		if isIdent(lit) {
			b.WriteString(lit)
		} else {
			b.WriteString("<redacted>")
		}
		b.WriteByte('\'')
		msg = msg[i+j+2:]
	}
}

func isIdent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		case i > 0 && (c == '.' || (c >= '0' && c <= '9')):
		default:
			return false
		}
	}
	return true
}
