package sink

import (
	"bytes"
	"strings"
)

// scrub removes from an engine error message what may carry data: quoted
// literals that are not plain identifiers, the statement excerpt that
// syntax errors quote, and any line of the statement itself.
func scrub(msg string, sql []byte) string {
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
	msg = scrubRowValues(msg)
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

// rowValueMarks introduce values of a row or an argument that the engine
// prints bare or as identifier-like literals: a failed constraint or TTL
// lists "Column values: workspace_id = 'ws_acme', ...", and functions such
// as base64Decode or toIPv4 print "value (beta.example|/secret)". The rest
// of that sentence is redacted, whatever it looks like.
var rowValueMarks = []string{"Column values:", "column values:", "value (", "Value ("}

func scrubRowValues(msg string) string {
	for _, mark := range rowValueMarks {
		for from := 0; ; {
			i := strings.Index(msg[from:], mark)
			if i < 0 {
				break
			}
			start := from + i + len(mark)
			end := len(msg)
			if j := strings.IndexAny(msg[start:], "\n"); j >= 0 {
				end = start + j
			}
			if strings.HasSuffix(mark, "(") {
				if j := strings.LastIndexByte(msg[start:end], ')'); j >= 0 {
					end = start + j
				}
			} else if j := strings.Index(msg[start:end], ". "); j >= 0 {
				end = start + j
			}
			msg = msg[:start] + "<redacted>" + msg[end:]
			from = start + len("<redacted>")
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
