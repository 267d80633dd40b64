package main

// End-to-end tests of the shared daily salt (-redis) with the real collector binary and a real
// redis-server (salt/redistest). The outage policy they check is written in the salt package
// documentation.
//
// The binary refreshes its salt from Redis once a minute (salt.DefaultRefreshInterval) and has no
// flag to change that, so noticing that Redis went away can take up to a minute: the outage test
// waits for it rather than guessing a shorter time.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/salt"
	"github.com/kyomi/collector/salt/redistest"
)

// Values of collector_salt_state (salt/source.go).
const (
	saltOK          = 0
	saltDegraded    = 1
	saltUnavailable = 2
)

// saltDetectLimit bounds how long the binary may take to notice a Redis outage: one refresh
// interval (a minute) plus slack for a loaded machine.
const saltDetectLimit = 90 * time.Second

// TestRedisSharedSaltAcrossNodes runs two collectors with separate data directories on one Redis.
// The same (workspace, domain, IP, user agent) must get the same visitor id on both nodes; another
// IP or another user agent must get another id. Both nodes must use the one salt stored in Redis.
func TestRedisSharedSaltAcrossNodes(t *testing.T) {
	redisAddr, _ := redistest.Start(t)
	redisURL := "redis://" + redisAddr
	dirA, argsA := e2eEnv(t)
	dirB, argsB := e2eEnv(t)
	a := startCollector(t, nil, append(argsA, "-redis", redisURL)...)
	b := startCollector(t, nil, append(argsB, "-redis", redisURL)...)

	const otherUA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
	cases := []struct {
		name, marker, ip, ua string
	}{
		{"reference visitor", "ref", "203.0.113.7", chromeUA},
		{"same user agent, other IPv4", "other-ip", "203.0.113.8", chromeUA},
		{"same IP, other user agent", "other-ua", "203.0.113.7", otherUA},
		{"IPv6 visitor", "v6", "2001:db8::7", chromeUA},
	}
	for _, tc := range cases {
		for _, p := range []*proc{a, b} {
			code, hdr, body := p.send(t, beacon{ip: tc.ip, ua: tc.ua,
				body: `{"n":"pageview","u":"https://acme.example/shared","d":"acme.example","p":{"marker":"` + tc.marker + `"}}`})
			if code != 202 || hdr.Get("X-Collector-Dropped") != "" {
				t.Fatalf("%s: status %d, dropped %q, body %s", tc.name, code, hdr.Get("X-Collector-Dropped"), body)
			}
		}
	}

	// Both nodes saw the Redis salt of today: the key exists, holds 32 bytes and expires within 48 h.
	assertRedisSalt(t, &redis.Options{Addr: redisAddr})

	for _, p := range []*proc{a, b} {
		if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
			t.Fatalf("collector exited with %v after SIGTERM\n%s", err, p.logs.String())
		}
	}
	idsA := visitorIDs(t, dirA)
	idsB := visitorIDs(t, dirB)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ia, ib := idsA[tc.marker], idsB[tc.marker]
			if ia == "" || ib == "" {
				t.Fatalf("marker %q not stored: node A %v, node B %v", tc.marker, idsA, idsB)
			}
			if ia != ib {
				t.Fatalf("visitor id differs between nodes sharing a Redis: %s vs %s", ia, ib)
			}
			if ia == "0" {
				t.Fatal("visitor id is 0")
			}
			if tc.marker != "ref" && ia == idsA["ref"] {
				t.Fatalf("visitor id %s equals the reference visitor's: the hash ignores what differs", ia)
			}
		})
	}
}

// TestRedisOutageUnderLoad stops redis-server while events keep arriving, waits until the
// collector notices (collector_salt_state 1), restarts an empty redis-server on the same port and
// waits until the collector is back to state 0. Every event must be answered 202 throughout,
// /readyz must stay 200, every acknowledged event must be stored exactly once, visitor ids must
// stay the same across the outage (the cached salt is re-offered to the empty Redis), and no raw IP
// or user agent may appear in the logs or in any file under the data directory.
func TestRedisOutageUnderLoad(t *testing.T) {
	redisAddr, stopRedis := redistest.Start(t)
	dataDir, args := e2eEnv(t)
	// Rate limiting off: the test demands a 202 for every event, and the load sends faster than
	// the per-client default allows.
	p := startCollector(t, nil, append(args, "-redis", "redis://"+redisAddr, "-rate-client", "0")...)
	p.waitSaltState(t, saltOK, 10*time.Second)

	const probeUA = chromeUA + " RedisOutageMarker/3"
	probeIP := "198.51.100.23"
	probe := func(marker string) {
		t.Helper()
		code, hdr, body := p.send(t, beacon{ip: probeIP, ua: probeUA,
			body: `{"n":"probe","u":"https://acme.example/probe","d":"acme.example","p":{"marker":"` + marker + `"}}`})
		if code != 202 || hdr.Get("X-Collector-Dropped") != "" {
			t.Fatalf("probe %s: status %d, dropped %q, body %s", marker, code, hdr.Get("X-Collector-Dropped"), body)
		}
	}
	probe("before")

	var loadIPs []string
	for i := range 12 {
		loadIPs = append(loadIPs, fmt.Sprintf("192.0.2.%d", 101+i))
	}
	for i := range 4 {
		loadIPs = append(loadIPs, fmt.Sprintf("2001:db8:feed::%x", 0xa1+i))
	}
	l := startLoad(p, loadIPs, probeUA)
	ready := watchReady(p)

	l.waitFlowing(t, ready, "before the outage")
	stopRedis()
	down := time.Now()
	p.waitSaltState(t, saltDegraded, saltDetectLimit)
	t.Logf("collector noticed the outage after %s", time.Since(down).Round(time.Millisecond))
	if n := testkit.Metric(t, p.metrics(), "collector_salt_redis_errors_total"); n < 1 {
		t.Fatalf("collector_salt_redis_errors_total %v while Redis is down, want ≥ 1", n)
	}
	l.waitFlowing(t, ready, "while degraded")
	probe("during")

	redistest.StartAt(t, redisAddr)
	up := time.Now()
	p.waitSaltState(t, saltOK, 30*time.Second)
	t.Logf("collector recovered %s after Redis restarted", time.Since(up).Round(time.Millisecond))
	l.waitFlowing(t, ready, "after the recovery")
	probe("after")

	l.stop()
	notReady := ready.stop()
	// The restarted, empty Redis got the salt every node already used back (SET NX of the cache).
	assertRedisSalt(t, &redis.Options{Addr: redisAddr})
	if err := p.stop(syscall.SIGTERM, 120*time.Second); err != nil {
		t.Fatalf("collector exited with %v after SIGTERM\n%s", err, p.logs.String())
	}

	t.Logf("load: %d acknowledged, other answers %v, transport errors %d; /readyz polled %d times",
		l.acked.Load(), l.others(), l.errs.Load(), ready.polls.Load())
	if o := l.others(); len(o) > 0 || l.errs.Load() > 0 {
		t.Errorf("events not answered 202 during the outage: %v, %d transport errors (first: %v)", o, l.errs.Load(), l.firstErr())
	}
	if len(notReady) > 0 {
		t.Errorf("/readyz not 200 during the outage: %v", notReady)
	}
	if ready.polls.Load() < 20 {
		t.Errorf("/readyz polled only %d times: the watcher did not run", ready.polls.Load())
	}

	// Every acknowledged event is stored exactly once.
	stored := map[string]int{}
	for _, r := range sql(t, dataDir, "SELECT props['marker'], count() FROM analytics.events WHERE name = 'load' GROUP BY 1 FORMAT TSV") {
		m, n, ok := strings.Cut(r, "\t")
		c, err := strconv.Atoi(n)
		if !ok || err != nil {
			t.Fatalf("bad row %q", r)
		}
		stored[m] = c
	}
	missing, doubled, unacked := 0, 0, 0
	for _, m := range l.markers() {
		switch stored[m] {
		case 0:
			missing++
		case 1:
		default:
			doubled++
		}
		delete(stored, m)
	}
	unacked = len(stored) // stored, but never acknowledged: only possible for a timed-out request
	t.Logf("stored: %d acknowledged missing, %d doubled, %d stored without an acknowledgement", missing, doubled, unacked)
	if missing > 0 || doubled > 0 || unacked > 0 {
		t.Errorf("%d acknowledged events missing, %d stored more than once, %d stored but not acknowledged", missing, doubled, unacked)
	}

	// One visitor, one id, across the outage.
	ids := visitorIDs(t, dataDir)
	if ids["before"] == "" || ids["before"] != ids["during"] || ids["before"] != ids["after"] {
		t.Errorf("probe visitor ids before/during/after the outage: %q %q %q, want one id", ids["before"], ids["during"], ids["after"])
	}

	assertNoRawClientData(t, dataDir, p.logs.String(), append(loadIPs, probeIP), []string{"RedisOutageMarker/3"}, false)
}

// TestRedisDownAtStart starts the collector while nothing listens on the Redis address: the process
// runs (/healthz 200) but is not ready (/readyz 503, collector_salt_state 2) and answers events 503.
// Once redis-server starts on that address the collector becomes ready and stores events.
func TestRedisDownAtStart(t *testing.T) {
	// A Unix socket: unlike a free port found now, no other process can take it before Redis starts.
	sock := filepath.Join(t.TempDir(), "redis.sock")
	dataDir, args := e2eEnv(t)
	p := startCollectorNoWait(t, nil, append(args, "-redis", "unix://"+sock)...)
	p.waitHealthy(t, 60*time.Second)

	refused := beacon{ip: "203.0.113.41", ua: chromeUA,
		body: `{"n":"pageview","u":"https://acme.example/refused","d":"acme.example","p":{"marker":"refused"}}`}
	// Several checks, each after another failed attempt to reach Redis: the node must stay unready,
	// not just start so.
	for i := range 3 {
		errs := testkit.MetricOrZero(t, p.metrics(), "collector_salt_redis_errors_total")
		testkit.Eventually(t, 30*time.Second, "another failed attempt to reach Redis", func() bool {
			return testkit.MetricOrZero(t, p.metrics(), "collector_salt_redis_errors_total") > errs
		})
		if code := p.get(t, "/readyz"); code != 503 {
			t.Fatalf("check %d: /readyz %d while Redis was never reachable, want 503", i, code)
		}
		if code, _, body := p.send(t, refused); code != 503 {
			t.Fatalf("check %d: event answered %d (%s) while no salt is agreed, want 503", i, code, body)
		}
		if st := testkit.Metric(t, p.metrics(), "collector_salt_state"); st != saltUnavailable {
			t.Fatalf("check %d: collector_salt_state %v, want %d", i, st, saltUnavailable)
		}
	}

	redistest.StartAt(t, sock)
	p.waitReady(30 * time.Second)
	if code, hdr, body := p.send(t, beacon{ip: "203.0.113.41", ua: chromeUA,
		body: `{"n":"pageview","u":"https://acme.example/accepted","d":"acme.example","p":{"marker":"accepted"}}`}); code != 202 || hdr.Get("X-Collector-Dropped") != "" {
		t.Fatalf("event after Redis started: status %d, dropped %q, body %s", code, hdr.Get("X-Collector-Dropped"), body)
	}
	p.waitSaltState(t, saltOK, 10*time.Second)
	assertRedisSalt(t, &redis.Options{Network: "unix", Addr: sock})
	if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Fatalf("collector exited with %v after SIGTERM\n%s", err, p.logs.String())
	}
	rows := sql(t, dataDir, "SELECT props['marker'], pathname FROM analytics.events ORDER BY ts FORMAT TSV")
	if want := "accepted\t/accepted"; len(rows) != 1 || rows[0] != want {
		t.Fatalf("stored rows %q, want exactly [%q]", rows, want)
	}
}

// load sends events from several goroutines until stop, each with a unique marker, and records
// every answer.
type load struct {
	acked    atomic.Int64
	errs     atomic.Int64
	mu       sync.Mutex
	ackedM   []string
	other    map[string]int // "status dropped-reason" of answers that were not a plain 202
	errFirst error
	quit     chan struct{}
	wg       sync.WaitGroup
}

// startLoad starts 4 senders cycling through ips, each pausing 10 ms between events (a few
// hundred events a second in all: enough load, little CPU on a shared machine).
func startLoad(p *proc, ips []string, ua string) *load {
	l := &load{other: map[string]int{}, quit: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	var seq atomic.Int64
	for range 4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.quit:
					return
				case <-time.After(10 * time.Millisecond):
				}
				n := seq.Add(1)
				marker := fmt.Sprintf("l%d", n)
				body := `{"n":"load","u":"https://acme.example/load","d":"acme.example","p":{"marker":"` + marker + `"}}`
				code, dropped, err := p.post(client, beacon{body: body, ip: ips[int(n)%len(ips)], ua: ua})
				l.mu.Lock()
				switch {
				case err != nil:
					l.errs.Add(1)
					if l.errFirst == nil {
						l.errFirst = err
					}
				case code == 202 && dropped == "":
					l.acked.Add(1)
					l.ackedM = append(l.ackedM, marker)
				default:
					l.other[fmt.Sprintf("%d %s", code, dropped)]++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// stop ends the load and waits for every sender to return.
func (l *load) stop() {
	close(l.quit)
	l.wg.Wait()
}

func (l *load) markers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ackedM...)
}

func (l *load) others() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := make(map[string]int, len(l.other))
	for k, v := range l.other {
		o[k] = v
	}
	return o
}

func (l *load) firstErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errFirst
}

// readyWatch polls /readyz every 100 ms until stop and records every answer that was not 200.
type readyWatch struct {
	polls atomic.Int64
	mu    sync.Mutex
	bad   []string
	quit  chan struct{}
	done  chan struct{}
}

func watchReady(p *proc) *readyWatch {
	w := &readyWatch{quit: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 5 * time.Second}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
			resp, err := client.Get("http://" + p.addr + "/readyz")
			w.polls.Add(1)
			var bad string
			if err != nil {
				bad = err.Error()
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad = fmt.Sprintf("%s: %d", time.Now().UTC().Format(time.TimeOnly), resp.StatusCode)
				}
			}
			if bad != "" {
				w.mu.Lock()
				w.bad = append(w.bad, bad)
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// stop ends the watcher, waits for it and returns the answers that were not 200.
func (w *readyWatch) stop() []string {
	close(w.quit)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad
}

// post is send without a *testing.T, for load goroutines: it returns the status, the
// X-Collector-Dropped header and any transport error instead of failing the test.
func (p *proc) post(client *http.Client, b beacon) (code int, dropped string, err error) {
	req, err := http.NewRequest("POST", "http://"+p.addr+"/api/event", strings.NewReader(b.body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	req.Header.Set("User-Agent", b.ua)
	req.Header.Set("X-Forwarded-For", b.ip)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Collector-Dropped"), nil
}

// get answers the status of GET path on the collector.
func (p *proc) get(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// waitHealthy waits until /healthz answers 200: the process serves, ready or not.
func (p *proc) waitHealthy(t *testing.T, limit time.Duration) {
	t.Helper()
	p.waitAnswer(t, "/healthz", limit)
}

// waitSaltState waits until collector_salt_state is want.
func (p *proc) waitSaltState(t *testing.T, want float64, limit time.Duration) {
	t.Helper()
	testkit.Eventually(t, limit, fmt.Sprintf("collector_salt_state %v", want), func() bool {
		return testkit.Metric(t, p.metrics(), "collector_salt_state") == want
	})
}

// waitFlowing waits until 100 more events of the load were acknowledged and /readyz was checked 5
// more times: the load runs in the phase the test is in, so that its answers (all counted) cover
// it.
func (l *load) waitFlowing(t *testing.T, ready *readyWatch, phase string) {
	t.Helper()
	acked, polls := l.acked.Load(), ready.polls.Load()
	testkit.Eventually(t, 30*time.Second, "100 events acknowledged and 5 readiness checks "+phase, func() bool {
		return l.acked.Load() >= acked+100 && ready.polls.Load() >= polls+5
	})
}

// visitorIDs returns the visitor id of every stored event by its props marker (`collector sql` on
// a data directory no server holds).
func visitorIDs(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, r := range sql(t, dataDir, "SELECT props['marker'], visitor_id FROM analytics.events WHERE name != 'load' FORMAT TSV") {
		m, id, ok := strings.Cut(r, "\t")
		if !ok {
			t.Fatalf("bad row %q", r)
		}
		if old, seen := ids[m]; seen && old != id {
			t.Fatalf("marker %q stored with two visitor ids %s and %s", m, old, id)
		}
		ids[m] = id
	}
	return ids
}

// assertRedisSalt checks that the Redis opts reaches holds today's salt: salt:YYYY-MM-DD with 32 bytes and
// an expiry no later than 48 h after the day began.
func assertRedisSalt(t *testing.T, opts *redis.Options) {
	t.Helper()
	rc := redis.NewClient(opts)
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := time.Now()
	key := salt.KeyPrefix + salt.DayKey(now)
	v, err := rc.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		t.Fatalf("Redis holds no %s", key)
	}
	if err != nil {
		t.Fatalf("cannot read %s: %v", key, err)
	}
	if len(v) != salt.Size {
		t.Fatalf("%s holds %d bytes, want %d", key, len(v), salt.Size)
	}
	ttl, err := rc.TTL(ctx, key).Result()
	if err != nil {
		t.Fatalf("cannot read the TTL of %s: %v", key, err)
	}
	if limit := salt.Day(now).Add(salt.MaxAge).Sub(now) + time.Second; ttl <= 0 || ttl > limit {
		t.Fatalf("%s expires in %s, want within (0, %s]", key, ttl, limit)
	}
}
