package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink/engine"
	"github.com/kyomi/collector/sink/engine/enginetest"
	"github.com/kyomi/collector/sink/row/rowtest"
)

// TestPendingWaitsForServer: a store opened while ClickHouse is down fails its calls with
// ErrStoreNotReady, then migrates and works once a server answers on the DSN's address.
func TestPendingWaitsForServer(t *testing.T) {
	ports, err := engine.FreePorts("127.0.0.1", 2)
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("clickhouse://kyomi:test-password@127.0.0.1:%d/analytics?http_port=%d&dial_timeout=1s", ports[0], ports[1])
	p := OpenPending(func(ctx context.Context) (Store, error) {
		s, err := OpenServer(dsn)
		if err != nil {
			return nil, err
		}
		if err := Migrate(ctx, s, SchemaConfig{}); err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	}, 2*time.Second, slog.New(slog.DiscardHandler))
	defer p.Close()
	rows := rowtest.Events("ws_pending", 3, time.Now().UTC(), 30)
	if err := p.Insert(context.Background(), rows, "pending-1"); !errors.Is(err, ErrStoreNotReady) || p.Ready() {
		t.Fatalf("insert while down: %v (ready %v), want ErrStoreNotReady", err, p.Ready())
	}
	srv, err := enginetest.Start(enginetest.Options{Local: true, TCPPort: ports[0], HTTPPort: ports[1]})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	testkit.Eventually(t, time.Minute, "the store to be ready after the server started", p.Ready)
	if err := p.Insert(context.Background(), rows, "pending-1"); err != nil {
		t.Fatal(err)
	}
	res, err := p.Select(context.Background(), "SELECT count() FROM analytics.events WHERE workspace_id = 'ws_pending'", nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := asUint64(res.Rows[0][0]); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
}
