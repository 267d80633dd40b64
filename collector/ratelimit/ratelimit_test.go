package ratelimit

import (
	"math"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBurstThenRate(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := mustNew(t, Config{Rate: 10, Burst: 5, MaxKeys: 1000}, nil)
	a := netip.MustParseAddr("198.51.100.1")
	for i := 0; i < 5; i++ {
		if !l.AllowAddr(a, clk.now()) {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	if l.AllowAddr(a, clk.now()) {
		t.Fatal("sixth event at once allowed past a burst of 5")
	}
	clk.add(100 * time.Millisecond) // one interval at 10/s
	if !l.AllowAddr(a, clk.now()) {
		t.Fatal("event after one interval refused")
	}
	if l.AllowAddr(a, clk.now()) {
		t.Fatal("second event within the interval allowed")
	}
	if other := netip.MustParseAddr("198.51.100.2"); !l.AllowAddr(other, clk.now()) {
		t.Fatal("another client was limited by the first one's flood")
	}
}

func TestIPv6GroupedBy64(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := mustNew(t, Config{Rate: 1, Burst: 2, MaxKeys: 1000}, nil)
	cases := []struct {
		name string
		addr string
		want bool
	}{
		{"first address of the /64", "2001:db8:1:2::1", true},
		{"another address in the same /64", "2001:db8:1:2:ffff::9", true},
		{"third in the /64 is over the burst", "2001:db8:1:2::abcd", false},
		{"neighbouring /64 has its own bucket", "2001:db8:1:3::1", true},
		{"IPv4-mapped form counts as IPv4", "::ffff:198.51.100.9", true},
	}
	for _, tc := range cases {
		if got := l.AllowAddr(netip.MustParseAddr(tc.addr), clk.now()); got != tc.want {
			t.Errorf("%s: allow = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDisabledAndKeys(t *testing.T) {
	off := mustNew(t, Config{}, nil)
	for i := 0; i < 1000; i++ {
		if !off.AllowKey("ws", time.Now()) {
			t.Fatal("a disabled limiter refused")
		}
	}
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := mustNew(t, Config{Rate: 1, Burst: 1, MaxKeys: 64}, nil)
	if !l.AllowKey("ws_a", clk.now()) || l.AllowKey("ws_a", clk.now()) {
		t.Fatal("workspace key not limited to a burst of 1")
	}
	if !l.AllowKey("ws_b", clk.now()) {
		t.Fatal("another workspace was limited")
	}
}

func TestMemoryBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	overflows := 0
	l := mustNew(t, Config{Rate: 0.001, Burst: 1, MaxKeys: 640}, func() { overflows++ })
	for i := 0; i < 100_000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.AllowAddr(a, clk.now())
	}
	total := 0
	for i := range l.shards {
		total += len(l.shards[i].tat)
	}
	if total > 640 {
		t.Fatalf("limiter holds %d keys, cap is 640", total)
	}
	if overflows == 0 {
		t.Fatal("a flood of distinct busy keys caused no overflow count")
	}
	// Once buckets drain, room is made again and new keys are tracked.
	clk.add(time.Hour * 1000)
	before := overflows
	l.AllowAddr(netip.MustParseAddr("192.0.2.1"), clk.now())
	if overflows != before {
		t.Fatal("drained keys were not evicted")
	}
}

func BenchmarkAllowAddr(b *testing.B) {
	l := mustNew(b, Config{Rate: 1e9, Burst: 1 << 20, MaxKeys: 1 << 16}, nil)
	a := netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.AllowAddr(a, time.Now())
		}
	})
}

// BenchmarkAllowAddrCirculating cycles through 20,000 client addresses (cmd/loadgen's default
// mix) in a limiter of the production size: each lookup touches a different key, as under load.
func BenchmarkAllowAddrCirculating(b *testing.B) {
	l := mustNew(b, Config{Rate: 1e9, Burst: 1 << 20, MaxKeys: 1 << 20}, nil)
	addrs := make([]netip.Addr, 20000)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{byte(i*2654435761>>24) | 1, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.AllowAddr(addrs[i%len(addrs)], time.Now())
		i++
	}
}

func mustNew(tb testing.TB, cfg Config, onOverflow func()) *Limiter {
	tb.Helper()
	l, err := New(cfg, onOverflow)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// TestConfigValidate checks that every bad field is named, all at once, and that the defaults the
// collector runs with are valid.
func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{DefaultClientConfig, DefaultWorkspaceConfig, {}} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
	cases := []struct {
		name  string
		cfg   Config
		wants []string
	}{
		{"negative rate", Config{Rate: -1, MaxKeys: 64}, []string{"Rate must be a finite number >= 0, got -1"}},
		{"infinite rate", Config{Rate: math.Inf(1), MaxKeys: 64}, []string{"Rate must be a finite number"}},
		{"every field", Config{Rate: 1, Burst: -1, MaxKeys: 10}, []string{"ratelimit.Config.Burst must be >= 0, got -1", "ratelimit.Config.MaxKeys must be at least 64"}},
		{"negative keys without a rate", Config{MaxKeys: -1}, []string{"MaxKeys must be at least 64"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestZeroBurstIsOneSecond checks the zero-Burst default: one second's worth of Rate, plus one.
func TestZeroBurstIsOneSecond(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := mustNew(t, Config{Rate: 3, MaxKeys: 64}, nil)
	for i := range 4 {
		if !l.AllowKey("k", clk.now()) {
			t.Fatalf("event %d of a burst of 4 refused", i+1)
		}
	}
	if l.AllowKey("k", clk.now()) {
		t.Fatal("fifth event of a burst of 4 allowed")
	}
}
