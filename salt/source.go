package salt

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a Local or Redis source.
type Option func(*config)

// config is the configuration shared by both sources, validated once by
// newCore.
type config struct {
	clock    func() time.Time
	logger   *slog.Logger
	reg      prometheus.Registerer
	refresh  time.Duration
	retry    time.Duration
	prefetch time.Duration
	rootCAs  *x509.CertPool
	manual   bool // tests: no background loop, refresh is called by hand
}

// Defaults. A refresh every 10 s costs one or two Redis round trips per node
// and bounds how long an outage goes unseen in collector_salt_state and how
// long an emptied Redis stays empty; a retry a second while
// unavailable gets a node ready about a second after Redis returns; the
// prefetch hour lets Redis be flaky for up to an hour before midnight
// without any fallback.
const (
	DefaultRefreshInterval = 10 * time.Second
	DefaultRetryInterval   = time.Second
	DefaultPrefetch        = time.Hour
)

// WithClock replaces time.Now as the source's idea of the current time (for
// tests: the day, prefetch and 48 h expiry all follow it). The background
// loop still sleeps in real time.
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithLogger sets the logger; the default discards. The salt is never logged.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRegisterer registers the source's metrics (collector_salt_*) on reg.
// Without it no metric is registered.
func WithRegisterer(reg prometheus.Registerer) Option { return func(c *config) { c.reg = reg } }

// WithRefreshInterval sets how often the background loop re-checks the salts
// (default DefaultRefreshInterval); it must be positive.
func WithRefreshInterval(d time.Duration) Option { return func(c *config) { c.refresh = d } }

// WithRetryInterval sets how soon the loop tries again after a failed
// refresh (default DefaultRetryInterval, capped at the refresh interval); it
// must be positive.
func WithRetryInterval(d time.Duration) Option { return func(c *config) { c.retry = d } }

// WithPrefetch sets how long before midnight UTC tomorrow's salt is fetched
// (default DefaultPrefetch); it must lie in (0, 24h).
func WithPrefetch(d time.Duration) Option { return func(c *config) { c.prefetch = d } }

// WithRootCAs sets the certificate authorities a rediss:// server's
// certificate is verified against (default: the system's). Redis only.
func WithRootCAs(pool *x509.CertPool) Option { return func(c *config) { c.rootCAs = pool } }

func buildConfig(opts []Option) (config, error) {
	c := config{
		clock:    time.Now,
		refresh:  DefaultRefreshInterval,
		retry:    DefaultRetryInterval,
		prefetch: DefaultPrefetch,
	}
	for _, o := range opts {
		o(&c)
	}
	var errs []error
	if c.clock == nil {
		errs = append(errs, errors.New("clock must not be nil"))
	}
	if c.refresh <= 0 {
		errs = append(errs, fmt.Errorf("refresh interval must be positive, got %s", c.refresh))
	}
	if c.retry <= 0 {
		errs = append(errs, fmt.Errorf("retry interval must be positive, got %s", c.retry))
	}
	if c.prefetch <= 0 || c.prefetch >= 24*time.Hour {
		errs = append(errs, fmt.Errorf("prefetch must lie in (0, 24h), got %s", c.prefetch))
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("invalid salt source configuration: %w", errors.Join(errs...))
	}
	if c.retry > c.refresh {
		c.retry = c.refresh
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Values of collector_salt_state.
const (
	stateOK          = 0 // today's salt is known and confirmed by its store
	stateDegraded    = 1 // serving, but the store failed or today's salt is a fallback
	stateUnavailable = 2 // no salt for today: events cannot be hashed
)

// core is the machinery both sources share: the in-process cache read by
// the hot path, metrics and the background loop.
type core struct {
	cfg  config
	name string

	// set holds the cached salts (at most yesterday, today, tomorrow). It is
	// replaced, never modified, so the hot path is one atomic load and a scan.
	set atomic.Pointer[[]*Salt]
	mu  sync.Mutex // serialises writers of set

	confirmed atomic.Int64 // unix nanos when today's salt was last confirmed by its store
	state     atomic.Int32

	stateGauge  prometheus.Gauge
	fallbacks   prometheus.Counter
	redisErrors prometheus.Counter

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newCore(cfg config, name string) (*core, error) {
	c := &core{
		cfg:  cfg,
		name: name,
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		stateGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "collector_salt_state",
			Help: "State of the salt source: 0 ok, 1 degraded (store failing or node-local fallback salt in use, events still hashed), 2 unavailable (no salt for today, events refused).",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_salt_fallbacks_total",
			Help: "Node-local fallback salts made because Redis was unreachable when a UTC day began and its salt had not been prefetched.",
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_salt_redis_errors_total",
			Help: "Failed Redis operations while creating or reading a day's salt.",
		}),
	}
	empty := []*Salt{}
	c.set.Store(&empty)
	if cfg.reg == nil {
		return c, nil
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "collector_salt_source_info",
		Help: "Always 1; the source label says where the daily salt comes from (local file or redis).",
	}, []string{"source"})
	info.WithLabelValues(name).Set(1)
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "collector_salt_age_seconds",
		Help: "Seconds since today's salt was last confirmed by its store (read or written); grows while Redis is unreachable. 0 before any salt was confirmed.",
	}, c.ageSeconds)
	cs := []prometheus.Collector{info, age, c.stateGauge, c.fallbacks}
	if name == "redis" {
		cs = append(cs, c.redisErrors)
	}
	for _, col := range cs {
		if err := cfg.reg.Register(col); err != nil {
			return nil, fmt.Errorf("cannot register salt metrics: %w", err)
		}
	}
	return c, nil
}

func (c *core) ageSeconds() float64 {
	n := c.confirmed.Load()
	if n == 0 {
		return 0
	}
	return c.cfg.clock().Sub(time.Unix(0, n)).Seconds()
}

// lookup returns the cached salt of day d, or nil. It does not allocate.
func (c *core) lookup(d int64) *Salt {
	for _, s := range *c.set.Load() {
		if s.day == d {
			return s
		}
	}
	return nil
}

// putLocked caches s, replacing any salt of the same day. c.mu must be held.
func (c *core) putLocked(s *Salt) {
	old := *c.set.Load()
	next := make([]*Salt, 0, len(old)+1)
	for _, o := range old {
		if o.day != s.day {
			next = append(next, o)
		}
	}
	next = append(next, s)
	c.set.Store(&next)
}

// purgeLocked forgets every salt whose day began MaxAge or more before now.
// c.mu must be held.
func (c *core) purgeLocked(now time.Time) {
	old := *c.set.Load()
	next := make([]*Salt, 0, len(old))
	for _, o := range old {
		if !expired(o.day, now) {
			next = append(next, o)
		}
	}
	if len(next) != len(old) {
		c.set.Store(&next)
	}
}

// expired reports whether the salt of day d must be gone at now.
func expired(d int64, now time.Time) bool {
	return !now.Before(time.Unix(d*secondsPerDay, 0).Add(MaxAge))
}

// inWindow reports whether a salt for day d may be served or made at now:
// yesterday (until it expires), today or tomorrow.
func inWindow(d int64, now time.Time) bool {
	today := dayNumber(now)
	return d >= today-1 && d <= today+1 && !expired(d, now)
}

// prefetching reports whether now lies in the prefetch window before
// midnight, when tomorrow's salt is fetched too.
func (c *core) prefetching(now time.Time) bool {
	next := time.Unix((dayNumber(now)+1)*secondsPerDay, 0)
	return next.Sub(now) <= c.cfg.prefetch
}

func (c *core) setState(st int32, reason error) {
	old := c.state.Swap(st)
	c.stateGauge.Set(float64(st))
	if old == st {
		return
	}
	switch st {
	case stateOK:
		c.cfg.logger.Info("salt source ok", "source", c.name)
	case stateDegraded:
		c.cfg.logger.Warn("salt source degraded", "source", c.name, "err", errString(reason))
	default:
		c.cfg.logger.Error("salt source unavailable", "source", c.name, "err", errString(reason))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// wake asks the loop to refresh now, without blocking.
func (c *core) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run calls refresh until Close: every refresh interval, at each midnight
// and prefetch start, and after retry when refresh failed.
func (c *core) run(refresh func(context.Context) error, err error) {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-c.done:
		}
	}()
	// Go ≥ 1.23 timers: Reset after Stop never delivers a stale tick.
	t := time.NewTimer(c.cfg.refresh)
	defer t.Stop()
	for {
		wait := c.cfg.refresh
		if err != nil {
			wait = c.cfg.retry
		}
		now := c.cfg.clock()
		next := time.Unix((dayNumber(now)+1)*secondsPerDay, 0)
		for _, at := range []time.Time{next.Add(10 * time.Millisecond), next.Add(-c.cfg.prefetch)} {
			if d := at.Sub(now); d > 0 && d < wait {
				wait = d
			}
		}
		t.Reset(wait)
		select {
		case <-c.stop:
			return
		case <-c.kick:
			t.Stop()
		case <-t.C:
		}
		err = refresh(ctx)
	}
}

// startLoop runs refresh in the background until close; first is the result
// of the refresh made before, which decides how soon the loop tries again.
func (c *core) startLoop(refresh func(context.Context) error, first error) {
	if c.cfg.manual {
		close(c.done)
		return
	}
	go c.run(refresh, first)
}

// close stops the loop and waits for it.
func (c *core) close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		<-c.done
	})
}

// randomSalt makes a fresh salt for day d from crypto/rand.
func randomSalt(d int64) *Salt {
	var b [Size]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24: it crashes the program instead)
	return newSalt(d, b)
}
