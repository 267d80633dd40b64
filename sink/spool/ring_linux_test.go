package spool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kyomi/collector/internal/leakcheck"
)

// TestRingFaultFailsAppend cuts the ring file under a SyncInterval spool, so that the next store
// into its mapping faults (SIGBUS): the append must fail with an error, the spool must turn
// unready and refuse later appends, and the process must live on. The ring file stays for the
// next Open.
func TestRingFaultFailsAppend(t *testing.T) {
	leakcheck.Register(t)
	ringDir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: t.TempDir(), SyncInterval: time.Hour, RingDir: ringDir})
	if err := s.Append([]byte("before")); err != nil {
		t.Fatal(err)
	}
	path := ringPath(ringDir, s.ID())
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	err := s.Append([]byte("after"))
	if err == nil || !strings.Contains(err.Error(), "memory fault") {
		t.Fatalf("append into a cut ring: %v, want a memory fault error", err)
	}
	if s.Ready() {
		t.Error("spool still ready after a fault")
	}
	if err := s.Append([]byte("later")); err == nil {
		t.Error("append after a fault reported success")
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the ring of a failed spool is gone after Close (%v): its frames would be lost", err)
	}
}

// TestRingLapsWithoutFaults is the reason for the ring: it appends three laps of the default ring
// (/dev/shm) and checks, from the process's minor page faults, that the second and third laps
// store into pages that stay mapped; that the ring is all the process keeps resident of it; that
// every record reads back; and that Close removes the ring file.
func TestRingLapsWithoutFaults(t *testing.T) {
	leakcheck.Register(t)
	if d := defaultRingDir(t.TempDir()); d != "/dev/shm" {
		t.Fatalf("default ring dir %s, want /dev/shm: this Linux machine has no tmpfs there", d)
	}
	s, _ := openSpool(t, Config{Dir: t.TempDir(), SyncInterval: time.Hour})
	path := ringPath("/dev/shm", s.ID())
	rec := bytes.Repeat([]byte{'r'}, 1024-headerSize)
	lap := ringMaxBytes / 1024
	appendN := func(n int) {
		for range n {
			if err := s.Append(rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Count the faults of the appending thread only: process-wide counts also take in the
	// runtime's and other goroutines' faults (GC, the race detector), 7,700 of them once in CI.
	runtime.LockOSThread()
	appendN(lap)
	before := minorFaults(t)
	appendN(2 * lap)
	faults := minorFaults(t) - before
	runtime.UnlockOSThread()
	// A mapped segment took one fault per new page: 4096 here.
	if faults > 400 {
		t.Errorf("%d minor page faults for two laps of the ring (%d pages), want next to none", faults, 2*ringMaxBytes/os.Getpagesize())
	}
	s.mu.Lock()
	start := uintptr(unsafe.Pointer(&s.ack.(*ringStager).ring.mem[0]))
	s.mu.Unlock()
	if rss := mappingRSS(t, start); rss > ringHeader+ringMaxBytes || rss < ringMaxBytes/2 {
		t.Errorf("the ring mapping has %d bytes resident, want about %d", rss, ringMaxBytes)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, s, s.Checkpoint()); len(got) != 3*lap {
		t.Fatalf("read %d records, want %d", len(got), 3*lap)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ring directory after a clean Close: %v, want it removed", err)
	}
	t.Logf("%d minor faults for two laps", faults)
}

// TestRingRecoveredAtOpen takes what a crash of the process leaves while the acknowledged records
// are in the ring only (no copy ran: the segment file holds none of them), a copy of the spool
// directory and of the ring's directory, and opens it: every record must be there once, and the
// ring must be gone once its frames are in the segment.
func TestRingRecoveredAtOpen(t *testing.T) {
	leakcheck.Register(t)
	t.Cleanup(func(d time.Duration) func() { return func() { copyInterval = d } }(copyInterval))
	copyInterval = time.Hour // read by Open
	dir, ringDir := t.TempDir(), t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir, SyncInterval: time.Hour, RingDir: ringDir})
	var want []string
	for i := range 300 {
		want = append(want, fmt.Sprintf("record-%03d", i))
		if err := s.Append([]byte(want[i])); err != nil {
			t.Fatal(err)
		}
	}
	seg, err := os.ReadFile(filepath.Join(dir, segName(s.OpenEnd().Segment)))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(seg, []byte("record-")) {
		t.Fatal("a record reached the segment file: the test would not exercise the ring")
	}
	crashDir, crashRing := copyDir(t, dir), copyDir(t, ringDir)

	s2, _ := openSpool(t, Config{Dir: crashDir, RingDir: crashRing})
	got, _ := readAll(t, s2, s2.Checkpoint())
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after the crash read %d records, want the %d acknowledged ones in order", len(got), len(want))
	}
	if _, err := os.Stat(filepath.Dir(ringPath(crashRing, s2.ID()))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ring directory after recovery with SyncInterval 0: %v, want it removed", err)
	}
}

// minorFaults returns the minor page faults of the calling thread so far (lock it first).
func minorFaults(t *testing.T) int64 {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Minflt
}

// mappingRSS returns the resident bytes of the mapping that starts at addr, from /proc/self/smaps.
func mappingRSS(t *testing.T, addr uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := fmt.Sprintf("%x-", addr)
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = strings.HasPrefix(line, want)
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			kb, err := strconv.Atoi(strings.Fields(line)[1])
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no mapping at %#x in /proc/self/smaps", addr)
	return 0
}

// TestRingFallsBackToSpoolDir makes the default ring directory unusable (a file, not a directory,
// on tmpfs): Open must put the ring into the spool directory instead of failing, and an
// explicitly configured directory that is unusable must fail Open with a clear error.
func TestRingFallsBackToSpoolDir(t *testing.T) {
	leakcheck.Register(t)
	notDir := filepath.Join("/dev/shm", fmt.Sprintf("kyomi-test-notdir-%d", os.Getpid()))
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(notDir) })
	t.Cleanup(func(d string) func() { return func() { shmDir = d } }(shmDir))
	shmDir = notDir // read by Open

	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir, SyncInterval: time.Hour})
	if err := s.Append([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ringPath(dir, s.ID())); err != nil {
		t.Fatalf("no ring in the spool directory after the default one failed: %v", err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, s, s.Checkpoint()); len(got) != 1 || got[0] != "one" {
		t.Fatalf("read %q, want [one]", got)
	}

	_, err := Open(Config{Dir: t.TempDir(), SyncInterval: time.Hour, RingDir: notDir})
	if err == nil || !strings.Contains(err.Error(), "spool.Config.RingDir") {
		t.Fatalf("open with a ring dir that is a file: %v, want a ring dir error", err)
	}
}
