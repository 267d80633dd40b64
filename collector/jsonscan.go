package collector

import (
	"unicode/utf8"
	"unsafe"
)

// scanner reads JSON over s, one token at a time from i, and knows nothing of what the tokens
// mean: Plausible's field rules are the decoder's (beacon.go). A string without escapes is
// returned pointing into s; one with escapes is unescaped into *scratch, which the caller owns.
// Unescaping never lengthens a string, so a scratch with capacity len(s) is never reallocated
// while a scan runs and the strings made from it stay valid: the caller sizes it so. Several
// scanners may share one scratch (the decoder reads props and revenue with scanners of their
// own), one at a time. It does not allocate.
type scanner struct {
	s       []byte
	i       int
	scratch *[]byte
}

// ws skips white space.
func (sc *scanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// consume reads c if it is next.
func (sc *scanner) consume(c byte) bool {
	if sc.i < len(sc.s) && sc.s[sc.i] == c {
		sc.i++
		return true
	}
	return false
}

// peek returns the next byte, 0 at the end.
func (sc *scanner) peek() byte {
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

// lit reads word if it is next.
func (sc *scanner) lit(word string) bool {
	if len(sc.s)-sc.i >= len(word) && string(sc.s[sc.i:sc.i+len(word)]) == word {
		sc.i += len(word)
		return true
	}
	return false
}

// numberEnd reports whether the value that was just read is not followed by more number text.
func (sc *scanner) numberEnd() bool {
	switch sc.peek() {
	case 0, ' ', '\t', '\n', '\r', ',', '}':
		return true
	}
	return false
}

// number reads a JSON number and returns its text.
func (sc *scanner) number() (string, bool) {
	start := sc.i
	sc.consume('-')
	switch {
	case sc.consume('0'):
	case sc.peek() >= '1' && sc.peek() <= '9':
		sc.digits()
	default:
		return "", false
	}
	if sc.consume('.') {
		if !sc.digits() {
			return "", false
		}
	}
	if c := sc.peek(); c == 'e' || c == 'E' {
		sc.i++
		if c := sc.peek(); c == '+' || c == '-' {
			sc.i++
		}
		if !sc.digits() {
			return "", false
		}
	}
	if !sc.numberEnd() && sc.peek() != ']' {
		return "", false
	}
	return bytesString(sc.s[start:sc.i]), true
}

// digits reads a run of decimal digits and reports whether there was one.
func (sc *scanner) digits() bool {
	start := sc.i
	for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
		sc.i++
	}
	return sc.i > start
}

// str reads a JSON string. Without escapes it points into s; with escapes it is unescaped into
// scratch.
func (sc *scanner) str() (string, bool) {
	if !sc.consume('"') {
		return "", false
	}
	start := sc.i
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		switch {
		case c == '"':
			v := bytesString(sc.s[start:sc.i])
			sc.i++
			return v, true
		case c == '\\':
			return sc.strEscaped(start)
		case c < 0x20:
			return "", false
		}
		sc.i++
	}
	return "", false
}

// strEscaped goes on reading a string from its first escape, unescaping it into scratch.
func (sc *scanner) strEscaped(start int) (string, bool) {
	out := len(*sc.scratch)
	scratch := append(*sc.scratch, sc.s[start:sc.i]...)
	defer func() { *sc.scratch = scratch }()
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		switch {
		case c == '"':
			sc.i++
			return bytesString(scratch[out:]), true
		case c < 0x20:
			return "", false
		case c != '\\':
			scratch = append(scratch, c)
			sc.i++
			continue
		}
		sc.i++
		if sc.i >= len(sc.s) {
			return "", false
		}
		e := sc.s[sc.i]
		sc.i++
		switch e {
		case '"', '\\', '/':
			scratch = append(scratch, e)
		case 'b':
			scratch = append(scratch, '\b')
		case 'f':
			scratch = append(scratch, '\f')
		case 'n':
			scratch = append(scratch, '\n')
		case 'r':
			scratch = append(scratch, '\r')
		case 't':
			scratch = append(scratch, '\t')
		case 'u':
			r, ok := sc.hex4()
			if !ok {
				return "", false
			}
			if r >= 0xD800 && r < 0xDC00 { // high surrogate: a low one must follow
				if !sc.lit(`\u`) {
					return "", false
				}
				r2, ok := sc.hex4()
				if !ok || r2 < 0xDC00 || r2 >= 0xE000 {
					return "", false
				}
				r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
			} else if r >= 0xDC00 && r < 0xE000 {
				return "", false // lone low surrogate: not valid UTF-8 once decoded
			}
			// A \uXXXX escape is 6 bytes and its UTF-8 form at most 3 (4 for a 12-byte pair),
			// so scratch stays within len(body).
			scratch = utf8.AppendRune(scratch, rune(r))
		default:
			return "", false
		}
	}
	return "", false
}

// hex4 reads the four hex digits of a \u escape.
func (sc *scanner) hex4() (uint32, bool) {
	if len(sc.s)-sc.i < 4 {
		return 0, false
	}
	var r uint32
	for _, c := range sc.s[sc.i : sc.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= uint32(c - '0')
		case c >= 'a' && c <= 'f':
			r |= uint32(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= uint32(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	sc.i += 4
	return r, true
}

// skip skips one JSON value of any kind, validating it, to a depth of maxNesting.
func (sc *scanner) skip(depth int) bool {
	if depth > maxNesting {
		return false
	}
	switch c := sc.peek(); {
	case c == '"':
		return sc.skipStr()
	case c == '{':
		sc.i++
		sc.ws()
		if sc.consume('}') {
			return true
		}
		for {
			sc.ws()
			if !sc.skipStr() {
				return false
			}
			sc.ws()
			if !sc.consume(':') {
				return false
			}
			sc.ws()
			if !sc.skip(depth + 1) {
				return false
			}
			sc.ws()
			if sc.consume(',') {
				continue
			}
			return sc.consume('}')
		}
	case c == '[':
		sc.i++
		sc.ws()
		if sc.consume(']') {
			return true
		}
		for {
			sc.ws()
			if !sc.skip(depth + 1) {
				return false
			}
			sc.ws()
			if sc.consume(',') {
				continue
			}
			return sc.consume(']')
		}
	case c == 't':
		return sc.lit("true")
	case c == 'f':
		return sc.lit("false")
	case c == 'n':
		return sc.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		_, ok := sc.number()
		return ok
	}
	return false
}

// skipStr reads a JSON string that nothing uses, giving back the scratch its escapes took.
func (sc *scanner) skipStr() bool {
	mark := len(*sc.scratch)
	_, ok := sc.str()
	*sc.scratch = (*sc.scratch)[:mark]
	return ok
}

// bytesString views p as a string without copying; p must not change while the string is used.
func bytesString(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	return unsafe.String(&p[0], len(p))
}
