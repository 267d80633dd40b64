package collector

import "strconv"

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
	r := decoder{b: b, scanner: scanner{s: d.s, i: at - 1, scratch: &b.scratch}}
	mark := len(b.scratch)
	if r.peek() == '"' {
		v, ok := r.str()
		if !ok {
			return
		}
		b.revJSON = append(b.revJSON[:0], v...)
		b.scratch = b.scratch[:mark]
		r = decoder{b: b, scanner: scanner{s: b.revJSON, scratch: &b.scratch}}
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
