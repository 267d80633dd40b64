package sink

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
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
	fast := ServerConfig{Attempts: 4, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
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
	err := retryConn(ctx, ServerConfig{Attempts: 100, Backoff: time.Hour}, func() error {
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
	Store
	calls     int
	dropAfter map[int]bool // call numbers that store, then fail
	dropFirst map[int]bool // call numbers that fail without storing
}

func (f *flakyStore) Insert(ctx context.Context, rows []row.Event, tok string) error {
	f.calls++
	if f.dropFirst[f.calls] {
		return io.ErrUnexpectedEOF
	}
	if err := f.Store.Insert(ctx, rows, tok); err != nil {
		return err
	}
	if f.dropAfter[f.calls] {
		return syscall.ECONNRESET
	}
	return nil
}

func TestRetriedBatchStoredOnce(t *testing.T) {
	ctx := context.Background()
	fast := ServerConfig{Attempts: 5, Backoff: time.Millisecond}
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
			f := &flakyStore{Store: testStore, dropFirst: tc.dropFirst, dropAfter: tc.dropAfter}
			rows := rowtest.Events(tc.ws, 40, time.Now().UTC(), 30)
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

func TestOpenServerBadDSNHidesPassword(t *testing.T) {
	_, err := OpenServer("clickhouse://user:s3cret@%zz/")
	if err == nil {
		t.Fatal("want an error")
	}
	if got := err.Error(); got == "" || strings.Contains(got, "s3cret") {
		t.Fatalf("error leaks the DSN: %q", got)
	}
}

// TestServerSuite runs what server mode does at start and in operation against the server the
// package started: migrations (again), deduplicated inserts, raw output, a tier change and an
// erasure.
func TestServerSuite(t *testing.T) {
	s := testStore
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Migrate(ctx, s, SchemaConfig{}); err != nil {
		t.Fatal(err)
	}
	ws := fmt.Sprintf("ws_server_%d", time.Now().UnixNano())
	rows := rowtest.Events(ws, 25, time.Now().UTC().Add(-time.Hour), 30)
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

// TestOpenServerCreatesDatabase: a DSN naming a database that does not exist yet works; the
// store creates it.
func TestOpenServerCreatesDatabase(t *testing.T) {
	db := fresh("kyomi_newdb")
	dsn := strings.Replace(serverDSN(t), "/default?", "/"+db+"?", 1)
	s, err := OpenServer(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Select(context.Background(), "SELECT currentDatabase()", nil)
	if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != db {
		t.Fatalf("current database %v %v, want %s", res, err, db)
	}
	if err := s.Exec(context.Background(), "DROP DATABASE "+db); err != nil {
		t.Fatal(err)
	}
}

// TestServerErrorsTyped: an engine error keeps its ClickHouse code in the text the query path
// reads ("Code: N."), and no quoted value of the statement.
func TestServerErrorsTyped(t *testing.T) {
	_, err := testStore.Select(context.Background(), "SELECT number FROM system.numbers LIMIT 100",
		map[string]string{"max_result_rows": "10", "result_overflow_mode": "throw"})
	if err == nil || !strings.Contains(err.Error(), "Code: 396.") {
		t.Fatalf("got %v, want code 396", err)
	}
	_, err = testStore.Select(context.Background(), "SELECT toUInt8('secret-value-42')", nil)
	if err == nil || !strings.Contains(err.Error(), "Code: 6.") || strings.Contains(err.Error(), "secret-value-42") {
		t.Fatalf("got %v, want code 6 without the quoted value", err)
	}
}

// TestOpenServerLearnsHTTPPort: a DSN without http_port (the native port only, as operators
// write it) works: the store asks the server for its HTTP port.
func TestOpenServerLearnsHTTPPort(t *testing.T) {
	dsn, port, err := cutDSNParam(serverDSN(t), "http_port")
	if err != nil || port == 0 || strings.Contains(dsn, "http_port") {
		t.Fatalf("cut %q %d %v", dsn, port, err)
	}
	s, err := OpenServer(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.opts.HTTPPort != port {
		t.Fatalf("learned HTTP port %d, want %d", s.opts.HTTPPort, port)
	}
	if _, err := s.Select(context.Background(), "SELECT 1", nil); err != nil {
		t.Fatal(err)
	}
}

// recordingTransport passes requests on and records the Content-Encoding and size of each body.
type recordingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []sentBody
}

// sentBody is what recordingTransport saw of one request.
type sentBody struct {
	encoding string
	size     int64
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.seen = append(r.seen, sentBody{req.Header.Get("Content-Encoding"), req.ContentLength})
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// TestCompressedInsert: with compress=zstd in the DSN an insert goes out as a zstd body, several
// times smaller than the Native block, and the server stores the rows it holds; without the
// parameter a loopback server gets the block as it is; a method the HTTP path does not speak is
// refused by name.
func TestCompressedInsert(t *testing.T) {
	ctx := context.Background()
	rows := rowtest.Events("ws_zstd", 500, time.Now().UTC(), keepDays)
	var want uint64
	for _, r := range rows {
		want += uint64(len(r.Pathname))
	}
	for _, tc := range []struct {
		param, enc string
	}{{"&compress=zstd", "zstd"}, {"", ""}} {
		s, err := OpenServer(serverDSN(t) + tc.param)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordingTransport{next: s.client.Transport}
		s.client.Transport = rec
		ws := "ws_zstd_" + tc.enc
		for i := range rows {
			rows[i].WorkspaceID = ws
		}
		if err := s.Insert(ctx, rows, "zstd-test-"+tc.enc+fresh("")); err != nil {
			t.Fatalf("%q: %v", tc.param, err)
		}
		res, err := s.Select(ctx, "SELECT count(), sum(length(pathname)) FROM "+Database+".events WHERE workspace_id = "+QuoteString(ws), nil)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := asUint64(res.Rows[0][0])
		sum, _ := asUint64(res.Rows[0][1])
		if n != uint64(len(rows)) || sum != want {
			t.Fatalf("%q: stored %d rows, %d path bytes; want %d, %d", tc.param, n, sum, len(rows), want)
		}
		enc, size := rec.seen[0].encoding, int(rec.seen[0].size)
		plain := len(appendNative(nil, rows, (&rowOrder{}).of(rows)))
		switch {
		case enc != tc.enc:
			t.Fatalf("%q: the insert went with Content-Encoding %q, want %q (%v)", tc.param, enc, tc.enc, rec.seen)
		case tc.enc == "zstd" && size*3 > plain:
			t.Fatalf("the zstd body is %d bytes for a %d-byte Native block", size, plain)
		case tc.enc == "" && size != plain:
			t.Fatalf("the plain body is %d bytes, the Native block %d", size, plain)
		}
		t.Logf("%q: %d-byte Native block sent as %d bytes", tc.param, plain, size)
		s.Close()
	}
	if _, err := OpenServer(serverDSN(t) + "&compress=lz4"); err == nil || !strings.Contains(err.Error(), "compress=zstd or compress=none") {
		t.Fatalf("compress=lz4: %v", err)
	}
}

// TestInsertCompressionChoice: the DSN's compress parameter decides; without it, inserts are
// compressed unless every server is on loopback.
func TestInsertCompressionChoice(t *testing.T) {
	for _, tc := range []struct {
		param string
		addrs []string
		want  bool
	}{
		{"", []string{"127.0.0.1:9000"}, false},
		{"", []string{"[::1]:9000", "localhost:9000"}, false},
		{"", []string{"127.0.0.1:9000", "ch2.example:9000"}, true},
		{"", []string{"10.0.0.7:9000"}, true},
		{"zstd", []string{"127.0.0.1:9000"}, true},
		{"true", []string{"127.0.0.1:9000"}, true},
		{"none", []string{"ch.example:9000"}, false},
		{"false", []string{"ch.example:9000"}, false},
	} {
		if got := insertCompression(tc.param, tc.addrs); got != tc.want {
			t.Errorf("insertCompression(%q, %v) = %v, want %v", tc.param, tc.addrs, got, tc.want)
		}
	}
}
