package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/collector"
	"github.com/kyomi/collector/collector/bot"
	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/query"
	"github.com/kyomi/collector/collector/ratelimit"
	"github.com/kyomi/collector/collector/retention"
	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/dashboard"
	"github.com/kyomi/collector/salt"
	"github.com/kyomi/collector/script"
	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/engine"
	"github.com/kyomi/collector/sink/spool"
)

// serveCmd runs the collector until SIGTERM or SIGINT, then drains: it stops accepting, lets the
// requests in flight finish, flushes the spool into ClickHouse and closes the store, all within
// -shutdown-timeout. Events the flush could not deliver stay in the spool for the next start.
func serveCmd(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c, _, code := loadConfig("serve", args, env, stderr)
	if code >= 0 {
		return code
	}
	log := newLogger(stdout, c.LogLevel)
	if err := serve(ctx, c, log); err != nil {
		log.Error("collector stopped", "err", err)
		fmt.Fprintf(stderr, "collector: %v\n", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, c *config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if c.Pprof != "" {
		stopPprof, err := startPprof(ctx, c.Pprof, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	reg := prometheus.NewRegistry()
	// Our own names start collector_; the runtime's and the process's keep client_golang's standard
	// names (go_goroutines, process_resident_memory_bytes, ...), which every Go dashboard and alert
	// expects (DESIGN 3.6).
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("cannot create data directory: %w", err)
	}

	registry, err := workspace.Open(c.ConfigPath, workspace.RegistryConfig{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer registry.Close()

	store, eng, err := openStore(ctx, c, log, reg)
	if err != nil {
		return err
	}
	if eng != nil {
		defer eng.Stop() // after the store closes
	}
	defer store.Close()

	var salts interface {
		salt.Source
		Ready() error
		Close() error
	}
	if c.Redis != "" {
		redis.SetLogger(redisLogger{log})
		// The first fetch is bounded; an unreachable Redis is retried in the background.
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		salts, err = salt.NewRedis(sctx, c.Redis, salt.WithLogger(log), salt.WithRegisterer(reg))
		cancel()
	} else {
		salts, err = salt.NewLocal(c.DataDir, salt.WithLogger(log), salt.WithRegisterer(reg))
	}
	if err != nil {
		return fmt.Errorf("cannot start the salt source: %w", err)
	}
	defer salts.Close()

	sp, err := spool.Open(spool.Config{
		Dir: filepath.Join(c.DataDir, "spool"), MaxBytes: c.SpoolMaxBytes, SyncInterval: c.SpoolSyncInterval,
		RingDir: c.SpoolRingDir, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("cannot open the spool: %w", err)
	}
	shipper, err := sink.NewShipper(sp, store, sink.ShipperConfig{
		MaxRows: c.BatchRows, MaxAge: c.BatchAge, Logger: log, Registerer: reg,
	})
	if err != nil {
		sp.Close()
		return err
	}
	// The shutdown below ships and closes both; a start that fails after this point (a bad GeoIP
	// file, a refused Connect token, a busy port) must not leave the shipper running on the spool.
	drained := false
	defer func() {
		if drained {
			return
		}
		fctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
		defer cancel()
		_ = shipper.Close(fctx)
		sp.Close()
	}()

	// Stored rows follow their workspace's tier: checked at start, after each reload that changes a
	// retention (once the events accepted under the old tier are flushed) and hourly.
	keeper := retention.NewKeeper(store, registry, log, reg, 2*c.BatchAge+time.Second)
	kctx, stopKeeper := context.WithCancel(ctx)
	keeperDone := make(chan struct{})
	go func() { defer close(keeperDone); keeper.Run(kctx) }()
	defer func() { stopKeeper(); <-keeperDone }() // before the store closes

	var geo *enrich.GeoDB
	if c.GeoIP != "" {
		if geo, err = enrich.OpenGeoDBs(c.geoFiles()); err != nil {
			return err
		}
		defer geo.Close()
	}
	filter, err := bot.NewFilter(bot.Config{Strict: c.BotStrict, DatacenterFile: c.Datacenters})
	if err != nil {
		return err
	}

	routes := map[string]fasthttp.RequestHandler{}
	refused := map[string]func(*fasthttp.RequestCtx, int){}
	script.Register(routes)
	dashboard.Register(routes)
	qh, err := newQueryHandler(ctx, c, store, log, reg)
	if err != nil {
		return err
	}
	defer qh.Close()
	routes["/api/query"] = qh.HTTP
	refused["/api/query"] = qh.HTTPRefused
	routes["/connect/v1"] = qh.WebSocket
	if c.JWKS == "" {
		log.Info("query path trusts the data directory's own key (collector token issue)", "key", filepath.Join(localKeyDir(c), query.LocalKeyFile))
	}
	if c.ConnectToken != "" {
		stopAgent, err := startConnectAgent(ctx, c, qh.Handler, log, reg)
		if err != nil {
			return err
		}
		defer stopAgent()
	}

	uaParser := enrich.NewUAParser(c.UACacheSize)
	readyChecks := []func() error{salts.Ready, spoolReady(sp)}
	overflows := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "collector_ratelimit_overflows_total",
		Help: "Keys let through untracked because a rate limiter's table was full of busy keys (a flood of distinct clients).",
	})
	reg.MustRegister(overflows,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "collector_ready",
			Help: "1 when the collector can accept and persist events (what /readyz answers), 0 when not.",
		}, func() float64 {
			for _, f := range readyChecks {
				if f() != nil {
					return 0
				}
			}
			return 1
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "collector_ua_cache_hits_total", Help: "User-agent parses answered from the cache.",
		}, func() float64 { h, _ := uaParser.CacheStats(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "collector_ua_cache_misses_total", Help: "User-agent parses that had to parse (cache misses).",
		}, func() float64 { _, m := uaParser.CacheStats(); return float64(m) }),
	)

	clientCfg, wsCfg := ratelimit.DefaultClientConfig, ratelimit.DefaultWorkspaceConfig
	clientCfg.Rate, wsCfg.Rate = c.RateClient, c.RateWorkspace
	clientRate, err := ratelimit.New(clientCfg, overflows.Inc)
	if err != nil {
		return err
	}
	wsRate, err := ratelimit.New(wsCfg, overflows.Inc)
	if err != nil {
		return err
	}
	srv, err := collector.NewServer(collector.Config{
		Logger:     log,
		Registerer: reg,
		Gatherer:   reg,
		Registry:   registry,
		Resolver:   clientip.NewResolver(c.trusted),
		UA:         uaParser,
		Geo:        geo,
		Bots:       filter,
		Salts:      salts,
		Spool:      sp,
		ClientRate: clientRate,
		WSRate:     wsRate,
		Routes:     routes,
		Refused:    refused,
		Ready:      readyChecks,
		HSTS:       c.TLSCert != "",
	})
	if err != nil {
		return err
	}
	// Bodies over collector.MaxRequestBytes (the query path's bound; the event handler refuses
	// over collector.MaxBodyBytes itself) and headers over 8 KiB are answered 413 and 431 by
	// srv.ErrorHandler.
	hs := srv.HTTPServer(fasthttpLogger{log})
	hs.Name = "kyomi-collector"
	hs.ReadTimeout = c.ReadTimeout
	hs.WriteTimeout = c.WriteTimeout
	hs.IdleTimeout = c.IdleTimeout
	hs.Concurrency = c.MaxConns
	hs.MaxConnsPerIP = c.MaxConnsPerIP
	hs.NoDefaultServerHeader = true
	hs.CloseOnShutdown = true
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "collector_http_open_connections", Help: "Client connections open now (at most -max-conns).",
		}, func() float64 { return float64(hs.GetOpenConnectionsCount()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "collector_http_rejected_connections_total",
			Help: "Connections answered 503 and closed because -max-conns connections were open (overload shed).",
		}, func() float64 { return float64(hs.GetRejectedConnectionsCount()) }),
	)

	var certs *certReloader
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", c.Listen, err)
	}
	if c.TLSCert != "" {
		if certs, err = newCertReloader(c.TLSCert, c.TLSKey); err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, certs.tlsConfig(c.TLSMinVersion))
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			_ = registry.Reload() // logs and counts a failure itself; the previous configuration stays
			if certs != nil {
				if err := certs.Reload(); err != nil {
					log.Error("TLS certificate reload failed; the previous certificate stays in use", "err", err)
				} else {
					log.Info("TLS certificate reloaded")
				}
			}
		}
	}()

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	started := []any{"listen", ln.Addr().String(), "tls", certs != nil,
		"store", storeKind(c), "salt", saltKind(c), "workspaces", registry.Len(),
		"geoip", geo.DatabaseType(), "datacenter_ranges", filter.DatacenterRanges()}
	if eng != nil {
		started = append(started, "engine_http", eng.HTTPAddr(), "engine_native", eng.NativeAddr())
	}
	log.Info("collector started", started...)

	select {
	case err := <-served:
		drained = true
		fctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
		defer cancel()
		if ferr := shipper.Close(fctx); ferr != nil {
			log.Warn("events left in the spool for the next start", "err", ferr)
		}
		sp.Close()
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests and flushing the spool", "timeout", c.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if err := hs.ShutdownWithContext(sctx); err != nil {
		log.Warn("requests still running at the shutdown deadline", "err", err)
	}
	// Shutdown closes only the listeners Serve has registered: a signal that came before the Serve
	// goroutine ran would leave it blocked in Accept. Closing ln ends it either way.
	_ = ln.Close() // already closed by Shutdown in the common case
	select {
	case <-served:
	case <-sctx.Done():
	}
	var errs []error
	drained = true
	if err := shipper.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("cannot flush every spooled event (they stay in the spool for the next start): %w", err))
	}
	if err := sp.Close(); err != nil {
		errs = append(errs, err)
	}
	log.Info("collector stopped")
	return errors.Join(errs...)
}

func storeKind(c *config) string {
	if c.ClickHouse == "" {
		return "embedded"
	}
	return "server"
}

func saltKind(c *config) string {
	if c.Redis == "" {
		return "local"
	}
	return "redis"
}

// openStore opens the configured ClickHouse store. Without -clickhouse it first starts the
// managed engine (returned, to be stopped after the store closes) and writes to it like to any
// server. With -clickhouse a server that does not answer yet is not an error: the store opens
// and migrates in the background while events wait in the spool (sink.Pending).
func openStore(ctx context.Context, c *config, log *slog.Logger, reg prometheus.Registerer) (sink.Store, *engine.Engine, error) {
	schema := sink.SchemaConfig{Cluster: c.ClickHouseCluster}
	if c.ClickHouse == "" {
		e, err := startEngine(ctx, c, log, reg)
		if err != nil {
			return nil, nil, err
		}
		store, err := sink.OpenServer(e.DSN("default"))
		if err == nil {
			err = migrate(ctx, store, schema)
		}
		if err != nil {
			e.Stop()
			return nil, nil, err
		}
		return store, e, nil
	}
	store := sink.OpenPending(func(ctx context.Context) (sink.Store, error) {
		s, err := sink.OpenServer(c.ClickHouse, sink.ServerConfig{AsyncInsert: c.ClickHouseAsync})
		if err != nil {
			return nil, err
		}
		if c.ClickHouseVerify {
			err = sink.VerifySchema(ctx, s, schema)
		} else {
			err = migrate(ctx, s, schema)
		}
		if err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	}, 30*time.Second, log)
	if err := store.FirstErr(); errors.Is(err, sink.ErrSchemaMismatch) || errors.Is(err, sink.ErrSchemaTooNew) {
		store.Close()
		return nil, nil, err
	}
	// The store's answers share the process with ingest: none may pass the
	// query path's result limit, whatever reads it.
	store.SetMaxResultBytes(query.DefaultLimits.MaxResultBytes)
	return store, nil, nil
}

// migrate applies the schema migrations and bounds the store's answers.
func migrate(ctx context.Context, store sink.Store, schema sink.SchemaConfig) error {
	store.SetMaxResultBytes(query.DefaultLimits.MaxResultBytes)
	mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return sink.Migrate(mctx, store, schema)
}

// startEngine starts the managed engine of the data directory (the collector's own executable
// as launcher, `collector engine`) and records its addresses there.
func startEngine(ctx context.Context, c *config, log *slog.Logger, reg prometheus.Registerer) (*engine.Engine, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the collector executable to run the engine: %w", err)
	}
	cfg, err := engine.Managed(c.DataDir, []string{exe, "engine"}, engine.Ports{Native: c.EngineNativePort, HTTP: c.EngineHTTPPort})
	if err != nil {
		return nil, err
	}
	cfg.Logger, cfg.Registerer = log, reg
	e, err := engine.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := e.RecordAddresses(); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// fasthttpLogger sends fasthttp's own messages (connection errors and the like) through slog. They
// can carry a peer address, so they are logged at debug level without arguments.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("http server", "msg", format)
}

// spoolReady is the readiness check of the spool: events can be made durable.
func spoolReady(sp *spool.Spool) func() error {
	return func() error {
		if !sp.Ready() {
			return errors.New("the spool cannot make events durable (full or failing)")
		}
		return nil
	}
}

// redisLogger routes go-redis's process-wide messages (dial failures and the like) through slog
// as JSON. Only the format string is logged: its arguments can hold addresses.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, _ ...any) {
	l.log.Warn("redis client", "msg", format)
}
