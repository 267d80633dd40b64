package collector

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/engine/enginetest"
	"github.com/kyomi/collector/sink/row"
)

// engine is the ClickHouse server that tests storing rows share, with the real schema
// (sink.Migrate): one per test binary, started by TestMain (enginetest: from the engine library,
// or the one CLICKHOUSE_ADDR names) before any test, so that the goroutines of its supervisor
// are not taken for a test's leak.
var engine struct {
	srv   *enginetest.Server
	store *sink.Server
}

func TestMain(m *testing.M) {
	enginetest.RunLauncher()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	srv, err := enginetest.Start(enginetest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	store, err := sink.OpenServer(srv.DSN("default"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer store.Close()
	if err := sink.Migrate(context.Background(), store, sink.SchemaConfig{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	engine.srv, engine.store = srv, store
	return m.Run()
}

// testEngine returns the shared server's store. Its idle HTTP connections are closed when t
// ends, before a leak check registered earlier runs.
func testEngine(t *testing.T) *sink.Server {
	t.Helper()
	t.Cleanup(engine.store.CloseIdleConnections)
	return engine.store
}

// storedRow is a row of analytics.events as the engine returns it, every column as text.
type storedRow map[string]string

// storedColumns are the columns storedRow holds, each as a SELECT expression and its name.
var storedColumns = [][2]string{
	{"name", "name"}, {"domain", "domain"}, {"hostname", "hostname"}, {"pathname", "pathname"},
	{"referrer", "referrer"}, {"referrer_source", "referrer_source"}, {"utm_source", "utm_source"},
	{"utm_medium", "utm_medium"}, {"utm_campaign", "utm_campaign"}, {"click_id_param", "click_id_param"},
	{"browser", "browser"}, {"browser_version", "browser_version"}, {"os", "os"}, {"os_version", "os_version"},
	{"device", "device"}, {"country_code", "country_code"}, {"region", "region"}, {"city", "city"},
	{"toString(mapKeys(props))", "props_keys"}, {"toString(mapValues(props))", "props_values"},
	{"toString(revenue_amount)", "revenue_amount"}, {"revenue_currency", "revenue_currency"},
	{"toString(scroll_depth)", "scroll_depth"}, {"toString(engagement_time)", "engagement_time"},
	{"toString(tracker_version)", "tracker_version"}, {"toString(visitor_id)", "visitor_id"},
	{"toString(interactive)", "interactive"}, {"toString(ts)", "ts"},
}

// runID makes the batch tokens of this test binary its own: the server (CLICKHOUSE_ADDR's) may
// still hold the rows and the deduplication log of an earlier run.
var runID = strconv.FormatInt(time.Now().UnixNano(), 36)

// storeEvents inserts events into the engine as one batch named token (the sink's own Insert,
// the path the shipper takes) and returns the rows read back from the engine, in time order.
func storeEvents(t *testing.T, events []row.Event, token string) []storedRow {
	t.Helper()
	store := testEngine(t)
	token += "-" + runID
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if len(events) > 0 {
		if err := store.Insert(ctx, events, token); err != nil {
			t.Fatalf("cannot insert: %v", err)
		}
	}
	exprs := make([]string, len(storedColumns))
	for i, c := range storedColumns {
		exprs[i] = c[0] + " AS " + c[1]
	}
	res, err := store.Select(ctx, "SELECT "+strings.Join(exprs, ", ")+" FROM analytics.events WHERE batch_token = '"+
		token+"' ORDER BY ts, name", nil)
	if err != nil {
		t.Fatalf("cannot read the stored rows: %v", err)
	}
	out := make([]storedRow, 0, len(res.Rows))
	for _, r := range res.Rows {
		row := storedRow{}
		for i, c := range storedColumns {
			row[c[1]] = fmt.Sprint(r[i])
		}
		out = append(out, row)
	}
	return out
}
