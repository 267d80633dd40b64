package sink

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	chdriver "github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/kyomi/collector/sink/chdb"
)

// ServerOptions tunes the server store beyond what the DSN says.
type ServerOptions struct {
	// AsyncInsert sends inserts with async_insert=1 and
	// wait_for_async_insert=1: the server buffers small inserts of many
	// nodes into one part and answers once the data is written.
	AsyncInsert bool
	// Attempts is how many times an insert is tried when the connection
	// fails (not when the server rejects it); 0 means 5.
	Attempts int
	// Backoff is the wait before the first retry, doubled each time up to
	// MaxBackoff; 0 means 200ms and 5s.
	Backoff, MaxBackoff time.Duration
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 200 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	return o
}

// Server is the Store on a ClickHouse server or cluster, over the native
// protocol with clickhouse-go/v2. Safe for concurrent use.
type Server struct {
	conn      chdriver.Conn
	opts      ServerOptions
	pool      sync.Pool    // *[]any row value buffers
	maxResult atomic.Int64 // see SetMaxResultBytes
}

// SetMaxResultBytes makes Select and Raw stop reading with
// ErrResultTooLarge once the values scanned pass n bytes; n <= 0 removes
// the bound.
func (s *Server) SetMaxResultBytes(n int64) { s.maxResult.Store(max(n, 0)) }

// OpenServer connects to the ClickHouse server named by dsn, for example
// clickhouse://user:pass@host:9440/analytics?secure=true&compress=lz4&dial_timeout=5s&read_timeout=30s&max_open_conns=8.
// The DSN sets TLS (secure=true, skip_verify), compression (compress=lz4
// is the default here when the DSN does not name one), the pool
// (max_open_conns, max_idle_conns, conn_max_lifetime) and the timeouts
// (dial_timeout, read_timeout). The connection is checked with a ping.
func OpenServer(dsn string, opts ...ServerOptions) (*Server, error) {
	o, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		// The DSN may hold a password: do not echo it.
		return nil, errors.New("cannot parse the ClickHouse DSN: expected clickhouse://user:password@host:9000/database?options")
	}
	if o.Compression == nil || o.Compression.Method == clickhouse.CompressionNone {
		if !strings.Contains(dsn, "compress=") {
			o.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
		}
	}
	conn, err := clickhouse.Open(o)
	if err != nil {
		return nil, fmt.Errorf("cannot open ClickHouse connection to %s: %w", strings.Join(o.Addr, ","), err)
	}
	var so ServerOptions
	if len(opts) > 0 {
		so = opts[0]
	}
	s := &Server{conn: conn, opts: so.withDefaults()}
	ctx, cancel := context.WithTimeout(context.Background(), o.DialTimeout+5*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("cannot reach ClickHouse at %s: %w", strings.Join(o.Addr, ","), scrubServerErr(err, ""))
	}
	return s, nil
}

// Insert sends rows as one native batch with the dedup token as
// insert_deduplication_token, retrying with backoff while the connection
// fails; a server-side rejection is returned at once.
func (s *Server) Insert(ctx context.Context, rows []Event, dedupToken string) error {
	if len(rows) == 0 {
		return nil
	}
	if err := checkDedupToken(dedupToken); err != nil {
		return err
	}
	settings := clickhouse.Settings{}
	if dedupToken != "" {
		settings["insert_deduplication_token"] = dedupToken
	} else {
		settings["insert_deduplicate"] = 0
	}
	if s.opts.AsyncInsert {
		settings["async_insert"] = 1
		settings["wait_for_async_insert"] = 1
	}
	for i := range rows {
		rows[i].BatchToken = dedupToken
	}
	qctx := clickhouse.Context(ctx, clickhouse.WithSettings(settings))
	err := retryConn(ctx, s.opts, func() error { return s.sendBatch(qctx, rows) })
	if err != nil {
		return fmt.Errorf("cannot insert %d rows into %s.events: %w", len(rows), Database, err)
	}
	return nil
}

func (s *Server) sendBatch(ctx context.Context, rows []Event) error {
	b, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+Database+".events ("+columnList+")")
	if err != nil {
		return scrubServerErr(err, "")
	}
	vp, _ := s.pool.Get().(*[]any)
	if vp == nil {
		v := make([]any, 0, len(columns))
		vp = &v
	}
	defer s.pool.Put(vp)
	var order rowOrder // the table's sorting-key order spares the server a sort (see rowOrder)
	for _, i := range order.of(rows) {
		*vp = rowValues(*vp, &rows[i])
		if err := b.Append(*vp...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("cannot encode row %d: %w", i, scrubServerErr(err, ""))
		}
	}
	if err := b.Send(); err != nil {
		return scrubServerErr(err, "")
	}
	return nil
}

// Select runs sql and scans every row into JSON-ready Go values.
func (s *Server) Select(ctx context.Context, sql string, settings map[string]string) (*Result, error) {
	res := &Result{}
	set := clickhouse.Settings{}
	for k, v := range settings {
		if !settingName.MatchString(k) {
			return nil, fmt.Errorf("cannot run query: invalid setting name %q", k)
		}
		set[k] = v
	}
	var mu sync.Mutex
	qctx := clickhouse.Context(ctx, clickhouse.WithSettings(set), clickhouse.WithProgress(func(p *clickhouse.Progress) {
		mu.Lock()
		res.RowsRead += p.Rows
		res.BytesRead += p.Bytes
		mu.Unlock()
	}))
	rows, err := s.conn.Query(qctx, trimStatement(sql))
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", scrubServerErr(err, sql))
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	res.Columns = make([]Column, len(types))
	for i, ct := range types {
		res.Columns[i] = Column{Name: ct.Name(), Type: ct.DatabaseTypeName()}
	}
	res.Rows = [][]any{}
	var size int64
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("cannot read query result: %w", scrubServerErr(err, sql))
		}
		row := make([]any, len(dest))
		for i, d := range dest {
			row[i] = reflect.ValueOf(d).Elem().Interface()
			size += valueBytes(reflect.ValueOf(row[i]))
		}
		if limit := s.maxResult.Load(); limit > 0 && size > limit {
			return nil, fmt.Errorf("cannot read query result: %w of %d bytes", ErrResultTooLarge, limit)
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read query result: %w", scrubServerErr(err, sql))
	}
	mu.Lock()
	defer mu.Unlock()
	return res, nil
}

// valueBytes approximates the memory of one scanned value: the bytes of
// strings, eight for every scalar, summed through arrays, maps and tuples.
func valueBytes(v reflect.Value) int64 {
	switch v.Kind() {
	case reflect.String:
		return int64(v.Len())
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return int64(v.Len())
		}
		n := int64(0)
		for i := 0; i < v.Len(); i++ {
			n += valueBytes(v.Index(i))
		}
		return n
	case reflect.Map:
		n := int64(0)
		for it := v.MapRange(); it.Next(); {
			n += valueBytes(it.Key()) + valueBytes(it.Value())
		}
		return n
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 8
		}
		return valueBytes(v.Elem())
	}
	return 8
}

// Raw runs sql and formats its rows as TSV; other formats are refused
// with ErrUnsupportedFormat.
func (s *Server) Raw(ctx context.Context, sql, format string) ([]byte, error) {
	if !strings.EqualFold(format, "TSV") && !strings.EqualFold(format, "TabSeparated") {
		return nil, fmt.Errorf("cannot run query in format %q: %w (server mode: TSV only)", format, ErrUnsupportedFormat)
	}
	res, err := s.Select(ctx, sql, nil)
	if err != nil {
		return nil, err
	}
	return appendTSV(nil, res), nil
}

// Exec runs one statement that returns no rows.
func (s *Server) Exec(ctx context.Context, sql string) error {
	if err := s.conn.Exec(ctx, trimStatement(sql)); err != nil {
		return fmt.Errorf("cannot run statement: %w", scrubServerErr(err, sql))
	}
	return nil
}

// Close closes the connection pool.
func (s *Server) Close() error {
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("cannot close ClickHouse connection: %w", err)
	}
	return nil
}

var _ Store = (*Server)(nil)

// serverError is a server error with its message scrubbed of SQL text and
// quoted values.
type serverError struct {
	code int32
	msg  string
}

func (e *serverError) Error() string { return fmt.Sprintf("ClickHouse error %d: %s", e.code, e.msg) }

// scrubServerErr rewrites server exceptions so no statement text or data
// they quote escapes; other errors pass through.
func scrubServerErr(err error, sql string) error {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return &serverError{code: ex.Code, msg: chdb.Scrub(ex.Message, []byte(sql))}
	}
	return err
}

// isConnError reports whether err is a connection-level failure worth a
// retry (the batch may or may not have arrived; the dedup token makes the
// retry safe), as opposed to the server refusing the statement.
func isConnError(err error) bool {
	if err == nil {
		return false
	}
	var se *serverError
	var ex *clickhouse.Exception
	if errors.As(err, &se) || errors.As(err, &ex) {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	var oe *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, clickhouse.ErrAcquireConnTimeout) ||
		errors.As(err, &oe) || errors.As(err, &ne)
}

// retryConn runs op until it succeeds, fails with an error that is not a
// connection failure, ctx ends, or o.Attempts are used up.
func retryConn(ctx context.Context, o ServerOptions, op func() error) error {
	o = o.withDefaults()
	wait := o.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		if err = op(); err == nil || !isConnError(err) || attempt >= o.Attempts {
			if err != nil && attempt > 1 {
				return fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up retrying (%w) after: %w", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, o.MaxBackoff)
	}
}

// appendTSV formats a Result as ClickHouse TabSeparated text.
func appendTSV(dst []byte, res *Result) []byte {
	for _, row := range res.Rows {
		for i, v := range row {
			if i > 0 {
				dst = append(dst, '\t')
			}
			dst = appendTSVValue(dst, v)
		}
		dst = append(dst, '\n')
	}
	return dst
}

func appendTSVValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, `\N`...)
	case string:
		return appendTSVString(dst, x)
	case time.Time:
		if x.Nanosecond() != 0 {
			return x.UTC().AppendFormat(dst, "2006-01-02 15:04:05.000")
		}
		return x.UTC().AppendFormat(dst, time.DateTime)
	case bool:
		return strconv.AppendBool(dst, x)
	case float64:
		return strconv.AppendFloat(dst, x, 'g', -1, 64)
	case float32:
		return strconv.AppendFloat(dst, float64(x), 'g', -1, 32)
	case fmt.Stringer:
		return appendTSVString(dst, x.String())
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer {
			if rv.IsNil() {
				return append(dst, `\N`...)
			}
			return appendTSVValue(dst, rv.Elem().Interface())
		}
		return appendTSVString(dst, fmt.Sprint(v))
	}
}

func appendTSVString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\\':
			dst = append(dst, '\\', '\\')
		case 0:
			dst = append(dst, '\\', '0')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
