package sink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/engine/enginetest"
)

// testEmbedded is the one embedded store every test of package sink shares: the engine allows
// one connection per process. testServer is a ClickHouse server started for the package (or the
// one CLICKHOUSE_ADDR names). testStore is the store the running test uses: testEmbedded, or
// each of the two in turn inside onStores. Tests use distinct workspace ids so they do not see
// each other's rows.
var (
	testEmbedded *Embedded
	testServer   *Server
	testStore    Store
	// testEngine is the started server (nil for CLICKHOUSE_ADDR), for its process's CPU.
	testEngine *enginetest.Server
	// testServerDSN is the DSN of testServer.
	testServerDSN string
)

// onStores runs fn as two subtests, "embedded" and "server", with testStore set to each store.
// Tests of package sink do not run in parallel, so the switch is safe.
func onStores(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	defer func() { testStore = testEmbedded }()
	for _, s := range []struct {
		name  string
		store Store
	}{{"embedded", testEmbedded}, {"server", testServer}} {
		testStore = s.store
		t.Run(s.name, fn)
	}
}

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
	dir, err := os.MkdirTemp("", "sink-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	testEmbedded, err = OpenEmbedded(filepath.Join(dir, "clickhouse"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer testEmbedded.Close()
	testStore = testEmbedded
	srv, err := enginetest.Start(enginetest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	testEngine = srv
	testServerDSN = srv.DSN("default")
	testServer, err = OpenServer(testServerDSN)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer testServer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range []Store{testEmbedded, testServer} {
		if err := Migrate(ctx, s, SchemaConfig{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
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
