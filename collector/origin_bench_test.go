package collector

import (
	"testing"
)

// BenchmarkOriginCheck is the origin stage of the event handler: cut the host out of the Origin
// header and look it up in the workspace registry (what event does before any other check).
func BenchmarkOriginCheck(b *testing.B) {
	registry := openTestRegistry(b, b.TempDir())
	for _, tc := range []struct {
		name   string
		origin string
		ok     bool
	}{
		{"configured", "https://shop.acme.example", true},
		{"unknown", "https://evil.example", false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			origin := []byte(tc.origin)
			b.ReportAllocs()
			for b.Loop() {
				host, ok := originHost(origin)
				if !ok {
					b.Fatal("no host")
				}
				if _, _, found := registry.Match(bytesString(host)); found != tc.ok {
					b.Fatalf("match %v, want %v", found, tc.ok)
				}
			}
		})
	}
}
