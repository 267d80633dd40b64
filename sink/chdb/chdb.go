// Package chdb runs the embedded ClickHouse engine (chDB, libchdb.so) inside
// the process. The library is loaded at run time with purego, so the binary
// needs no cgo and starts without the library when the embedded engine is not
// used.
//
// The engine allows one open connection per process. A Conn is safe for
// concurrent use by several goroutines; Close waits for running queries.
package chdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Version is the chDB release the collector is built and tested against.
const Version = "26.7.3-stable.1"

// LibPathEnv is the environment variable that overrides the library path.
const LibPathEnv = "CHDB_LIB_PATH"

// DefaultLibPath returns where the library is looked for when LibPathEnv is
// unset: $HOME/.cache/kyomi/<Version>/libchdb.so, where `make deps` puts it.
func DefaultLibPath() string {
	if p := os.Getenv(LibPathEnv); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "kyomi", Version, "libchdb.so")
}

// ErrAlreadyOpen is returned by Open while another Conn of this process is
// open: the engine holds one connection per process.
var ErrAlreadyOpen = errors.New("an embedded ClickHouse connection is already open in this process")

// ErrResultTooLarge is returned by a query whose output is larger than the
// connection's result limit (SetMaxResultBytes).
var ErrResultTooLarge = errors.New("query result larger than the limit")

// ErrClosed is returned by Query after Close.
var ErrClosed = errors.New("embedded ClickHouse connection is closed")

// library holds the resolved entry points of libchdb.so (chdb.h, v3 API).
type library struct {
	connect    func(argc int32, argv unsafe.Pointer) unsafe.Pointer // chdb_connection *chdb_connect(int, char **)
	closeConn  func(conn unsafe.Pointer)                            // void chdb_close_conn(chdb_connection *)
	queryN     func(conn, query unsafe.Pointer, qlen uintptr, format unsafe.Pointer, flen uintptr) unsafe.Pointer
	buffer     func(res unsafe.Pointer) unsafe.Pointer              // char *chdb_result_buffer(chdb_result *)
	length     func(res unsafe.Pointer) uintptr                     // size_t chdb_result_length(chdb_result *)
	errMsg     func(res unsafe.Pointer) unsafe.Pointer              // const char *chdb_result_error(chdb_result *)
	rowsRead   func(res unsafe.Pointer) uint64                      // uint64_t chdb_result_rows_read(chdb_result *)
	bytesRead  func(res unsafe.Pointer) uint64                      // uint64_t chdb_result_bytes_read(chdb_result *)
	destroy    func(res unsafe.Pointer)                             // void chdb_destroy_query_result(chdb_result *)
	setSignals func(enabled int32)                                  // void chdb_set_signal_handlers_enabled(int)
	cmdline    func(argc int32, argv unsafe.Pointer) unsafe.Pointer // chdb_result *chdb_query_cmdline(int, char **)
	// chdb_result *chdb_stream_query_n(chdb_connection, const char *, size_t, const char *, size_t)
	streamN     func(conn, query unsafe.Pointer, qlen uintptr, format unsafe.Pointer, flen uintptr) unsafe.Pointer
	fetch       func(conn, stream unsafe.Pointer) unsafe.Pointer // chdb_result *chdb_stream_fetch_result(chdb_connection, chdb_result *)
	cancel      func(conn, stream unsafe.Pointer)                // void chdb_stream_cancel_query(chdb_connection, chdb_result *)
	loadedIn    time.Duration
	loadedFrom  string
	hasSignalFn bool
}

var (
	loadOnce sync.Once
	lib      *library
	errLoad  error
	loadPath string
)

// Load loads libchdb.so from DefaultLibPath once per process and returns how
// long the dlopen took. Later calls return the first result. Open calls it;
// calling it early moves the cost (hundreds of milliseconds for the 550 MB
// library) to a moment of the caller's choosing.
func Load() (time.Duration, error) {
	loadOnce.Do(func() {
		loadPath = DefaultLibPath()
		lib, errLoad = load(loadPath)
	})
	if errLoad != nil {
		return 0, errLoad
	}
	return lib.loadedIn, nil
}

func load(path string) (*library, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("embedded ClickHouse engine not found at %s: run `make deps` or set %s", path, LibPathEnv)
	}
	start := time.Now()
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("cannot load embedded ClickHouse engine from %s (run `make deps` or set %s): %w", path, LibPathEnv, err)
	}
	l := &library{loadedFrom: path}
	syms := []struct {
		name string
		fn   any
	}{
		{"chdb_connect", &l.connect},
		{"chdb_close_conn", &l.closeConn},
		{"chdb_query_n", &l.queryN},
		{"chdb_result_buffer", &l.buffer},
		{"chdb_result_length", &l.length},
		{"chdb_result_error", &l.errMsg},
		{"chdb_result_rows_read", &l.rowsRead},
		{"chdb_result_bytes_read", &l.bytesRead},
		{"chdb_destroy_query_result", &l.destroy},
		{"chdb_stream_query_n", &l.streamN},
		{"chdb_stream_fetch_result", &l.fetch},
		{"chdb_stream_cancel_query", &l.cancel},
		{"chdb_query_cmdline", &l.cmdline},
	}
	for _, s := range syms {
		sym, err := purego.Dlsym(h, s.name)
		if err != nil {
			return nil, fmt.Errorf("cannot use embedded ClickHouse engine at %s: symbol %s missing (need chDB %s): %w", path, s.name, Version, err)
		}
		purego.RegisterFunc(s.fn, sym)
	}
	if sym, err := purego.Dlsym(h, "chdb_set_signal_handlers_enabled"); err == nil {
		purego.RegisterFunc(&l.setSignals, sym)
		l.hasSignalFn = true
	}
	l.loadedIn = time.Since(start)
	return l, nil
}

// Conn is the process's connection to the embedded engine. Its methods are
// safe for concurrent use; Close waits until running queries return.
type Conn struct {
	// mu serialises queries and Close. The engine runs one statement of
	// a connection at a time anyway, and a failed statement can leave
	// partial output behind that the next statement would return first
	// (measured with JSONCompact and result_overflow_mode='throw'); the
	// connection drains it under mu before anyone else queries.
	mu     sync.Mutex
	handle unsafe.Pointer
	closed bool
	dir    string
	// maxResult bounds the output a query may hand to Go (0: none). The
	// engine does not apply max_result_bytes to chDB's result buffer
	// (measured on 26.7: a 200 MB answer came through a 64 MiB limit), so
	// the buffer's length is checked before any of it is copied.
	maxResult atomic.Int64
}

var openConn atomic.Bool

// Open loads the library when needed and opens the engine on the data
// directory dir, creating it. It fails with ErrAlreadyOpen while another
// Conn of this process is open.
func Open(dir string) (*Conn, error) {
	if _, err := Load(); err != nil {
		return nil, err
	}
	if !openConn.CompareAndSwap(false, true) {
		return nil, ErrAlreadyOpen
	}
	c, err := open(dir)
	if err != nil {
		openConn.Store(false)
		return nil, err
	}
	return c, nil
}

func open(dir string) (*Conn, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot resolve data directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create data directory %s: %w", abs, err)
	}
	// The engine installs handlers for SIGSEGV, SIGBUS, SIGABRT... that
	// would take those signals away from the Go runtime (nil-pointer panics,
	// crash reports). Opt out, then put Go's handlers back, because opting
	// out resets those signals to SIG_DFL.
	if lib.hasSignalFn {
		saved := saveSignals()
		lib.setSignals(0)
		restoreSignals(saved)
	}
	saved := saveSignals()

	args := []string{"clickhouse", "--path=" + abs}
	var pin runtime.Pinner
	defer pin.Unpin()
	h := lib.connect(int32(len(args)), argvOf(args, &pin))
	restoreSignals(saved)
	if h == nil {
		return nil, fmt.Errorf("cannot open embedded ClickHouse engine on %s: connect failed (another process may hold the directory)", abs)
	}
	return &Conn{handle: h, dir: abs}, nil
}

// SetMaxResultBytes makes every later query whose output is larger than n
// bytes fail with ErrResultTooLarge, without copying that output into Go
// memory; n <= 0 removes the limit. Safe to call concurrently with queries.
func (c *Conn) SetMaxResultBytes(n int64) { c.maxResult.Store(max(n, 0)) }

// argvOf builds a C argv (NUL-terminated strings, then a NULL) from args, pinned by pin until
// the caller unpins it.
func argvOf(args []string, pin *runtime.Pinner) unsafe.Pointer {
	argv := make([]unsafe.Pointer, len(args)+1)
	for i, a := range args {
		c := append([]byte(a), 0)
		pin.Pin(&c[0])
		argv[i] = unsafe.Pointer(&c[0])
	}
	pin.Pin(&argv[0])
	return unsafe.Pointer(&argv[0])
}

// RunCmdline runs clickhouse-local in this process with the command-line arguments args
// (without the program name), as the clickhouse-local binary would, and returns when it ends,
// with the engine's error message if it failed. With --path, the listener settings and a query
// that opens the listeners and then never ends (see package engine), the process becomes a
// ClickHouse server until it is killed.
//
// It takes the process over: it cannot run beside Open, and nothing else of the engine works
// in the process afterwards. The engine keeps its own signal handlers off, as in Open, so the
// Go runtime still handles SIGTERM (the process exits) and its own faults.
func RunCmdline(args []string) error {
	if _, err := Load(); err != nil {
		return err
	}
	if !openConn.CompareAndSwap(false, true) {
		return ErrAlreadyOpen
	}
	if lib.hasSignalFn {
		saved := saveSignals()
		lib.setSignals(0)
		restoreSignals(saved)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	all := append([]string{"clickhouse-local"}, args...)
	saved := saveSignals()
	res := lib.cmdline(int32(len(all)), argvOf(all, &pin))
	restoreSignals(saved)
	if res == nil {
		return errors.New("clickhouse-local returned no result")
	}
	defer lib.destroy(res)
	if e := lib.errMsg(res); e != nil {
		if msg := goString(e); msg != "" {
			return &EngineError{Message: msg}
		}
	}
	return nil
}

// Dir returns the absolute data directory the connection was opened on.
func (c *Conn) Dir() string { return c.dir }

// Stats are the counters the engine reports for one query.
type Stats struct {
	RowsRead, BytesRead uint64
	Elapsed             time.Duration
}

// Query runs one SQL statement and returns its output in format (for
// example "TSV", "JSONCompact", "RowBinary", "ArrowStream"; "" means the
// engine default). The returned slice is owned by the caller. An engine
// error is returned with its message, scrubbed of the SQL text and of quoted
// values, which may hold data.
//
// The engine cannot cancel a running statement from here: ctx is checked
// before the call only; bound statements with ClickHouse settings such as
// max_execution_time.
func (c *Conn) Query(ctx context.Context, sql, format string) ([]byte, error) {
	out, _, err := c.QueryStats(ctx, []byte(sql), format)
	return out, err
}

// QueryStats is Query for a statement held in a byte slice (an INSERT with
// inline data, for example, without copying it into a string), also
// returning the engine's counters. sql is not retained.
func (c *Conn) QueryStats(ctx context.Context, sql []byte, format string) ([]byte, Stats, error) {
	return c.run(ctx, sql, func() ([]byte, Stats, error) { return c.query(sql, format) })
}

// run checks ctx and sql, then calls do under the connection's lock, draining
// what a failed statement left behind.
func (c *Conn) run(ctx context.Context, sql []byte, do func() ([]byte, Stats, error)) ([]byte, Stats, error) {
	if err := ctx.Err(); err != nil {
		return nil, Stats{}, fmt.Errorf("cannot run query: %w", err)
	}
	if len(sql) == 0 {
		return nil, Stats{}, errors.New("cannot run query: empty statement")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, Stats{}, ErrClosed
	}
	out, st, err := do()
	if err != nil {
		c.drain()
	}
	return out, st, err
}

// QueryBounded is QueryStats for a read whose answer is bounded by the
// connection's result limit (SetMaxResultBytes). With a limit it streams
// the answer from the engine chunk by chunk, counting the bytes as they
// arrive, and cancels the statement as soon as they pass the limit, so
// neither the engine's output buffer nor Go memory ever holds more than the
// limit and one chunk. Without a limit it is QueryStats.
func (c *Conn) QueryBounded(ctx context.Context, sql []byte, format string) ([]byte, Stats, error) {
	limit := c.maxResult.Load()
	if limit <= 0 {
		return c.QueryStats(ctx, sql, format)
	}
	return c.run(ctx, sql, func() ([]byte, Stats, error) {
		out, st, err := c.stream(sql, format, limit)
		var ee *EngineError
		if errors.As(err, &ee) && strings.Contains(ee.Message, "Streaming query is not supported") {
			// The engine streams SELECTs only; EXPLAIN, DESCRIBE and SHOW
			// answer in one piece, which query checks against the limit
			// before copying it.
			c.drain()
			out, st, err = c.query(sql, format)
		}
		return out, st, err
	})
}

// stream runs sql with the streaming entry points; see QueryBounded.
func (c *Conn) stream(sql []byte, format string, limit int64) ([]byte, Stats, error) {
	fmtb := append([]byte(format), 0)
	conn := *(*unsafe.Pointer)(c.handle)
	start := time.Now()
	st := Stats{}
	res := lib.streamN(conn, unsafe.Pointer(unsafe.SliceData(sql)), uintptr(len(sql)), unsafe.Pointer(&fmtb[0]), uintptr(len(format)))
	runtime.KeepAlive(sql)
	runtime.KeepAlive(fmtb)
	if res == nil {
		return nil, st, errors.New("cannot run query: embedded engine returned no result")
	}
	defer lib.destroy(res)
	if err := resultError(res, sql); err != nil {
		return nil, st, err
	}
	var out []byte
	for {
		chunk := lib.fetch(conn, res)
		if chunk == nil {
			return nil, st, errors.New("cannot read query result: embedded engine returned no chunk")
		}
		if err := resultError(chunk, sql); err != nil {
			lib.destroy(chunk)
			return nil, st, err
		}
		st.RowsRead += lib.rowsRead(chunk)
		st.BytesRead += lib.bytesRead(chunk)
		n := lib.length(chunk)
		if n == 0 {
			lib.destroy(chunk)
			st.Elapsed = time.Since(start)
			return out, st, nil
		}
		if int64(len(out))+int64(n) > limit {
			lib.destroy(chunk)
			lib.cancel(conn, res)
			return nil, st, fmt.Errorf("cannot return more than %d bytes of output: %w", limit, ErrResultTooLarge)
		}
		if buf := lib.buffer(chunk); buf != nil {
			out = append(out, unsafe.Slice((*byte)(buf), n)...)
		}
		lib.destroy(chunk)
	}
}

// resultError is the scrubbed engine error a result carries, or nil.
func resultError(res unsafe.Pointer, sql []byte) error {
	if e := lib.errMsg(res); e != nil {
		if msg := goString(e); msg != "" {
			return &EngineError{Message: Scrub(msg, sql)}
		}
	}
	return nil
}

// drain runs a statement whose output is known and discards it, so output
// a failed statement left behind does not reach the next caller.
func (c *Conn) drain() {
	_, _, _ = c.query([]byte("SELECT 1"), "TSV")
}

func (c *Conn) query(sql []byte, format string) ([]byte, Stats, error) {
	fmtb := append([]byte(format), 0)
	conn := *(*unsafe.Pointer)(c.handle) // chdb_connection from chdb_connection *
	start := time.Now()
	res := lib.queryN(conn, unsafe.Pointer(unsafe.SliceData(sql)), uintptr(len(sql)), unsafe.Pointer(&fmtb[0]), uintptr(len(format)))
	runtime.KeepAlive(sql)
	runtime.KeepAlive(fmtb)
	if res == nil {
		return nil, Stats{}, errors.New("cannot run query: embedded engine returned no result")
	}
	defer lib.destroy(res)
	st := Stats{Elapsed: time.Since(start)}
	if e := lib.errMsg(res); e != nil {
		msg := goString(e)
		if msg != "" {
			return nil, st, &EngineError{Message: Scrub(msg, sql)}
		}
	}
	st.RowsRead = lib.rowsRead(res)
	st.BytesRead = lib.bytesRead(res)
	n := lib.length(res)
	if n == 0 {
		return nil, st, nil
	}
	if limit := c.maxResult.Load(); limit > 0 && uint64(n) > uint64(limit) {
		return nil, st, fmt.Errorf("cannot return %d bytes of output: %w of %d bytes", n, ErrResultTooLarge, limit)
	}
	buf := lib.buffer(res)
	if buf == nil {
		return nil, st, nil
	}
	out := make([]byte, n)
	copy(out, unsafe.Slice((*byte)(buf), n))
	return out, st, nil
}

// Close closes the connection after running queries return, so that
// another Open in this process can succeed. Calling Close twice is safe.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	saved := saveSignals()
	lib.closeConn(c.handle)
	restoreSignals(saved)
	c.handle = nil
	openConn.Store(false)
	return nil
}

// EngineError is an error reported by the engine. Message is scrubbed of
// the statement text and quoted literals.
type EngineError struct {
	Message string
}

// Error implements error.
func (e *EngineError) Error() string { return "embedded ClickHouse: " + e.Message }

func goString(p unsafe.Pointer) string {
	var n int
	for *(*byte)(unsafe.Add(p, n)) != 0 {
		n++
	}
	return string(unsafe.Slice((*byte)(p), n))
}
