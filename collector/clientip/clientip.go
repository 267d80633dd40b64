// Package clientip picks the address of the client behind a request: the
// socket peer, or, when the peer is a trusted proxy, the rightmost address in
// X-Forwarded-For or RFC 7239 Forwarded that is not itself trusted.
//
// The leftmost address of a forwarding header is never used on its own
// authority: any client can write it. Walking from the right and stopping at
// the first untrusted hop gives the address that the closest proxy we trust
// actually saw. The package never logs and never keeps an address.
package clientip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unsafe"
)

// Resolver picks the client address of a request. It is immutable after
// NewResolver and safe for concurrent use.
type Resolver struct {
	trusted []netip.Prefix
}

// NewResolver returns a Resolver that trusts forwarding headers only when the
// socket peer lies in one of the trusted prefixes. IPv4-mapped IPv6 prefixes
// are unmapped so that they match IPv4 peers. A nil or empty list trusts no
// one: the socket peer is always the client.
func NewResolver(trusted []netip.Prefix) *Resolver {
	ps := make([]netip.Prefix, 0, len(trusted))
	for _, p := range trusted {
		if !p.IsValid() {
			continue
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() && bits >= 96 {
			a = a.Unmap()
			bits -= 96
		}
		ps = append(ps, netip.PrefixFrom(a.WithZone(""), bits).Masked())
	}
	return &Resolver{trusted: ps}
}

// Trusted reports whether addr lies in a trusted prefix.
func (r *Resolver) Trusted(addr netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ClientIP returns the client address: the socket peer unless the peer is
// trusted, in which case the rightmost address in X-Forwarded-For (or, when
// that header is empty, Forwarded: for=) that is not trusted. Malformed
// header entries (including RFC 7239 "unknown" and obfuscated identifiers)
// stop the walk and the last good address is used; when every hop is
// trusted the leftmost good one is returned. IPv4-mapped IPv6 is unmapped
// and zones are dropped. ClientIP does not allocate on well-formed input and
// does not retain the header slices.
//
// Several header lines of the same name must be joined with "," in the order
// received, or passed to ClientIPHeaders.
func (r *Resolver) ClientIP(peer netip.Addr, xForwardedFor, forwarded []byte) netip.Addr {
	peer = normalize(peer)
	if !r.Trusted(peer) {
		return peer
	}
	if len(trimSpace(xForwardedFor)) > 0 {
		ip, _ := r.walkXFF(peer, xForwardedFor)
		return ip
	}
	if len(forwarded) > 0 {
		ip, _ := r.walkForwarded(peer, forwarded)
		return ip
	}
	return peer
}

// ClientIPHeaders is ClientIP for requests that carry several header lines
// of the same name, given in the order received (as fasthttp's PeekAll
// returns them). Later lines are closer to us, so they are walked first.
func (r *Resolver) ClientIPHeaders(peer netip.Addr, xForwardedFor, forwarded [][]byte) netip.Addr {
	peer = normalize(peer)
	if !r.Trusted(peer) {
		return peer
	}
	last := peer
	walked := false
	for i := len(xForwardedFor) - 1; i >= 0; i-- {
		if len(trimSpace(xForwardedFor[i])) == 0 {
			continue
		}
		walked = true
		ip, done := r.walkXFF(last, xForwardedFor[i])
		if done {
			return ip
		}
		last = ip
	}
	if walked {
		return last
	}
	for i := len(forwarded) - 1; i >= 0; i-- {
		ip, done := r.walkForwarded(last, forwarded[i])
		if done {
			return ip
		}
		last = ip
	}
	return last
}

// walkXFF walks a comma-separated X-Forwarded-For value from the right.
// It returns the chosen address and whether the walk is finished (an
// untrusted address was found or an entry was malformed); when not finished
// the address is the last trusted hop.
func (r *Resolver) walkXFF(last netip.Addr, h []byte) (netip.Addr, bool) {
	end := len(h)
	for end >= 0 {
		start := end - 1
		for start >= 0 && h[start] != ',' {
			start--
		}
		entry := trimSpace(h[start+1 : end])
		end = start
		if len(entry) == 0 {
			// Empty list elements ("a,,b" or a trailing comma) are legal
			// in HTTP lists and carry nothing.
			if start < 0 {
				break
			}
			continue
		}
		ip, ok := parseNode(entry)
		if !ok {
			return last, true
		}
		if !r.Trusted(ip) {
			return ip, true
		}
		last = ip
		if start < 0 {
			break
		}
	}
	return last, false
}

// maxForwardedHops bounds how many for= values of one Forwarded header are
// remembered; only the rightmost ones can matter for the walk.
const maxForwardedHops = 32

// maxForwardedLen bounds the Forwarded value that is parsed at all; the
// handler's header limits are far below it.
const maxForwardedLen = 1 << 20

// walkForwarded walks an RFC 7239 Forwarded value from the right, using the
// for= parameter of each element.
func (r *Resolver) walkForwarded(last netip.Addr, h []byte) (netip.Addr, bool) {
	if len(h) > maxForwardedLen {
		return last, true
	}
	type span struct{ start, end int32 }
	var ring [maxForwardedHops]span
	n := 0
	// Forward scan: elements split by ',' and pairs by ';' outside quotes.
	i := 0
	elemFor := span{-1, -1}
	for i <= len(h) {
		if i == len(h) || h[i] == ',' {
			ring[n%maxForwardedHops] = elemFor
			n++
			elemFor = span{-1, -1}
			i++
			continue
		}
		// Parse one pair: token "=" value.
		for i < len(h) && (h[i] == ' ' || h[i] == '\t' || h[i] == ';') {
			i++
		}
		ks := i
		for i < len(h) && h[i] != '=' && h[i] != ';' && h[i] != ',' {
			i++
		}
		key := trimSpace(h[ks:i])
		if i >= len(h) || h[i] != '=' {
			continue
		}
		i++ // '='
		for i < len(h) && (h[i] == ' ' || h[i] == '\t') {
			i++
		}
		vs := i
		if i < len(h) && h[i] == '"' {
			i++
			for i < len(h) && h[i] != '"' {
				if h[i] == '\\' && i+1 < len(h) {
					i++
				}
				i++
			}
			if i < len(h) {
				i++ // closing quote
			}
		} else {
			for i < len(h) && h[i] != ';' && h[i] != ',' {
				i++
			}
		}
		if len(key) == 3 && (key[0]|0x20) == 'f' && (key[1]|0x20) == 'o' && (key[2]|0x20) == 'r' {
			elemFor = span{int32(vs), int32(i)}
		}
	}
	lo := 0
	if n > maxForwardedHops {
		lo = n - maxForwardedHops
	}
	for k := n - 1; k >= lo; k-- {
		s := ring[k%maxForwardedHops]
		if s.start < 0 {
			// An element without for= (only by=/proto=) says nothing
			// about the client; an element that is entirely empty is
			// skipped like an empty list element.
			continue
		}
		v := trimSpace(h[s.start:s.end])
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		ip, ok := parseNode(v)
		if !ok {
			return last, true
		}
		if !r.Trusted(ip) {
			return ip, true
		}
		last = ip
	}
	return last, false
}

// parseNode parses one hop: "192.0.2.1", "192.0.2.1:443", "2001:db8::1",
// "[2001:db8::1]" or "[2001:db8::1]:443".
func parseNode(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	if b[0] == '[' {
		end := -1
		for i := 1; i < len(b); i++ {
			if b[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return netip.Addr{}, false
		}
		if rest := b[end+1:]; len(rest) > 0 && !validPort(rest) {
			return netip.Addr{}, false
		}
		ip, ok := parseAddr(b[1:end])
		if !ok || !ip.Is6() {
			return netip.Addr{}, false
		}
		return ip, true
	}
	colons, last := 0, -1
	for i, c := range b {
		if c == ':' {
			colons++
			last = i
		}
	}
	if colons == 1 {
		// IPv4 with a port; an IPv6 address always has at least two colons.
		if !validPort(b[last:]) {
			return netip.Addr{}, false
		}
		b = b[:last]
	}
	return parseAddr(b)
}

// validPort reports whether b is ":" followed by 1 to 5 digits.
func validPort(b []byte) bool {
	if len(b) < 2 || len(b) > 6 || b[0] != ':' {
		return false
	}
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseAddr parses b without copying it: netip.ParseAddr keeps no reference
// to its input on success (a zone is interned by copy), so viewing the bytes
// as a string for the duration of the call is safe.
func parseAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(unsafe.String(&b[0], len(b)))
	if err != nil {
		return netip.Addr{}, false
	}
	return normalize(ip), true
}

func normalize(ip netip.Addr) netip.Addr {
	if ip.Zone() != "" {
		ip = ip.WithZone("")
	}
	return ip.Unmap()
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// ParsePrefixes parses a list of trusted proxies separated by commas or
// white space: CIDR prefixes ("10.0.0.0/8", "::1/128") or single addresses
// ("192.0.2.1", taken as /32 or /128). Every bad entry is reported in one
// joined error; an empty list yields no prefixes and no error.
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	fields := strings.FieldsFunc(list, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	var errs []error
	out := make([]netip.Prefix, 0, len(fields))
	for _, f := range fields {
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("cannot parse trusted proxy prefix %q: %w", f, err))
				continue
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot parse trusted proxy address %q: %w", f, err))
			continue
		}
		a = a.WithZone("")
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
