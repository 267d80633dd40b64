package sink

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func TestIsConnError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"eof", io.EOF, true},
		{"wrapped reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"bad conn", driver.ErrBadConn, true},
		{"acquire timeout", clickhouse.ErrAcquireConnTimeout, true},
		{"server exception", &clickhouse.Exception{Code: 60, Message: "Unknown table"}, false},
		{"scrubbed server error", &serverError{code: 60, msg: "x"}, false},
		{"canceled", context.Canceled, false},
		{"other", errors.New("boom"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := isConnError(tc.err); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRetryConn(t *testing.T) {
	fast := ServerOptions{Attempts: 4, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	tests := []struct {
		name      string
		failures  []error // returned by successive attempts, then success
		wantCalls int
		wantErr   bool
	}{
		{"success first time", nil, 1, false},
		{"connection drops twice then works", []error{io.EOF, syscall.ECONNRESET}, 3, false},
		{"server rejects: no retry", []error{&serverError{code: 62, msg: "syntax"}}, 1, true},
		{"gives up after attempts", []error{io.EOF, io.EOF, io.EOF, io.EOF, io.EOF}, 4, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := retryConn(context.Background(), fast, func() error {
				calls++
				if calls <= len(tc.failures) {
					return tc.failures[calls-1]
				}
				return nil
			})
			if calls != tc.wantCalls || (err != nil) != tc.wantErr {
				t.Fatalf("calls %d err %v; want calls %d wantErr %v", calls, err, tc.wantCalls, tc.wantErr)
			}
		})
	}
}

func TestRetryConnStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := retryConn(ctx, ServerOptions{Attempts: 100, Backoff: time.Hour}, func() error {
		calls++
		cancel()
		return io.EOF
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("calls %d err %v", calls, err)
	}
}

// flakyStore drops the connection on chosen Insert calls: before the rows
// reach the engine, or after they were stored but before the answer came
// back (the case the dedup token exists for).
type flakyStore struct {
	*Embedded
	calls     int
	dropAfter map[int]bool // call numbers that store, then fail
	dropFirst map[int]bool // call numbers that fail without storing
}

func (f *flakyStore) Insert(ctx context.Context, rows []Event, tok string) error {
	f.calls++
	if f.dropFirst[f.calls] {
		return io.ErrUnexpectedEOF
	}
	if err := f.Embedded.Insert(ctx, rows, tok); err != nil {
		return err
	}
	if f.dropAfter[f.calls] {
		return syscall.ECONNRESET
	}
	return nil
}

func TestRetriedBatchStoredOnce(t *testing.T) {
	ctx := context.Background()
	fast := ServerOptions{Attempts: 5, Backoff: time.Millisecond}
	tests := []struct {
		name      string
		ws        string
		dropFirst map[int]bool
		dropAfter map[int]bool
	}{
		{"failing flush then success", "ws_retry_a", map[int]bool{1: true}, nil},
		{"dropped after the server stored it", "ws_retry_b", nil, map[int]bool{1: true, 2: true}},
		{"both", "ws_retry_c", map[int]bool{2: true}, map[int]bool{1: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &flakyStore{Embedded: testStore, dropFirst: tc.dropFirst, dropAfter: tc.dropAfter}
			rows := sampleEvents(tc.ws, 40, time.Now().UTC(), 30)
			err := retryConn(ctx, fast, func() error { return f.Insert(ctx, rows, "retry-"+tc.ws) })
			if err != nil {
				t.Fatal(err)
			}
			if got := countRows(t, tc.ws); got != 40 {
				t.Fatalf("got %d rows after %d attempts, want 40 (none lost, none doubled)", got, f.calls)
			}
		})
	}
}

func TestAppendTSV(t *testing.T) {
	res := &Result{Rows: [][]any{
		{"a\tb\nc\\", uint64(7), true, nil, time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)},
		{"", int8(-1), 1.5, []string{"x"}, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}}
	want := "a\\tb\\nc\\\\\t7\ttrue\t\\N\t2026-01-02 03:04:05.006\n\t-1\t1.5\t[x]\t2026-01-02 03:04:05\n"
	if got := string(appendTSV(nil, res)); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestOpenServerBadDSNHidesPassword(t *testing.T) {
	_, err := OpenServer("clickhouse://user:s3cret@%zz/")
	if err == nil {
		t.Fatal("want an error")
	}
	if got := err.Error(); got == "" || strings.Contains(got, "s3cret") {
		t.Fatalf("error leaks the DSN: %q", got)
	}
}

// serverStore opens the server named by CLICKHOUSE_ADDR (host:port of the
// native protocol) or skips: no ClickHouse server >= 22 can run here.
func serverStore(t *testing.T) *Server {
	t.Helper()
	addr := os.Getenv("CLICKHOUSE_ADDR")
	if addr == "" {
		t.Skip("CLICKHOUSE_ADDR not set: no ClickHouse server >= 22 can run on this machine")
	}
	s, err := OpenServer("clickhouse://" + addr + "/default?dial_timeout=5s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := Migrate(context.Background(), s, SchemaConfig{}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServerSuite(t *testing.T) {
	s := serverStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws := fmt.Sprintf("ws_server_%d", time.Now().UnixNano())
	rows := sampleEvents(ws, 25, time.Now().UTC().Add(-time.Hour), 30)
	for range 2 {
		if err := s.Insert(ctx, rows, "srv-"+ws); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Select(ctx, "SELECT count() FROM analytics.events WHERE workspace_id = "+QuoteString(ws), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := asUint64(res.Rows[0][0]); n != 25 {
		t.Fatalf("got %d rows, want 25 (dedup token)", n)
	}
	out, err := s.Raw(ctx, "SELECT 'a', 1", "TSV")
	if err != nil || string(out) != "a\t1\n" {
		t.Fatalf("raw: %q %v", out, err)
	}
	acts, err := ApplyRetention(ctx, s, map[string]uint16{ws: 395})
	if err != nil || len(acts) != 1 || acts[0].Outcome != RetentionIssued {
		t.Fatalf("retention: %+v %v", acts, err)
	}
	if err := WaitMutations(ctx, s, []string{acts[0].MutationID}, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	rep, err := EraseWorkspace(ctx, s, ws)
	if err != nil || rep.RowsAfter != 0 || rep.RowsBefore != 25 {
		t.Fatalf("erase: %+v %v", rep, err)
	}
}
