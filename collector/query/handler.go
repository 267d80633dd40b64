// Package query is the read path of the collector: the Kyomi Connect
// message protocol over POST /api/query and the WebSocket /connect/v1,
// ES256 bearer tokens scoped to one workspace, a SQL guard built on
// ClickHouse's own parser, and Plausible-style reports compiled to SQL.
//
// Messages (DESIGN 3.5):
//
//	request  {"id":"r1","op":"execute_query","params":{"sql":"SELECT ...","max_rows":100,"format":"json"}}
//	result   {"id":"r1","type":"result","result":{"columns":[{"name":..,"type":..}],"rows":[[..]],"row_count":1,"truncated":false}}
//	error    {"id":"r1","type":"error","error":{"code":"query_refused","message":"..."}}
//
// Ops: ping; execute_query (params sql, max_rows >= 0 (0: the configured
// limit), format "json" or "arrow"); list_tables; describe_table (params
// table: "events"); report (see ReportParams). With format "arrow" the
// result carries "format":"arrow" and "arrow": the ClickHouse ArrowStream
// bytes, base64 (standard alphabet), on both transports; columns and rows
// are empty. 64-bit integers are JSON strings (visitor ids exceed 2^53).
// Error codes: unauthenticated, token_expired, token_revoked, forbidden,
// invalid_request, query_refused, query_failed, timeout, too_large,
// too_busy (the token or the process runs as many queries as allowed),
// unknown_op, unavailable (token checks could not run, e.g. Redis down).
// Engine errors are answered with a fixed text per error class, never the
// engine's own message, which can quote values (see engineError).
//
// Inside a query the table `events` is the caller's workspace's rows of
// analytics.events and nothing else; see Guard for how that is enforced.
//
// Agent mode: an Agent dials out instead of waiting to be dialed. It
// verifies a Connect token with the same Verifier, dials the ws:// or wss://
// URL of its url claim with "Authorization: Bearer <token>", and answers the
// backend's request messages with the same per-connection loop as
// /connect/v1 (concurrent requests, answers matched by id), scoped to the
// token's wid. It redials with jittered exponential backoff, verifying the
// token again each time, and stops for good once the token is refused. A
// collector behind NAT so serves Connect with no inbound port.
package query

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/kyomi/collector/sink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Config configures the query path. A zero field takes its value from
// DefaultConfig, and a zero field of Limits from DefaultLimits, so a partial
// Config keeps every other bound (0 would mean unlimited to ClickHouse).
// NewHandler refuses a Config that Validate refuses.
type Config struct {
	Limits       Limits        // ClickHouse limits of every statement
	MaxBodyBytes int           // largest request message
	MaxInFlight  int           // concurrent requests per WebSocket connection
	AuthTimeout  time.Duration // time a WebSocket has to send its auth message
	// MaxQueries bounds the statements (execute_query, report,
	// describe_table) running at once in the process; more are answered
	// too_busy.
	MaxQueries int
	// MaxQueriesPerToken bounds the statements one token (its jti, or its
	// workspace when it has none) runs at once, across all connections.
	MaxQueriesPerToken int
}

// DefaultConfig is the query path the collector runs with.
var DefaultConfig = Config{
	Limits: DefaultLimits,
	// 1 MiB: a request is one JSON message holding an SQL text or report
	// parameters, a few KiB; the bound is what one message can make the
	// collector buffer.
	MaxBodyBytes: 1 << 20,
	// 8: a dashboard sends its panels' requests together; the statements
	// among them are still bounded by MaxQueries and MaxQueriesPerToken.
	MaxInFlight: 8,
	// 10s: a client sends its auth message right after the upgrade; a
	// connection that sends nothing is closed before it holds a goroutine
	// for long.
	AuthTimeout: 10 * time.Second,
	// 4: each statement may hold up to Limits.MaxResultBytes of answer and
	// Limits.MaxMemory in the engine, and ingest shares the process and the
	// engine.
	MaxQueries: 4,
	// 2: one caller cannot take every slot of MaxQueries.
	MaxQueriesPerToken: 2,
}

// Validate reports every invalid field of c.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		neg  bool
		v    any
	}{
		{"MaxBodyBytes", c.MaxBodyBytes < 0, c.MaxBodyBytes}, {"MaxInFlight", c.MaxInFlight < 0, c.MaxInFlight},
		{"AuthTimeout", c.AuthTimeout < 0, c.AuthTimeout}, {"MaxQueries", c.MaxQueries < 0, c.MaxQueries},
		{"MaxQueriesPerToken", c.MaxQueriesPerToken < 0, c.MaxQueriesPerToken},
	} {
		if f.neg {
			errs = append(errs, fmt.Errorf("query.Config.%s must be >= 0 (0 takes the default), got %v", f.name, f.v))
		}
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// withDefaults fills every zero field from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = d.AuthTimeout
	}
	if c.MaxQueries == 0 {
		c.MaxQueries = d.MaxQueries
	}
	if c.MaxQueriesPerToken == 0 {
		c.MaxQueriesPerToken = d.MaxQueriesPerToken
	}
	c.Limits = c.Limits.withDefaults()
	return c
}

// Deps are the collaborators of a Handler.
type Deps struct {
	Store      Store
	Verifier   *Verifier
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Request is one protocol request message.
type Request struct {
	ID     string          `json:"id"`
	Op     string          `json:"op"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response is one protocol answer: a result or an error.
type Response struct {
	ID     string     `json:"id"`
	Type   string     `json:"type"` // "result" or "error"
	Result any        `json:"result,omitempty"`
	Error  *ErrorBody `json:"error,omitempty"`
}

// ErrorBody is the error of a Response. Code is stable; Message is for
// people and never holds a token, a query result or another workspace's id.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Column describes one result column.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Result is the result of execute_query (format json), list_tables,
// describe_table and report. With format arrow, Columns and Rows are empty
// and Arrow holds the ClickHouse ArrowStream bytes (base64 in JSON).
//
// It carries no engine statistics (rows_read, bytes_read, timings): the
// storage reads whole granules, which hold other workspaces' rows at the
// edges of the caller's range, so those figures would reveal the size of
// the shared table.
type Result struct {
	Columns   []Column          `json:"columns"`
	Rows      []json.RawMessage `json:"rows"`
	RowCount  int               `json:"row_count"`
	Truncated bool              `json:"truncated"`
	Format    string            `json:"format,omitempty"`
	Arrow     string            `json:"arrow,omitempty"`
}

// Error codes of the protocol.
const (
	CodeUnauthenticated = "unauthenticated"
	CodeTokenExpired    = "token_expired"
	CodeTokenRevoked    = "token_revoked"
	CodeForbidden       = "forbidden"
	CodeInvalidRequest  = "invalid_request"
	CodeQueryRefused    = "query_refused"
	CodeQueryFailed     = "query_failed"
	CodeTimeout         = "timeout"
	CodeTooLarge        = "too_large"
	CodeTooBusy         = "too_busy"
	CodeUnknownOp       = "unknown_op"
	CodeUnavailable     = "unavailable"
)

type protoError struct{ code, msg string }

func (e *protoError) Error() string { return e.code + ": " + e.msg }

func perr(code, format string, args ...any) error {
	return &protoError{code: code, msg: fmt.Sprintf(format, args...)}
}

// Handler serves the query path. Mount HTTP at POST /api/query and
// WebSocket at GET /connect/v1. Close ends open WebSocket connections and
// waits for their goroutines.
type Handler struct {
	cfg   Config
	store Store
	ver   *Verifier
	log   *slog.Logger
	guard *Guard

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	errs     *prometheus.CounterVec

	slots *slots // concurrent statements, per process and per token

	upgrader websocket.FastHTTPUpgrader
	ctx      context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex // guards closed and wg.Add against Close
	closed   bool
	wg       sync.WaitGroup
}

// NewHandler validates cfg, registers the metrics and returns a Handler.
func NewHandler(cfg Config, d Deps) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Store == nil || d.Verifier == nil || d.Logger == nil || d.Registerer == nil {
		return nil, errors.New("cannot create query handler: store, verifier, logger and registerer are required")
	}
	cfg = cfg.withDefaults()
	h := &Handler{
		cfg: cfg, store: d.Store, ver: d.Verifier, log: d.Logger,
		guard: &Guard{Store: d.Store, Limits: cfg.Limits},
		slots: newSlots(cfg.MaxQueries, cfg.MaxQueriesPerToken),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "collector_query_requests_total", Help: "Query path requests by op and result code (ok or an error code).",
		}, []string{"op", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "collector_query_duration_seconds", Help: "Time to answer a query path request, by op.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"op"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "collector_query_errors_total", Help: "Query path errors by code.",
		}, []string{"code"}),
	}
	for _, c := range []prometheus.Collector{h.requests, h.duration, h.errs} {
		if err := d.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("cannot register query metrics: %w", err)
		}
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.upgrader = websocket.FastHTTPUpgrader{
		ReadBufferSize: 4096, WriteBufferSize: 4096,
		// Browsers send cookies with cross-site WebSocket handshakes, but this
		// endpoint authenticates with a bearer token only, so any origin is fine.
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
	}
	return h, nil
}

// Close ends all WebSocket connections and waits for their goroutines.
func (h *Handler) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

var knownOps = map[string]bool{"ping": true, "execute_query": true, "list_tables": true, "describe_table": true, "report": true, "auth": true}

// Do answers one request for an authenticated caller. It is the transport-
// independent core; HTTP and WebSocket both call it.
func (h *Handler) Do(ctx context.Context, c *Claims, req *Request) *Response {
	start := time.Now()
	op := req.Op
	if !knownOps[op] {
		op = "unknown"
	}
	res, err := h.dispatch(ctx, c, req)
	resp := &Response{ID: req.ID}
	code := "ok"
	if err != nil {
		eb := h.errorBody(err)
		code = eb.Code
		resp.Type, resp.Error = "error", eb
		h.errs.WithLabelValues(code).Inc()
	} else {
		resp.Type, resp.Result = "result", res
	}
	h.requests.WithLabelValues(op, code).Inc()
	h.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	return resp
}

func (h *Handler) errorBody(err error) *ErrorBody {
	var pe *protoError
	var re *RefusedError
	var ae *AuthError
	switch {
	case errors.As(err, &pe):
		return &ErrorBody{Code: pe.code, Message: pe.msg}
	case errors.As(err, &re):
		return &ErrorBody{Code: CodeQueryRefused, Message: re.Reason}
	case errors.As(err, &ae):
		return &ErrorBody{Code: ae.Code, Message: ae.Reason}
	case errors.Is(err, context.DeadlineExceeded):
		return &ErrorBody{Code: CodeTimeout, Message: "query timed out"}
	case errors.Is(err, sink.ErrResultTooLarge), errors.Is(err, errAnswerTooLarge):
		return &ErrorBody{Code: CodeTooLarge, Message: fmt.Sprintf("the answer is larger than %d bytes; select fewer or shorter values", h.cfg.Limits.MaxResultBytes)}
	}
	code := engineCode(err)
	if code == 0 {
		h.log.Warn("query path internal error", "err", err)
		return &ErrorBody{Code: CodeQueryFailed, Message: "query failed"}
	}
	var se *statementError
	sql := ""
	if errors.As(err, &se) {
		sql = se.sql
	}
	return engineError(code, err.Error(), sql)
}

// statementError is an error of a statement the caller wrote; engineError
// may name an identifier of it.
type statementError struct {
	err error
	sql string
}

func (e *statementError) Error() string { return e.err.Error() }
func (e *statementError) Unwrap() error { return e.err }

type executeParams struct {
	SQL     string `json:"sql"`
	MaxRows int    `json:"max_rows"`
	Format  string `json:"format"`
}

func decodeParams(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	if err := decodeExact(raw, v, true); err != nil {
		return perr(CodeInvalidRequest, "invalid params: %s", err)
	}
	return nil
}

// decodeRequest decodes one request message by exact member names (id, op, params); other
// members are ignored.
func decodeRequest(msg []byte) (Request, error) {
	var req Request
	err := decodeExact(msg, &req, false)
	return req, err
}

func (h *Handler) dispatch(ctx context.Context, c *Claims, req *Request) (any, error) {
	switch req.Op {
	case "ping":
		return map[string]any{"pong": true, "workspace": c.WID}, nil
	case "execute_query":
		var p executeParams
		if err := decodeParams(req.Params, &p); err != nil {
			return nil, err
		}
		if p.SQL == "" {
			return nil, perr(CodeInvalidRequest, "params.sql is required")
		}
		if p.MaxRows < 0 {
			return nil, perr(CodeInvalidRequest, "params.max_rows must be >= 0")
		}
		if p.Format != "" && p.Format != "json" && p.Format != "arrow" {
			return nil, perr(CodeInvalidRequest, "params.format must be json or arrow")
		}
		release, err := h.slots.acquire(ctx, c)
		if err != nil {
			return nil, err
		}
		defer release()
		prep, err := h.guard.Prepare(ctx, c.WID, p.SQL, p.MaxRows)
		if err != nil {
			return nil, &statementError{err, p.SQL}
		}
		if p.Format != "arrow" {
			res, err := h.runJSON(ctx, prep)
			if err != nil {
				return nil, &statementError{err, p.SQL}
			}
			return res, nil
		}
		out, err := h.store.Raw(ctx, prep.SQL(prep.MaxRows), "ArrowStream")
		if errors.Is(err, sink.ErrUnsupportedFormat) {
			return nil, perr(CodeInvalidRequest, "format arrow is not available with this store")
		}
		if err != nil {
			return nil, &statementError{err, p.SQL}
		}
		if int64(len(out)) > h.cfg.Limits.MaxResultBytes {
			return nil, errAnswerTooLarge
		}
		return &Result{Format: "arrow", Arrow: base64.StdEncoding.EncodeToString(out), Columns: []Column{}, Rows: []json.RawMessage{}}, nil
	case "list_tables":
		return &Result{Columns: []Column{{"name", "String"}}, Rows: []json.RawMessage{json.RawMessage(`["events"]`)}, RowCount: 1}, nil
	case "describe_table":
		var p struct {
			Table string `json:"table"`
		}
		if err := decodeParams(req.Params, &p); err != nil {
			return nil, err
		}
		if p.Table != "events" {
			return nil, perr(CodeForbidden, "only the events table can be described")
		}
		release, err := h.slots.acquire(ctx, c)
		if err != nil {
			return nil, err
		}
		defer release()
		res, err := h.store.Select(ctx, "SELECT name, type FROM system.columns WHERE database = 'analytics' AND table = 'events' AND name != 'batch_token' ORDER BY position", nil)
		if err != nil {
			return nil, err
		}
		return toResult(res, 1<<20, h.cfg.Limits.MaxResultBytes)
	case "report":
		var p ReportParams
		if err := decodeParams(req.Params, &p); err != nil {
			return nil, err
		}
		sql, err := CompileReport(&p, time.Now().UTC())
		if err != nil {
			return nil, err
		}
		release, err := h.slots.acquire(ctx, c)
		if err != nil {
			return nil, err
		}
		defer release()
		prep := h.guard.scopedTrusted(c.WID, sql, h.guard.clampRows(p.Limit))
		return h.runJSON(ctx, prep)
	case "auth":
		return nil, perr(CodeInvalidRequest, "already authenticated")
	}
	return nil, perr(CodeUnknownOp, "unknown op")
}

func (h *Handler) runJSON(ctx context.Context, prep *Prepared) (*Result, error) {
	res, err := h.store.Select(ctx, prep.SQL(prep.MaxRows+1), nil)
	if err != nil {
		return nil, err
	}
	return toResult(res, prep.MaxRows, h.cfg.Limits.MaxResultBytes)
}

// errAnswerTooLarge is the answer passing the result limit in the query
// path itself, after the store.
var errAnswerTooLarge = errors.New("answer larger than the result limit")

// toResult converts a store result, keeping at most maxRows rows; it fails
// with errAnswerTooLarge once the encoded rows pass maxBytes.
func toResult(res *sink.Result, maxRows int, maxBytes int64) (*Result, error) {
	r := &Result{Columns: make([]Column, len(res.Columns)), Rows: []json.RawMessage{}}
	for i, c := range res.Columns {
		r.Columns[i] = Column{Name: c.Name, Type: c.Type}
	}
	rows := res.Rows
	if len(rows) > maxRows {
		rows, r.Truncated = rows[:maxRows], true
	}
	var size int64
	for _, row := range rows {
		out, err := json.Marshal(row)
		if err != nil {
			return nil, fmt.Errorf("cannot encode query result: %w", err)
		}
		if size += int64(len(out)); size > maxBytes {
			return nil, errAnswerTooLarge
		}
		r.Rows = append(r.Rows, out)
	}
	r.RowCount = len(r.Rows)
	return r, nil
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(ctx *fasthttp.RequestCtx) string {
	v := string(ctx.Request.Header.Peek("Authorization"))
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

func (h *Handler) authenticate(ctx context.Context, token string) (*Claims, error) {
	if token == "" {
		return nil, authErr(CodeUnauthenticated, "missing bearer token")
	}
	c, err := h.ver.Verify(ctx, token)
	if err != nil {
		var ae *AuthError
		if !errors.As(err, &ae) {
			h.log.Warn("cannot verify query token", "err", err)
			return nil, perr(CodeUnavailable, "cannot verify token now")
		}
		return nil, err
	}
	return c, nil
}

// HTTP serves POST /api/query: one request message in the body, one answer.
// Status: 200 for results and query errors (the code is in the message),
// 401 for authentication errors, 400 for malformed messages, 413 for
// oversized bodies, 405 for other methods.
func (h *Handler) HTTP(rc *fasthttp.RequestCtx) {
	rc.SetContentType("application/json")
	if !rc.IsPost() {
		rc.Response.Header.Set("Allow", "POST")
		h.writeHTTP(rc, fasthttp.StatusMethodNotAllowed, &Response{Type: "error", Error: &ErrorBody{CodeInvalidRequest, "use POST"}})
		return
	}
	body := rc.PostBody()
	if len(body) > h.cfg.MaxBodyBytes {
		h.count("unknown", CodeTooLarge)
		h.writeHTTP(rc, fasthttp.StatusRequestEntityTooLarge, &Response{Type: "error", Error: &ErrorBody{CodeTooLarge, "request too large"}})
		return
	}
	req, err := decodeRequest(body)
	if err != nil {
		h.count("unknown", CodeInvalidRequest)
		h.writeHTTP(rc, fasthttp.StatusBadRequest, &Response{Type: "error", Error: &ErrorBody{CodeInvalidRequest, "malformed message"}})
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Duration(h.cfg.Limits.MaxExecutionSecs+5)*time.Second)
	defer cancel()
	c, err := h.authenticate(ctx, bearer(rc))
	if err != nil {
		eb := h.errorBody(err)
		h.count(req.Op, eb.Code)
		status := fasthttp.StatusUnauthorized
		if eb.Code == CodeUnavailable {
			status = fasthttp.StatusServiceUnavailable
		}
		h.writeHTTP(rc, status, &Response{ID: req.ID, Type: "error", Error: eb})
		return
	}
	h.writeHTTP(rc, fasthttp.StatusOK, h.Do(ctx, c, &req))
}

// HTTPRefused answers, as HTTP would, a POST /api/query the HTTP server refused while reading it
// (status 413: the body is over its limit; 400, 408 or 431: it could not be parsed), and counts it
// as an error of op "unknown". It does not read the request body.
func (h *Handler) HTTPRefused(rc *fasthttp.RequestCtx, status int) {
	rc.SetContentType("application/json")
	eb := &ErrorBody{CodeInvalidRequest, "malformed request"}
	if status == fasthttp.StatusRequestEntityTooLarge {
		eb = &ErrorBody{CodeTooLarge, "request too large"}
	}
	h.count("unknown", eb.Code)
	h.writeHTTP(rc, status, &Response{Type: "error", Error: eb})
}

func (h *Handler) count(op, code string) {
	if !knownOps[op] {
		op = "unknown"
	}
	h.requests.WithLabelValues(op, code).Inc()
	h.errs.WithLabelValues(code).Inc()
}

func (h *Handler) writeHTTP(rc *fasthttp.RequestCtx, status int, r *Response) {
	out, err := json.Marshal(r)
	if err != nil {
		rc.SetStatusCode(fasthttp.StatusInternalServerError)
		return
	}
	rc.SetStatusCode(status)
	rc.SetBody(out)
}
