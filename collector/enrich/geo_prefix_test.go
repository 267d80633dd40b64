package enrich

import (
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kyomi/collector/collector/enrich/geotest"
)

// prefixEntries returns the entries the prefix cache holds.
func (c *prefixCache) entries() []*prefixEntry {
	var out []*prefixEntry
	for i := range c.sets {
		for j := range c.sets[i].ways {
			if e := c.sets[i].ways[j].entry.Load(); e != nil {
				out = append(out, e)
			}
		}
	}
	return out
}

// cachedAnswer returns the answer the prefix cache holds for ip's network, if any.
func (g *GeoDB) cachedAnswer(ip netip.Addr) (Geo, bool) {
	key := prefixKey(ip.Unmap())
	set, h := g.prefixes.set(key)
	if e := set.find(h, key); e != nil {
		return e.geo, true
	}
	return Geo{}, false
}

// checkNoFullAddress fails t unless every key in g's prefix cache is an IPv4 /24 or IPv6 /48
// with its host bits zero, and none is one of looked (addresses with non-zero host bits that
// went through Lookup).
func checkNoFullAddress(t *testing.T, g *GeoDB, looked []netip.Addr) {
	t.Helper()
	entries := g.prefixes.entries()
	if len(entries) == 0 {
		t.Fatal("prefix cache is empty: nothing to inspect")
	}
	keys := make(map[netip.Addr]bool, len(entries))
	for _, e := range entries {
		k := e.key
		want := prefixBits6
		if k.Addr().Is4() {
			want = prefixBits4
		}
		if k.Bits() != want || k != k.Masked() || k.Addr().Zone() != "" {
			t.Fatalf("cache key %s is not a /%d with zero host bits", k, want)
		}
		keys[k.Addr()] = true
	}
	for _, a := range looked {
		if keys[a.Unmap()] {
			t.Fatalf("cache key holds a looked-up address %s", a)
		}
	}
}

// hostIn returns an address of p with random host bits, not all zero unless p is one address.
func hostIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	if p.IsSingleIP() {
		return p.Addr()
	}
	a := p.Addr().AsSlice()
	for i := range a {
		var network byte // the bits of a[i] that belong to the network
		switch n := p.Bits() - 8*i; {
		case n >= 8:
			network = 0xFF
		case n > 0:
			network = 0xFF << (8 - n)
		}
		a[i] = a[i]&network | byte(r.Uint32())&^network
	}
	a[len(a)-1] |= 1
	h, _ := netip.AddrFromSlice(a)
	return h
}

// TestGeoPrefixCache checks, on a database with networks narrower and wider than the cache
// keys, that every address gets its own network's answer whatever was looked up before it in
// the same /24 or /48, and that only wide-enough networks are cached.
func TestGeoPrefixCache(t *testing.T) {
	for _, layout := range []struct {
		name string
		flat bool
	}{{"geoip2", false}, {"dbip-flat", true}} {
		t.Run(layout.name, func(t *testing.T) {
			g := openGeo(t, writeGeo(t, layout.flat, map[string]Geo{
				"10.1.0.0/16":          {CountryCode: "DE", Region: "DE-BE", City: "Berlin"},
				"10.1.2.0/26":          {CountryCode: "FR", Region: "FR-IDF", City: "Paris"},
				"10.1.2.64/26":         {CountryCode: "GB", Region: "GB-ENG", City: "London"},
				"2001:db8::/32":        {CountryCode: "NL", Region: "NL-NH", City: "Amsterdam"},
				"2001:db8:5:1::/64":    {CountryCode: "JP", Region: "JP-13", City: "Tokyo"},
				"2001:db8:6:8000::/49": {CountryCode: "US", Region: "US-CA", City: "San Francisco"},
			}))
			berlin, paris, london := Geo{"DE", "DE-BE", "Berlin"}, Geo{"FR", "FR-IDF", "Paris"}, Geo{"GB", "GB-ENG", "London"}
			amsterdam, tokyo, sf := Geo{"NL", "NL-NH", "Amsterdam"}, Geo{"JP", "JP-13", "Tokyo"}, Geo{"US", "US-CA", "San Francisco"}
			tests := []struct {
				name   string
				ip     string
				want   Geo
				cached bool // the answer is in the prefix cache afterwards
			}{
				{"first /26", "10.1.2.1", paris, false},
				{"second /26 of the same /24", "10.1.2.65", london, false},
				{"rest of the split /24", "10.1.2.200", berlin, false},
				{"first /26 again", "10.1.2.2", paris, false},
				{"/24 of the /16", "10.1.3.5", berlin, true},
				{"same /24", "10.1.3.250", berlin, true},
				{"not found", "8.8.8.8", Geo{}, true},
				{"not found, same /24", "8.8.8.4", Geo{}, true},
				{"ipv4-mapped", "::ffff:10.1.3.7", berlin, true},
				{"/64 inside a /48", "2001:db8:5:1::1", tokyo, false},
				{"rest of that /48", "2001:db8:5:2::1", amsterdam, false},
				{"/64 again", "2001:db8:5:1:ffff::9", tokyo, false},
				{"/49 lower half", "2001:db8:6::1", amsterdam, false},
				{"/49 upper half", "2001:db8:6:8000::1", sf, false},
				{"/48 of the /32", "2001:db8:7::1", amsterdam, true},
				{"same /48", "2001:db8:7:ffff::2", amsterdam, true},
				{"not found v6", "2001:4860::8888", Geo{}, true},
			}
			var looked []netip.Addr
			for pass := range 2 {
				for _, tc := range tests {
					ip := netip.MustParseAddr(tc.ip)
					looked = append(looked, ip)
					if got := g.Lookup(ip); got != tc.want {
						t.Fatalf("pass %d, %s: Lookup(%s) = %+v, want %+v", pass, tc.name, ip, got, tc.want)
					}
					if got, ok := g.cachedAnswer(ip); ok != tc.cached || got != tc.want && ok {
						t.Fatalf("pass %d, %s: cached answer %+v, %v; want cached %v", pass, tc.name, got, ok, tc.cached)
					}
				}
			}
			checkNoFullAddress(t, g, looked)
		})
	}
}

// TestGeoPrefixCacheFileOrder: an address that one file knows only in a narrow network and
// that falls through to a wide network of the next file must not be cached for its /24, or
// its neighbours in the first file's network would get the second file's answer.
func TestGeoPrefixCacheFileOrder(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first.mmdb"), filepath.Join(dir, "second.mmdb")
	if err := geotest.WriteFlat(first, map[string]Geo{"203.0.113.0/26": {CountryCode: "NZ", Region: "Auckland", City: "Auckland"}}); err != nil {
		t.Fatal(err)
	}
	if err := geotest.WriteFlat(second, map[string]Geo{"203.0.0.0/16": {CountryCode: "AU", Region: "Victoria", City: "Melbourne"}}); err != nil {
		t.Fatal(err)
	}
	g, err := OpenGeoDBs([]string{first, second})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, tc := range []struct{ ip, want string }{
		{"203.0.113.100", "AU"}, // not in the first file's /26; the second file's /16
		{"203.0.113.5", "NZ"},
		{"203.0.114.1", "AU"}, // both files answer for a /24 or wider
		{"203.0.114.2", "AU"},
	} {
		if got := g.Lookup(netip.MustParseAddr(tc.ip)).CountryCode; got != tc.want {
			t.Errorf("%s: country %q, want %q", tc.ip, got, tc.want)
		}
	}
	if _, ok := g.cachedAnswer(netip.MustParseAddr("203.0.113.1")); ok {
		t.Error("203.0.113.0/24 is cached although the first file splits it")
	}
	if _, ok := g.cachedAnswer(netip.MustParseAddr("203.0.114.1")); !ok {
		t.Error("203.0.114.0/24 is not cached")
	}
}

// TestGeoPrefixCacheSet fills one set of the prefix cache: the four /24s that share it all stay
// cached, and a fifth takes one slot, leaving the set with four of the five.
func TestGeoPrefixCacheSet(t *testing.T) {
	g := openGeo(t, writeGeo(t, false, map[string]Geo{"10.0.0.0/8": {CountryCode: "DE", Region: "DE-BE", City: "Berlin"}}))
	// Five /24s of 10.0.0.0/8 in one set, the first found by walking the /8.
	var same []netip.Addr
	var want *prefixSet
	for i := uint32(0); len(same) < prefixCacheWays+1; i++ {
		if i == 1<<16 {
			t.Fatalf("found %d /24s of 10.0.0.0/8 in one set, want %d", len(same), prefixCacheWays+1)
		}
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 7})
		set, _ := g.prefixes.set(prefixKey(a))
		if want == nil {
			want = set
		}
		if set == want {
			same = append(same, a)
		}
	}
	cached := func(ips []netip.Addr) int {
		n := 0
		for _, a := range ips {
			if _, ok := g.cachedAnswer(a); ok {
				n++
			}
		}
		return n
	}
	first := same[:prefixCacheWays]
	for pass := range 2 {
		for _, a := range first {
			if got := g.Lookup(a).CountryCode; got != "DE" {
				t.Fatalf("pass %d: Lookup(%s) = %q, want DE", pass, a, got)
			}
		}
		if n := cached(first); n != prefixCacheWays {
			t.Fatalf("pass %d: %d of the %d /24s sharing a set are cached, want all", pass, n, prefixCacheWays)
		}
	}
	g.Lookup(same[prefixCacheWays])
	if _, ok := g.cachedAnswer(same[prefixCacheWays]); !ok {
		t.Fatal("the fifth /24 of the set was not cached")
	}
	if n := cached(first); n != prefixCacheWays-1 {
		t.Fatalf("after a fifth /24, %d of the first four are cached, want %d", n, prefixCacheWays-1)
	}
}

// TestGeoPrefixCacheDBIP compares cached lookups with tree walks on the real DB-IP files: for
// addresses spread over both address families, another address of each /24 or /48, and
// addresses of /24s and /48s that DB-IP splits between places, in random order, twice (the
// second pass mostly hits), then from two goroutines at once.
func TestGeoPrefixCacheDBIP(t *testing.T) {
	g := openDBIP(t)
	r := rand.New(rand.NewPCG(1, 2))
	var ips []netip.Addr
	for _, v6 := range []bool{false, true} {
		for i := uint32(0); i < 1<<13; i++ {
			a := spreadAddr(i, v6)
			ips = append(ips, a, hostIn(r, prefixKey(a)))
		}
	}
	// /24s and /48s that a file splits into narrower networks with different answers: the
	// first address and a random one of each narrow network, and random addresses of the key.
	const splitsPerFile = 16
	var splitKeys []netip.Prefix
	for _, f := range g.files {
		keyBits := prefixBits6
		if f.ipv4DB {
			keyBits = prefixBits4
		}
		var key netip.Prefix
		var group []netip.Addr
		found := 0
		flush := func() {
			if len(group) == 0 {
				return
			}
			for range 32 {
				group = append(group, hostIn(r, key))
			}
			answers := map[Geo]bool{}
			for _, a := range group {
				v, _ := g.lookupFiles(a)
				answers[v] = true
			}
			if len(answers) > 1 {
				found++
				splitKeys = append(splitKeys, key)
				ips = append(ips, group...)
			}
			group = group[:0]
		}
		for res := range f.r.Networks() {
			p := res.Prefix()
			if p.Addr().Is4() != f.ipv4DB || p.Bits() <= keyBits {
				continue
			}
			if k := prefixKey(p.Addr()); k != key {
				if flush(); found == splitsPerFile {
					break
				}
				key = k
			}
			group = append(group, p.Addr(), hostIn(r, p))
		}
		if found < splitsPerFile {
			t.Fatalf("%s: found %d /%d networks split between places, want %d", f.r.Metadata.DatabaseType, found, keyBits, splitsPerFile)
		}
	}
	want := make(map[netip.Addr]Geo, len(ips))
	for _, a := range ips {
		want[a], _ = g.lookupFiles(a)
	}
	check := func(order []netip.Addr) int {
		bad := 0
		for _, a := range order {
			if got := g.Lookup(a); got != want[a] {
				if bad++; bad <= 5 {
					t.Errorf("Lookup(%s) = %+v, the tree walk says %+v", a, got, want[a])
				}
			}
		}
		return bad
	}
	for pass := range 2 {
		r.Shuffle(len(ips), func(i, j int) { ips[i], ips[j] = ips[j], ips[i] })
		if bad := check(ips); bad > 0 {
			t.Fatalf("pass %d: %d of %d lookups differ from the tree walk", pass, bad, len(ips))
		}
	}
	for _, k := range splitKeys {
		if _, ok := g.cachedAnswer(k.Addr()); ok {
			t.Errorf("split network %s is cached", k)
		}
	}
	cached := 0
	for _, a := range ips {
		if _, ok := g.cachedAnswer(a); ok {
			cached++
		}
	}
	if cached < len(ips)/2 {
		t.Errorf("only %d of %d addresses have a cached answer", cached, len(ips))
	}
	t.Logf("%d addresses, %d split networks, %d with a cached answer", len(ips), len(splitKeys), cached)
	var wg sync.WaitGroup
	for w := range 2 {
		order := append([]netip.Addr(nil), ips...)
		rand.New(rand.NewPCG(uint64(w), 3)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		wg.Go(func() { check(order) })
	}
	wg.Wait()
	checkNoFullAddress(t, g, ips)
}
