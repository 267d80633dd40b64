package collector

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/spool"
)

// BenchmarkPipeline is the in-process pipeline of one event on a UA cache hit: the whole handler
// (BenchmarkEventHandler) appending to a real spool, then the shipper's side of the record,
// decoding it into a reused row. The spool acknowledges from its ring and fsyncs every 50ms, as
// the collector does by default (-spool-sync-interval > 0), so the figure is CPU, not fsync
// latency (spool_bench_test.go measures durable appends; sink's BenchmarkEncodeNative the INSERT
// body). The ring's copies into the segment run in the background and are counted when they
// fall in the timed loop. The target is 0 allocations per event on a cache hit; the bytes per
// event are the decoder's shared string blocks, amortized.
func BenchmarkPipeline(b *testing.B) {
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(b.TempDir(), "spool"), SyncInterval: 50 * time.Millisecond, MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	hb := newHandlerBench(b, captureSpool{sp: sp})
	var ev row.Event
	var dec row.Decoder // as the shipper decodes: strings in shared blocks
	step := func() {
		hb.serve()
		if hb.ctx.Response.StatusCode() != fasthttp.StatusAccepted {
			b.Fatalf("status %d %s", hb.ctx.Response.StatusCode(), hb.ctx.Response.Body())
		}
		// The shipper's half: the record as read back from the spool frame, decoded.
		if err := dec.Decode(lastRecord, &ev); err != nil {
			b.Fatal(err)
		}
	}
	step()
	b.ReportAllocs()
	b.SetBytes(int64(len(hb.body)))
	for b.Loop() {
		step()
	}
}

// lastRecord is the record captureSpool appended last (the benchmark is single-goroutine).
var lastRecord []byte

// captureSpool appends to a real spool and keeps a copy of the record for the shipper's half.
type captureSpool struct{ sp *spool.Spool }

func (c captureSpool) AppendAll(recs [][]byte) error {
	lastRecord = append(lastRecord[:0], recs[len(recs)-1]...)
	return c.sp.AppendAll(recs)
}
