package enrich

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Geo is the location of an address as the collector stores it.
type Geo struct {
	CountryCode string // ISO 3166-1 alpha-2 ("DE"); empty when unknown
	Region      string // ISO 3166-2 code ("DE-BE") for GeoIP2 data, the region name for DB-IP flat data
	City        string // English city name
}

// geoCacheSize bounds the decoded-record cache. MaxMind databases share
// one data record among many networks (a city's record serves all of its
// ranges), so caching by record offset makes a prefix-cache miss a tree
// walk plus a map read; 65536 records is a few megabytes.
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
//
// Answers are cached by network prefix (see prefixCache), never by full
// address: the cache holds IPv4 /24 and IPv6 /48 networks, the granularity
// address-anonymisation schemes keep, and costs at most about 6 MiB.
type GeoDB struct {
	files    []*geoFile
	prefixes *prefixCache
}

// OpenGeoDB opens (memory-maps) the database at path.
func OpenGeoDB(path string) (*GeoDB, error) {
	return OpenGeoDBs([]string{path})
}

// OpenGeoDBs opens several databases that Lookup consults in order, the first that knows an
// address winning: DB-IP ships IPv4 and IPv6 ranges as two files.
func OpenGeoDBs(paths []string) (*GeoDB, error) {
	g := &GeoDB{prefixes: new(prefixCache)}
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

// DatabaseType returns the database_type of each file's metadata
// ("GeoLite2-City", or "city ipv4, city ipv6" for DB-IP's two files), for a
// start-up log line.
func (g *GeoDB) DatabaseType() string {
	if g == nil {
		return ""
	}
	types := make([]string, len(g.files))
	for i, f := range g.files {
		types[i] = f.r.Metadata.DatabaseType
	}
	return strings.Join(types, ", ")
}

// Lookup returns the location of ip; Geo{} when ip is invalid, not in the
// database, or g is nil. It never logs the IP. Returned strings are shared
// and immutable.
func (g *GeoDB) Lookup(ip netip.Addr) Geo {
	if g == nil || !ip.IsValid() {
		return Geo{}
	}
	ip = ip.Unmap()
	key := prefixKey(ip)
	set, h := g.prefixes.set(key)
	if e := set.find(h, key); e != nil {
		return e.geo
	}
	v, wide := g.lookupFiles(ip)
	if wide {
		set.store(h, &prefixEntry{key: key, geo: v})
	}
	return v
}

// lookupFiles walks the files in order. wide reports that every file it
// consulted answered for a network that contains ip's whole cache key, so
// that every address under the key gets the same answer (a walk that ends
// at depth d <= key bits reads no bit beyond the key).
func (g *GeoDB) lookupFiles(ip netip.Addr) (v Geo, wide bool) {
	wide = true
	for _, f := range g.files {
		v, found, w := f.lookup(ip)
		wide = wide && w
		if found {
			return v, wide
		}
	}
	return Geo{}, wide
}

// lookup finds ip in one file; found is false when the file does not know
// it, wide as for lookupFiles.
func (g *geoFile) lookup(ip netip.Addr) (v Geo, found, wide bool) {
	if ip.Is6() && g.ipv4DB {
		return Geo{}, false, true // no IPv6 address is in an IPv4 file
	}
	res := g.r.Lookup(ip)
	if res.Err() != nil {
		return Geo{}, false, false
	}
	wide = containsKey(ip, res.Prefix())
	if !res.Found() {
		return Geo{}, false, wide
	}
	off := res.Offset()
	g.mu.RLock()
	v, ok := g.cache[off]
	g.mu.RUnlock()
	if ok {
		return v, true, wide
	}
	v = g.decode(off)
	switch v.CountryCode {
	case "ZZ", "XX", "T1":
		// Unknown, disputed territory and Tor exit: no location, as Plausible stores them.
		v = Geo{}
	}
	g.mu.Lock()
	if len(g.cache) >= geoCacheSize {
		for k := range g.cache {
			delete(g.cache, k)
			break
		}
	}
	g.cache[off] = v
	g.mu.Unlock()
	return v, true, wide
}

// Widths of the prefix-cache keys, and the cache's shape: 2^16 slots in
// sets of four.
const (
	prefixBits4     = 24
	prefixBits6     = 48
	prefixCacheWays = 4
	prefixCacheBits = 14 // log2 of the number of sets
	prefixCacheSets = 1 << prefixCacheBits
)

// prefixCache holds answers by network prefix in front of the tree walk:
// a set-associative table of prefixCacheSets sets of prefixCacheWays
// slots, the set picked by a hash of the key, each slot pointing to an
// immutable entry. A hit reads one set (one 64-byte cache line), compares
// hashes and then one entry's key, with no lock and no allocation; a miss
// allocates one entry, which takes an empty slot of its set or, when the
// set is full, a random one. Four ways keep keys that share a set from
// evicting each other: with 20,000 networks in circulation a direct-mapped
// table of the same 2^16 slots missed on about a quarter of them (the
// load generator's mix), four ways on a few per cent.
//
// The key is the address masked to its /24 (IPv4) or /48 (IPv6), never
// the full address: the collector keeps no raw IPs, and these are the
// widths anonymisation schemes keep. An answer is stored only when the
// database network holding the address is at least as wide as the key, so
// it is the answer for every address under the key; addresses in narrower
// networks walk the tree each time (and hit the record cache). "Not in
// the database" is cached the same way.
//
// Memory: the sets take 1 MiB (a hash and a pointer per slot) from
// OpenGeoDBs on; each entry is 80 bytes (32 for the key, 48 for Geo's
// string headers; the strings are shared with the record cache), so a
// full table is about 6 MiB.
type prefixCache struct {
	sets [prefixCacheSets]prefixSet
}

// prefixSet is one set of the cache, 64 bytes: a cache line, since the
// cache is one allocation larger than a page and so starts on one.
type prefixSet struct {
	ways [prefixCacheWays]prefixSlot
}

// prefixSlot holds the key's hash beside the entry pointer, so that a
// lookup does not have to read an entry (a random heap object, likely a
// cache miss) to find that it is another key's. The two words are stored
// one after the other; a reader that sees a hash with another entry still
// compares the entry's key, so a torn pair is a miss, never a wrong
// answer.
type prefixSlot struct {
	hash  atomic.Uint64
	entry atomic.Pointer[prefixEntry]
}

// find returns the entry for key (whose hash is h) if the set holds it.
func (s *prefixSet) find(h uint64, key netip.Prefix) *prefixEntry {
	for i := range s.ways {
		w := &s.ways[i]
		if w.hash.Load() != h {
			continue
		}
		if e := w.entry.Load(); e != nil && e.key == key {
			return e
		}
	}
	return nil
}

// store puts e (whose key hashes to h) in an empty slot of the set, or in
// a random one when none is empty. Two lookups that miss at once may store
// the same key twice; find returns either, as both hold the same answer.
func (s *prefixSet) store(h uint64, e *prefixEntry) {
	w := &s.ways[rand.N(prefixCacheWays)]
	for i := range s.ways {
		if s.ways[i].entry.Load() == nil {
			w = &s.ways[i]
			break
		}
	}
	w.entry.Store(e)
	w.hash.Store(h)
}

// prefixEntry is the answer for every address of key; it is never changed
// after it is stored.
type prefixEntry struct {
	key netip.Prefix
	geo Geo
}

// prefixKey returns the cache key of ip, a valid unmapped address: ip
// masked to /24 or /48.
func prefixKey(ip netip.Addr) netip.Prefix {
	bits := prefixBits6
	if ip.Is4() {
		bits = prefixBits4
	}
	p, _ := ip.Prefix(bits) // cannot fail: ip is valid and bits <= ip.BitLen()
	return p
}

// set returns key's set and hash (Fibonacci hashing of the 128 address
// bits; the top bits pick the set).
func (c *prefixCache) set(key netip.Prefix) (*prefixSet, uint64) {
	a := key.Addr().As16()
	h := binary.BigEndian.Uint64(a[:8])*0x9E3779B97F4A7C15 ^ binary.BigEndian.Uint64(a[8:])*0xC2B2AE3D27D4EB4F
	return &c.sets[h>>(64-prefixCacheBits)], h
}

// containsKey reports whether p, the database network that holds ip,
// contains ip's whole cache key.
func containsKey(ip netip.Addr, p netip.Prefix) bool {
	if ip.Is4() {
		// An IPv6 prefix (::/n, n < 96) means a record above the IPv4
		// subtree answers for all of IPv4.
		return p.Addr().Is6() || p.Bits() <= prefixBits4
	}
	return p.Bits() <= prefixBits6
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
	if err := g.r.LookupOffset(off).Decode(&rec); err != nil {
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
