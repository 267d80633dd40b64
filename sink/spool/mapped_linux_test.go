package spool

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/kyomi/collector/internal/leakcheck"
)

// TestMappedFaultFailsAppend cuts the live segment file under a SyncInterval spool, so that the
// next store into the mapping faults (SIGBUS): the append must fail with an error, the spool must
// turn unready and refuse later appends, and the process must live on.
func TestMappedFaultFailsAppend(t *testing.T) {
	leakcheck.Register(t)
	dir := t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir, SyncInterval: time.Hour})
	if err := s.Append([]byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, segName(s.OpenEnd().Segment)), 0); err != nil {
		t.Fatal(err)
	}
	err := s.Append([]byte("after"))
	if err == nil || !strings.Contains(err.Error(), "memory fault") {
		t.Fatalf("append into a cut segment: %v, want a memory fault error", err)
	}
	if s.Ready() {
		t.Error("spool still ready after a fault")
	}
	if err := s.Append([]byte("later")); err == nil {
		t.Error("append after a fault reported success")
	}
}

// TestMappedPagesReleased appends 24 MiB to a SyncInterval spool and checks, in the kernel's own
// account of the mapping (/proc/self/smaps), that the process keeps at most releaseBytes of the
// segment resident, at most one page after a sync, and that every record still reads back.
func TestMappedPagesReleased(t *testing.T) {
	leakcheck.Register(t)
	s, _ := openSpool(t, Config{Dir: t.TempDir(), SyncInterval: time.Hour})
	rec := bytes.Repeat([]byte{'r'}, 1024-headerSize)
	const n = 24<<10 + 100 // the last 100 KiB stay mapped
	for range n {
		if err := s.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	start := uintptr(unsafe.Pointer(&s.mem[0]))
	s.mu.Unlock()
	rss := mappingRSS(t, start)
	if rss > releaseBytes+os.Getpagesize() {
		t.Errorf("the segment mapping has %d bytes resident after 24 MiB of appends, want at most %d", rss, releaseBytes+os.Getpagesize())
	}
	if rss == 0 {
		t.Error("the segment mapping has nothing resident: the test does not see the mapping")
	}
	// A sync first releases every whole page behind the tail, so that writeback finds none of
	// them mapped. (Pages after the tail may be mapped: the kernel maps a file's large folio
	// whole on a write fault.)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	behind := int(s.tail) / os.Getpagesize()
	s.mu.Unlock()
	if n := presentPages(t, start, behind); n != 0 {
		t.Errorf("%d of the %d pages behind the tail are mapped after a sync, want none", n, behind)
	}
	if presentPages(t, start+uintptr(behind*os.Getpagesize()), 1) != 1 {
		t.Error("the tail's page is not mapped after a sync: the test does not see the mapping")
	}
	if got, _ := readAll(t, s, s.Checkpoint()); len(got) != n {
		t.Fatalf("read %d records, want %d", len(got), n)
	}
}

// presentPages counts the pages of the n from addr that are in the process's page tables, from
// the present bit of /proc/self/pagemap.
func presentPages(t *testing.T, addr uintptr, n int) int {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 8*n)
	if _, err := f.ReadAt(buf, int64(addr/uintptr(os.Getpagesize()))*8); err != nil {
		t.Fatal(err)
	}
	present := 0
	for i := range n {
		if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
			present++
		}
	}
	return present
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
