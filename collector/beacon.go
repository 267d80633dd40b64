package collector

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/kyomi/collector/sink/row"
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

// The name of Plausible's engagement event (it carries sd and e) and the scroll depth of one that
// sent no valid sd, as Plausible stores it: the stored row's own values.
const (
	EngagementName = row.EngagementName
	NoScrollDepth  = row.NoScrollDepth
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
	d := decoder{b: b, scanner: scanner{s: body, scratch: &b.scratch}}
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

// decoder reads one body with Plausible's field rules: field here, props in beacon_props.go,
// revenue in beacon_revenue.go. The JSON tokens are its scanner's.
type decoder struct {
	scanner
	b *Beacon

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
		v, err := d.intValue("sd")
		d.sd = v
		return err
	case "e":
		v, err := d.intValue("e")
		d.e = v
		return err
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

// intValue reads sd or e (field): a JSON integer, or a string holding an optionally signed
// decimal integer and nothing else. Any other JSON value is skipped and gives ok false; what is
// not a JSON value at all is an error naming field.
func (d *decoder) intValue(field string) (intVal, error) {
	var text string
	switch c := d.peek(); {
	case c == '"':
		mark := len(d.b.scratch)
		s, ok := d.str()
		d.b.scratch = d.b.scratch[:mark]
		if !ok {
			return intVal{}, d.b.fail(field, "invalid JSON string")
		}
		text = s
	case c == '-' || c >= '0' && c <= '9':
		s, ok := d.number()
		if !ok {
			return intVal{}, d.b.fail(field, "invalid JSON: expected a number")
		}
		if strings.ContainsAny(s, ".eE") {
			return intVal{}, nil
		}
		text = s
	default:
		if !d.skip(0) {
			return intVal{}, d.b.fail(field, "invalid JSON: expected a value")
		}
		return intVal{}, nil
	}
	var r intVal
	if text != "" && (text[0] == '-' || text[0] == '+') {
		r.neg = text[0] == '-'
		text = text[1:]
	}
	if text == "" {
		return intVal{}, nil
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c < '0' || c > '9' {
			return intVal{}, nil
		}
		if r.v <= 1<<32 {
			r.v = r.v*10 + uint64(c-'0')
		}
	}
	r.v = min(r.v, 1<<32)
	r.neg = r.neg && r.v != 0
	r.ok = true
	return r, nil
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
