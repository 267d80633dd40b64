package salt

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/testkit"
)

var (
	testIP = netip.MustParseAddr("203.0.113.7")
	testUA = []byte("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/140.0")
)

func id(t testing.TB, src Source, at string) uint64 {
	t.Helper()
	s, err := src.Salt(mustTime(t, at))
	if err != nil {
		t.Fatalf("Salt(%s): %v", at, err)
	}
	return s.VisitorID("ws_acme", "acme.example", testIP, testUA)
}

func newTestLocal(t *testing.T, dir string, clk *fakeClock, opts ...Option) (*Local, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := NewLocal(dir, append([]Option{WithClock(clk.now), WithRegisterer(reg)}, opts...)...)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, reg
}

func TestLocalFile(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	clk := newFakeClock(mustTime(t, "2026-11-23T10:00:00Z"))
	l, reg := newTestLocal(t, dir, clk)

	path := filepath.Join(dir, "salt", "2026-11-23")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("today's salt file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != Size {
		t.Fatalf("salt file mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), Size)
	}
	if di, _ := os.Stat(filepath.Join(dir, "salt")); di.Mode().Perm() != 0o700 {
		t.Fatalf("salt directory mode %v, want 0700", di.Mode().Perm())
	}
	if err := l.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if v := testkit.Metric(t, reg, "collector_salt_state"); v != stateOK {
		t.Fatalf("collector_salt_state = %v, want 0", v)
	}
	before := id(t, l, "2026-11-23T10:00:00Z")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// A restarted node reads the same salt back.
	l2, _ := newTestLocal(t, dir, clk)
	if got := id(t, l2, "2026-11-23T23:59:59Z"); got != before {
		t.Fatalf("after restart id %x, want %x", got, before)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "salt"))
	if len(entries) != 1 {
		t.Fatalf("salt directory holds %d entries, want 1 (no temporary files left)", len(entries))
	}
}

func TestLocalRotationAndExpiry(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	clk := newFakeClock(mustTime(t, "2026-11-23T10:00:00Z"))
	l, _ := newTestLocal(t, dir, clk, withManualRefresh())
	file := func(day string) string { return filepath.Join(dir, "salt", day) }
	exists := func(day string) bool {
		_, err := os.Stat(file(day))
		return err == nil
	}
	day1 := id(t, l, "2026-11-23T10:00:00Z")

	// Before the prefetch window tomorrow is not made.
	if err := l.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if exists("2026-11-24") {
		t.Fatal("tomorrow's salt made before the prefetch window")
	}
	// In the window it is, and served from memory after midnight.
	clk.set(mustTime(t, "2026-11-23T23:30:00Z"))
	if err := l.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !exists("2026-11-24") || l.lookup(dayNumber(mustTime(t, "2026-11-24T00:00:00Z"))) == nil {
		t.Fatal("tomorrow's salt not prefetched at 23:30")
	}
	clk.set(mustTime(t, "2026-11-24T00:00:01Z"))
	day2 := id(t, l, "2026-11-24T00:00:01Z")
	if day2 == day1 {
		t.Fatal("visitor id did not change with the UTC day")
	}
	// Yesterday is still served (an event received before midnight).
	if got := id(t, l, "2026-11-23T23:59:59.999Z"); got != day1 {
		t.Fatalf("yesterday's id %x, want %x", got, day1)
	}

	// 48 h after 2026-11-23 began, its salt is gone from disk and memory.
	clk.set(mustTime(t, "2026-11-24T23:59:59Z"))
	if err := l.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !exists("2026-11-23") {
		t.Fatal("salt deleted before 48 h")
	}
	clk.set(mustTime(t, "2026-11-25T00:00:00Z"))
	if err := l.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if exists("2026-11-23") {
		t.Fatal("salt file still there 48 h after its day began")
	}
	if l.lookup(dayNumber(mustTime(t, "2026-11-23T12:00:00Z"))) != nil {
		t.Fatal("salt still cached 48 h after its day began")
	}
	if _, err := l.Salt(mustTime(t, "2026-11-23T12:00:00Z")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Salt for an expired day: err %v, want ErrUnavailable", err)
	}
	if exists("2026-11-23") {
		t.Fatal("asking for an expired day recreated its file")
	}
}

func TestLocalOutsideWindow(t *testing.T) {
	clk := newFakeClock(mustTime(t, "2026-11-23T10:00:00Z"))
	l, _ := newTestLocal(t, t.TempDir(), clk)
	tests := []struct {
		name string
		at   string
		ok   bool
	}{
		{"today", "2026-11-23T01:00:00Z", true},
		{"yesterday", "2026-11-22T23:00:00Z", true},
		{"tomorrow", "2026-11-24T00:00:00Z", true},
		{"two days ago", "2026-11-21T23:00:00Z", false},
		{"in two days", "2026-11-25T00:00:00Z", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Salt(mustTime(t, tc.at))
			if (err == nil) != tc.ok {
				t.Fatalf("Salt(%s) err %v, want ok=%v", tc.at, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err %v does not wrap ErrUnavailable", err)
			}
		})
	}
}

// Two processes racing to create the day's file end up with one salt.
func TestLocalConcurrentCreate(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock(mustTime(t, "2026-11-23T10:00:00Z"))
	var wg sync.WaitGroup
	ls := make([]*Local, 8)
	for i := range ls {
		wg.Go(func() {
			l, err := NewLocal(dir, WithClock(clk.now))
			if err != nil {
				t.Error(err)
				return
			}
			ls[i] = l
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := id(t, ls[0], "2026-11-23T10:00:00Z")
	for i, l := range ls {
		if got := id(t, l, "2026-11-23T10:00:00Z"); got != want {
			t.Errorf("source %d: id %x, want %x", i, got, want)
		}
		_ = l.Close()
	}
}

func TestLocalBrokenFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "salt"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "salt", "2026-11-23"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	clk := newFakeClock(mustTime(t, "2026-11-23T10:00:00Z"))
	_, err := NewLocal(dir, WithClock(clk.now), WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if err == nil {
		t.Fatal("NewLocal accepted a truncated salt file")
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v does not wrap ErrUnavailable", err)
	}
}

func TestInvalidOptions(t *testing.T) {
	_, err := NewLocal(t.TempDir(), WithRefreshInterval(0), WithPrefetch(25*60*60*1e9), WithClock(nil))
	if err == nil {
		t.Fatal("invalid options accepted")
	}
	for _, want := range []string{"refresh interval", "prefetch", "clock"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
