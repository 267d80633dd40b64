// Package collector is the HTTP side of the collector: the Plausible-compatible event endpoint
// (POST /api/event), CORS, health and readiness, metrics, and the routing of handlers the binary
// injects (the tracking script, the query path).
//
// # Decisions on the event endpoint
//
//   - Content-Type: text/plain (what the tracking script and navigator.sendBeacon send, so no CORS
//     preflight is needed), application/json (server-side integrations), with any parameters
//     (charset), or none at all. Anything else (a form post, say) is answered 400 naming
//     "content-type": it is not an event body, and accepting forms would let any page on the web
//     post events with a plain HTML form.
//   - d may be a comma-separated list, as in Plausible's multi-site form. Every listed domain, the
//     host of u and the Origin header (when sent) must all belong to one workspace; the event is
//     then stored once per listed domain (at most MaxDomains), all rows in one spool append
//     (Spool.AppendAll): either every row is stored or none is, and the answer is 503, so a
//     client that retries the whole event never stores a domain twice.
//   - Referrer source: the utm_source of the URL when there is one (the site owner tagged the link,
//     as Plausible ranks it), otherwise the source of the referrer field r.
//   - Answers are exactly the contract's: 202 stored (body "ok"); 202 with X-Collector-Dropped when
//     filtered; 400 {"error": "field: problem"}; 403 domain or origin not configured; 413 body over
//     MaxBodyBytes; 429 rate limited; 503 only when the event cannot be made durable (spool append
//     failed, or no salt to make a visitor id with).
//   - Requests the HTTP server cannot read (a body over MaxRequestBytes, headers over its read
//     buffer, a garbage request line) never reach Handler: ErrorHandler answers them, with the
//     same status codes, JSON shape and CORS headers as the handler's own refusals.
package collector

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/ratelimit"
	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/salt"
)

// Spool is the durable append the handler needs: AppendAll returns once every record of recs
// survives a crash of the process, or returns an error, which the handler answers with 503. On an
// error none of recs may be stored (the client retries the whole request); *spool.Spool keeps to
// that except when the disk itself fails. It must not keep recs.
type Spool interface {
	AppendAll(recs [][]byte) error
}

// Registry maps a domain to its workspace; *workspace.Registry implements it. Match must not
// allocate on the hot path and returns the configured domain that matched.
type Registry interface {
	Match(domain string) (*workspace.Workspace, string, bool)
}

// Config holds the parts the server wires together. Registry, Resolver, UA, Bots, Salts and Spool
// are required; the rest are optional.
type Config struct {
	Logger     *slog.Logger          // nil discards
	Registerer prometheus.Registerer // metrics of the server; nil registers nothing
	Gatherer   prometheus.Gatherer   // served at /metrics; nil serves no /metrics

	Registry   Registry
	Resolver   *clientip.Resolver
	UA         *enrich.UAParser
	Geo        *enrich.GeoDB // nil leaves country, region and city empty
	Bots       *bot.Filter
	Salts      salt.Source
	Spool      Spool
	ClientRate *ratelimit.Limiter // per client address (IPv6 by /64); nil = unlimited
	WSRate     *ratelimit.Limiter // per workspace; nil = unlimited

	// Routes are extra handlers (the tracking script, the query path, the dashboard), by exact
	// path; a key ending in "/", other than "/" itself, is a prefix route that answers every path
	// under it no exact route answers (the longest prefix wins). They get the security headers; cookies they set are removed.
	// A route's metric label is its key.
	Routes map[string]fasthttp.RequestHandler
	// Refused answers, in a route's own error format, a request to that route that the HTTP server
	// refused while reading it (see ErrorHandler); status is 400, 408, 413 or 431. The function
	// sets the status and body and must not read the request body, which was not read in full.
	// Every key must be a key of Routes.
	Refused map[string]func(ctx *fasthttp.RequestCtx, status int)
	// Ready are the readiness checks of /readyz; any error answers 503.
	Ready []func() error
	// HSTS adds Strict-Transport-Security to every answer (set when the collector terminates TLS).
	HSTS bool
	// Now returns the time events are stamped with; nil stamps each event with the time its
	// request started (fasthttp's RequestCtx.Time). Tests set it.
	Now func() time.Time
}

// Server answers the collector's HTTP requests. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	metrics fasthttp.RequestHandler
	pool    sync.Pool
	// routes are cfg.Routes with their keys; prefixes the ones whose key ends in "/", longest
	// first.
	routes   map[string]route
	prefixes []route

	logThrottle atomic.Int64 // unix seconds of the last logged spool error
}

// Validate reports every missing or inconsistent part of c.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name    string
		missing bool
	}{
		{"Registry", c.Registry == nil}, {"Resolver", c.Resolver == nil}, {"UA", c.UA == nil},
		{"Bots", c.Bots == nil}, {"Salts", c.Salts == nil}, {"Spool", c.Spool == nil},
	} {
		if f.missing {
			errs = append(errs, fmt.Errorf("collector.Config.%s is required", f.name))
		}
	}
	for path := range c.Routes {
		if isOwnPath(path) {
			errs = append(errs, fmt.Errorf("collector.Config.Routes: %s is served by the collector itself", path))
		}
	}
	for path := range c.Refused {
		if _, ok := c.Routes[path]; !ok {
			errs = append(errs, fmt.Errorf("collector.Config.Refused: %s is not a route", path))
		}
	}
	return errors.Join(errs...)
}

// NewServer checks cfg and returns a Server. It registers the server's metrics on cfg.Registerer.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientRate == nil {
		s.cfg.ClientRate = new(ratelimit.Limiter) // limits nothing
	}
	if cfg.WSRate == nil {
		s.cfg.WSRate = new(ratelimit.Limiter)
	}
	m, err := newMetrics(cfg.Registerer, routeNames(cfg.Routes))
	if err != nil {
		return nil, err
	}
	s.m = m
	if cfg.Gatherer != nil {
		s.metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	s.pool.New = func() any { return &eventState{hot: s.m.hot.stripe()} }
	s.routes = make(map[string]route, len(cfg.Routes))
	for p, h := range cfg.Routes {
		r := route{key: p, h: h}
		s.routes[p] = r
		if strings.HasSuffix(p, "/") && p != "/" { // "/" is the page at the root only, not every path
			s.prefixes = append(s.prefixes, r)
		}
	}
	sort.Slice(s.prefixes, func(i, j int) bool { return len(s.prefixes[i].key) > len(s.prefixes[j].key) })
	return s, nil
}

func isOwnPath(p string) bool {
	switch p {
	case "/api/event", "/healthz", "/readyz", "/metrics":
		return true
	}
	return false
}

func routeNames(routes map[string]fasthttp.RequestHandler) []string {
	names := make([]string, 0, len(routes))
	for p := range routes {
		names = append(names, p)
	}
	return names
}

// Handler returns the request router: /api/event, /healthz, /readyz, /metrics and the injected
// routes; anything else is 404.
func (s *Server) Handler() fasthttp.RequestHandler { return s.serve }

func (s *Server) serve(ctx *fasthttp.RequestCtx) {
	s.securityHeaders(ctx)
	path := ctx.Path()
	switch string(path) {
	case "/api/event":
		s.event(ctx)
		s.m.code(handlerEvent, ctx.Response.StatusCode())
		return
	case "/healthz":
		plain(ctx, fasthttp.StatusOK, "ok")
		s.m.code(handlerHealthz, ctx.Response.StatusCode())
		return
	case "/readyz":
		s.ready(ctx)
		s.m.code(handlerReadyz, ctx.Response.StatusCode())
		return
	case "/metrics":
		if s.metrics != nil {
			s.metrics(ctx)
			s.m.code(handlerMetrics, ctx.Response.StatusCode())
			return
		}
	default:
		if r, ok := s.routeFor(path); ok {
			r.h(ctx)
			ctx.Response.Header.DelAllCookies()
			s.m.code(r.key, ctx.Response.StatusCode())
			return
		}
	}
	plain(ctx, fasthttp.StatusNotFound, "not found")
	s.m.code(handlerOther, fasthttp.StatusNotFound)
}

// route is one of Config.Routes: its key, which is also its metric label, and its handler.
type route struct {
	key string
	h   fasthttp.RequestHandler
}

// routeFor returns the route that answers path: the one keyed by path itself, or else the longest
// prefix route that path is under. It does not allocate.
func (s *Server) routeFor(path []byte) (route, bool) {
	if r, ok := s.routes[string(path)]; ok {
		return r, true
	}
	for _, r := range s.prefixes {
		if bytes.HasPrefix(path, []byte(r.key)) {
			return r, true
		}
	}
	return route{}, false
}

// securityHeaders sets the headers every answer carries. The CSP forbids everything: no answer of
// the collector is a document. CORP cross-origin lets any site load the script.
// The names are canonical already: SetCanonical skips the normalization Set does on every call,
// which was a tenth of the event handler's CPU in BenchmarkEventHandler.
func (s *Server) securityHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	for _, kv := range securityHeaderValues {
		h.SetCanonical(kv[0], kv[1])
	}
	if s.cfg.HSTS {
		h.SetCanonical(hstsHeader[0], hstsHeader[1])
	}
}

var (
	securityHeaderValues = [][2][]byte{
		{[]byte("X-Content-Type-Options"), []byte("nosniff")},
		{[]byte("X-Frame-Options"), []byte("DENY")},
		{[]byte("Referrer-Policy"), []byte("no-referrer")},
		{[]byte("Content-Security-Policy"), []byte("default-src 'none'; frame-ancestors 'none'")},
		{[]byte("Cross-Origin-Resource-Policy"), []byte("cross-origin")},
	}
	hstsHeader = [2][]byte{[]byte("Strict-Transport-Security"), []byte("max-age=31536000")}

	// Names and values the event handler sets on every answer.
	headerVary   = []byte("Vary")
	headerOrigin = []byte("Origin")
	headerACAO   = []byte("Access-Control-Allow-Origin")

	// Request headers the event handler reads, in the canonical form the server normalizes every
	// name to, so that PeekCanonical finds them without normalizing the key again per request.
	// headerOrigin above is read too. headerPurposes are the prefetch hints, in the order the
	// first present one wins.
	headerAcceptLanguage = []byte("Accept-Language")
	headerPurposes       = [][]byte{[]byte("Sec-Purpose"), []byte("Purpose"), []byte("X-Purpose"), []byte("X-Moz")}
)

func (s *Server) ready(ctx *fasthttp.RequestCtx) {
	var failed []error
	for _, check := range s.cfg.Ready {
		if err := check(); err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) == 0 {
		plain(ctx, fasthttp.StatusOK, "ready")
		return
	}
	s.log.Warn("not ready", "err", errors.Join(failed...))
	plain(ctx, fasthttp.StatusServiceUnavailable, "not ready: "+strconv.Itoa(len(failed))+" check(s) failing")
}

func plain(ctx *fasthttp.RequestCtx, code int, body string) {
	ctx.SetStatusCode(code)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(body)
}

// peerAddr returns the socket peer of ctx as a netip.Addr without allocating.
func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}
