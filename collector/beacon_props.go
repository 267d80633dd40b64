package collector

import "strconv"

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
		p := decoder{b: b, scanner: scanner{s: d.s, i: at - 1, scratch: &b.scratch}}
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
	in := decoder{b: b, scanner: scanner{s: text, scratch: &b.scratch}}
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
