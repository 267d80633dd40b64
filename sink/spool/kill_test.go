package spool

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain runs the appender child of TestSIGKILLLosesNoAck when
// SPOOL_KILL_DIR is set, and the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SPOOL_KILL_DIR"); dir != "" {
		interval, _ := time.ParseDuration(os.Getenv("SPOOL_KILL_INTERVAL"))
		if os.Getenv("SPOOL_KILL_NOCOPY") != "" {
			copyInterval = time.Hour
		}
		killAppender(dir, os.Getenv("SPOOL_KILL_ROUND"), interval)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// killAppender appends records from 8 goroutines and prints the id of
// every record whose Append returned nil, until the process is killed.
func killAppender(dir, round string, interval time.Duration) {
	s, err := Open(Config{Dir: dir, SyncInterval: interval})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%s-%d-%d", round, w, i)
				if err := s.Append([]byte(id)); err != nil {
					return
				}
				mu.Lock()
				fmt.Fprintln(out, id)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestSIGKILLLosesNoAck kills an appending process at random moments and
// checks after each restart that every acknowledged record is in the spool
// exactly once: with an fsync before each acknowledgement; with
// SyncInterval (a store into the ring before each acknowledgement, a copy
// into the segment every 50 ms, an hour between fsyncs, so none happens
// while the process lives); and with SyncInterval and no copies, so that
// only the next Open moves the ring's records into the segment.
func TestSIGKILLLosesNoAck(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 of a child process: skipped by -short, run in full by CI")
	}
	for _, tc := range []struct {
		interval time.Duration
		noCopy   bool
	}{{0, false}, {time.Hour, false}, {time.Hour, true}} {
		t.Run(fmt.Sprintf("sync-interval=%s/no-copy=%t", tc.interval, tc.noCopy), func(t *testing.T) {
			testSIGKILLLosesNoAck(t, tc.interval, tc.noCopy)
		})
	}
}

func testSIGKILLLosesNoAck(t *testing.T, interval time.Duration, noCopy bool) {
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := range 8 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SPOOL_KILL_DIR="+dir, fmt.Sprintf("SPOOL_KILL_ROUND=%d", round),
			"SPOOL_KILL_INTERVAL="+interval.String())
		if noCopy {
			cmd.Env = append(cmd.Env, "SPOOL_KILL_NOCOPY=1")
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// The kill is armed by the child's first acknowledgement, not by its start: on a loaded
		// machine a child could be killed before it acknowledged anything.
		var kill <-chan time.Time
		armed := false
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				acked[l] = true
				if !armed {
					armed = true
					kill = time.After(time.Duration(50+rand.IntN(250)) * time.Millisecond)
				}
			case <-kill:
				cmd.Process.Signal(syscall.SIGKILL)
				kill = nil
			}
		}
		cmd.Wait()
	}
	if len(acked) < 100 {
		t.Fatalf("only %d records acknowledged over all rounds", len(acked))
	}
	s, _ := openSpool(t, Config{Dir: dir})
	got, _ := readAll(t, s, s.Checkpoint())
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged record %s stored %d times", id, seen[id])
		}
	}
	t.Logf("%d acknowledged, %d stored across 8 SIGKILLs", len(acked), len(got))
}
