package clientip

import (
	"net/netip"
	"testing"
)

func mustPrefixes(t testing.TB, list string) []netip.Prefix {
	t.Helper()
	ps, err := ParsePrefixes(list)
	if err != nil {
		t.Fatalf("ParsePrefixes(%q): %v", list, err)
	}
	return ps
}

func TestClientIP(t *testing.T) {
	r := NewResolver(mustPrefixes(t, "10.0.0.0/8, 192.168.0.0/16 fd00::/8,::1, ::ffff:172.16.0.0/108"))
	tests := []struct {
		name      string
		peer      string
		xff       string
		forwarded string
		want      string
	}{
		{name: "untrusted peer ignores headers", peer: "203.0.113.9", xff: "198.51.100.1", want: "203.0.113.9"},
		{name: "untrusted peer ignores forwarded", peer: "203.0.113.9", forwarded: "for=198.51.100.1", want: "203.0.113.9"},
		{name: "trusted peer without headers", peer: "10.1.2.3", want: "10.1.2.3"},
		{name: "single xff", peer: "10.1.2.3", xff: "198.51.100.1", want: "198.51.100.1"},
		{name: "rightmost untrusted, never leftmost", peer: "10.1.2.3", xff: "1.1.1.1, 198.51.100.1, 10.9.9.9", want: "198.51.100.1"},
		{name: "spoofed leftmost ignored", peer: "10.0.0.1", xff: "127.0.0.1, 203.0.113.7", want: "203.0.113.7"},
		{name: "all trusted gives leftmost", peer: "10.0.0.1", xff: "192.168.1.1,10.2.2.2", want: "192.168.1.1"},
		{name: "spaces and tabs", peer: "10.0.0.1", xff: " \t198.51.100.2 ,\t10.0.0.5  ", want: "198.51.100.2"},
		{name: "empty elements", peer: "10.0.0.1", xff: ",198.51.100.3,,", want: "198.51.100.3"},
		{name: "ipv4 with port", peer: "10.0.0.1", xff: "198.51.100.4:5678", want: "198.51.100.4"},
		{name: "ipv6 bare", peer: "10.0.0.1", xff: "2001:db8::1", want: "2001:db8::1"},
		{name: "ipv6 bracketed with port", peer: "10.0.0.1", xff: "[2001:db8::2]:443", want: "2001:db8::2"},
		{name: "ipv6 bracketed", peer: "10.0.0.1", xff: "[2001:db8::3]", want: "2001:db8::3"},
		{name: "ipv4-mapped unmapped", peer: "10.0.0.1", xff: "::ffff:198.51.100.5", want: "198.51.100.5"},
		{name: "mapped trusted peer", peer: "::ffff:10.0.0.1", xff: "198.51.100.6", want: "198.51.100.6"},
		{name: "mapped trusted hop", peer: "10.0.0.1", xff: "198.51.100.7, ::ffff:10.3.3.3", want: "198.51.100.7"},
		{name: "ipv6 peer trusted", peer: "::1", xff: "198.51.100.8", want: "198.51.100.8"},
		{name: "ipv6 ula chain", peer: "fd00::1", xff: "2001:db8::9, fd00::2", want: "2001:db8::9"},
		{name: "zone dropped", peer: "10.0.0.1", xff: "fe80::1%eth0", want: "fe80::1"},
		{name: "malformed stops walk, last good used", peer: "10.0.0.1", xff: "198.51.100.1, garbage, 10.0.0.7", want: "10.0.0.7"},
		{name: "malformed rightmost gives peer", peer: "10.0.0.1", xff: "198.51.100.1, not-an-ip", want: "10.0.0.1"},
		{name: "bad port", peer: "10.0.0.1", xff: "198.51.100.1:http", want: "10.0.0.1"},
		{name: "unclosed bracket", peer: "10.0.0.1", xff: "[2001:db8::1", want: "10.0.0.1"},
		{name: "bracketed ipv4 rejected", peer: "10.0.0.1", xff: "[198.51.100.1]", want: "10.0.0.1"},
		{name: "xff preferred over forwarded", peer: "10.0.0.1", xff: "198.51.100.10", forwarded: "for=198.51.100.11", want: "198.51.100.10"},
		{name: "blank xff falls back to forwarded", peer: "10.0.0.1", xff: "  ", forwarded: "for=198.51.100.11", want: "198.51.100.11"},
		{name: "forwarded simple", peer: "10.0.0.1", forwarded: "for=192.0.2.60;proto=http;by=203.0.113.43", want: "192.0.2.60"},
		{name: "forwarded case insensitive key", peer: "10.0.0.1", forwarded: "For=192.0.2.61", want: "192.0.2.61"},
		{name: "forwarded quoted ipv6 port", peer: "10.0.0.1", forwarded: `for="[2001:db8::1]:443"`, want: "2001:db8::1"},
		{name: "forwarded list rightmost", peer: "10.0.0.1", forwarded: `for=198.51.100.1, for="[2001:db8:cafe::17]:4711", for=10.0.0.9`, want: "2001:db8:cafe::17"},
		{name: "forwarded quoted ipv4 port", peer: "10.0.0.1", forwarded: `for="192.0.2.43:47011"`, want: "192.0.2.43"},
		{name: "forwarded obfuscated stops", peer: "10.0.0.1", forwarded: `for=198.51.100.1, for=_hidden, for=10.0.0.2`, want: "10.0.0.2"},
		{name: "forwarded unknown stops", peer: "10.0.0.1", forwarded: `for=198.51.100.1, for=unknown`, want: "10.0.0.1"},
		{name: "forwarded element without for skipped", peer: "10.0.0.1", forwarded: `for=198.51.100.12, proto=https;by=10.0.0.3`, want: "198.51.100.12"},
		{name: "forwarded quoted comma", peer: "10.0.0.1", forwarded: `for=198.51.100.13;x="a,b", for=10.0.0.3`, want: "198.51.100.13"},
		{name: "forwarded params after for", peer: "10.0.0.1", forwarded: `by=10.0.0.3; for=198.51.100.14 ; proto=https`, want: "198.51.100.14"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := r.ClientIP(netip.MustParseAddr(tc.peer), []byte(tc.xff), []byte(tc.forwarded))
			if want := netip.MustParseAddr(tc.want); got != want {
				t.Fatalf("ClientIP = %v, want %v", got, want)
			}
		})
	}
}

func TestClientIPHeaders(t *testing.T) {
	r := NewResolver(mustPrefixes(t, "10.0.0.0/8"))
	tests := []struct {
		name string
		xff  []string
		fwd  []string
		want string
	}{
		{name: "last line walked first", xff: []string{"198.51.100.1", "198.51.100.2, 10.0.0.4"}, want: "198.51.100.2"},
		{name: "walk crosses lines", xff: []string{"198.51.100.1", "10.0.0.3, 10.0.0.4"}, want: "198.51.100.1"},
		{name: "all trusted", xff: []string{"10.0.0.2", "10.0.0.3"}, want: "10.0.0.2"},
		{name: "malformed in later line", xff: []string{"198.51.100.1", "junk, 10.0.0.4"}, want: "10.0.0.4"},
		{name: "forwarded lines", fwd: []string{"for=198.51.100.5", "for=10.0.0.2"}, want: "198.51.100.5"},
		{name: "nothing", want: "10.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var xff, fwd [][]byte
			for _, s := range tc.xff {
				xff = append(xff, []byte(s))
			}
			for _, s := range tc.fwd {
				fwd = append(fwd, []byte(s))
			}
			got := r.ClientIPHeaders(netip.MustParseAddr("10.0.0.1"), xff, fwd)
			if want := netip.MustParseAddr(tc.want); got != want {
				t.Fatalf("ClientIPHeaders = %v, want %v", got, want)
			}
		})
	}
}

func TestNoTrustedProxies(t *testing.T) {
	r := NewResolver(nil)
	peer := netip.MustParseAddr("10.0.0.1")
	if got := r.ClientIP(peer, []byte("198.51.100.1"), []byte("for=198.51.100.2")); got != peer {
		t.Fatalf("ClientIP = %v, want the peer %v", got, peer)
	}
}

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{name: "empty", in: "", want: nil},
		{name: "mixed", in: "10.0.0.0/8, ::1/128, 192.0.2.1", want: []string{"10.0.0.0/8", "::1/128", "192.0.2.1/32"}},
		{name: "whitespace separated", in: "10.0.0.0/8 2001:db8::1\n172.16.0.0/12", want: []string{"10.0.0.0/8", "2001:db8::1/128", "172.16.0.0/12"}},
		{name: "masked", in: "10.1.2.3/8", want: []string{"10.0.0.0/8"}},
		{name: "bad prefix", in: "10.0.0.0/40", wantErr: true},
		{name: "bad address", in: "10.0.0.0/8, nope", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePrefixes(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].String() != tc.want[i] {
					t.Fatalf("got[%d] = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestClientIPAllocs(t *testing.T) {
	r := NewResolver(mustPrefixes(t, "10.0.0.0/8, fd00::/8"))
	peer := netip.MustParseAddr("10.0.0.1")
	xff := []byte("198.51.100.1, [2001:db8::1]:443, 10.0.0.2")
	fwd := []byte(`for=198.51.100.1, for="[2001:db8:cafe::17]:4711", for=10.0.0.9`)
	n := testing.AllocsPerRun(1000, func() {
		_ = r.ClientIP(peer, xff, nil)
		_ = r.ClientIP(peer, nil, fwd)
	})
	if n != 0 {
		t.Fatalf("ClientIP allocates %v times per call, want 0", n)
	}
}

func BenchmarkClientIP(b *testing.B) {
	r := NewResolver(mustPrefixes(b, "10.0.0.0/8, 172.16.0.0/12, fd00::/8"))
	peer := netip.MustParseAddr("10.0.0.1")
	cases := []struct {
		name     string
		xff, fwd []byte
	}{
		{name: "untrusted-peer"},
		{name: "xff-3-hops", xff: []byte("198.51.100.1, 203.0.113.5, 10.0.0.2")},
		{name: "xff-ipv6", xff: []byte("[2001:db8::1]:443, fd00::3")},
		{name: "forwarded", fwd: []byte(`for=198.51.100.1, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9`)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := peer
			if c.name == "untrusted-peer" {
				p = netip.MustParseAddr("203.0.113.9")
			}
			b.ReportAllocs()
			for b.Loop() {
				_ = r.ClientIP(p, c.xff, c.fwd)
			}
		})
	}
}
