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

// BenchmarkEmbeddedInsert10k is one flush of 10,000 rows into the
// embedded engine: encode (Native), batch file and INSERT, as the shipper does it.
func BenchmarkEmbeddedInsert10k(b *testing.B) {
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

// BenchmarkEmbeddedSustainedInsert measures what storing a row costs the
// process as a whole, merges included: 40 flushes of 10,000 rows two per
// second (the shipper's cadence at 20k events/s), then the wait until no
// merge runs for 3 s. It reports CPU µs per row (user+system of every
// thread, the engine's merge threads too) and the active parts left, with
// ClickHouse's default merge policy and with the one Migrate sets. One
// iteration takes about 30 s; run it with -benchtime 1x.
func BenchmarkEmbeddedSustainedInsert(b *testing.B) {
	for _, v := range []struct{ name, setting string }{
		{"default", "ALTER TABLE analytics.events RESET SETTING merge_selector_base"},
		{"shipped", embeddedMergePolicy},
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
				start := processCPU(b)
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
				b.ReportMetric(float64((processCPU(b)-start).Microseconds())/float64(40*len(rows)), "cpu-µs/row")
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
			if err := testStore.Exec(ctx, embeddedMergePolicy); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// processCPU is the user+system CPU time of this process, all threads.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInsertCPU is the total CPU per row of the two insert paths, client and ClickHouse
// together, merges included: flushes of 10,000 rows (run it with -benchtime 40x, a sustained
// load), then until no merge runs. "embedded" is the in-process engine (its CPU is this
// process's); "server" is the server store's HTTP insert of a Native block into a server started
// from the same library (this process's CPU plus the server process's). Compare cpu-us/row of the
// two in one run:
//
//	go test -run '^$' -bench BenchmarkInsertCPU -benchtime 40x ./sink
func BenchmarkInsertCPU(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store Store
		pid   func() int
	}{
		{"embedded", testEmbedded, func() int { return 0 }},
		{"server", testServer, func() int {
			if testEngine == nil || testEngine.Engine == nil {
				return 0
			}
			return testEngine.Engine.PID()
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			rows := benchRows()
			pid := tc.pid()
			self0, eng0 := selfCPU(), procCPU(pid)
			i := 0
			for b.Loop() {
				i++
				if err := tc.store.Insert(ctx, rows, fmt.Sprintf("cpu-%s-%d-%d", tc.name, time.Now().UnixNano(), i)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				res, err := tc.store.Select(ctx, "SELECT count() FROM system.merges WHERE database = 'analytics'", nil)
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
			if err := tc.store.Exec(ctx, "ALTER TABLE analytics.events DELETE WHERE startsWith(workspace_id, 'ws_bench_') SETTINGS mutations_sync = 2"); err != nil {
				b.Fatal(err)
			}
		})
	}
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
