package enrich

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/oschwald/maxminddb-golang"
)

// Geo is the location of an address as the collector stores it.
type Geo struct {
	CountryCode string // ISO 3166-1 alpha-2 ("DE"); empty when unknown
	Region      string // ISO 3166-2 code ("DE-BE") for GeoIP2 data, the region name for DB-IP flat data
	City        string // English city name
}

// geoCacheSize bounds the decoded-record cache. MaxMind databases share
// one data record among many networks (a city's record serves all of its
// ranges), so caching by record offset makes repeat lookups a tree walk
// plus a map read; 65536 records is a few megabytes.
const geoCacheSize = 1 << 16

// geoFile is one open MaxMind DB file with its decoded-record cache.
type geoFile struct {
	r      *maxminddb.Reader
	ipv4DB bool

	mu    sync.RWMutex
	cache map[uintptr]Geo
}

// GeoDB looks addresses up in one or more MaxMind DB files (for example
// DB-IP's separate IPv4 and IPv6 files). It reads the GeoIP2 and GeoLite2
// City and Country layouts (country.iso_code, subdivisions[0].iso_code,
// city.names.en) and the flat DB-IP layout of ip-location-db (country_code,
// state1, city), decided per record. Lookup is safe for concurrent use;
// Close must not run concurrently with Lookup. The package never logs and
// never puts an address into an error.
type GeoDB struct {
	files []*geoFile
}

// OpenGeoDB opens (memory-maps) the database at path.
func OpenGeoDB(path string) (*GeoDB, error) {
	return OpenGeoDBs([]string{path})
}

// OpenGeoDBs opens several databases that Lookup consults in order, the first that knows an
// address winning: DB-IP ships IPv4 and IPv6 ranges as two files.
func OpenGeoDBs(paths []string) (*GeoDB, error) {
	g := &GeoDB{}
	for _, p := range paths {
		f, err := openGeoFile(p)
		if err != nil {
			_ = g.Close()
			return nil, err
		}
		g.files = append(g.files, f)
	}
	return g, nil
}

func openGeoFile(path string) (*geoFile, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open GeoIP database %s: %w", path, err)
	}
	if r.Metadata.IPVersion != 4 && r.Metadata.IPVersion != 6 {
		_ = r.Close()
		return nil, fmt.Errorf("cannot use GeoIP database %s: unsupported IP version %d", path, r.Metadata.IPVersion)
	}
	return &geoFile{r: r, ipv4DB: r.Metadata.IPVersion == 4, cache: make(map[uintptr]Geo, 1024)}, nil
}

// DatabaseType returns the database_type of the file's metadata
// ("GeoLite2-City", ...), for a start-up log line.
func (g *GeoDB) DatabaseType() string {
	if g == nil || len(g.files) == 0 {
		return ""
	}
	return g.files[0].r.Metadata.DatabaseType
}

// ipPool holds the 16-byte buffers handed to the reader, which takes a
// net.IP that escapes to the heap; pooling keeps Lookup allocation-free.
var ipPool = sync.Pool{New: func() any { return new([16]byte) }}

// Lookup returns the location of ip; Geo{} when ip is invalid, not in the
// database, or g is nil. It never logs the IP. Returned strings are shared
// and immutable.
func (g *GeoDB) Lookup(ip netip.Addr) Geo {
	if g == nil || !ip.IsValid() {
		return Geo{}
	}
	ip = ip.Unmap()
	for _, f := range g.files {
		if v, ok := f.lookup(ip); ok {
			return v
		}
	}
	return Geo{}
}

// lookup finds ip in one file; ok is false when the file does not know it.
func (g *geoFile) lookup(ip netip.Addr) (Geo, bool) {
	if ip.Is6() && g.ipv4DB {
		return Geo{}, false
	}
	buf := ipPool.Get().(*[16]byte)
	var nip net.IP
	if ip.Is4() {
		a := ip.As4()
		copy(buf[:4], a[:])
		nip = buf[:4]
	} else {
		*buf = ip.As16()
		nip = buf[:16]
	}
	off, err := g.r.LookupOffset(nip)
	ipPool.Put(buf)
	if err != nil || off == maxminddb.NotFound {
		return Geo{}, false
	}
	g.mu.RLock()
	v, ok := g.cache[off]
	g.mu.RUnlock()
	if ok {
		return v, true
	}
	v = g.decode(off)
	g.mu.Lock()
	if len(g.cache) >= geoCacheSize {
		for k := range g.cache {
			delete(g.cache, k)
			break
		}
	}
	g.cache[off] = v
	g.mu.Unlock()
	return v, true
}

// geoRecord holds the fields of both layouts; City is decoded as any
// because it is a string in DB-IP flat data and a map in GeoIP2 data.
type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Subdivisions []struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"subdivisions"`
	City        any    `maxminddb:"city"`
	CountryCode string `maxminddb:"country_code"`
	State1      string `maxminddb:"state1"`
}

func (g *geoFile) decode(off uintptr) Geo {
	var rec geoRecord
	if err := g.r.Decode(off, &rec); err != nil {
		return Geo{}
	}
	var out Geo
	if rec.CountryCode != "" {
		out.CountryCode = strings.ToUpper(rec.CountryCode)
		out.Region = rec.State1
		if c, ok := rec.City.(string); ok {
			out.City = c
		}
		return out
	}
	out.CountryCode = strings.ToUpper(rec.Country.ISOCode)
	if len(rec.Subdivisions) > 0 && rec.Subdivisions[0].ISOCode != "" {
		sub := rec.Subdivisions[0].ISOCode
		if out.CountryCode != "" {
			sub = out.CountryCode + "-" + sub
		}
		out.Region = sub
	}
	if c, ok := rec.City.(map[string]any); ok {
		if names, ok := c["names"].(map[string]any); ok {
			if en, ok := names["en"].(string); ok {
				out.City = en
			}
		}
	}
	return out
}

// Close unmaps the database. Lookups must have finished.
func (g *GeoDB) Close() error {
	if g == nil {
		return nil
	}
	for _, f := range g.files {
		if err := f.r.Close(); err != nil {
			return fmt.Errorf("cannot close GeoIP database: %w", err)
		}
	}
	return nil
}
