package bot_test

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/enrich/geotest"
)

// BenchmarkEventPipeline is an external test of bot: enrich, which it runs beside the filter,
// imports bot. It measures the per-event cost of every stage this
// package and its neighbours add to the ingest path, in handler order:
// client IP, user agent (cached), bot filter, geo, page URL, referrer.
func BenchmarkEventPipeline(b *testing.B) {
	geoPath := filepath.Join(b.TempDir(), "demo.mmdb")
	if err := geotest.WriteDemo(geoPath); err != nil {
		b.Fatal(err)
	}
	geo, err := enrich.OpenGeoDB(geoPath)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = geo.Close() })
	trusted, err := clientip.ParsePrefixes("10.0.0.0/8")
	if err != nil {
		b.Fatal(err)
	}
	resolver := clientip.NewResolver(trusted)
	parser := enrich.NewUAParser(enrich.DefaultUACacheSize)
	f, err := bot.NewFilter(bot.Config{})
	if err != nil {
		b.Fatal(err)
	}
	peer := netip.MustParseAddr("10.0.0.1")
	xff := []byte("203.0.113.9, 10.0.0.2")
	ua := []byte("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
	lang := []byte("en-GB,en;q=0.9")
	const pageURL = "https://www.acme.example/blog/post-1?utm_source=newsletter&utm_medium=email&gclid=x"
	const refURL = "https://www.google.co.uk/search?q=acme"
	var sink enrich.Geo
	b.ReportAllocs()
	for b.Loop() {
		ip := resolver.ClientIP(peer, xff, nil)
		parsed := parser.Parse(ua)
		page, _ := enrich.ParsePage(pageURL, false)
		ref := enrich.ParseReferrer(refURL, page.Hostname)
		if reason := f.Check(&bot.Request{UA: ua, UAReason: &parsed.BotReason, ReferrerHost: ref.Host, AcceptLanguage: lang, ClientIP: ip}); reason != "" {
			b.Fatalf("dropped: %s", reason)
		}
		sink = geo.Lookup(ip)
	}
	if sink.CountryCode != "JP" {
		b.Fatalf("geo = %+v, want the demo JP entry", sink)
	}
}
