package collector

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/row"
)

// engine is the embedded ClickHouse engine that tests storing rows share: one engine per process.
// It is opened by the first test that needs it and closed by TestMain.
var engine struct {
	once  sync.Once
	store *sink.Embedded
	dir   string
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if engine.store != nil {
		_ = engine.store.Close()
		_ = os.RemoveAll(engine.dir)
	}
	os.Exit(code)
}

// testEngine returns the shared embedded engine with the real schema (sink.Migrate).
func testEngine(t *testing.T) *sink.Embedded {
	t.Helper()
	engine.once.Do(func() {
		engine.dir, engine.err = os.MkdirTemp("", "collector-engine-")
		if engine.err != nil {
			return
		}
		engine.store, engine.err = sink.OpenEmbedded(filepath.Join(engine.dir, "db"))
		if engine.err != nil {
			return
		}
		engine.err = sink.Migrate(context.Background(), engine.store, sink.SchemaConfig{})
	})
	if engine.err != nil {
		t.Fatalf("cannot open the embedded engine: %v", engine.err)
	}
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

// storeEvents inserts events into the engine as one batch named token (the sink's own Insert,
// the path the shipper takes) and returns the rows read back from the engine, in time order.
func storeEvents(t *testing.T, events []row.Event, token string) []storedRow {
	t.Helper()
	store := testEngine(t)
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
