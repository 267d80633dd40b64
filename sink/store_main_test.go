package sink

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/sink/engine/enginetest"
)

// testStore is the store every test of package sink uses: a ClickHouse server started for the
// package (or the one CLICKHOUSE_ADDR names). Tests use distinct workspace ids so they do not see
// each other's rows.
var (
	testStore *Server
	// testEngine is the started server (nil Engine for CLICKHOUSE_ADDR), for its process's CPU.
	testEngine *enginetest.Server
	// testServerDSN is the DSN of testStore.
	testServerDSN string
)

func TestMain(m *testing.M) {
	enginetest.RunLauncher()
	if dir := os.Getenv("SINK_KILL_DIR"); dir != "" { // child of TestReplayAfterSIGKILLStoresOnce
		t0, _ := strconv.ParseInt(os.Getenv("SINK_KILL_T0"), 10, 64)
		if err := killInserter(dir, os.Getenv("SINK_KILL_MODE"), time.UnixMilli(t0).UTC()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	srv, err := enginetest.Start(enginetest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	testEngine = srv
	testServerDSN = srv.DSN("default")
	testStore, err = OpenServer(testServerDSN)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer testStore.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Migrate(ctx, testStore, SchemaConfig{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// runSeq numbers the calls of fresh.
var runSeq atomic.Int64

// fresh returns name with a suffix unique in this process. Tests that use fixed workspace ids or
// deduplication tokens call it once per run, so that `go test -count=N` does not see the rows and
// tokens of the previous pass in the shared engine.
func fresh(name string) string {
	return name + "_r" + strconv.FormatInt(runSeq.Add(1), 10)
}

// countRows returns the number of rows of workspace ws.
func countRows(t testing.TB, ws string) uint64 {
	t.Helper()
	return queryUint64(t, "SELECT count() FROM analytics.events WHERE workspace_id = "+QuoteString(ws))
}

// queryUint64 runs sql, which answers one row of one unsigned integer, and returns that number.
func queryUint64(t testing.TB, sql string) uint64 {
	t.Helper()
	res, err := testStore.Select(context.Background(), sql, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := asUint64(res.Rows[0][0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// keepDays is the retention of rows a test stores with a fixed timestamp: ten years, so that the
// engine's TTL never removes them while the test reads them, however long after the date it runs.
const keepDays = 3650

// serverDSN is the DSN of the package's server, database default.
func serverDSN(t *testing.T) string {
	t.Helper()
	return testServerDSN
}

// leakCheck is leakcheck.Register, after which the store's idle HTTP connections to ClickHouse
// (kept for the next request, not goroutines of the test) are closed.
func leakCheck(t *testing.T) {
	t.Helper()
	leakcheck.Register(t)
	t.Cleanup(testStore.CloseIdleConnections)
}
