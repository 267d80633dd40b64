package query

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// AgentConfig configures an Agent. A zero duration takes its value from
// DefaultAgentConfig. NewAgent refuses an AgentConfig that Validate refuses.
type AgentConfig struct {
	// Token returns the Kyomi Connect token; required. The agent calls it
	// before every dial, the first and each reconnect, so a source that
	// reads a file picks up a rotated token at the next connection, while a
	// connection already open keeps the token it was dialed with (its
	// workspace, its re-checks) until it drops or that token is refused.
	// The token's url claim is where the agent dials; it is sent as
	// "Authorization: Bearer" and never logged. Token's errors must not
	// carry the token. It is called from one goroutine at a time.
	Token func() (string, error)
	// A lost or failed connection is retried after a wait that starts at
	// BackoffBase and doubles up to BackoffMax, each wait jittered down by
	// up to half so that many collectors cut off together do not return
	// together.
	BackoffBase, BackoffMax time.Duration
	// StableAfter is how long a connection must stay up for the next wait
	// to start again from BackoffBase.
	StableAfter time.Duration
	// PingInterval is the period of the WebSocket pings the agent sends;
	// a connection that answers nothing for two intervals is dropped and
	// redialed. The token is verified again at each ping too.
	PingInterval time.Duration
	// HandshakeTimeout bounds dialing, TLS and the upgrade.
	HandshakeTimeout time.Duration
	// TLS is the client TLS configuration for wss:// URLs; nil means the
	// system roots.
	TLS *tls.Config
	// Logger receives connect and disconnect events; nil means the
	// Handler's logger.
	Logger *slog.Logger
	// Registerer receives the agent's metrics; required.
	Registerer prometheus.Registerer
}

// DefaultAgentConfig holds the durations agent mode runs with.
var DefaultAgentConfig = AgentConfig{
	// 1s..60s: a restarted backend sees its agents within a second, a long
	// outage costs one dial a minute per collector.
	BackoffBase: time.Second,
	BackoffMax:  60 * time.Second,
	// 30s: a connection that survives the backend's start-up and a first
	// ping round is healthy; one that keeps dropping sooner keeps backing
	// off.
	StableAfter: 30 * time.Second,
	// 30s: NAT gateways forget idle flows silently, commonly after a few
	// minutes; two missed pings (a minute) drop a dead connection.
	PingInterval: 30 * time.Second,
	// 10s: dial, TLS and upgrade take well under a second to a live
	// backend; a stuck one is retried with backoff.
	HandshakeTimeout: 10 * time.Second,
}

// Validate reports every missing or invalid field of c.
func (c AgentConfig) Validate() error {
	var errs []error
	if c.Token == nil {
		errs = append(errs, errors.New("query.AgentConfig.Token is required"))
	}
	if c.Registerer == nil {
		errs = append(errs, errors.New("query.AgentConfig.Registerer is required"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BackoffBase", c.BackoffBase}, {"BackoffMax", c.BackoffMax}, {"StableAfter", c.StableAfter}, {"PingInterval", c.PingInterval}, {"HandshakeTimeout", c.HandshakeTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("query.AgentConfig.%s must be >= 0 (0 takes the default), got %s", d.name, d.v))
		}
	}
	if d := c.withDefaults(); d.BackoffMax < d.BackoffBase {
		errs = append(errs, fmt.Errorf("query.AgentConfig.BackoffMax %s must not be below BackoffBase %s", d.BackoffMax, d.BackoffBase))
	}
	return errors.Join(errs...)
}

// withDefaults fills every zero duration from DefaultAgentConfig.
func (c AgentConfig) withDefaults() AgentConfig {
	d := DefaultAgentConfig
	for _, f := range []struct{ v, def *time.Duration }{
		{&c.BackoffBase, &d.BackoffBase}, {&c.BackoffMax, &d.BackoffMax}, {&c.StableAfter, &d.StableAfter},
		{&c.PingInterval, &d.PingInterval}, {&c.HandshakeTimeout, &d.HandshakeTimeout},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	return c
}

// ErrBadConnectURL is returned, wrapped, when a token's url claim is not a
// ws:// or wss:// URL the agent can dial.
var ErrBadConnectURL = errors.New("the token's url claim must be a ws:// or wss:// URL with a host")

// Refused reports whether err says the token itself cannot be used (the
// Verifier refused it, or its url is not a ws:// or wss:// URL), as opposed
// to a check that could not run now (keys or revocation list unreachable,
// token source unreadable). The Agent never dials with a refused token; it
// asks its token source again after the next backoff wait.
func Refused(err error) bool {
	var ae *AuthError
	return errors.As(err, &ae) || errors.Is(err, ErrBadConnectURL)
}

// Agent is agent mode: instead of waiting for Kyomi Connect to connect to
// /connect/v1, the collector dials the backend named by its token's url
// claim, the way Connect's own agents do, and answers the backend's
// request messages exactly as /connect/v1 would, scoped to the workspace of
// the token each connection was dialed with. A collector behind NAT can so
// serve reports with no inbound port. Run is called once; the Agent stops
// when its context ends or its Handler is closed.
type Agent struct {
	h          *Handler
	cfg        AgentConfig
	log        *slog.Logger
	wid        string // workspace of the last token dialed with; Run's goroutine only
	dialer     *websocket.Dialer
	connected  prometheus.Gauge
	reconnects prometheus.Counter
}

// NewAgent validates cfg, registers the agent metrics and returns an Agent
// that serves requests with h. It neither verifies the token nor dials:
// see Check and Run.
func (h *Handler) NewAgent(cfg AgentConfig) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Agent{
		h: h, cfg: cfg, log: cfg.Logger,
		dialer: &websocket.Dialer{
			Proxy: http.ProxyFromEnvironment, HandshakeTimeout: cfg.HandshakeTimeout, TLSClientConfig: cfg.TLS,
			ReadBufferSize: 4096, WriteBufferSize: 4096,
		},
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "collector_connect_agent_connected", Help: "1 while the connect agent holds a connection to the Kyomi Connect backend, 0 otherwise.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_connect_agent_reconnects_total", Help: "Connection attempts of the connect agent after its first (each follows a lost or failed connection).",
		}),
	}
	if a.log == nil {
		a.log = h.log
	}
	for _, c := range []prometheus.Collector{a.connected, a.reconnects} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("cannot register connect agent metrics: %w", err)
		}
	}
	return a, nil
}

// Check asks the token source for the current token and verifies it with
// the Handler's Verifier, as CheckConnectToken does. Run does the same
// before every connection.
func (a *Agent) Check(ctx context.Context) (*Claims, *url.URL, error) {
	_, c, u, err := a.load(ctx)
	return c, u, err
}

// load asks the token source for the current token and verifies it. Its
// errors never carry the token.
func (a *Agent) load(ctx context.Context) (token string, c *Claims, u *url.URL, err error) {
	token, err = a.cfg.Token()
	if err != nil {
		return "", nil, nil, fmt.Errorf("cannot get the connect token: %w", err)
	}
	c, u, err = CheckConnectToken(ctx, a.h.ver, token)
	if err != nil {
		return "", nil, nil, err
	}
	return token, c, u, nil
}

// CheckConnectToken verifies a Connect token for agent mode with v
// (signature, exp when present, revocation) and its url claim, and returns
// the claims and the URL to dial. Refused(err) tells a token that cannot be
// used from a check that could not run now. Errors never carry the token or
// the URL.
func CheckConnectToken(ctx context.Context, v *Verifier, token string) (*Claims, *url.URL, error) {
	c, err := v.Verify(ctx, token)
	if err != nil {
		if Refused(err) {
			return nil, nil, fmt.Errorf("connect token refused: %w", err)
		}
		return nil, nil, err
	}
	u, err := connectURL(c.URL)
	if err != nil {
		return nil, nil, err
	}
	return c, u, nil
}

// connectURL parses the url claim. Its errors never repeat the URL, whose
// query string may carry a credential.
func connectURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: it does not parse", ErrBadConnectURL)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return nil, fmt.Errorf("%w: got scheme %q", ErrBadConnectURL, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: it has no host", ErrBadConnectURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: it must not carry a user name or password", ErrBadConnectURL)
	}
	return u, nil
}

// logURL is the backend as logged: scheme, host and path, without the
// query string.
func logURL(u *url.URL) string {
	return u.Scheme + "://" + u.Host + u.Path
}

// Run connects to the backend and serves it, reconnecting with backoff when
// the connection fails or is lost, until ctx ends or the Handler closes; it
// then returns nil. Each dial takes a fresh token from the token source. The
// token of a connection is verified again at every ping and before every
// request as on /connect/v1, so a revocation refuses the next request at
// once and hangs up within a ping. A token that is refused, or a source
// that fails, is logged (never the token) and retried after the backoff
// wait: the agent dials again as soon as the source yields a good token,
// so an operator fixes a revoked or expired token by replacing it, with no
// restart. Run returns an error only if the Handler is already closed.
func (a *Agent) Run(ctx context.Context) error {
	if !a.h.enter() {
		return errors.New("cannot run the connect agent: the query handler is closed")
	}
	defer a.h.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(a.h.ctx, cancel)()

	b := backoff{base: a.cfg.BackoffBase, max: a.cfg.BackoffMax}
	for first := true; ; first = false {
		if !first {
			a.reconnects.Inc()
		}
		up, err := a.serveOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if up >= a.cfg.StableAfter {
			b.reset()
		}
		wait := b.next()
		switch {
		case Refused(err):
			a.log.Error("connect agent token refused; retrying with the token source's next token", "err", err, "retry_in", wait.String())
		case up == 0:
			a.log.Warn("connect agent cannot connect; retrying", "err", err, "retry_in", wait.String())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// serveOnce takes the current token, verifies it, dials and serves one
// connection with it until it ends. up is how long the connection was open
// (0: it never opened).
func (a *Agent) serveOnce(ctx context.Context) (up time.Duration, err error) {
	token, c, u, err := a.load(ctx)
	if err != nil {
		return 0, err
	}
	// A rotated token may name another workspace: the token defines the
	// scope, so it is served as is, and the change is logged.
	if a.wid != "" && c.WID != a.wid {
		a.log.Warn("connect agent token names another workspace than the previous one", "previous_workspace", a.wid, "workspace", c.WID)
	}
	a.wid = c.WID
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	conn, resp, err := a.dialer.DialContext(ctx, u.String(), hdr)
	if err != nil {
		if resp != nil {
			return 0, fmt.Errorf("connect backend refused the upgrade with status %d", resp.StatusCode)
		}
		return 0, fmt.Errorf("cannot dial the connect backend: %w", err)
	}
	start := time.Now()
	a.connected.Set(1)
	a.log.Info("connect agent connected", "backend", logURL(u), "workspace", c.WID)

	idle := 2 * a.cfg.PingInterval
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(idle)) })
	cctx, cancel := context.WithCancel(ctx)
	var refused error // set by the pinger before it cancels cctx
	var pinger sync.WaitGroup
	pinger.Go(func() {
		t := time.NewTicker(a.cfg.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-t.C:
			}
			// A backend may keep an idle connection for days: the token is checked
			// again here too, so a revoked or expired one hangs up within a ping.
			if _, _, err := CheckConnectToken(cctx, a.h.ver, token); Refused(err) {
				refused = err
				cancel()
				return
			}
			// WriteControl may run concurrently with the answers' writes.
			if conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(a.cfg.PingInterval)) != nil {
				return
			}
		}
	})
	err = a.h.serveConn(cctx, conn, token, idle)
	cancel()
	pinger.Wait()
	if refused != nil {
		err = refused
	}
	a.connected.Set(0)
	up = time.Since(start)
	if err == nil {
		err = ctx.Err()
	}
	a.log.Info("connect agent disconnected", "backend", logURL(u), "up", up.String(), "err", err)
	return up, err
}

// backoff is the wait before the next connection attempt: base doubling up
// to max, minus a random part of up to half ("equal jitter", so a wait is
// never shorter than half its step).
type backoff struct {
	base, max time.Duration
	step      time.Duration // the current step; 0 before the first wait
}

// next returns the wait and doubles the step for the following one.
func (b *backoff) next() time.Duration {
	if b.step == 0 {
		b.step = b.base
	}
	d := b.step
	if b.step < b.max {
		b.step = min(2*b.step, b.max)
	}
	return d - rand.N(d/2+1)
}

// reset starts the waits again from base.
func (b *backoff) reset() { b.step = 0 }
