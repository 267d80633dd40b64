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
)

// testStore is the one embedded store every test of package sink shares:
// the engine allows one connection per process. Tests use distinct
// workspace ids so they do not see each other's rows.
var testStore *Embedded

func TestMain(m *testing.M) {
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
	testStore, err = OpenEmbedded(filepath.Join(dir, "clickhouse"))
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

// sampleEvents returns n events of workspace ws with every field set.
// keepDays is the retention of rows a test stores with a fixed timestamp: ten years, so that the
// engine's TTL never removes them while the test reads them, however long after the date it runs.
const keepDays = 3650

func sampleEvents(ws string, n int, ts time.Time, days uint16) []Event {
	out := make([]Event, n)
	for i := range out {
		out[i] = Event{
			WorkspaceID: ws, Domain: "acme.example", TS: ts.Add(time.Duration(i) * time.Millisecond),
			Name: "pageview", Hostname: "www.acme.example", Pathname: fmt.Sprintf("/blog/post-%d", i%50),
			VisitorID: uint64(i)*2654435761 + 1, RetentionDays: days,
			Referrer: "news.ycombinator.com/item", ReferrerSource: "Hacker News",
			UTMSource: "hn", UTMMedium: "social", UTMCampaign: "launch", UTMContent: "c\"1", UTMTerm: "t\\2",
			ClickIDParam: "gclid", CountryCode: "DE", Region: "DE-BE", City: "Berlin",
			Browser: "Firefox", BrowserVersion: "131", OS: "Linux", OSVersion: "", Device: "desktop",
			Interactive: i%2 == 0, RevenueAmount: 12.5, RevenueCurrency: "EUR",
			PropKeys: []string{"plan", "author"}, PropValues: []string{"pro", "ünïcode\n'x'"},
			ScrollDepth: uint8(i % 101), EngagementTime: uint32(i) * 1500, TrackerVersion: 36,
		}
	}
	return out
}
