package salt

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/redis/go-redis/v9"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/syncbuf"
	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/salt/redistest"
)

// node is one collector's salt source with its own metrics and logs.
type node struct {
	*Redis
	reg  *prometheus.Registry
	logs *syncBuffer
}

// syncBuffer collects log or process output while the test reads it.
type syncBuffer = syncbuf.Buffer

func newNode(t *testing.T, url string, clk *fakeClock, opts ...Option) *node {
	t.Helper()
	n := &node{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	all := append([]Option{WithClock(clk.now), WithRegisterer(n.reg), WithLogger(logger)}, opts...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	r, err := NewRedis(ctx, url, all...)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	n.Redis = r
	t.Cleanup(func() { _ = r.Close() })
	return n
}

func (n *node) state(t testing.TB) float64 {
	t.Helper()
	return testkit.Metric(t, n.reg, "collector_salt_state")
}

// metricsText renders the node's metrics in the exposition format.
func (n *node) metricsText(t testing.TB) []byte {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func rawClient(t *testing.T, addr string, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Redis expires keys by the real clock, so the fake days of these tests
// are shifted to start tomorrow (real time): "2026-11-23" below means the
// real tomorrow, and every key's EXAT lies in the future.
func rtime(t testing.TB, s string) time.Time {
	t.Helper()
	off := Day(time.Now()).AddDate(0, 0, 1).Sub(mustTime(t, "2026-11-23T00:00:00Z"))
	return mustTime(t, s).Add(off)
}

// rkey returns the Redis key of the shifted day (YYYY-MM-DD, see rtime).
func rkey(t testing.TB, day string) string {
	t.Helper()
	return KeyPrefix + DayKey(rtime(t, day+"T00:00:00Z"))
}

// rid is id at a shifted time.
func rid(t testing.TB, src Source, at string) uint64 {
	t.Helper()
	s, err := src.Salt(rtime(t, at))
	if err != nil {
		t.Fatalf("Salt(%s): %v", at, err)
	}
	return s.VisitorID("ws_acme", "acme.example", testIP, testUA)
}

func TestRedisNodesAgree(t *testing.T) {
	leakcheck.Register(t)
	addr, _ := redistest.Start(t)
	clk := newFakeClock(rtime(t, "2026-11-23T10:00:00Z"))
	a := newNode(t, "redis://"+addr, clk)
	b := newNode(t, "redis://"+addr, clk)
	for _, n := range []*node{a, b} {
		if err := n.Ready(); err != nil {
			t.Fatalf("Ready: %v", err)
		}
		if got := n.state(t); got != stateOK {
			t.Fatalf("state %v, want 0", got)
		}
	}
	if ia, ib := rid(t, a, "2026-11-23T10:00:00Z"), rid(t, b, "2026-11-23T10:00:00Z"); ia != ib {
		t.Fatalf("nodes disagree: %x vs %x", ia, ib)
	}
	// The key holds exactly the salt, and expires 48 h after its day began.
	c := rawClient(t, addr, 0)
	v, err := c.Get(t.Context(), rkey(t, "2026-11-23")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := a.Salt(rtime(t, "2026-11-23T10:00:00Z"))
	if !bytes.Equal(v, s.b[:]) {
		t.Fatal("redis holds another salt than the nodes use")
	}
	exp, err := c.ExpireTime(t.Context(), rkey(t, "2026-11-23")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := rtime(t, "2026-11-25T00:00:00Z"); exp != time.Duration(want.Unix())*time.Second {
		t.Fatalf("salt expires at %v, want %v", time.Unix(int64(exp/time.Second), 0).UTC(), want)
	}
	// A third node started later reads the same salt.
	if ic := rid(t, newNode(t, "redis://"+addr, clk), "2026-11-23T12:00:00Z"); ic != rid(t, a, "2026-11-23T12:00:00Z") {
		t.Fatal("late node disagrees")
	}
}

func TestRedisDayChangeAndPrefetch(t *testing.T) {
	leakcheck.Register(t)
	addr, _ := redistest.Start(t)
	clk := newFakeClock(rtime(t, "2026-11-23T22:00:00Z"))
	a := newNode(t, "redis://"+addr, clk, withManualRefresh())
	b := newNode(t, "redis://"+addr, clk, withManualRefresh())
	c := rawClient(t, addr, 0)
	day1 := rid(t, a, "2026-11-23T22:00:00Z")
	if n, _ := c.Exists(t.Context(), rkey(t, "2026-11-24")).Result(); n != 0 {
		t.Fatal("tomorrow's salt made before the prefetch window")
	}
	clk.set(rtime(t, "2026-11-23T23:00:00Z"))
	for _, n := range []*node{a, b} {
		if err := n.refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := c.Exists(t.Context(), rkey(t, "2026-11-24")).Result(); n != 1 {
		t.Fatal("tomorrow's salt not in redis after prefetch")
	}
	// Clock skew: node a is already past midnight while b is not; both
	// serve each day's salt from memory and agree on it.
	clk.set(rtime(t, "2026-11-24T00:00:00.5Z"))
	ia := rid(t, a, "2026-11-24T00:00:00.5Z")
	ib := rid(t, b, "2026-11-24T00:00:00.5Z")
	if ia != ib {
		t.Fatalf("nodes disagree after midnight: %x vs %x", ia, ib)
	}
	if ia == day1 {
		t.Fatal("visitor id did not change with the UTC day")
	}
	if rid(t, b, "2026-11-23T23:59:59.5Z") != day1 {
		t.Fatal("yesterday's salt not served just after midnight")
	}
	if got := testkit.Metric(t, a.reg, "collector_salt_fallbacks_total"); got != 0 {
		t.Fatalf("fallbacks %v, want 0", got)
	}
	// 48 h after 2026-11-23 began, its salt is gone from every cache and from Redis.
	clk.set(rtime(t, "2026-11-25T00:00:00Z"))
	for _, n := range []*node{a, b} {
		if err := n.refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Salt(rtime(t, "2026-11-23T12:00:00Z")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("expired salt still served: err %v", err)
		}
	}
	ttl, err := c.TTL(t.Context(), rkey(t, "2026-11-23")).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The real clock is not the fake one: check the expiry instant instead.
	exp, _ := c.ExpireTime(t.Context(), rkey(t, "2026-11-23")).Result()
	if exp != time.Duration(rtime(t, "2026-11-25T00:00:00Z").Unix())*time.Second {
		t.Fatalf("salt:2026-11-23 expires at %v (ttl %v), want 2026-11-25T00:00:00Z", exp, ttl)
	}
}

func TestRedisRestartUnderLoad(t *testing.T) {
	leakcheck.Register(t)
	addr, stop := redistest.Start(t)
	clk := newFakeClock(rtime(t, "2026-11-23T10:00:00Z"))
	opts := []Option{WithRefreshInterval(20 * time.Millisecond), WithRetryInterval(10 * time.Millisecond)}
	a := newNode(t, "redis://"+addr+"?dial_timeout=200ms&read_timeout=200ms", clk, opts...)
	b := newNode(t, "redis://"+addr+"?dial_timeout=200ms&read_timeout=200ms", clk, opts...)
	want := rid(t, a, "2026-11-23T10:00:00Z")
	sA, _ := a.Salt(clk.now())

	// Load: hash continuously on both nodes while Redis dies and returns.
	var failures, events atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, n := range []*node{a, b} {
		wg.Go(func() {
			for ctx.Err() == nil {
				s, err := n.Salt(clk.now())
				if err != nil || s.VisitorID("ws_acme", "acme.example", testIP, testUA) != want {
					failures.Add(1)
				}
				events.Add(1)
			}
		})
	}
	stop()
	testkit.Eventually(t, 10*time.Second, "redis errors counted", func() bool {
		return testkit.Metric(t, a.reg, "collector_salt_redis_errors_total") > 0 && a.state(t) == stateDegraded
	})
	if err := a.Ready(); err != nil {
		t.Fatalf("Ready while Redis is down during the day: %v", err)
	}
	redistest.StartAt(t, addr) // empty: no persistence
	c := rawClient(t, addr, 0)
	testkit.Eventually(t, 10*time.Second, "salt restored in redis", func() bool {
		v, err := c.Get(context.Background(), rkey(t, "2026-11-23")).Bytes()
		return err == nil && bytes.Equal(v, sA.b[:])
	})
	testkit.Eventually(t, 10*time.Second, "state ok again", func() bool { return a.state(t) == stateOK && b.state(t) == stateOK })
	cancel()
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d hashes failed or differed during the outage", failures.Load(), events.Load())
	}
	t.Logf("%d events hashed across the restart", events.Load())
	for _, n := range []*node{a, b} {
		assertNoSecret(t, "logs", n.logs.Bytes(), sA)
		assertNoSecret(t, "metrics", n.metricsText(t), sA)
	}
}

func TestRedisDownAtStart(t *testing.T) {
	leakcheck.Register(t)
	// A Unix socket: unlike a free port found now, no other process can take it before Redis starts.
	sock := filepath.Join(t.TempDir(), "redis.sock")
	clk := newFakeClock(rtime(t, "2026-11-23T10:00:00Z"))
	n := newNode(t, "unix://"+sock+"?dial_timeout=200ms", clk, WithRetryInterval(20*time.Millisecond))
	if err := n.Ready(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready with Redis down at start: %v, want ErrUnavailable", err)
	}
	if _, err := n.Salt(clk.now()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Salt with Redis down at start: %v, want ErrUnavailable", err)
	}
	if got := n.state(t); got != stateUnavailable {
		t.Fatalf("state %v, want 2", got)
	}
	if got := testkit.Metric(t, n.reg, "collector_salt_fallbacks_total"); got != 0 {
		t.Fatalf("fallback made at start: %v", got)
	}
	// No fallback at the next midnight either: this node never agreed.
	clk.set(rtime(t, "2026-11-24T00:00:01Z"))
	if _, err := n.Salt(clk.now()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Salt after midnight, never agreed: %v", err)
	}
	redistest.StartAt(t, sock)
	testkit.Eventually(t, 10*time.Second, "ready once redis answers", func() bool { return n.Ready() == nil })
	other := newNode(t, "unix://"+sock, clk)
	if rid(t, n, "2026-11-24T00:00:01Z") != rid(t, other, "2026-11-24T00:00:01Z") {
		t.Fatal("node that started without redis disagrees once it is back")
	}
	if got := n.state(t); got != stateOK {
		t.Fatalf("state %v, want 0", got)
	}
}

func TestRedisDownAcrossMidnight(t *testing.T) {
	tests := []struct {
		name       string
		downAt     string // Redis dies at this time, after the start at 22:00
		prefetched bool
	}{
		{"prefetched before the outage", "2026-11-23T23:30:00Z", true},
		{"outage before the prefetch window", "2026-11-23T22:30:00Z", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Register(t)
			addr, stop := redistest.Start(t)
			clk := newFakeClock(rtime(t, "2026-11-23T22:00:00Z"))
			url := "redis://" + addr + "?dial_timeout=200ms&read_timeout=200ms&max_retries=0"
			a := newNode(t, url, clk, withManualRefresh())
			b := newNode(t, url, clk, withManualRefresh())
			clk.set(rtime(t, tc.downAt))
			for _, n := range []*node{a, b} {
				if err := n.refresh(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			stop()
			clk.set(rtime(t, "2026-11-24T00:00:01Z"))
			for _, n := range []*node{a, b} {
				if err := n.refresh(t.Context()); err == nil {
					t.Fatal("refresh succeeded with Redis down")
				}
				if err := n.Ready(); err != nil {
					t.Fatalf("Ready after midnight with Redis down: %v", err)
				}
				if got := n.state(t); got != stateDegraded {
					t.Fatalf("state %v, want 1", got)
				}
				if age := testkit.Metric(t, n.reg, "collector_salt_age_seconds"); age < 1800 {
					t.Fatalf("collector_salt_age_seconds %v, want ≥ 1800 (last confirmed before the outage)", age)
				}
			}
			ia, ib := rid(t, a, "2026-11-24T00:00:01Z"), rid(t, b, "2026-11-24T00:00:01Z")
			fa := testkit.Metric(t, a.reg, "collector_salt_fallbacks_total")
			if tc.prefetched {
				if ia != ib || fa != 0 {
					t.Fatalf("prefetched: ids %x %x, fallbacks %v; want equal ids, no fallback", ia, ib, fa)
				}
				return
			}
			// Not prefetched: each node made its own fallback salt.
			if fa != 1 || testkit.Metric(t, b.reg, "collector_salt_fallbacks_total") != 1 {
				t.Fatalf("fallbacks %v, want 1 per node", fa)
			}
			if ia == ib {
				t.Fatal("two independent fallback salts gave the same id")
			}
			// Redis returns: a's fallback wins the SET NX and b adopts it.
			redistest.StartAt(t, addr)
			if err := a.refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := b.refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := rid(t, a, "2026-11-24T00:00:01Z"); got != ia {
				t.Fatal("node whose fallback became the fleet salt changed its ids")
			}
			if got := rid(t, b, "2026-11-24T00:00:01Z"); got != ia {
				t.Fatal("node did not switch to the salt stored in redis")
			}
			for _, n := range []*node{a, b} {
				if got := n.state(t); got != stateOK {
					t.Fatalf("state %v after recovery, want 0", got)
				}
				if age := testkit.Metric(t, n.reg, "collector_salt_age_seconds"); age != 0 {
					t.Fatalf("collector_salt_age_seconds %v after recovery, want 0", age)
				}
			}
		})
	}
}

func TestRedisURLOptions(t *testing.T) {
	const password = "s3cret-Passw0rd"
	addr, _ := redistest.Start(t, "--requirepass", password)
	clk := newFakeClock(rtime(t, "2026-11-23T10:00:00Z"))
	tests := []struct {
		name  string
		url   string
		ready bool
	}{
		{"password and db 3", "redis://:" + password + "@" + addr + "/3", true},
		{"db as query option", "redis://default:" + password + "@" + addr + "/?db=5&dial_timeout=1s&read_timeout=1s&write_timeout=1s", true},
		{"wrong password", "redis://:wrong-" + password + "@" + addr + "/3", false},
		{"no password", "redis://" + addr, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.url, clk, WithRetryInterval(time.Hour))
			err := n.Ready()
			if (err == nil) != tc.ready {
				t.Fatalf("Ready: %v, want ready=%v", err, tc.ready)
			}
			if bytes.Contains(n.logs.Bytes(), []byte(password)) {
				t.Fatal("password in logs")
			}
			if err != nil && strings.Contains(err.Error(), password) {
				t.Fatal("password in error")
			}
		})
	}
	// The database number from the URL is honoured.
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, DB: 3})
	defer c.Close()
	if n, err := c.Exists(t.Context(), rkey(t, "2026-11-23")).Result(); err != nil || n != 1 {
		t.Fatalf("salt not in db 3: %d, %v", n, err)
	}
	c0 := redis.NewClient(&redis.Options{Addr: addr, Password: password})
	defer c0.Close()
	if n, _ := c0.Exists(t.Context(), rkey(t, "2026-11-23")).Result(); n != 0 {
		t.Fatal("salt written to db 0 despite /3 in the URL")
	}
}

func TestRedisBadURL(t *testing.T) {
	const password = "s3cret-Passw0rd"
	tests := []struct{ name, url string }{
		{"scheme", "http://:" + password + "@127.0.0.1:1"},
		{"db number", "redis://:" + password + "@127.0.0.1:1/x"},
		{"unparsable", "redis://:" + password + "@127.0.0.1:1:%zz"},
		{"bad option", "redis://:" + password + "@127.0.0.1:1/?dial_timeout=soon"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRedis(t.Context(), tc.url)
			if err == nil {
				t.Fatal("bad URL accepted")
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("error reveals the password: %v", err)
			}
		})
	}
}

// The salt appears in no log line, metric or error through a whole life:
// start, outage, fallback, recovery, expiry.
func TestRedisSaltNeverLeaks(t *testing.T) {
	addr, stop := redistest.Start(t)
	clk := newFakeClock(rtime(t, "2026-11-23T22:00:00Z"))
	url := "redis://" + addr + "?dial_timeout=200ms&read_timeout=200ms&max_retries=0"
	n := newNode(t, url, clk, withManualRefresh())
	var errs []string
	record := func(err error) {
		if err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v", err))
		}
	}
	s1, err := n.Salt(clk.now())
	record(err)
	stop()
	clk.set(rtime(t, "2026-11-24T00:00:01Z"))
	record(n.refresh(t.Context()))
	s2, err := n.Salt(clk.now())
	record(err)
	n.cfg.logger.Info("salts", "s1", s1, "s2", s2)
	redistest.StartAt(t, addr)
	record(n.refresh(t.Context()))
	s3, _ := n.Salt(clk.now())
	clk.set(rtime(t, "2026-11-26T00:00:00Z"))
	record(n.refresh(t.Context()))
	_, err = n.Salt(rtime(t, "2026-11-23T23:00:00Z"))
	record(err)
	if len(n.logs.Bytes()) == 0 || len(errs) == 0 {
		t.Fatal("nothing logged or returned: the check below would prove nothing")
	}
	for _, s := range []*Salt{s1, s2, s3} {
		assertNoSecret(t, "logs", n.logs.Bytes(), s)
		assertNoSecret(t, "errors", []byte(strings.Join(errs, "\n")), s)
		assertNoSecret(t, "metrics", n.metricsText(t), s)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key as
// PEM files and returns their paths and a pool that trusts it.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool = x509.NewCertPool()
	pool.AddCert(testkit.WriteCert(t, certFile, keyFile))
	return certFile, keyFile, pool
}

func TestRedisTLS(t *testing.T) {
	leakcheck.Register(t)
	certFile, keyFile, pool := writeCert(t)
	addr, _ := redistest.StartTLS(t, certFile, keyFile)
	clk := newFakeClock(rtime(t, "2026-11-23T10:00:00Z"))
	tests := []struct {
		name  string
		url   string
		opts  []Option
		ready bool
	}{
		{"rediss with the CA", "rediss://" + addr, []Option{WithRootCAs(pool)}, true},
		{"rediss, unknown CA", "rediss://" + addr + "?dial_timeout=500ms", nil, false},
		{"plain redis to a TLS port", "redis://" + addr + "?dial_timeout=500ms&read_timeout=500ms", nil, false},
	}
	var ids []uint64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.url, clk, append(tc.opts, WithRetryInterval(time.Hour))...)
			err := n.Ready()
			if (err == nil) != tc.ready {
				t.Fatalf("Ready: %v, want ready=%v", err, tc.ready)
			}
			if err == nil {
				ids = append(ids, rid(t, n, "2026-11-23T10:00:00Z"))
			}
		})
	}
	if len(ids) != 1 {
		t.Fatalf("%d nodes became ready, want 1", len(ids))
	}
	if _, err := NewRedis(t.Context(), "redis://"+addr, WithRootCAs(pool)); err == nil {
		t.Fatal("root CAs accepted for a redis:// URL")
	}
}
