package collector

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// Limits of one event body. Each is enforced with a 400 (413 for the body) whose message names
// the field.
const (
	// MaxBodyBytes bounds the whole body (a pageview is 150-400 bytes). 30 props of the largest
	// size Plausible keeps (300-byte names, 2000-byte values) take 69 kB, and twice that when every
	// character is sent as a \u escape: 256 KiB holds them with the URL and referrer. Plausible
	// reads up to 1 MB; a larger body here costs a 413, so that the pooled buffers of one request
	// stay small.
	MaxBodyBytes = 256 << 10
	MaxURLBytes  = 2000 // u/url, as Plausible (a longer one is a 400)
	// MaxReferrerBytes is where r/referrer is cut, as Plausible cuts it (at a character boundary):
	// a longer referrer is stored shortened, not refused.
	MaxReferrerBytes = 2000
	MaxNameBytes     = 120  // n/name, as Plausible
	MaxProps         = 30   // props kept, as Plausible; later ones are dropped, not refused
	MaxPropKeyBytes  = 300  // property name, as Plausible
	MaxPropValBytes  = 2000 // property value, as Plausible
	maxDroppedNames  = 64   // names of dropped props remembered to drop their repeats (see propsObject)
	MaxDomains       = 10   // entries of a comma-separated d (Plausible's multi-site form)
	maxDomainBytes   = 2048 // d before it is split
	maxCurrencyBytes = 3    // ISO 4217
	maxNesting       = 32   // depth of unknown values skipped
	// MaxEngagementMillis is Plausible's bound on e: an engaged time of 30 days or more is
	// treated as not sent (old trackers sent huge values).
	MaxEngagementMillis = 30 * 24 * 3600 * 1000
	// keptScratchBytes is the largest scratch buffer Reset keeps for the next body: one very
	// large body does not pin its buffer in the pool.
	keptScratchBytes = 64 << 10
)

// EngagementName is the event name of Plausible's engagement event, which carries sd and e.
const EngagementName = "engagement"

// NoScrollDepth is the scroll depth of an engagement event that sent no valid sd, as Plausible
// stores it.
const NoScrollDepth = 255

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
// scratch and propsJSON buffers: they are valid until the next Decode or Reset and until the body
// is reused, so a caller that keeps anything must copy it. A Beacon is reused through Reset, which
// keeps capacity; it is not safe for concurrent use.
type Beacon struct {
	Name        string
	URL         string
	Domain      string // as sent; may be a comma-separated list (see Domains)
	Referrer    string
	HashMode    bool
	Interactive bool // true unless the body says "i": false (or 0)
	HasRevenue  bool
	Revenue     float64
	Currency    string // upper case ISO 4217 code when HasRevenue
	PropKeys    []string
	PropValues  []string
	// DomainFromURL is set when the body sent no d (absent or null): Domain is then empty and
	// the domain is the host of the URL, as Plausible takes it.
	DomainFromURL bool
	// ScrollDepth (0-100, or NoScrollDepth) and EngagementTime (milliseconds) are set for an
	// engagement event only, as Plausible reads sd and e; other events ignore them.
	ScrollDepth    uint8
	EngagementTime uint32
	// TrackerVersion is v when it is an integer from 0 to 65535, else 0.
	TrackerVersion uint16

	scratch   []byte   // unescaped strings and stringified numbers; never reallocated during Decode
	propsJSON []byte   // props sent as an escaped JSON string, unescaped; decoded from here
	revJSON   []byte   // revenue sent as a JSON string, unescaped; decoded from here
	dropped   []string // names of dropped props, at most maxDroppedNames
	err       BeaconError
}

// Reset clears b for the next body and keeps its buffers.
func (b *Beacon) Reset() {
	scratch, propsJSON, revJSON := b.scratch[:0], b.propsJSON[:0], b.revJSON[:0]
	if cap(scratch) > keptScratchBytes {
		scratch = nil
	}
	if cap(propsJSON) > keptScratchBytes {
		propsJSON = nil
	}
	if cap(revJSON) > keptScratchBytes {
		revJSON = nil
	}
	keys, vals, dropped := b.PropKeys[:0], b.PropValues[:0], b.dropped[:0]
	clear(b.PropKeys)
	clear(b.PropValues)
	clear(b.dropped)
	*b = Beacon{scratch: scratch, propsJSON: propsJSON, revJSON: revJSON, PropKeys: keys, PropValues: vals, dropped: dropped}
}

// Decode parses body, a JSON object in the shape of Plausible's Events API, into b (which it resets
// first). Short and long names are accepted (n/name, u/url, d/domain, r/referrer, m/meta/p/props,
// $/revenue, h/hashMode, i); unknown fields are skipped; a field given twice keeps its last value,
// except the props keys, read as Plausible does (see props). Strings must be valid UTF-8 without
// control characters. The returned error is a *BeaconError, owned by b.
func (b *Beacon) Decode(body []byte) error {
	b.Reset()
	b.Interactive = true
	if len(body) > MaxBodyBytes {
		return b.fail("body", "larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
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
	// Plausible reads h || hashMode: hashMode counts only when h is absent, null or false.
	b.HashMode = d.hash == hashOn || d.hash == hashUnset && d.hashLong == hashOn
	if err := d.props(); err != nil {
		return err
	}
	d.revenue()
	if len(b.Referrer) > MaxReferrerBytes {
		b.Referrer = cutUTF8(b.Referrer, MaxReferrerBytes)
	}
	return d.required()
}

func (d *decoder) required() error {
	b := d.b
	switch {
	case b.Name == "":
		return b.fail("name", "required")
	case b.URL == "":
		return b.fail("url", "required")
	case b.Domain == "" && !d.domainSet:
		b.DomainFromURL = true
	case strings.TrimSpace(b.Domain) == "":
		return b.fail("domain", "required")
	}
	if b.Name == EngagementName {
		// Plausible's rules (request.ex, put_engagement_fields): sd is clamped to 100, e must be
		// under 30 days, and an engagement without either is refused.
		b.ScrollDepth, b.EngagementTime = NoScrollDepth, 0
		if d.sd.ok && !d.sd.neg {
			b.ScrollDepth = uint8(min(d.sd.v, 100))
		}
		if d.e.ok && !d.e.neg && d.e.v < MaxEngagementMillis {
			b.EngagementTime = uint32(d.e.v)
		}
		if b.ScrollDepth == NoScrollDepth && b.EngagementTime == 0 {
			return b.fail("sd", "an engagement event needs an integer sd (scroll depth) or e (engaged milliseconds)")
		}
	}
	return nil
}

// cutUTF8 returns the longest prefix of s of at most n bytes that ends at a character boundary.
func cutUTF8(s string, n int) string {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
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

	// propsAt holds, per props source (propsM...), 1 + the offset of its first value in s, or -1
	// when that value is null or false; 0 when the source is absent. decoded is the propsAt entry
	// whose props are in b.PropKeys, 0 for none.
	propsAt        [propsSources]int
	decoded        int
	hash, hashLong hashState // h (or hash_mode) and hashMode
	// revenueAt is, per revenue source (revenue, then $), 1 + the offset of its value in s, -1
	// for null or false, 0 when absent.
	revenueAt [2]int
	domainSet bool   // d or domain was sent and not null
	sd, e     intVal // sd and e as Plausible reads them
}

// intVal is an integer read from a JSON integer or a string holding one (Elixir's
// Integer.parse of the whole string). ok is false for any other value; v saturates at
// math.MaxUint32 + 1, which every bound here treats as too large.
type intVal struct {
	v   uint64
	neg bool
	ok  bool
}

// Props sources in Plausible's order of precedence: request.ex reads m || meta || p || props.
const (
	propsM = iota
	propsMeta
	propsP
	propsProps
	propsSources
)

// hashState is what an h or hashMode field said. Unset is also null and false, the values that
// Elixir's || passes over.
type hashState uint8

const (
	hashUnset hashState = iota
	hashOff             // 0
	hashOn              // 1 or true
)

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
		if c := d.peek(); c == '-' || c >= '0' && c <= '9' {
			// Plausible takes an integer name as its decimal text: 404 pages send one.
			v, ok := d.number()
			if !ok || strings.ContainsAny(v, ".eE") {
				return b.fail("name", "must be a string or an integer")
			}
			if v == "-0" {
				v = "0"
			}
			if len(v) > MaxNameBytes {
				return b.fail("name", "longer than "+strconv.Itoa(MaxNameBytes)+" bytes")
			}
			b.Name = v
			return nil
		}
		return d.stringField(&b.Name, "name", MaxNameBytes, false)
	case "u", "url":
		return d.stringField(&b.URL, "url", MaxURLBytes, false)
	case "d", "domain":
		d.domainSet = d.peek() != 'n'
		return d.stringField(&b.Domain, "domain", maxDomainBytes, true)
	case "r", "referrer":
		// Cut, not refused, past MaxReferrerBytes (see Decode); the body limit bounds it here.
		return d.stringField(&b.Referrer, "referrer", MaxBodyBytes, true)
	case "sd":
		d.sd = d.intValue()
	case "e":
		d.e = d.intValue()
	case "v":
		b.TrackerVersion = 0
		if c := d.peek(); c == '-' || c >= '0' && c <= '9' {
			v, ok := d.number()
			if !ok {
				return b.fail("v", "invalid number")
			}
			if n, err := strconv.ParseUint(v, 10, 16); err == nil {
				b.TrackerVersion = uint16(n)
			}
		} else if !d.skip(0) {
			return b.fail("", "invalid JSON")
		}
	case "h", "hash_mode":
		st, ok := d.hashFlag()
		if !ok {
			return b.fail("h", "must be an integer, a string holding one, or a boolean")
		}
		d.hash = st
	case "hashMode":
		st, ok := d.hashFlag()
		if !ok {
			return b.fail("hashMode", "must be an integer, a string holding one, or a boolean")
		}
		d.hashLong = st
	case "i", "interactive":
		if d.lit("null") {
			b.Interactive = true // Plausible honours only a boolean: null means the default
			break
		}
		v, ok := d.flag()
		if !ok {
			return b.fail("interactive", "must be a boolean")
		}
		b.Interactive = v
	case "m":
		return d.propsSource(propsM)
	case "meta":
		return d.propsSource(propsMeta)
	case "p":
		return d.propsSource(propsP)
	case "props":
		return d.propsSource(propsProps)
	case "revenue":
		return d.revenueSource(0)
	case "$":
		return d.revenueSource(1)
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

// hashFlag decodes an h or hashMode value. Plausible casts it to an integer and keeps the
// fragment for 1 only, so an integer, or a string holding one ("1", as Ecto casts it), is read
// that way; true counts as 1, and null and false as absent.
func (d *decoder) hashFlag() (hashState, bool) {
	switch d.peek() {
	case 'n', 'f':
		_, ok := d.flag()
		return hashUnset, ok
	case 't':
		_, ok := d.flag()
		return hashOn, ok
	case '"':
		s, ok := d.str()
		if !ok {
			return hashOff, false
		}
		return intHash(s)
	}
	s, ok := d.number()
	if !ok {
		return hashOff, false
	}
	return intHash(s)
}

// intHash reads s, an optionally signed decimal integer, as a hash mode: on for 1, off for any
// other integer. It reports false when s is not an integer.
func intHash(s string) (hashState, bool) {
	digits := s
	if len(digits) > 0 && (digits[0] == '+' || digits[0] == '-') {
		digits = digits[1:]
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return hashOff, false
	}
	if s[0] != '-' && strings.TrimLeft(digits, "0") == "1" {
		return hashOn, true
	}
	return hashOff, true
}

// numberEnd reports whether the value that was just read is not followed by more number text.
func (d *decoder) numberEnd() bool {
	switch d.peek() {
	case 0, ' ', '\t', '\n', '\r', ',', '}':
		return true
	}
	return false
}

// propsSource notes where the value of one props key (m, meta, p or props) starts and checks
// that it is JSON. Which source wins is known only at the end of the body (see props), but an
// object that leads so far is decoded at once, in the one pass a body with one props key needs.
// Plausible's JSON decoder (Jason) keeps the first of repeated keys, and so does this.
func (d *decoder) propsSource(src int) error {
	b, start := d.b, d.i
	if d.lit("null") || d.lit("false") {
		if d.propsAt[src] == 0 {
			d.propsAt[src] = -1
		}
		return nil
	}
	if d.propsAt[src] != 0 {
		return d.skipProps()
	}
	d.propsAt[src] = start + 1
	for _, at := range d.propsAt[:src] {
		if at > 0 {
			return d.skipProps() // a source before it in precedence is set
		}
	}
	if d.peek() != '{' {
		return d.skipProps()
	}
	mark := len(b.scratch)
	d.i++
	b.PropKeys, b.PropValues, b.dropped = b.PropKeys[:0], b.PropValues[:0], b.dropped[:0]
	if d.propsObject() == nil {
		d.decoded = start + 1
		return nil
	}
	// A prop over a limit counts only if this source wins, and a syntax error is found again by
	// skipProps: read the value again as JSON alone and leave the decoding to props.
	b.PropKeys, b.PropValues, b.dropped = b.PropKeys[:0], b.PropValues[:0], b.dropped[:0]
	b.scratch = b.scratch[:mark]
	d.decoded, d.i = 0, start
	return d.skipProps()
}

// skipProps checks a props value as JSON without decoding it.
func (d *decoder) skipProps() error {
	if !d.skip(0) {
		return d.b.fail("props", "invalid JSON")
	}
	return nil
}

// props decodes the props of the body as Plausible does (lib/plausible/ingestion/request.ex,
// put_props; lib/plausible/helpers/json.ex, decode_or_fallback): the first of m, meta, p, props
// that is present and neither null nor false is the only source. An object is read as is; a
// string is read as the JSON text of an object; anything else, or a string that is not an
// object's JSON, gives no props and the event is still accepted. The winner is decoded here
// unless propsSource decoded it already.
func (d *decoder) props() error {
	b := d.b
	for _, at := range d.propsAt {
		if at <= 0 {
			continue
		}
		if at == d.decoded {
			return nil
		}
		b.PropKeys, b.PropValues, b.dropped = b.PropKeys[:0], b.PropValues[:0], b.dropped[:0]
		p := decoder{b: b, s: d.s, i: at - 1}
		switch p.peek() {
		case '{':
			p.i++
			return p.propsObject()
		case '"':
			return p.propsString()
		}
		return nil
	}
	return nil
}

// propsString decodes props sent as a string holding an object's JSON text. Without escapes the
// text is read in place; with escapes it is unescaped into b.propsJSON, not scratch, so that
// scratch keeps room for the strings inside it (each body byte still reaches scratch at most once).
func (d *decoder) propsString() error {
	b := d.b
	mark, start := len(b.scratch), d.i+1
	v, ok := d.str()
	if !ok {
		return b.fail("props", "invalid JSON string") // checked by propsSource already
	}
	text := d.s[start : d.i-1]
	if len(b.scratch) != mark {
		b.propsJSON = append(b.propsJSON[:0], v...)
		b.scratch = b.scratch[:mark]
		text = b.propsJSON
	}
	in := decoder{b: b, s: text}
	in.ws()
	open := in.i
	// The whole text is checked before any prop is read: Plausible rejects a prop over a limit only
	// in text that parses. Nesting deeper than maxNesting counts as not parsing (Plausible has no
	// such limit; this one bounds the recursion of skip).
	if in.peek() != '{' || !in.skip(0) {
		return nil
	}
	in.ws()
	if in.i != len(in.s) {
		return nil
	}
	in.i = open + 1
	return in.propsObject()
}

// propsObject decodes the members of a props object whose '{' was just read, with Plausible's
// rules (request.ex, filter_bad_props, validate_props): a member whose value is an object, an
// array or null, or whose name or value is empty or white space only, is dropped; numbers and
// booleans become text (numbers keep the spelling sent, where Plausible re-prints floats: 1.50 is
// "1.5" there); of a repeated name the first member counts, even if it is dropped; 30 props are
// kept and the rest dropped (Plausible keeps 30 in map order, this keeps the first 30 sent); a
// kept name over 300 bytes or value over 2000 bytes is a 400. A kept name or value with a control
// character is a 400 too, which Plausible does not do: no property needs one, and header and log
// injection rely on them (see hasControl).
func (d *decoder) propsObject() error {
	b := d.b
	return d.object("props", "property name", func(k string) error {
		v, keep, err := d.propValue()
		switch {
		case err != nil:
			return err
		case len(b.PropKeys) == MaxProps, d.repeated(k):
			return nil
		case !keep || blank(k) || blank(v):
			// Remembered so that a repeat of the name is dropped too; bounded so that a body of
			// many dropped members costs at most maxDroppedNames compares per member. Past the
			// bound a repeat can be kept where Plausible would drop it.
			if len(b.dropped) < maxDroppedNames {
				b.dropped = append(b.dropped, k)
			}
			return nil
		case len(k) > MaxPropKeyBytes:
			return b.fail("props", "property name longer than "+strconv.Itoa(MaxPropKeyBytes)+" bytes")
		case len(v) > MaxPropValBytes:
			return b.fail("props", "property value longer than "+strconv.Itoa(MaxPropValBytes)+" bytes")
		case hasControl(k):
			return b.fail("props", "property name contains control characters")
		case hasControl(v):
			return b.fail("props", "property value contains control characters")
		}
		b.PropKeys = append(b.PropKeys, k)
		b.PropValues = append(b.PropValues, v)
		return nil
	})
}

// repeated reports whether a props member named k was seen before, kept or dropped.
func (d *decoder) repeated(k string) bool {
	for _, prev := range d.b.PropKeys {
		if prev == k {
			return true
		}
	}
	for _, prev := range d.b.dropped {
		if prev == k {
			return true
		}
	}
	return false
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

// propValue decodes a property value: a string, number or boolean as text (keep), or null, an
// object or an array, skipped (not keep).
func (d *decoder) propValue() (string, bool, error) {
	b := d.b
	switch c := d.peek(); {
	case c == '"':
		v, ok := d.str()
		if !ok {
			return "", false, b.fail("props", "invalid JSON string")
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
		return v, true, nil
	case c == '{' || c == '[':
		if !d.skip(1) {
			return "", false, b.fail("props", "invalid JSON value")
		}
		return "", false, nil
	}
	return "", false, b.fail("props", "invalid JSON value")
}

// intValue reads sd or e: a JSON integer, or a string holding an optionally signed decimal
// integer and nothing else. Any other JSON value is skipped and gives ok false; invalid JSON is
// caught by the caller's next read.
func (d *decoder) intValue() intVal {
	var text string
	switch c := d.peek(); {
	case c == '"':
		mark := len(d.b.scratch)
		s, ok := d.str()
		d.b.scratch = d.b.scratch[:mark]
		if !ok {
			return intVal{}
		}
		text = s
	case c == '-' || c >= '0' && c <= '9':
		s, ok := d.number()
		if !ok || strings.ContainsAny(s, ".eE") {
			return intVal{}
		}
		text = s
	default:
		d.skip(0)
		return intVal{}
	}
	var r intVal
	if text != "" && (text[0] == '-' || text[0] == '+') {
		r.neg = text[0] == '-'
		text = text[1:]
	}
	if text == "" {
		return intVal{}
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c < '0' || c > '9' {
			return intVal{}
		}
		if r.v <= 1<<32 {
			r.v = r.v*10 + uint64(c-'0')
		}
	}
	r.v = min(r.v, 1<<32)
	r.neg = r.neg && r.v != 0
	r.ok = true
	return r
}

// revenueSource notes where the value of revenue (src 0) or $ (src 1) starts and checks that it
// is JSON; revenue decodes the winner at the end of the body.
func (d *decoder) revenueSource(src int) error {
	start := d.i
	if d.lit("null") || d.lit("false") {
		d.revenueAt[src] = -1
		return nil
	}
	if !d.skip(0) {
		return d.b.fail("revenue", "invalid JSON")
	}
	d.revenueAt[src] = start + 1
	return nil
}

// revenue decodes the revenue of the body as Plausible does
// (extra/lib/plausible/ingestion/request/revenue.ex): revenue || $ is the only source, an object
// or a string holding an object's JSON, with both amount and currency. amount is a number or a
// string that starts with a decimal number; currency a 3-letter code. Anything else, {} included,
// is no revenue, and the event is stored without it: never a 400. Unlike Plausible, a lower case
// code is taken in upper case and the code is not checked against the ISO 4217 list.
func (d *decoder) revenue() {
	b := d.b
	at := d.revenueAt[0]
	if at <= 0 {
		at = d.revenueAt[1]
	}
	if at <= 0 {
		return
	}
	r := decoder{b: b, s: d.s, i: at - 1}
	mark := len(b.scratch)
	if r.peek() == '"' {
		v, ok := r.str()
		if !ok {
			return
		}
		b.revJSON = append(b.revJSON[:0], v...)
		b.scratch = b.scratch[:mark]
		r = decoder{b: b, s: b.revJSON}
		r.ws()
	}
	if !r.consume('{') {
		return
	}
	var amount, currency string
	haveAmount, haveCurrency := false, false
	err := r.object("revenue", "field name", func(k string) error {
		switch {
		case k == "amount" && !haveAmount:
			haveAmount = true
			switch c := r.peek(); {
			case c == '"':
				v, ok := r.str()
				if !ok {
					return errSkip
				}
				amount = v
			case c == '-' || c >= '0' && c <= '9':
				v, ok := r.number()
				if !ok {
					return errSkip
				}
				amount = v
			default:
				if !r.skip(0) {
					return errSkip
				}
			}
		case k == "currency" && !haveCurrency:
			haveCurrency = true
			if r.peek() == '"' {
				v, ok := r.str()
				if !ok {
					return errSkip
				}
				currency = v
			} else if !r.skip(0) {
				return errSkip
			}
		default:
			if !r.skip(0) {
				return errSkip
			}
		}
		return nil
	})
	if err != nil || !haveAmount || !haveCurrency {
		b.scratch = b.scratch[:mark]
		return
	}
	f, ok := decimalPrefix(amount)
	if !ok || len(currency) != maxCurrencyBytes {
		b.scratch = b.scratch[:mark]
		return
	}
	start := len(b.scratch)
	for i := 0; i < len(currency); i++ {
		c := currency[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c < 'A' || c > 'Z' {
			b.scratch = b.scratch[:mark]
			return
		}
		b.scratch = append(b.scratch, c)
	}
	b.Currency = b.scratchString(start)
	b.Revenue, b.HasRevenue = f, true
}

// errSkip stops reading a revenue object that will be ignored; it never reaches a caller.
var errSkip = &BeaconError{Field: "revenue", Msg: "ignored"}

// decimalPrefix reads the decimal number at the start of s as Decimal.parse does (sign, digits,
// fraction, exponent; text after it is ignored) and reports false when there is none, or when it
// is not finite or above 1e15 in magnitude.
func decimalPrefix(s string) (float64, bool) {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	digits := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
			digits++
		}
		i = j
	}
	if digits == 0 {
		return 0, false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '-' || s[j] == '+') {
			j++
		}
		k := j
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j {
			i = k
		}
	}
	if i > 64 {
		return 0, false
	}
	f, err := strconv.ParseFloat(s[:i], 64)
	if err != nil || f != f || f > 1e15 || f < -1e15 {
		return 0, false
	}
	return f, true
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
		return d.skipStr()
	case c == '{':
		d.i++
		d.ws()
		if d.consume('}') {
			return true
		}
		for {
			d.ws()
			if !d.skipStr() {
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

// skipStr reads a JSON string that nothing uses, giving back the scratch its escapes took.
func (d *decoder) skipStr() bool {
	mark := len(d.b.scratch)
	_, ok := d.str()
	d.b.scratch = d.b.scratch[:mark]
	return ok
}

// blank reports whether s is empty or white space only (Unicode White_Space), which Plausible
// drops: String.trim_leading(to_string(v)) == "".
func blank(s string) bool {
	for _, r := range s {
		if !unicode.IsSpace(r) {
			return false
		}
	}
	return true
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
