package sink

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/kyomi/collector/sink/row"
)

// ServerConfig tunes the server store beyond what the DSN says. A zero field
// takes its value from DefaultServerConfig; OpenServer refuses a
// ServerConfig that Validate refuses.
type ServerConfig struct {
	// AsyncInsert sends inserts with async_insert=1 and
	// wait_for_async_insert=1: the server buffers small inserts of many
	// nodes into one part and answers once the data is written.
	AsyncInsert bool
	// HTTPPort is the port of the servers' HTTP interface (HTTPS with secure=true), which
	// carries every statement; 0 takes the DSN's http_port parameter, or else asks the first
	// server over the native protocol (getServerPort('http_port'), or 'https_port').
	HTTPPort int
	// Attempts is how many times an insert is tried when the connection
	// fails (not when the server rejects it).
	Attempts int
	// Backoff is the wait before the first retry, doubled each time up to
	// MaxBackoff.
	Backoff, MaxBackoff time.Duration
}

// DefaultServerConfig is the server store the collector runs with.
var DefaultServerConfig = ServerConfig{
	// 5 attempts over about 3 s (200ms, 400ms, 800ms, 1.6s): a failover or
	// a restart behind a load balancer; past it the shipper's own backoff
	// (ShipperConfig) takes over and the events wait in the spool.
	Attempts:   5,
	Backoff:    200 * time.Millisecond,
	MaxBackoff: 5 * time.Second,
}

// Validate reports every invalid field of c.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.HTTPPort < 0 || c.HTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("sink.ServerConfig.HTTPPort must be between 0 and 65535, got %d", c.HTTPPort))
	}
	if c.Attempts < 0 {
		errs = append(errs, fmt.Errorf("sink.ServerConfig.Attempts must be >= 0 (0 takes the default), got %d", c.Attempts))
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Backoff", c.Backoff}, {"MaxBackoff", c.MaxBackoff}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("sink.ServerConfig.%s must be >= 0 (0 takes the default), got %s", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// withDefaults fills every zero field from DefaultServerConfig.
func (c ServerConfig) withDefaults() ServerConfig {
	d := DefaultServerConfig
	if c.Attempts == 0 {
		c.Attempts = d.Attempts
	}
	if c.Backoff == 0 {
		c.Backoff = d.Backoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	return c
}

// Server is the Store on a ClickHouse server or cluster, the managed local engine included, over
// its HTTP interface: an insert is one Native block, the cheapest columnar path measured (about
// half the CPU per row of clickhouse-go's row-by-row batch, BENCHMARKS.md); a read answers in
// JSONCompact (64-bit integers as strings, other numbers as json.Number), or in any format the
// server writes (ArrowStream for the query path). The native protocol serves only to learn the HTTP port when
// the DSN does not give it: a native connection cut in the middle of a request aborts a
// clickhouse-local server (TestConnectionResets in package engine), an HTTP one does not. Safe
// for concurrent use.
type Server struct {
	opts   ServerConfig
	db     string
	user   string
	pass   string
	bases  []string // http(s)://host:port/ of every server of the DSN, tried in order
	client *http.Client
	bufs   sync.Pool     // *insertBuf
	limit  atomic.Int64  // see SetMaxResultBytes
	zstd   *zstd.Encoder // compresses insert bodies; nil sends them as they are (insertCompression)
}

// SetMaxResultBytes makes Select and Raw stop reading with ErrResultTooLarge once an answer
// passes n bytes, keeping nothing of it; n <= 0 removes the bound.
func (s *Server) SetMaxResultBytes(n int64) { s.limit.Store(max(n, 0)) }

// OpenServer connects to the ClickHouse server named by dsn, for example
// clickhouse://user:pass@host:9440/analytics?secure=true&http_port=8443&dial_timeout=5s.
// The DSN names the servers (several for failover, tried in order), the user, the database
// (created when it does not exist), TLS (secure=true, skip_verify), the port of the HTTP
// interface (http_port; see ServerConfig.HTTPPort) and whether inserts are compressed
// (compress; see insertCompression). The server is checked with a query.
func OpenServer(dsn string, opts ...ServerConfig) (*Server, error) {
	var so ServerConfig
	if len(opts) > 0 {
		so = opts[0]
	}
	if err := so.Validate(); err != nil {
		return nil, err
	}
	dsn, httpPort, err := cutDSNParam(dsn, "http_port")
	if err != nil {
		return nil, err
	}
	compress, err := dsnCompress(dsn)
	if err != nil {
		return nil, err
	}
	if so.HTTPPort == 0 {
		so.HTTPPort = httpPort
	}
	o, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		// The DSN may hold a password: do not echo it.
		return nil, errors.New("cannot parse the ClickHouse DSN: expected clickhouse://user:password@host:9000/database?options")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.DialTimeout+10*time.Second)
	defer cancel()
	if so.HTTPPort == 0 {
		if so.HTTPPort, err = askHTTPPort(ctx, o); err != nil {
			return nil, err
		}
	}
	s := &Server{opts: so.withDefaults(), user: o.Auth.Username, pass: o.Auth.Password}
	scheme := "http"
	// The DSN's read_timeout (clickhouse-go's default 5 min) bounds the wait for an answer, as it
	// bounded a read on the native protocol: a server that stalls does not hold a flush forever.
	// Reads run with wait_end_of_query, so it must exceed the longest query (the query path's is
	// 30 s).
	readTimeout := o.ReadTimeout
	if readTimeout <= 0 {
		readTimeout = 5 * time.Minute
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 20 * time.Second, ResponseHeaderTimeout: readTimeout}
	if o.TLS != nil {
		scheme = "https"
		tr.TLSClientConfig = o.TLS.Clone()
	}
	tr.DialContext = (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	for _, a := range o.Addr {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		s.bases = append(s.bases, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(s.opts.HTTPPort))+"/")
	}
	s.client = &http.Client{Transport: tr}
	if insertCompression(compress, o.Addr) {
		// One encoder for every insert: EncodeAll is safe for concurrent use.
		s.zstd, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	}
	// The database is created from the server's default database: requests naming it fail
	// until it exists.
	if db := o.Auth.Database; db != "" && db != "default" {
		if err := s.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db)); err != nil {
			s.Close()
			return nil, fmt.Errorf("cannot reach ClickHouse at %s: %w", strings.Join(s.hosts(), ","), err)
		}
	}
	s.db = o.Auth.Database
	if err := s.Exec(ctx, "SELECT 1"); err != nil {
		s.Close()
		return nil, fmt.Errorf("cannot reach ClickHouse at %s: %w", strings.Join(s.hosts(), ","), err)
	}
	return s, nil
}

// hosts are the HTTP endpoints, for messages (no credentials in them).
func (s *Server) hosts() []string {
	out := make([]string, len(s.bases))
	for i, b := range s.bases {
		out[i] = strings.TrimSuffix(b, "/")
	}
	return out
}

// askHTTPPort asks the first server of o that answers on the native protocol for the port of
// its HTTP interface (HTTPS when the DSN asks for TLS).
func askHTTPPort(ctx context.Context, o *clickhouse.Options) (int, error) {
	setting := "http_port"
	if o.TLS != nil {
		setting = "https_port"
	}
	bo := *o
	bo.Auth.Database = "" // may not exist yet
	bo.MaxOpenConns, bo.MaxIdleConns = 1, 1
	conn, err := clickhouse.Open(&bo)
	if err != nil {
		return 0, fmt.Errorf("cannot open ClickHouse connection to %s: %w", strings.Join(o.Addr, ","), err)
	}
	defer conn.Close()
	var port uint16
	if err := conn.QueryRow(ctx, "SELECT toUInt16(getServerPort('"+setting+"'))").Scan(&port); err != nil {
		return 0, fmt.Errorf("cannot learn the HTTP port of ClickHouse at %s (give http_port in the DSN): %w",
			strings.Join(o.Addr, ","), scrubServerErr(err, ""))
	}
	return int(port), nil
}

// cutDSNParam removes the query parameter name from dsn (clickhouse-go would send it to the
// server as a setting) and returns its value as a port number, 0 when absent.
func cutDSNParam(dsn, name string) (string, int, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", 0, errors.New("cannot parse the ClickHouse DSN: expected clickhouse://user:password@host:9000/database?options")
	}
	q := u.Query()
	v := q.Get(name)
	if v == "" {
		return dsn, 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 65535 {
		return "", 0, fmt.Errorf("ClickHouse DSN: %s=%q is not a port", name, v)
	}
	q.Del(name)
	u.RawQuery = q.Encode()
	return u.String(), n, nil
}

// dsnCompress reads the DSN's compress parameter: "" when absent, else one of zstd, true,
// none, false (clickhouse-go's other methods are refused: inserts go over HTTP, compressed with
// zstd or not at all).
func dsnCompress(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("cannot parse the ClickHouse DSN: expected clickhouse://user:password@host:9000/database?options")
	}
	switch v := u.Query().Get("compress"); v {
	case "", "zstd", "true", "none", "false":
		return v, nil
	default:
		return "", fmt.Errorf("ClickHouse DSN: compress=%q: inserts are compressed with zstd or not at all (compress=zstd or compress=none)", v)
	}
}

// insertCompression reports whether inserts are sent compressed with zstd: as the DSN's
// compress parameter says, or, without it, when a server of the DSN is not on a loopback
// address. On loopback (the managed engine) the bytes cost nothing and zstd would cost CPU on
// both sides; to a remote server a batch is about four times smaller
// (BenchmarkInsertBodyZstd).
func insertCompression(param string, addrs []string) bool {
	switch param {
	case "zstd", "true":
		return true
	case "none", "false":
		return false
	}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if host == "localhost" {
			continue
		}
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
			return true
		}
	}
	return false
}

// Insert sends rows as one Native block over HTTP with the dedup token as
// insert_deduplication_token, retrying with backoff while the connection fails; a server-side
// rejection is returned at once.
func (s *Server) Insert(ctx context.Context, rows []row.Event, dedupToken string) error {
	return s.insert(ctx, rows, dedupToken, dedupToken)
}

// ReplayInsert stores the batch rows named token exactly once, whether or not an earlier
// process stored it before it or the server was killed (see replayInsert).
func (s *Server) ReplayInsert(ctx context.Context, rows []row.Event, token string) error {
	return replayInsert(ctx, s, s.insert, rows, token)
}

func (s *Server) insert(ctx context.Context, rows []row.Event, dedupToken, batchToken string) error {
	if len(rows) == 0 {
		return nil
	}
	if err := checkDedupToken(dedupToken); err != nil {
		return err
	}
	for i := range rows {
		rows[i].BatchToken = batchToken
	}
	params := url.Values{}
	params.Set("query", "INSERT INTO "+Database+".events ("+columnList+") FORMAT Native")
	if dedupToken != "" {
		params.Set("insert_deduplication_token", dedupToken)
	} else {
		// Without a token ClickHouse would still drop a block identical to a recent one; two
		// equal batches are two batches (insert_deduplicate = 0 no longer does it in 26).
		params.Set("deduplicate_insert", "disable")
	}
	// One insert thread: a flush is a few MB, too small for parallel work to pay on a busy
	// machine, where extra threads only add CPU; flushes are serial, so one thread loses
	// nothing. A Distributed table writes through to the shards before answering, so an
	// acknowledged batch is stored, and a replay's check sees it.
	params.Set("max_insert_threads", "1")
	params.Set("distributed_foreground_insert", "1")
	if s.opts.AsyncInsert {
		params.Set("async_insert", "1")
		params.Set("wait_for_async_insert", "1")
	}
	buf, _ := s.bufs.Get().(*insertBuf)
	if buf == nil {
		buf = &insertBuf{data: make([]byte, 0, 64<<10)}
	}
	buf.data = appendNative(buf.data[:0], rows, buf.order.of(rows))
	body, enc := buf.data, ""
	if s.zstd != nil {
		buf.packed = s.zstd.EncodeAll(buf.data, buf.packed[:0])
		body, enc = buf.packed, "zstd"
	}
	err := retryConn(ctx, s.opts, func() error {
		_, err := s.postLimited(ctx, params, body, enc, "", 0)
		return err
	})
	if cap(buf.data)+cap(buf.packed) <= 64<<20 {
		s.bufs.Put(buf)
	}
	if err != nil {
		return fmt.Errorf("cannot insert %d rows into %s.events: %w", len(rows), Database, err)
	}
	return nil
}

// post sends one request to the HTTP interface, trying the DSN's servers in order while they
// cannot be reached, and returns the answer's body. A ClickHouse exception becomes a
// *serverError whose message is scrubbed of sql and of quoted values.
func (s *Server) post(ctx context.Context, params url.Values, body []byte, sql string) ([]byte, error) {
	return s.postLimited(ctx, params, body, "", sql, 0)
}

// postLimited is post whose answer may be at most limit bytes (0: any size); past it, it fails
// with ErrResultTooLarge. A body compressed with encoding (a Content-Encoding, "" for none) is
// sent with that header.
func (s *Server) postLimited(ctx context.Context, params url.Values, body []byte, encoding, sql string, limit int64) ([]byte, error) {
	if s.db != "" {
		params.Set("database", s.db)
	}
	qs := params.Encode()
	var err error
	for _, base := range s.bases {
		var out []byte
		out, err = s.postTo(ctx, base+"?"+qs, body, encoding, sql, limit)
		if err == nil || !isConnError(err) {
			return out, err
		}
	}
	return nil, err
}

func (s *Server) postTo(ctx context.Context, u string, body []byte, encoding, sql string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("cannot build a ClickHouse request: %w", err)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	if s.user != "" {
		req.Header.Set("X-ClickHouse-User", s.user)
	}
	if s.pass != "" {
		req.Header.Set("X-ClickHouse-Key", s.pass)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its text repeats the URL: keep the cause only
			err = ue.Err
		}
		return nil, err
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if limit > 0 && resp.StatusCode == http.StatusOK {
		r = io.LimitReader(resp.Body, limit+1)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if limit > 0 && int64(len(out)) > limit && resp.StatusCode == http.StatusOK {
		return nil, fmt.Errorf("%w of %d bytes", ErrResultTooLarge, limit)
	}
	if resp.StatusCode != http.StatusOK {
		code, _ := strconv.Atoi(resp.Header.Get("X-ClickHouse-Exception-Code"))
		msg := strings.TrimSpace(string(out))
		if code == 0 && msg == "" {
			msg = resp.Status
		}
		return nil, &serverError{code: int32(code), msg: scrub(msg, []byte(sql))}
	}
	return out, nil
}

// Select runs sql over the HTTP interface and decodes its JSONCompact answer: 64-bit integers as
// strings, json.Number for the other numbers.
// wait_end_of_query makes the server answer only once the query has ended, so an error is
// never cut into a half-sent result.
func (s *Server) Select(ctx context.Context, sql string, settings map[string]string) (*Result, error) {
	params := url.Values{}
	for k, v := range settings {
		if !settingName.MatchString(k) {
			return nil, fmt.Errorf("cannot run query: invalid setting name %q", k)
		}
		params.Set(k, v)
	}
	params.Set("default_format", "JSONCompact")
	params.Set("wait_end_of_query", "1")
	q := trimStatement(sql)
	out, err := s.postLimited(ctx, params, []byte(q), "", q, s.limit.Load())
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", err)
	}
	return decodeJSONCompact(out)
}

// Raw runs sql over the HTTP interface and returns its output in format ("TSV", "ArrowStream",
// ...), as the server writes it.
func (s *Server) Raw(ctx context.Context, sql, format string) ([]byte, error) {
	if !settingName.MatchString(format) {
		return nil, fmt.Errorf("cannot run query in format %q: %w", format, ErrUnsupportedFormat)
	}
	params := url.Values{}
	params.Set("default_format", format)
	params.Set("wait_end_of_query", "1")
	q := trimStatement(sql)
	out, err := s.postLimited(ctx, params, []byte(q), "", q, s.limit.Load())
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", err)
	}
	return out, nil
}

// Exec runs one statement and discards its output.
func (s *Server) Exec(ctx context.Context, sql string) error {
	q := trimStatement(sql)
	if _, err := s.post(ctx, url.Values{"wait_end_of_query": {"1"}}, []byte(q), q); err != nil {
		return fmt.Errorf("cannot run statement: %w", err)
	}
	return nil
}

// CloseIdleConnections closes the HTTP connections kept open for the next request; the store
// stays usable and opens new ones as needed. Tests that check for leaked goroutines call it.
func (s *Server) CloseIdleConnections() { s.client.CloseIdleConnections() }

// Close closes idle connections; calls still running finish.
func (s *Server) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

var _ Store = (*Server)(nil)

// insertBuf is what one flush works in: the batch's sorting-key order and its Native block.
type insertBuf struct {
	data   []byte // the Native block
	packed []byte // data compressed, when the store compresses inserts
	order  rowOrder
}

// serverError is a server error with its message scrubbed of SQL text and
// quoted values.
type serverError struct {
	code int32
	msg  string
}

// Error gives the message as the server wrote it ("Code: 158. DB::Exception: ..."), so callers
// read the code from the text the same way whichever path raised it.
func (e *serverError) Error() string {
	if strings.HasPrefix(e.msg, "Code: ") {
		return "ClickHouse: " + e.msg
	}
	return fmt.Sprintf("ClickHouse: Code: %d. %s", e.code, e.msg)
}

// scrubServerErr rewrites server exceptions so no statement text or data
// they quote escapes; other errors pass through.
func scrubServerErr(err error, sql string) error {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return &serverError{code: ex.Code, msg: scrub(ex.Message, []byte(sql))}
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
func retryConn(ctx context.Context, o ServerConfig, op func() error) error {
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
