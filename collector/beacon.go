package collector

import (
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// Limits of one event body. Each is enforced with a 400 (413 for the body) whose message names
// the field.
const (
	MaxBodyBytes     = 8 << 10 // whole body; a pageview is 150-400 bytes
	MaxURLBytes      = 2048    // u/url: the longest URL browsers and CDNs handle reliably
	MaxReferrerBytes = 2048    // r/referrer
	MaxNameBytes     = 120     // n/name, as Plausible
	MaxProps         = 30      // p/props pairs, as Plausible
	MaxPropKeyBytes  = 300     // property name, as Plausible
	MaxPropValBytes  = 2000    // property value, as Plausible
	MaxDomains       = 10      // entries of a comma-separated d (Plausible's multi-site form)
	maxDomainBytes   = 2048    // d before it is split
	maxCurrencyBytes = 3       // ISO 4217
	maxNesting       = 32      // depth of unknown values skipped
)

// BeaconError is a malformed or over-limit event body. Field names the JSON field (its long name)
// and Msg says what is wrong; neither ever contains input data.
type BeaconError struct {
	Field string
	Msg   string
}

// Error returns "field: message".
func (e *BeaconError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Beacon is a decoded event body. Its strings point into the body and into the beacon's own
// scratch buffer: they are valid until the next Decode or Reset and until the body is reused, so
// a caller that keeps anything must copy it. A Beacon is reused through Reset, which keeps
// capacity; it is not safe for concurrent use.
type Beacon struct {
	Name        string
	URL         string
	Domain      string // as sent; may be a comma-separated list (see Domains)
	Referrer    string
	HashMode    bool
	Interactive bool // true unless the body says "i": false
	HasRevenue  bool
	Revenue     float64
	Currency    string // upper case ISO 4217 code when HasRevenue
	PropKeys    []string
	PropValues  []string

	scratch []byte // unescaped strings and stringified numbers; never reallocated during Decode
	err     BeaconError
}

// Reset clears b for the next body and keeps its buffers.
func (b *Beacon) Reset() {
	scratch, keys, vals := b.scratch[:0], b.PropKeys[:0], b.PropValues[:0]
	clear(b.PropKeys)
	clear(b.PropValues)
	*b = Beacon{scratch: scratch, PropKeys: keys, PropValues: vals}
}

// Decode parses body, a JSON object in the shape of Plausible's Events API, into b (which it resets
// first). Short and long names are accepted (n/name, u/url, d/domain, r/referrer, p/props,
// $/revenue, h, i); unknown fields are skipped; a field given twice keeps its last value. Property
// values may be strings, numbers or booleans (numbers keep their JSON spelling, booleans become
// "true"/"false"); null values are dropped; objects and arrays are rejected. Strings must be valid
// UTF-8 without control characters. The returned error is a *BeaconError, owned by b.
func (b *Beacon) Decode(body []byte) error {
	b.Reset()
	b.Interactive = true
	if len(body) > MaxBodyBytes {
		return b.fail("body", "larger than 8192 bytes")
	}
	if cap(b.scratch) < len(body) {
		// Unescaping never lengthens a string and a number's text is copied as is, so scratch never
		// grows past len(body): strings made from it stay valid for the whole decode.
		b.scratch = make([]byte, 0, len(body)+len(body)/4)
	}
	if !utf8.Valid(body) {
		return b.fail("body", "not valid UTF-8")
	}
	d := decoder{b: b, s: body}
	d.ws()
	if !d.consume('{') {
		return b.fail("body", "must be a JSON object")
	}
	if err := d.object("", "field name", d.field); err != nil {
		return err
	}
	d.ws()
	if d.i != len(d.s) {
		return b.fail("", "invalid JSON: data after the object")
	}
	return b.required()
}

func (b *Beacon) required() error {
	switch {
	case b.Name == "":
		return b.fail("name", "required")
	case b.URL == "":
		return b.fail("url", "required")
	case b.Domain == "":
		return b.fail("domain", "required")
	}
	return nil
}

func (b *Beacon) fail(field, msg string) error {
	b.err = BeaconError{Field: field, Msg: msg}
	return &b.err
}

// decoder is a minimal JSON reader over one body.
type decoder struct {
	b *Beacon
	s []byte
	i int
}

func (d *decoder) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) consume(c byte) bool {
	if d.i < len(d.s) && d.s[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *decoder) peek() byte {
	if d.i < len(d.s) {
		return d.s[d.i]
	}
	return 0
}

func (d *decoder) lit(word string) bool {
	if len(d.s)-d.i >= len(word) && string(d.s[d.i:d.i+len(word)]) == word {
		d.i += len(word)
		return true
	}
	return false
}

// field decodes the value of key.
func (d *decoder) field(key string) error {
	b := d.b
	switch key {
	case "n", "name":
		return d.stringField(&b.Name, "name", MaxNameBytes, false)
	case "u", "url":
		return d.stringField(&b.URL, "url", MaxURLBytes, false)
	case "d", "domain":
		return d.stringField(&b.Domain, "domain", maxDomainBytes, false)
	case "r", "referrer":
		return d.stringField(&b.Referrer, "referrer", MaxReferrerBytes, true)
	case "h", "hash_mode":
		v, ok := d.flag()
		if !ok {
			return b.fail("h", "must be a boolean or 0/1")
		}
		b.HashMode = v
	case "i", "interactive":
		v, ok := d.flag()
		if !ok {
			return b.fail("interactive", "must be a boolean")
		}
		b.Interactive = v
	case "p", "props":
		return d.props()
	case "$", "revenue":
		return d.revenue()
	default:
		if !d.skip(0) {
			return b.fail("", "invalid JSON")
		}
	}
	return nil
}

// stringField decodes a string (or null when nullable) into dst with a byte limit and no control
// characters.
func (d *decoder) stringField(dst *string, field string, max int, nullable bool) error {
	if d.peek() == 'n' {
		if !d.lit("null") {
			return d.b.fail("", "invalid JSON")
		}
		if !nullable {
			return d.b.fail(field, "must be a string")
		}
		*dst = ""
		return nil
	}
	if d.peek() != '"' {
		if d.peek() == 0 || !d.skip(0) {
			return d.b.fail("", "invalid JSON")
		}
		return d.b.fail(field, "must be a string")
	}
	v, ok := d.str()
	if !ok {
		return d.b.fail(field, "invalid JSON string")
	}
	if len(v) > max {
		return d.b.fail(field, "longer than "+strconv.Itoa(max)+" bytes")
	}
	if hasControl(v) {
		return d.b.fail(field, "contains control characters")
	}
	*dst = v
	return nil
}

// flag decodes true/false/1/0.
func (d *decoder) flag() (bool, bool) {
	switch {
	case d.lit("true"), d.lit("1"):
		return true, d.numberEnd()
	case d.lit("false"), d.lit("0"):
		return false, d.numberEnd()
	case d.lit("null"):
		return false, true
	}
	return false, false
}

// numberEnd reports whether the value that was just read is not followed by more number text.
func (d *decoder) numberEnd() bool {
	switch d.peek() {
	case 0, ' ', '\t', '\n', '\r', ',', '}':
		return true
	}
	return false
}

func (d *decoder) props() error {
	b := d.b
	if d.lit("null") {
		return nil
	}
	if !d.consume('{') {
		if d.peek() == 0 || !d.skip(0) {
			return b.fail("", "invalid JSON")
		}
		return b.fail("props", "must be an object")
	}
	b.PropKeys, b.PropValues = b.PropKeys[:0], b.PropValues[:0]
	return d.object("props", "property name", func(k string) error {
		switch {
		case k == "":
			return b.fail("props", "property name is empty")
		case len(k) > MaxPropKeyBytes:
			return b.fail("props", "property name longer than "+strconv.Itoa(MaxPropKeyBytes)+" bytes")
		case hasControl(k):
			return b.fail("props", "property name contains control characters")
		}
		v, keep, err := d.propValue()
		if err != nil {
			return err
		}
		if keep {
			for _, prev := range b.PropKeys {
				if prev == k {
					return b.fail("props", "duplicate property name")
				}
			}
			if len(b.PropKeys) == MaxProps {
				return b.fail("props", "more than "+strconv.Itoa(MaxProps)+" properties")
			}
			b.PropKeys = append(b.PropKeys, k)
			b.PropValues = append(b.PropValues, v)
		}
		return nil
	})
}

// object reads the members of a JSON object whose '{' was just consumed, up to and including its
// '}', calling member with the decoder at each member's value. field names the object in errors
// ("" for the body), what its member names ("field name", "property name").
func (d *decoder) object(field, what string, member func(key string) error) error {
	d.ws()
	if d.consume('}') {
		return nil
	}
	for {
		d.ws()
		key, ok := d.str()
		if !ok {
			return d.b.fail(field, "invalid JSON: expected a "+what)
		}
		d.ws()
		if !d.consume(':') {
			return d.b.fail(field, "invalid JSON: expected ':'")
		}
		d.ws()
		if err := member(key); err != nil {
			return err
		}
		d.ws()
		if d.consume(',') {
			continue
		}
		if d.consume('}') {
			return nil
		}
		return d.b.fail(field, "invalid JSON: expected ',' or '}'")
	}
}

// propValue decodes a property value: a string, number or boolean (stringified), or null (dropped).
func (d *decoder) propValue() (string, bool, error) {
	b := d.b
	switch c := d.peek(); {
	case c == '"':
		v, ok := d.str()
		if !ok {
			return "", false, b.fail("props", "invalid JSON string")
		}
		if len(v) > MaxPropValBytes {
			return "", false, b.fail("props", "property value longer than "+strconv.Itoa(MaxPropValBytes)+" bytes")
		}
		if hasControl(v) {
			return "", false, b.fail("props", "property value contains control characters")
		}
		return v, true, nil
	case c == 't' && d.lit("true"):
		return "true", true, nil
	case c == 'f' && d.lit("false"):
		return "false", true, nil
	case c == 'n' && d.lit("null"):
		return "", false, nil
	case c == '-' || c >= '0' && c <= '9':
		v, ok := d.number()
		if !ok {
			return "", false, b.fail("props", "invalid number")
		}
		if len(v) > MaxPropValBytes {
			return "", false, b.fail("props", "property value longer than "+strconv.Itoa(MaxPropValBytes)+" bytes")
		}
		return v, true, nil
	case c == '{' || c == '[':
		return "", false, b.fail("props", "values must be strings, numbers or booleans, not objects or arrays")
	}
	return "", false, b.fail("props", "invalid JSON value")
}

func (d *decoder) revenue() error {
	b := d.b
	if d.lit("null") {
		return nil
	}
	if !d.consume('{') {
		if d.peek() == 0 || !d.skip(0) {
			return b.fail("", "invalid JSON")
		}
		return b.fail("revenue", "must be an object {amount, currency}")
	}
	var amount, currency string
	haveAmount := false
	err := d.object("revenue", "field name", func(k string) error {
		switch k {
		case "amount":
			switch c := d.peek(); {
			case c == '"':
				v, ok := d.str()
				if !ok {
					return b.fail("revenue", "invalid JSON string")
				}
				amount, haveAmount = v, true
			case c == '-' || c >= '0' && c <= '9':
				v, ok := d.number()
				if !ok {
					return b.fail("revenue", "invalid number")
				}
				amount, haveAmount = v, true
			default:
				return b.fail("revenue", "amount must be a number or a numeric string")
			}
		case "currency":
			if d.peek() != '"' {
				return b.fail("revenue", "currency must be a string")
			}
			v, ok := d.str()
			if !ok {
				return b.fail("revenue", "invalid JSON string")
			}
			currency = v
		default:
			if !d.skip(0) {
				return b.fail("revenue", "invalid JSON")
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !haveAmount {
		return b.fail("revenue", "amount is required")
	}
	if len(amount) > 32 {
		return b.fail("revenue", "amount is too long")
	}
	f, err := strconv.ParseFloat(amount, 64)
	if err != nil || f != f || f > 1e15 || f < -1e15 {
		return b.fail("revenue", "amount must be a finite decimal number")
	}
	if len(currency) != maxCurrencyBytes {
		return b.fail("revenue", "currency must be a 3-letter ISO 4217 code")
	}
	start := len(b.scratch)
	for i := 0; i < len(currency); i++ {
		c := currency[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c < 'A' || c > 'Z' {
			return b.fail("revenue", "currency must be a 3-letter ISO 4217 code")
		}
		b.scratch = append(b.scratch, c)
	}
	b.Currency = b.scratchString(start)
	b.Revenue, b.HasRevenue = f, true
	return nil
}

// number reads a JSON number and returns its text.
func (d *decoder) number() (string, bool) {
	start := d.i
	d.consume('-')
	switch {
	case d.consume('0'):
	case d.peek() >= '1' && d.peek() <= '9':
		d.digits()
	default:
		return "", false
	}
	if d.consume('.') {
		if !d.digits() {
			return "", false
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.i++
		if c := d.peek(); c == '+' || c == '-' {
			d.i++
		}
		if !d.digits() {
			return "", false
		}
	}
	if !d.numberEnd() && d.peek() != ']' {
		return "", false
	}
	return bytesString(d.s[start:d.i]), true
}

func (d *decoder) digits() bool {
	start := d.i
	for d.i < len(d.s) && d.s[d.i] >= '0' && d.s[d.i] <= '9' {
		d.i++
	}
	return d.i > start
}

// str reads a JSON string. Without escapes it points into the body; with escapes it is unescaped
// into the beacon's scratch buffer.
func (d *decoder) str() (string, bool) {
	if !d.consume('"') {
		return "", false
	}
	start := d.i
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			v := bytesString(d.s[start:d.i])
			d.i++
			return v, true
		case c == '\\':
			return d.strEscaped(start)
		case c < 0x20:
			return "", false
		}
		d.i++
	}
	return "", false
}

func (d *decoder) strEscaped(start int) (string, bool) {
	b := d.b
	out := len(b.scratch)
	b.scratch = append(b.scratch, d.s[start:d.i]...)
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			return b.scratchString(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			b.scratch = append(b.scratch, c)
			d.i++
			continue
		}
		d.i++
		if d.i >= len(d.s) {
			return "", false
		}
		e := d.s[d.i]
		d.i++
		switch e {
		case '"', '\\', '/':
			b.scratch = append(b.scratch, e)
		case 'b':
			b.scratch = append(b.scratch, '\b')
		case 'f':
			b.scratch = append(b.scratch, '\f')
		case 'n':
			b.scratch = append(b.scratch, '\n')
		case 'r':
			b.scratch = append(b.scratch, '\r')
		case 't':
			b.scratch = append(b.scratch, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", false
			}
			if r >= 0xD800 && r < 0xDC00 { // high surrogate: a low one must follow
				if !d.lit(`\u`) {
					return "", false
				}
				r2, ok := d.hex4()
				if !ok || r2 < 0xDC00 || r2 >= 0xE000 {
					return "", false
				}
				r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
			} else if r >= 0xDC00 && r < 0xE000 {
				return "", false // lone low surrogate: not valid UTF-8 once decoded
			}
			// A \uXXXX escape is 6 bytes and its UTF-8 form at most 3 (4 for a 12-byte pair),
			// so scratch stays within len(body).
			b.scratch = utf8.AppendRune(b.scratch, rune(r))
		default:
			return "", false
		}
	}
	return "", false
}

func (d *decoder) hex4() (uint32, bool) {
	if len(d.s)-d.i < 4 {
		return 0, false
	}
	var r uint32
	for _, c := range d.s[d.i : d.i+4] {
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
	d.i += 4
	return r, true
}

// skip skips one JSON value of any kind, validating it, to a bounded depth.
func (d *decoder) skip(depth int) bool {
	if depth > maxNesting {
		return false
	}
	switch c := d.peek(); {
	case c == '"':
		_, ok := d.str()
		return ok
	case c == '{':
		d.i++
		d.ws()
		if d.consume('}') {
			return true
		}
		for {
			d.ws()
			if _, ok := d.str(); !ok {
				return false
			}
			d.ws()
			if !d.consume(':') {
				return false
			}
			d.ws()
			if !d.skip(depth + 1) {
				return false
			}
			d.ws()
			if d.consume(',') {
				continue
			}
			return d.consume('}')
		}
	case c == '[':
		d.i++
		d.ws()
		if d.consume(']') {
			return true
		}
		for {
			d.ws()
			if !d.skip(depth + 1) {
				return false
			}
			d.ws()
			if d.consume(',') {
				continue
			}
			return d.consume(']')
		}
	case c == 't':
		return d.lit("true")
	case c == 'f':
		return d.lit("false")
	case c == 'n':
		return d.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		_, ok := d.number()
		return ok
	}
	return false
}

// scratchString returns scratch[start:] as a string without copying. Safe because scratch is never
// reallocated during a decode (see Decode) and is only overwritten after Reset.
func (b *Beacon) scratchString(start int) string {
	return bytesString(b.scratch[start:])
}

// bytesString views p as a string without copying; p must not change while the string is used.
func bytesString(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	return unsafe.String(&p[0], len(p))
}

// hasControl reports whether s holds an ASCII control character (C0 or DEL) or a C1 control,
// which no URL, name or property needs and which header and log injection rely on.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return true
		}
		if c == 0xc2 && i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] < 0xa0 {
			return true
		}
	}
	return false
}
