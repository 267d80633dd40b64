package clientip

import (
	"net/netip"
	"testing"
)

func FuzzClientIP(f *testing.F) {
	f.Add([]byte("198.51.100.1, 10.0.0.2"), []byte(""))
	f.Add([]byte("[2001:db8::1]:443"), []byte(`for="[2001:db8::1]:443"`))
	f.Add([]byte(""), []byte(`for=_hidden;by=10.0.0.1, for=unknown`))
	f.Add([]byte(",,, ::ffff:1.2.3.4"), []byte(`for="\"x,"`))
	r := NewResolver([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")})
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, xff, fwd []byte) {
		got := r.ClientIP(peer, xff, fwd)
		if !got.IsValid() {
			t.Fatalf("ClientIP returned an invalid address")
		}
		if got.Is4In6() || got.Zone() != "" {
			t.Fatalf("ClientIP returned a mapped or zoned address %v", got)
		}
		// The answer is the peer or an address written in one of the headers.
		if got != peer && !r.Trusted(got) {
			// an untrusted answer must be a hop that parses from the input
			if len(xff) == 0 && len(fwd) == 0 {
				t.Fatalf("untrusted %v without headers", got)
			}
		}
		got2 := r.ClientIPHeaders(peer, [][]byte{xff}, [][]byte{fwd})
		if len(trimSpace(xff)) > 0 && got2 != got {
			t.Fatalf("ClientIPHeaders = %v, ClientIP = %v", got2, got)
		}
	})
}
