package chdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var testConn *Conn

// goSignals are the signal handlers before the engine started.
var goSignals []kernelSigaction

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chdb-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	d, err := Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "libchdb.so loaded in %v\n", d)
	goSignals = saveSignals()
	testConn, err = Open(filepath.Join(dir, "db"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := testConn.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if err := reopen(filepath.Join(dir, "db2")); err != nil {
		fmt.Fprintln(os.Stderr, "reopen after Close:", err)
		code = 1
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func TestQuery(t *testing.T) {
	tests := []struct {
		name, sql, format, want string
	}{
		{"tsv", "SELECT 1, 'a'", "TSV", "1\ta\n"},
		{"csv", "SELECT 2 AS x", "CSV", "2\n"},
		{"empty result", "SELECT 1 WHERE 0", "TSV", ""},
		{"numbers", "SELECT sum(number) FROM numbers(1000)", "TSV", "499500\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := testConn.Query(context.Background(), tc.sql, tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Fatalf("got %q, want %q", out, tc.want)
			}
		})
	}
}

func TestQueryErrorScrubbed(t *testing.T) {
	tests := []struct {
		name, sql, secret, wantIn string
	}{
		{"syntax", "SELEC 'ua Mozilla/5.0 secret' FROM x", "Mozilla", "SYNTAX_ERROR"},
		{"unknown table", "SELECT '203.0.113.7' FROM default.nope_table", "203.0.113.7", "nope_table"},
		{"bad cast", "SELECT toUInt8('198.51.100.9 secret')", "198.51.100.9", "Code:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testConn.Query(context.Background(), tc.sql, "TSV")
			if err == nil {
				t.Fatal("want an error")
			}
			var ee *EngineError
			if !errors.As(err, &ee) {
				t.Fatalf("want *EngineError, got %T %v", err, err)
			}
			if strings.Contains(err.Error(), tc.secret) || strings.Contains(err.Error(), tc.sql) {
				t.Fatalf("error echoes data: %v", err)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("error %q lacks %q", err, tc.wantIn)
			}
		})
	}
}

func TestScrub(t *testing.T) {
	tests := []struct {
		name, msg, sql, want string
	}{
		{"identifier kept", "Table 'analytics.x' does not exist", "", "Table 'analytics.x' does not exist"},
		{"ip redacted", "Cannot parse '10.0.0.1'", "", "Cannot parse '<redacted>'"},
		{"unterminated", "bad 'abc def", "", "bad '<redacted>"},
		{"sql line", "near: insert into t values 42", "insert into t values 42", "near: <statement>"},
		{"column values", "Constraint `c` is violated at row 1. Column values: workspace_id = 'ws_acme', pathname = 'x'. (VIOLATED_CONSTRAINT)", "",
			"Constraint `c` is violated at row 1. Column values:<redacted>. (VIOLATED_CONSTRAINT)"},
		{"bare value", "Invalid base64Decode value (beta.example|/beta-secret-7391/2), cannot be decoded", "", "Invalid base64Decode value (<redacted>), cannot be decoded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Scrub(tc.msg, []byte(tc.sql)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConcurrentQueries(t *testing.T) {
	ctx := context.Background()
	// Dropped first: with -count=N the previous pass left its rows in this process's engine.
	if _, err := testConn.Query(ctx, "DROP TABLE IF EXISTS default.conc", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := testConn.Query(ctx, "CREATE TABLE default.conc (g UInt32, n UInt64) ENGINE = MergeTree ORDER BY g", ""); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				if _, err := testConn.Query(ctx, fmt.Sprintf("INSERT INTO default.conc VALUES (%d, %d)", g, i), ""); err != nil {
					errs <- err
					return
				}
				if _, err := testConn.Query(ctx, "SELECT count() FROM default.conc", "TSV"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	out, err := testConn.Query(ctx, "SELECT count(), uniqExact(g) FROM default.conc", "TSV")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "160\t8\n" {
		t.Fatalf("got %q", out)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	_, err := Open(t.TempDir())
	if !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("got %v, want ErrAlreadyOpen", err)
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := testConn.Query(ctx, "SELECT 1", "TSV"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestMissingLibrary(t *testing.T) {
	_, err := load("/nonexistent/libchdb.so")
	if err == nil {
		t.Fatal("want an error")
	}
	want := "embedded ClickHouse engine not found at /nonexistent/libchdb.so: run `make deps` or set CHDB_LIB_PATH"
	if err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}

// TestNoOutputLeaksAfterError checks that the partial output of a failed
// statement does not reach the next statement.
func TestNoOutputLeaksAfterError(t *testing.T) {
	ctx := context.Background()
	_, err := testConn.Query(ctx, "SELECT number FROM numbers(10) SETTINGS max_result_rows = 5, result_overflow_mode = 'throw'", "JSONCompact")
	if err == nil {
		t.Fatal("want an error")
	}
	out, err := testConn.Query(ctx, "SELECT 'next'", "TSV")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "next\n" {
		t.Fatalf("got %q", out)
	}
}

// reopen checks, after every test, that Close releases the process's one
// connection: Open on another directory works and answers, and a closed
// Conn refuses queries.
func reopen(dir string) error {
	if _, err := testConn.Query(context.Background(), "SELECT 1", "TSV"); !errors.Is(err, ErrClosed) {
		return fmt.Errorf("query on a closed Conn: got %v, want ErrClosed", err)
	}
	c, err := Open(dir)
	if err != nil {
		return err
	}
	defer c.Close()
	out, err := c.Query(context.Background(), "SELECT 42", "TSV")
	if err != nil {
		return err
	}
	if string(out) != "42\n" {
		return fmt.Errorf("got %q", out)
	}
	return nil
}

// TestQueryBounded streams answers under a result limit: small answers
// come back whole and the same as unbounded ones, a large one is cut with
// ErrResultTooLarge, and the connection answers correctly afterwards.
func TestQueryBounded(t *testing.T) {
	ctx := context.Background()
	testConn.SetMaxResultBytes(1 << 20)
	defer testConn.SetMaxResultBytes(0)
	for _, sql := range []string{"SELECT 1, 'a'", "SELECT number, toString(number) FROM numbers(20000)", "SELECT 1 WHERE 0", "SELECT formatQuerySingleLine('select 1')", "EXPLAIN AST SELECT 1", "SHOW DATABASES"} {
		for _, format := range []string{"TSV", "JSONCompact"} {
			got, _, err := testConn.QueryBounded(ctx, []byte(sql), format)
			if err != nil {
				t.Fatalf("%s %s: %v", sql, format, err)
			}
			testConn.SetMaxResultBytes(0)
			want, err := testConn.Query(ctx, sql, format)
			testConn.SetMaxResultBytes(1 << 20)
			if err != nil {
				t.Fatal(err)
			}
			// The statistics (elapsed, rows read) differ from run to run.
			got, _, _ = bytes.Cut(got, []byte(`"statistics"`))
			want, _, _ = bytes.Cut(want, []byte(`"statistics"`))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s %s: streamed %q, whole %q", sql, format, got, want)
			}
		}
	}
	_, _, err := testConn.QueryBounded(ctx, []byte("SELECT arrayJoin(range(10000)) AS a, repeat('z', 20000) AS b"), "JSONCompact")
	if !errors.Is(err, ErrResultTooLarge) {
		t.Fatalf("a 200 MB answer under a 1 MiB limit: %v", err)
	}
	out, err := testConn.Query(ctx, "SELECT 42", "TSV")
	if err != nil || string(out) != "42\n" {
		t.Fatalf("after a cut answer: %q, %v", out, err)
	}
	_, _, err = testConn.QueryBounded(ctx, []byte("SELECT throwIf(1)"), "TSV")
	if err == nil {
		t.Fatal("an engine error was not returned")
	}
}
