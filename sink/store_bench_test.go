package sink

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
)

// benchRows returns 10,000 rows spread over 100 workspaces, one day.
func benchRows() []row.Event {
	ts := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	rows := make([]row.Event, 0, 10000)
	for w := range 100 {
		rows = append(rows, rowtest.Events(fmt.Sprintf("ws_bench_%03d", w), 100, ts.Add(time.Duration(w)*time.Minute), keepDays)...)
	}
	return rows
}

func BenchmarkEncodeNative(b *testing.B) {
	rows := benchRows()
	var o rowOrder
	order := o.of(rows)
	buf := appendNative(nil, rows, order)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = appendNative(buf[:0], rows, order)
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkInsertBodyZstd is what compressing an insert body for a remote server adds to
// BenchmarkEncodeNative: zstd at its fastest level over the Native block of the same rows, with
// the compressed size per row. The rows are rowtest's, more alike than real traffic, so the
// ratio is an upper bound; the CPU per row is not far from real.
func BenchmarkInsertBodyZstd(b *testing.B) {
	rows := benchRows()
	var o rowOrder
	block := appendNative(nil, rows, o.of(rows))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	var packed []byte
	b.SetBytes(int64(len(block)))
	b.ReportAllocs()
	for b.Loop() {
		packed = enc.EncodeAll(block, packed[:0])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(rows)), "ns/row")
	b.ReportMetric(float64(len(block))/float64(len(rows)), "block_B/row")
	b.ReportMetric(float64(len(packed))/float64(len(rows)), "zstd_B/row")
}

// BenchmarkInsert10k is one flush of 10,000 rows into the package's server, as the shipper
// does it: encode (Native) and one HTTP INSERT.
func BenchmarkInsert10k(b *testing.B) {
	benchInsert(b, func(ctx context.Context, rows []row.Event, tok string) error {
		return testStore.Insert(ctx, rows, tok)
	})
}

func benchInsert(b *testing.B, insert func(context.Context, []row.Event, string) error) {
	b.Helper()
	rows := benchRows()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := insert(ctx, rows, fmt.Sprintf("bench-%s-%d-%d", b.Name(), time.Now().UnixNano(), i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.StopTimer()
	if err := testStore.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE startsWith(workspace_id, 'ws_bench_') SETTINGS mutations_sync = 2"); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSustainedInsert measures what storing a row costs, client and engine together,
// merges included: 40 flushes of 10,000 rows two per second (the shipper's cadence at 20k
// events/s), then the wait until no merge runs for 3 s. It reports CPU µs per row (user+system
// of every thread of this process and of the engine's process, whose merge threads do the
// merging) and the active parts left, with ClickHouse's default merge policy and with the one
// Migrate sets. With CLICKHOUSE_ADDR the engine's CPU is not seen and the figure is the
// client's only. One iteration takes about 30 s; run it with -benchtime 1x.
func BenchmarkSustainedInsert(b *testing.B) {
	for _, v := range []struct{ name, setting string }{
		{"default", "ALTER TABLE analytics.events RESET SETTING merge_selector_base"},
		{"shipped", mergePolicy(SchemaConfig{})},
	} {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			rows := benchRows()
			for b.Loop() {
				if err := testStore.Exec(ctx, v.setting); err != nil {
					b.Fatal(err)
				}
				now := time.Now().UTC().Truncate(time.Millisecond)
				for i := range rows {
					rows[i].TS = now.Add(time.Duration(i) * time.Millisecond)
				}
				pid := enginePID()
				self0, eng0 := selfCPU(), procCPU(pid)
				for i := range 40 {
					tok := fmt.Sprintf("sustained-%s-%d-%d", v.name, now.UnixNano(), i)
					if err := testStore.Insert(ctx, rows, tok); err != nil {
						b.Fatal(err)
					}
					time.Sleep(500 * time.Millisecond)
				}
				for quiet := 0; quiet < 6; time.Sleep(500 * time.Millisecond) {
					res, err := testStore.Select(ctx, "SELECT count() FROM system.merges", nil)
					if err != nil {
						b.Fatal(err)
					}
					if n, _ := asUint64(res.Rows[0][0]); n == 0 {
						quiet++
					} else {
						quiet = 0
					}
				}
				cpu := selfCPU() - self0 + procCPU(pid) - eng0
				b.ReportMetric(float64(cpu.Microseconds())/float64(40*len(rows)), "cpu-µs/row")
				res, err := testStore.Select(ctx, "SELECT count() FROM system.parts WHERE database = 'analytics' AND table = 'events' AND active", nil)
				if err != nil {
					b.Fatal(err)
				}
				parts, _ := asUint64(res.Rows[0][0])
				b.ReportMetric(float64(parts), "active-parts")
				if err := testStore.Exec(ctx, "TRUNCATE TABLE analytics.events"); err != nil {
					b.Fatal(err)
				}
			}
			if err := testStore.Exec(ctx, mergePolicy(SchemaConfig{})); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkInsertCPU is the total CPU per row of the insert path, client and ClickHouse
// together, merges included: flushes of 10,000 rows (run it with -benchtime 40x, a sustained
// load), then until no merge runs. The server store's HTTP insert of a Native block goes into the
// package's server, started from the engine library: cpu-us/row is this process's CPU
// (client-us/row) plus the server process's (server-us/row). With CLICKHOUSE_ADDR the server's
// CPU is not seen. Issue 23 compared it with the in-process insert the collector had then
// (4.8 µs/row, BENCHMARKS.md):
//
//	go test -run '^$' -bench BenchmarkInsertCPU -benchtime 40x ./sink
func BenchmarkInsertCPU(b *testing.B) {
	ctx := context.Background()
	rows := benchRows()
	pid := enginePID()
	self0, eng0 := selfCPU(), procCPU(pid)
	i := 0
	for b.Loop() {
		i++
		if err := testStore.Insert(ctx, rows, fmt.Sprintf("cpu-%d-%d", time.Now().UnixNano(), i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		res, err := testStore.Select(ctx, "SELECT count() FROM system.merges WHERE database = 'analytics'", nil)
		if err != nil {
			b.Fatal(err)
		}
		if n, _ := asUint64(res.Rows[0][0]); n == 0 {
			break
		}
	}
	self, eng := selfCPU()-self0, procCPU(pid)-eng0
	n := float64(len(rows) * b.N)
	b.ReportMetric(float64((self+eng).Microseconds())/n, "cpu-us/row")
	b.ReportMetric(float64(self.Microseconds())/n, "client-us/row")
	b.ReportMetric(float64(eng.Microseconds())/n, "server-us/row")
	if err := testStore.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE startsWith(workspace_id, 'ws_bench_') SETTINGS mutations_sync = 2"); err != nil {
		b.Fatal(err)
	}
}

// enginePID is the process id of the package's started server, 0 for CLICKHOUSE_ADDR's.
func enginePID() int {
	if testEngine == nil || testEngine.Engine == nil {
		return 0
	}
	return testEngine.Engine.PID()
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is process pid's user and system CPU time so far (clock ticks of 10 ms), 0 for pid 0.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
