package collector

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/salt"
	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/spool"
)

// BenchmarkPipeline is the in-process pipeline of one event on a UA cache hit: the whole handler
// (BenchmarkEventHandler) appending to a real spool, then the shipper's side of the record,
// decoding it into a reused row. The spool writes and fsyncs every 50ms instead of before each
// answer so that the figure is CPU, not fsync latency (spool_bench_test.go measures durable
// appends; sink's BenchmarkEncodeJSONEachRow the INSERT body). The target is 0 allocations per
// event on a cache hit.
func BenchmarkPipeline(b *testing.B) {
	dir := b.TempDir()
	cfgPath := filepath.Join(dir, "w.yaml")
	if err := writeTestFile(cfgPath, testWorkspaces); err != nil {
		b.Fatal(err)
	}
	registry, err := workspace.Open(cfgPath, workspace.Options{PollInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer registry.Close()
	geoPath := filepath.Join(dir, "geo.mmdb")
	if err := enrich.WriteTestGeoDB(geoPath, map[string]enrich.Geo{"203.0.113.0/24": {CountryCode: "NZ", City: "Auckland"}}); err != nil {
		b.Fatal(err)
	}
	geo, err := enrich.OpenGeoDB(geoPath)
	if err != nil {
		b.Fatal(err)
	}
	defer geo.Close()
	filter, err := bot.NewFilter(bot.Config{})
	if err != nil {
		b.Fatal(err)
	}
	salts, err := salt.NewLocal(filepath.Join(dir, "salt"))
	if err != nil {
		b.Fatal(err)
	}
	defer salts.Close()
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(dir, "spool"), SyncInterval: 50 * time.Millisecond, MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	trusted, _ := clientip.ParsePrefixes("10.0.0.0/8")
	srv, err := NewServer(Config{Registry: registry, Resolver: clientip.NewResolver(trusted), UA: enrich.NewUAParser(100),
		Geo: geo, Bots: filter, Salts: salts, Spool: captureSpool{sp: sp}})
	if err != nil {
		b.Fatal(err)
	}
	handler := srv.Handler()
	body := []byte(`{"n":"pageview","u":"https://acme.example/pricing?utm_source=newsletter","d":"acme.example","r":"https://www.google.com/search?q=x"}`)
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 1234}, nil)
	setup := func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/api/event")
		ctx.Request.Header.SetContentType("text/plain")
		ctx.Request.Header.SetUserAgent(chromeUA)
		ctx.Request.Header.Set("Accept-Language", "en")
		ctx.Request.Header.Set("X-Forwarded-For", "203.0.113.9")
		ctx.Request.Header.Set("Origin", "https://acme.example")
		ctx.Request.SetBody(body)
	}
	var ev sink.Event
	step := func() {
		setup()
		handler(&ctx)
		if ctx.Response.StatusCode() != fasthttp.StatusAccepted {
			b.Fatalf("status %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		// The shipper's half: the record as read back from the spool frame, decoded.
		if err := sink.DecodeEvent(lastRecord, &ev); err != nil {
			b.Fatal(err)
		}
	}
	step()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		step()
	}
}

// lastRecord is the record captureSpool appended last (the benchmark is single-goroutine).
var lastRecord []byte

// captureSpool appends to a real spool and keeps a copy of the record for the shipper's half.
type captureSpool struct{ sp *spool.Spool }

func (c captureSpool) Append(rec []byte) error {
	lastRecord = append(lastRecord[:0], rec...)
	return c.sp.Append(rec)
}
