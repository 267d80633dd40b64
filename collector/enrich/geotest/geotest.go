// Package geotest writes small GeoIP databases for tests, in the two layouts enrich.GeoDB reads
// (GeoIP2 City, and DB-IP's flat layout). It links mmdbwriter, so only tests import it: the
// collector binary reads databases and never writes one. It does not import enrich, whose own
// tests use it: its functions take any location type of enrich.Geo's shape.
package geotest

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Location is the shape of enrich.Geo, the location a database holds for a network.
type Location interface {
	~struct {
		CountryCode string
		Region      string
		City        string
	}
}

// geo is a location as the writers read it.
type geo struct {
	CountryCode string
	Region      string
	City        string
}

// Write writes a small GeoIP2-City-layout database to path. Keys of entries are CIDR prefixes
// or single addresses; reserved ranges (loopback, private, documentation)
// are allowed, and a network inside another keeps its own record. A
// Region of the form "CC-XX" is stored as subdivision iso_code "XX", so
// Lookup returns it unchanged. The file is written to a temporary name and
// renamed into place.
func Write[L Location](path string, entries map[string]L) error {
	return write(path, "GeoLite2-City", entries, func(g geo) mmdbtype.Map {
		m := mmdbtype.Map{}
		if g.CountryCode != "" {
			m["country"] = mmdbtype.Map{
				"iso_code": mmdbtype.String(g.CountryCode),
				"names":    mmdbtype.Map{"en": mmdbtype.String(g.CountryCode)},
			}
		}
		if g.Region != "" {
			code := strings.TrimPrefix(g.Region, g.CountryCode+"-")
			m["subdivisions"] = mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String(code)}}
		}
		if g.City != "" {
			m["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(g.City), "de": mmdbtype.String(g.City)}}
		}
		return m
	})
}

// WriteFlat writes a small database in the flat DB-IP layout of
// ip-location-db (country_code, state1, city) to path.
func WriteFlat[L Location](path string, entries map[string]L) error {
	return write(path, "ip-location-db-dbip-city", entries, func(g geo) mmdbtype.Map {
		return mmdbtype.Map{
			"country_code": mmdbtype.String(g.CountryCode),
			"state1":       mmdbtype.String(g.Region),
			"city":         mmdbtype.String(g.City),
		}
	})
}

// demoEntries are the locations written by WriteDemo: loopback and the
// documentation ranges (RFC 5737, RFC 3849).
func demoEntries() map[string]geo {
	return map[string]geo{
		"127.0.0.0/8":     {CountryCode: "DE", Region: "DE-BE", City: "Berlin"},
		"::1/128":         {CountryCode: "DE", Region: "DE-BE", City: "Berlin"},
		"192.0.2.0/24":    {CountryCode: "US", Region: "US-CA", City: "San Francisco"},
		"198.51.100.0/24": {CountryCode: "GB", Region: "GB-ENG", City: "London"},
		"203.0.113.0/24":  {CountryCode: "JP", Region: "JP-13", City: "Tokyo"},
		"2001:db8::/32":   {CountryCode: "FR", Region: "FR-IDF", City: "Paris"},
	}
}

// WriteDemo writes a GeoIP2-layout database to path that places loopback
// and the documentation ranges (RFC 5737, RFC 3849) in six cities, so that
// benchmarks and end-to-end tests see countries without real GeoIP data.
func WriteDemo(path string) error {
	return Write(path, demoEntries())
}

func write[L Location](path, dbType string, entries map[string]L, record func(geo) mmdbtype.Map) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            dbType,
		Description:             map[string]string{"en": "Kyomi collector test database"},
		IncludeReservedNetworks: true,
		IPVersion:               6,
		RecordSize:              24,
		Languages:               []string{"en"},
	})
	if err != nil {
		return fmt.Errorf("cannot create GeoIP tree: %w", err)
	}
	type network struct {
		key string
		p   netip.Prefix
	}
	var nets []network
	var errs []error
	for key := range entries {
		p, err := parseNetwork(key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		nets = append(nets, network{key, p})
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// An insert replaces everything under its network, so wider networks go first and the
	// networks nested in them keep their own records, whatever the map order. IPv4 networks
	// sit 96 bits deep in the IPv6 tree.
	depth := func(p netip.Prefix) int { return p.Bits() + 128 - p.Addr().BitLen() }
	slices.SortFunc(nets, func(a, b network) int {
		return cmp.Or(cmp.Compare(depth(a.p), depth(b.p)), a.p.Addr().Compare(b.p.Addr()), strings.Compare(a.key, b.key))
	})
	for _, n := range nets {
		ipnet := &net.IPNet{IP: n.p.Addr().AsSlice(), Mask: net.CIDRMask(n.p.Bits(), n.p.Addr().BitLen())}
		if err := tree.Insert(ipnet, record(geo(entries[n.key]))); err != nil {
			errs = append(errs, fmt.Errorf("cannot insert %s: %w", n.key, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".geo-*.mmdb")
	if err != nil {
		return fmt.Errorf("cannot create GeoIP database file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tree.WriteTo(tmp); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("cannot write GeoIP database %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write GeoIP database %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write GeoIP database %s: %w", path, err)
	}
	return nil
}

func parseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("cannot parse network %q: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cannot parse network %q: %w", s, err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
