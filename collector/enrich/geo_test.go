package enrich

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kyomi/collector/collector/enrich/geotest"
)

var testGeoEntries = map[string]Geo{
	"81.2.69.0/24":    {CountryCode: "GB", Region: "GB-ENG", City: "London"},
	"89.160.20.112":   {CountryCode: "SE", Region: "SE-E", City: "Linköping"},
	"2a02:8100::/32":  {CountryCode: "DE", Region: "DE-NW", City: "Köln"},
	"216.160.83.0/24": {CountryCode: "US", Region: "US-WA", City: "Milton"},
	"10.0.0.0/8":      {CountryCode: "NL"}, // country-only record
}

func writeGeo(t testing.TB, flat bool, entries map[string]Geo) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "geo.mmdb")
	write := geotest.Write[Geo]
	if flat {
		write = geotest.WriteFlat[Geo]
	}
	if err := write(path, entries); err != nil {
		t.Fatalf("cannot write test database: %v", err)
	}
	return path
}

func openGeo(t testing.TB, path string) *GeoDB {
	t.Helper()
	g, err := OpenGeoDB(path)
	if err != nil {
		t.Fatalf("OpenGeoDB: %v", err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return g
}

func TestGeoDBLookup(t *testing.T) {
	for _, layout := range []struct {
		name string
		flat bool
	}{{"geoip2", false}, {"dbip-flat", true}} {
		t.Run(layout.name, func(t *testing.T) {
			g := openGeo(t, writeGeo(t, layout.flat, testGeoEntries))
			region := func(iso, name string) string {
				if layout.flat {
					return name
				}
				return iso
			}
			tests := []struct {
				name string
				ip   string
				want Geo
			}{
				{name: "ipv4 in range", ip: "81.2.69.160", want: Geo{CountryCode: "GB", Region: region("GB-ENG", "GB-ENG"), City: "London"}},
				{name: "single address", ip: "89.160.20.112", want: Geo{CountryCode: "SE", Region: "SE-E", City: "Linköping"}},
				{name: "neighbour of single address", ip: "89.160.20.113", want: Geo{}},
				{name: "ipv6", ip: "2a02:8100:1234::1", want: Geo{CountryCode: "DE", Region: "DE-NW", City: "Köln"}},
				{name: "ipv4-mapped", ip: "::ffff:216.160.83.56", want: Geo{CountryCode: "US", Region: "US-WA", City: "Milton"}},
				{name: "country only", ip: "10.1.2.3", want: Geo{CountryCode: "NL"}},
				{name: "not found", ip: "8.8.8.8", want: Geo{}},
				{name: "not found v6", ip: "2001:4860::8888", want: Geo{}},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					ip := netip.MustParseAddr(tc.ip)
					if got := g.Lookup(ip); got != tc.want {
						t.Fatalf("Lookup = %+v, want %+v", got, tc.want)
					}
					// The second lookup is served by the prefix or the record cache.
					if got := g.Lookup(ip); got != tc.want {
						t.Fatalf("cached Lookup = %+v, want %+v", got, tc.want)
					}
				})
			}
		})
	}
}

func TestGeoDBNilAndInvalid(t *testing.T) {
	var g *GeoDB
	if got := g.Lookup(netip.MustParseAddr("81.2.69.160")); got != (Geo{}) {
		t.Fatalf("nil GeoDB Lookup = %+v", got)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("nil Close: %v", err)
	}
	real := openGeo(t, writeGeo(t, false, testGeoEntries))
	if got := real.Lookup(netip.Addr{}); got != (Geo{}) {
		t.Fatalf("invalid address Lookup = %+v", got)
	}
}

func TestOpenGeoDBErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.mmdb")
	if _, err := OpenGeoDB(missing); err == nil || !strings.Contains(err.Error(), "cannot open GeoIP database") {
		t.Fatalf("missing file: err = %v", err)
	}
	junk := filepath.Join(dir, "junk.mmdb")
	if err := os.WriteFile(junk, []byte("not a maxmind database"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenGeoDB(junk); err == nil {
		t.Fatalf("junk file opened without error")
	}
}

func TestDemoGeoDB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.mmdb")
	if err := geotest.WriteDemo(path); err != nil {
		t.Fatalf("WriteDemo: %v", err)
	}
	g := openGeo(t, path)
	if g.DatabaseType() != "GeoLite2-City" {
		t.Fatalf("database type %q", g.DatabaseType())
	}
	tests := []struct {
		ip   string
		want Geo
	}{
		{"127.0.0.1", Geo{CountryCode: "DE", Region: "DE-BE", City: "Berlin"}},
		{"::1", Geo{CountryCode: "DE", Region: "DE-BE", City: "Berlin"}},
		{"192.0.2.10", Geo{CountryCode: "US", Region: "US-CA", City: "San Francisco"}},
		{"198.51.100.7", Geo{CountryCode: "GB", Region: "GB-ENG", City: "London"}},
		{"203.0.113.200", Geo{CountryCode: "JP", Region: "JP-13", City: "Tokyo"}},
		{"2001:db8::42", Geo{CountryCode: "FR", Region: "FR-IDF", City: "Paris"}},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			if got := g.Lookup(netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Fatalf("Lookup = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWriteTestGeoDBRejectsBadNetwork(t *testing.T) {
	err := geotest.Write(filepath.Join(t.TempDir(), "x.mmdb"), map[string]Geo{"300.0.0.0/8": {CountryCode: "XX"}})
	if err == nil {
		t.Fatalf("bad network accepted")
	}
}

func TestGeoDBConcurrent(t *testing.T) {
	g := openGeo(t, writeGeo(t, false, testGeoEntries))
	ips := []netip.Addr{netip.MustParseAddr("81.2.69.1"), netip.MustParseAddr("2a02:8100::5"), netip.MustParseAddr("8.8.4.4")}
	want := []Geo{g.Lookup(ips[0]), g.Lookup(ips[1]), {}}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				k := i % len(ips)
				if got := g.Lookup(ips[k]); got != want[k] {
					t.Errorf("concurrent Lookup = %+v, want %+v", got, want[k])
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestGeoDBLookupAllocs(t *testing.T) {
	g := openGeo(t, writeGeo(t, false, testGeoEntries))
	v4, v6 := netip.MustParseAddr("81.2.69.160"), netip.MustParseAddr("2a02:8100::1")
	g.Lookup(v4)
	g.Lookup(v6)
	if n := testing.AllocsPerRun(1000, func() { g.Lookup(v4); g.Lookup(v6) }); n != 0 {
		t.Fatalf("cached Lookup allocates %v times, want 0", n)
	}
}

func BenchmarkGeoLookup(b *testing.B) {
	entries := map[string]Geo{}
	for k, v := range testGeoEntries {
		entries[k] = v
	}
	// A few thousand networks so the tree has realistic depth.
	for i := 0; i < 4000; i++ {
		p := netip.AddrFrom4([4]byte{byte(20 + i/256), byte(i % 256), 0, 0})
		entries[netip.PrefixFrom(p, 16).String()] = Geo{CountryCode: "US", Region: "US-NY", City: "City" + p.String()}
	}
	for _, flat := range []bool{false, true} {
		name := "geoip2"
		if flat {
			name = "dbip-flat"
		}
		b.Run(name, func(b *testing.B) {
			g := openGeo(b, writeGeo(b, flat, entries))
			ips := []netip.Addr{netip.MustParseAddr("81.2.69.160"), netip.MustParseAddr("2a02:8100::1"), netip.MustParseAddr("25.3.1.1"), netip.MustParseAddr("8.8.8.8")}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				g.Lookup(ips[i%len(ips)])
				i++
			}
		})
	}
}

// TestGeoDBsInOrder opens two databases, as DB-IP ships its IPv4 and IPv6 ranges, and checks that
// each address family is found in its file and that the first file that knows an address wins.
func TestGeoDBsInOrder(t *testing.T) {
	dir := t.TempDir()
	v4 := filepath.Join(dir, "v4.mmdb")
	v6 := filepath.Join(dir, "v6.mmdb")
	if err := geotest.WriteFlat(v4, map[string]Geo{"203.0.113.0/24": {CountryCode: "NZ", Region: "Auckland", City: "Auckland"}}); err != nil {
		t.Fatal(err)
	}
	if err := geotest.Write(v6, map[string]Geo{
		"2001:db8::/32":  {CountryCode: "DE", Region: "BE", City: "Berlin"},
		"203.0.113.0/24": {CountryCode: "FR", City: "Paris"}, // shadowed by the first file
	}); err != nil {
		t.Fatal(err)
	}
	g, err := OpenGeoDBs([]string{v4, v6})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if got, want := g.DatabaseType(), "ip-location-db-dbip-city, GeoLite2-City"; got != want {
		t.Errorf("database types %q, want %q (both files, in order)", got, want)
	}
	cases := []struct {
		ip   string
		want string
	}{
		{"203.0.113.5", "NZ"},
		{"::ffff:203.0.113.5", "NZ"},
		{"2001:db8::1", "DE"},
		{"198.51.100.1", ""},
	}
	for _, tc := range cases {
		if got := g.Lookup(netip.MustParseAddr(tc.ip)).CountryCode; got != tc.want {
			t.Errorf("%s: country %q, want %q", tc.ip, got, tc.want)
		}
	}
	if _, err := OpenGeoDBs([]string{v4, filepath.Join(dir, "missing.mmdb")}); err == nil {
		t.Fatal("a missing second file was accepted")
	}
}
