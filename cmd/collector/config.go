package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/kyomi/collector/collector/clientip"
	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/query"
	"github.com/kyomi/collector/collector/ratelimit"
	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/spool"
)

// config is everything the collector binary is told at start: flags, each of which can also be
// given as the environment variable COLLECTOR_<NAME> (upper case, '-' becomes '_'). A flag on the
// command line wins over the environment.
type config struct {
	Listen            string
	ConfigPath        string
	DataDir           string
	ClickHouse        string
	ClickHouseCluster string
	ClickHouseAsync   bool
	ClickHouseVerify  bool
	EngineNativePort  int
	EngineHTTPPort    int
	Redis             string
	GeoIP             string
	TrustedProxies    string
	JWKS              string
	RevokedJTI        string
	ConnectToken      string
	TLSCert           string
	TLSKey            string
	TLSMinVersion     string
	LogLevel          string

	SpoolMaxBytes     int64
	SpoolSyncInterval time.Duration
	SpoolRingDir      string
	BatchRows         int
	BatchAge          time.Duration
	UACacheSize       int

	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	IdleTimeout     time.Duration
	MaxConns        int
	MaxConnsPerIP   int
	ShutdownTimeout time.Duration

	RateClient    float64
	RateWorkspace float64
	BotStrict     bool
	Datacenters   string

	Pprof string // loopback host:port serving net/http/pprof; empty = off

	TokenWID string        // token issue: the workspace the token reads
	TokenTTL time.Duration // token issue: lifetime; 0 = no exp

	trusted []netip.Prefix // parsed TrustedProxies, set by validate
}

// newFlagSet declares every flag of `serve` (and of the other subcommands, which share them)
// with its default; the comments on defaults say why the numbers are what they are.
func newFlagSet(name string, c *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Listen, "listen", ":8080", "address to serve HTTP (or HTTPS with -tls-cert) on, host:port")
	fs.StringVar(&c.ConfigPath, "config", "", "workspaces file (YAML: tiers and workspaces with their domains); reloaded on SIGHUP and when it changes")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory for the embedded ClickHouse data, the local salt and the spool")
	fs.StringVar(&c.ClickHouse, "clickhouse", "", "ClickHouse server DSN (clickhouse://user:pass@host:9000/analytics?secure=true); empty runs the embedded engine in -data-dir")
	fs.BoolVar(&c.ClickHouseAsync, "clickhouse-async-insert", false, "server mode: inserts use async_insert with wait_for_async_insert, so the server merges many nodes' batches into fewer parts and answers once they are written")
	fs.StringVar(&c.ClickHouseCluster, "clickhouse-cluster", "", "cluster name: migrations run ON CLUSTER with ReplicatedMergeTree tables and a Distributed events table")
	fs.IntVar(&c.EngineNativePort, "engine-native-port", 0, "without -clickhouse: pin the managed engine's loopback native-protocol port (1024..65535; with -engine-http-port), e.g. for Grafana's ClickHouse data source; 0 derives one from -data-dir")
	fs.IntVar(&c.EngineHTTPPort, "engine-http-port", 0, "without -clickhouse: pin the managed engine's loopback HTTP port (1024..65535; with -engine-native-port); 0 derives one from -data-dir")
	fs.BoolVar(&c.ClickHouseVerify, "clickhouse-verify-schema", false, "apply no migrations: check that the operator-managed schema has every table and column the collector needs (with -clickhouse-cluster: a Distributed events over events_local) and refuse to start otherwise")
	fs.StringVar(&c.Redis, "redis", "", "Redis URL (redis://[:pass@]host:6379/db or rediss:// for TLS) that shares the daily salt and revoked tokens across nodes; empty uses a local salt file")
	fs.StringVar(&c.GeoIP, "geoip", "", "GeoIP2/GeoLite2 or DB-IP .mmdb files (comma-separated, e.g. DB-IP's IPv4 and IPv6 files) for country, region and city; empty disables geo enrichment")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated CIDRs or addresses of proxies whose X-Forwarded-For/Forwarded headers are believed")
	fs.StringVar(&c.JWKS, "jwks", "", "URL or file of the JWKS holding the ES256 public keys that sign query tokens; empty trusts the data directory's own key (query/signing-key.pem), which `collector token issue` signs with")
	fs.StringVar(&c.ConnectToken, "connect-token", "", "file holding a Kyomi Connect token (JWT); the collector dials the ws:// or wss:// URL of its url claim and answers Connect requests for its workspace over that connection (agent mode: no inbound port); needs -jwks")
	fs.StringVar(&c.RevokedJTI, "revoked-jti", "", "file of revoked token ids (jti), one per line, reloaded when it changes; empty without -jwks: the data directory's query/revoked-jti, which `collector token revoke` writes; with -redis the set 'revoked_jti' is checked too")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate chain; with -tls-key serves HTTPS; reloaded on SIGHUP")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for -tls-cert")
	fs.StringVar(&c.TLSMinVersion, "tls-min-version", "1.3", "lowest TLS version accepted: 1.3 or 1.2")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error; logs are JSON on stdout")

	// The numbers of the spool, the batches, the UA cache and the rate limits are their packages'
	// defaults (spool.DefaultConfig, sink.DefaultShipperConfig, enrich.DefaultUACacheSize,
	// ratelimit.DefaultClientConfig and DefaultWorkspaceConfig), where comments say why.
	fs.Int64Var(&c.SpoolMaxBytes, "spool-max-bytes", spool.DefaultConfig.MaxBytes, "bytes the on-disk spool may hold before new events are refused with 503")
	fs.DurationVar(&c.SpoolSyncInterval, "spool-sync-interval", spool.DefaultConfig.SyncInterval, ">0 = store every event in the spool's ring in shared memory (/dev/shm) before its acknowledgement and fsync at this interval and before each insert: a crash of the process loses nothing, a crash of the machine at most this window; 0 = write and fsync before every acknowledgement (group commit): a crash of the machine loses nothing either")
	// The ring must outlive a crash of the process: /dev/shm does on a host and in a Kubernetes pod
	// (its emptyDir medium Memory too), not across a plain Docker container's restart.
	fs.StringVar(&c.SpoolRingDir, "spool-ring-dir", "", "with -spool-sync-interval > 0: directory of the spool's 8 MiB ring, where each event is stored before its acknowledgement, as kyomi-spool-<spool id>/ring (a directory of mode 0700 and a file of mode 0600 of the collector's user: anything else there stops the start); it must survive a crash of the process and should be a memory file system (tmpfs); empty = /dev/shm when it is a tmpfs, else the spool directory")
	fs.IntVar(&c.BatchRows, "batch-rows", sink.DefaultShipperConfig.MaxRows, "flush to ClickHouse after this many rows; each flush is one INSERT")
	fs.DurationVar(&c.BatchAge, "batch-age", sink.DefaultShipperConfig.MaxAge, "flush to ClickHouse when the oldest pending event is this old")
	fs.IntVar(&c.UACacheSize, "ua-cache-size", enrich.DefaultUACacheSize, "parsed user agents kept in memory (entries); real traffic has a long tail but a short head")

	// Finite timeouts cut slow clients (slowloris); a beacon is under 8 KiB and arrives at once.
	fs.DurationVar(&c.ReadTimeout, "read-timeout", 10*time.Second, "longest time to read one request, headers and body")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "longest time to write one answer")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 60*time.Second, "how long an idle keep-alive connection stays open")
	fs.IntVar(&c.MaxConns, "max-conns", 20000, "concurrent connections served; more are refused")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 0, "concurrent connections per peer address (0 = no limit; behind a load balancer every peer is the balancer)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, longest time to drain requests and flush the spool to ClickHouse")

	fs.Float64Var(&c.RateClient, "rate-client", ratelimit.DefaultClientConfig.Rate, "events per second one client (IP, IPv6 grouped by /64) may send before 429; 0 disables")
	fs.Float64Var(&c.RateWorkspace, "rate-workspace", ratelimit.DefaultWorkspaceConfig.Rate, "events per second one workspace may receive before 429; 0 disables")
	fs.BoolVar(&c.BotStrict, "bot-strict", false, "also drop events without an Accept-Language header (real browsers send one)")
	fs.StringVar(&c.Datacenters, "datacenter-ranges", "", "file of data-centre CIDRs, one per line; events from them are dropped as bots")
	if name == "token issue" {
		fs.StringVar(&c.TokenWID, "wid", "", "the workspace the token may read (its wid claim)")
		fs.DurationVar(&c.TokenTTL, "ttl", 0, "lifetime of the token, e.g. 720h; 0 = no expiry, as Kyomi Connect's own tokens (revoke it with `collector token revoke`)")
	}
	fs.StringVar(&c.Pprof, "pprof", "", "loopback host:port (e.g. 127.0.0.1:6060) serving Go profiles at /debug/pprof/ for load tests; empty (default) serves none")
	return fs
}

// envName is the environment variable that sets a flag.
func envName(flagName string) string {
	return "COLLECTOR_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig parses args, then fills every flag not given on the command line from its
// COLLECTOR_* variable, then validates. It returns every problem it found, not only the first.
func parseConfig(name string, args []string, env func(string) string, out io.Writer) (*config, *flag.FlagSet, error) {
	c := &config{}
	fs := newFlagSet(name, c, out)
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v := env(envName(f.Name))
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", envName(f.Name), err))
		}
	})
	if (name == "serve" || name == "config check") && c.ConfigPath == "" {
		errs = append(errs, errors.New("-config: must be set: the workspaces file says which domains may send events"))
	}
	errs = append(errs, c.validate()...)
	return c, fs, errors.Join(errs...)
}

// validate checks every setting and returns all problems; it never fixes a value.
func (c *config) validate() []error {
	var errs []error
	bad := func(flagName, format string, a ...any) {
		errs = append(errs, fmt.Errorf("-%s: %s", flagName, fmt.Sprintf(format, a...)))
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		bad("listen", "want host:port, got %q", c.Listen)
	}
	if c.DataDir == "" {
		bad("data-dir", "must not be empty")
	}
	if c.ConfigPath != "" {
		if st, err := os.Stat(c.ConfigPath); err != nil {
			bad("config", "cannot read workspaces file: %v", err)
		} else if st.IsDir() {
			bad("config", "%s is a directory, want a YAML file", c.ConfigPath)
		}
	}
	if c.ClickHouse != "" && !strings.HasPrefix(c.ClickHouse, "clickhouse://") && !strings.HasPrefix(c.ClickHouse, "tcp://") {
		bad("clickhouse", "want a clickhouse:// DSN")
	}
	if c.ClickHouseAsync && c.ClickHouse == "" {
		bad("clickhouse-async-insert", "needs -clickhouse: the embedded engine inserts synchronously")
	}
	if c.ClickHouseCluster != "" && c.ClickHouse == "" {
		bad("clickhouse-cluster", "needs -clickhouse: the embedded engine is a single node")
	}
	if c.EngineNativePort != 0 || c.EngineHTTPPort != 0 {
		switch {
		case c.ClickHouse != "":
			bad("engine-native-port", "needs the managed engine: it has no meaning with -clickhouse")
		case c.EngineNativePort == 0 || c.EngineHTTPPort == 0:
			bad("engine-native-port", "-engine-native-port and -engine-http-port go together")
		case c.EngineNativePort == c.EngineHTTPPort:
			bad("engine-native-port", "must differ from -engine-http-port, got %d for both", c.EngineNativePort)
		}
		for _, p := range []struct {
			name string
			port int
		}{{"engine-native-port", c.EngineNativePort}, {"engine-http-port", c.EngineHTTPPort}} {
			if p.port != 0 && (p.port < 1024 || p.port > 65535) {
				bad(p.name, "must be between 1024 and 65535, got %d", p.port)
			}
		}
	}
	if c.ClickHouseVerify && c.ClickHouse == "" {
		bad("clickhouse-verify-schema", "needs -clickhouse: the collector manages the embedded engine's schema")
	}
	if c.Redis != "" && !strings.HasPrefix(c.Redis, "redis://") && !strings.HasPrefix(c.Redis, "rediss://") && !strings.HasPrefix(c.Redis, "unix://") {
		bad("redis", "want a redis://, rediss:// or unix:// URL")
	}
	for _, g := range c.geoFiles() {
		if _, err := os.Stat(g); err != nil {
			bad("geoip", "cannot read %s", g)
		}
	}
	for _, f := range []struct{ name, path string }{{"revoked-jti", c.RevokedJTI}, {"datacenter-ranges", c.Datacenters}, {"tls-cert", c.TLSCert}, {"tls-key", c.TLSKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad(f.name, "cannot read %s", f.path)
		}
	}
	if c.JWKS != "" && !strings.HasPrefix(c.JWKS, "http://") && !strings.HasPrefix(c.JWKS, "https://") {
		if _, err := os.Stat(c.JWKS); err != nil {
			bad("jwks", "want an http(s) URL or a readable file, got %q", c.JWKS)
		}
	}
	if c.ConnectToken != "" {
		if c.JWKS == "" {
			bad("connect-token", "needs -jwks: the token is verified before it is used")
		}
		if _, err := query.ReadTokenFile(c.ConnectToken); err != nil {
			bad("connect-token", "%v", err)
		}
	}
	if p, err := clientip.ParsePrefixes(c.TrustedProxies); err != nil {
		bad("trusted-proxies", "%v", err)
	} else {
		c.trusted = p
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls-cert", "-tls-cert and -tls-key go together")
	}
	if c.TLSMinVersion != "1.3" && c.TLSMinVersion != "1.2" {
		bad("tls-min-version", "want 1.3 or 1.2, got %q", c.TLSMinVersion)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "want debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.SpoolMaxBytes < 8<<20 {
		bad("spool-max-bytes", "must be at least 8 MiB (8388608), got %d", c.SpoolMaxBytes)
	}
	if c.SpoolSyncInterval < 0 || c.SpoolSyncInterval > time.Minute {
		bad("spool-sync-interval", "must be between 0 and 1m, got %s", c.SpoolSyncInterval)
	}
	if c.SpoolRingDir != "" {
		if st, err := os.Stat(c.SpoolRingDir); err != nil || !st.IsDir() {
			bad("spool-ring-dir", "must be an existing directory, got %q", c.SpoolRingDir)
		}
	}
	if c.BatchRows < 1 || c.BatchRows > 1_000_000 {
		bad("batch-rows", "must be between 1 and 1000000, got %d", c.BatchRows)
	}
	if c.BatchAge < 10*time.Millisecond || c.BatchAge > 10*time.Minute {
		bad("batch-age", "must be between 10ms and 10m, got %s", c.BatchAge)
	}
	if c.UACacheSize < 0 {
		bad("ua-cache-size", "must not be negative")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"read-timeout", c.ReadTimeout}, {"write-timeout", c.WriteTimeout}, {"idle-timeout", c.IdleTimeout}, {"shutdown-timeout", c.ShutdownTimeout}} {
		if d.v <= 0 {
			bad(d.name, "must be positive, got %s", d.v)
		}
	}
	if c.MaxConns < 1 {
		bad("max-conns", "must be at least 1")
	}
	if c.MaxConnsPerIP < 0 {
		bad("max-conns-per-ip", "must not be negative")
	}
	if c.RateClient < 0 {
		bad("rate-client", "must not be negative")
	}
	if c.RateWorkspace < 0 {
		bad("rate-workspace", "must not be negative")
	}
	if c.TokenTTL < 0 {
		bad("ttl", "must not be negative, got %s", c.TokenTTL)
	}
	if c.Pprof != "" {
		if err := checkPprofAddr(c.Pprof); err != nil {
			bad("pprof", "%v", err)
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errs
}

// geoFiles lists the -geoip databases.
func (c *config) geoFiles() []string {
	var files []string
	for _, f := range strings.Split(c.GeoIP, ",") {
		if f = strings.TrimSpace(f); f != "" {
			files = append(files, f)
		}
	}
	return files
}
