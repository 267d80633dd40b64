package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
)

// TestKillNineLosesNothing drives load through the real binary and SIGKILLs it at random moments,
// 20 times, restarting it each time on the same data directory. At the end every event that got a
// 202 must be in ClickHouse exactly once; the unique marker in its props tells events apart. It
// runs with the default, where an answer follows the event's store into the spool's mapping (the
// page cache); with -spool-sync-interval 1m, where no fsync happens but those before each insert;
// and with -spool-sync-interval 0, an fsync before each answer: a crash of the process must lose
// nothing in any.
func TestKillNineLosesNothing(t *testing.T) {
	for _, extra := range [][]string{nil, {"-spool-sync-interval", "1m"}, {"-spool-sync-interval", "0"}} {
		t.Run(fmt.Sprintf("flags=%v", extra), func(t *testing.T) {
			testKillNineLosesNothing(t, extra)
		})
	}
}

func testKillNineLosesNothing(t *testing.T, extra []string) {
	dataDir, args := e2eEnv(t)
	args = append(args, extra...)
	const kills = 20
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		seq   atomic.Int64
	)
	for round := 0; round <= kills; round++ {
		p := startCollector(t, nil, args...)
		stop := make(chan struct{})
		wg := loadMarked(func() string { return p.addr }, stop, &mu, acked, &seq)
		if round < kills {
			time.Sleep(time.Duration(100+rand.IntN(600)) * time.Millisecond)
			_ = p.stop(syscall.SIGKILL, 30*time.Second)
		} else {
			waitAcked(t, &mu, acked, 20)
			close(stop)
			wg.Wait()
			if err := p.stop(syscall.SIGTERM, 120*time.Second); err != nil {
				t.Fatalf("final SIGTERM: exit %v\n%s", err, p.logs.String())
			}
			break
		}
		close(stop)
		wg.Wait()
	}
	stored := checkStoredOnce(t, dataDir, acked)
	t.Logf("acknowledged %d events over %d SIGKILLs; stored %d distinct markers", len(acked), kills, stored)
}

// waitAcked waits until n more events of the load were acknowledged: the run the test is about to
// stop has taken load.
func waitAcked(t *testing.T, mu *sync.Mutex, acked map[string]bool, n int) {
	t.Helper()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	from := count()
	testkit.Eventually(t, 30*time.Second, fmt.Sprintf("%d more events acknowledged", n), func() bool { return count() >= from+n })
}

// checkStoredOnce fails t unless every marker in acked is stored exactly once, and returns how
// many distinct markers are stored.
func checkStoredOnce(t *testing.T, dataDir string, acked map[string]bool) int {
	t.Helper()
	if len(acked) < 200 {
		t.Fatalf("only %d events were acknowledged: the load did not run", len(acked))
	}
	rows := sql(t, dataDir, "SELECT props['marker'], count() FROM analytics.events WHERE name = 'signup' GROUP BY 1 FORMAT TSV")
	stored := map[string]int{}
	for _, r := range rows {
		var m string
		var n int
		if _, err := fmt.Sscanf(strings.Replace(r, "\t", " ", 1), "%s %d", &m, &n); err != nil {
			t.Fatalf("bad row %q", r)
		}
		stored[m] = n
	}
	missing, doubled := 0, 0
	for m := range acked {
		switch n := stored[m]; {
		case n == 0:
			missing++
		case n > 1:
			doubled++
			if doubled <= 5 {
				// The batch token of each copy tells two batches over the same spool records
				// (different tokens) from one batch stored twice (the same token).
				t.Logf("stored %d times: %s %v", n, m, sql(t, dataDir, "SELECT batch_token, _part, ts, visitor_id FROM analytics.events WHERE props['marker'] = '"+m+"' FORMAT TSV"))
			}
		}
	}
	if missing > 0 || doubled > 0 {
		t.Fatalf("%d acknowledged events missing, %d stored more than once", missing, doubled)
	}
	return len(stored)
}

// loadMarked sends signup events with unique markers from 8 workers to the collector at *addr until
// stop closes, and records the acknowledged markers in acked.
func loadMarked(addr func() string, stop chan struct{}, mu *sync.Mutex, acked map[string]bool, seq *atomic.Int64) *sync.WaitGroup {
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				marker := fmt.Sprintf("m%d", seq.Add(1))
				body := `{"n":"signup","u":"https://acme.example/kill","d":"acme.example","p":{"marker":"` + marker + `"}}`
				req, _ := http.NewRequest("POST", "http://"+addr()+"/api/event", strings.NewReader(body))
				req.Header.Set("Content-Type", "text/plain")
				req.Header.Set("User-Agent", chromeUA)
				req.Header.Set("Accept-Language", "en")
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", seq.Load()%250+1))
				resp, err := client.Do(req)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue // the process died under us: not acknowledged
				}
				resp.Body.Close()
				if resp.StatusCode == 202 && resp.Header.Get("X-Collector-Dropped") == "" {
					mu.Lock()
					acked[marker] = true
					mu.Unlock()
				}
			}
		}()
	}
	return &wg
}

// enginePID is the managed engine's process id recorded in the data directory, 0 if none.
func enginePID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "engine", "engine.pid"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// TestKillEngineLosesNothing SIGKILLs the managed engine (the ClickHouse server the collector
// writes to) under load, 6 times, alone ("engine": the collector starts it again and the spool
// holds events meanwhile) or together with the collector ("both": the collector is restarted
// on the same data directory). Every acknowledged event must be stored exactly once.
func TestKillEngineLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes under load")
	}
	for _, both := range []bool{false, true} {
		name := "engine"
		if both {
			name = "both"
		}
		t.Run(name, func(t *testing.T) {
			dataDir, args := e2eEnv(t)
			const kills = 6
			var (
				mu    sync.Mutex
				acked = map[string]bool{}
				seq   atomic.Int64
				cur   atomic.Pointer[proc]
			)
			p := startCollector(t, nil, args...)
			cur.Store(p)
			stop := make(chan struct{})
			wg := loadMarked(func() string { return cur.Load().addr }, stop, &mu, acked, &seq)
			for k := range kills {
				time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
				pid := enginePID(dataDir)
				if pid == 0 {
					t.Fatal("no engine pid recorded")
				}
				_ = syscall.Kill(pid, syscall.SIGKILL)
				if both {
					_ = cur.Load().stop(syscall.SIGKILL, 30*time.Second)
					p = startCollector(t, nil, args...)
					cur.Store(p)
					continue
				}
				// Wait until the collector has started the engine again and it answers.
				testkit.Eventually(t, time.Minute, fmt.Sprintf("engine restart %d", k+1), func() bool {
					return testkit.MetricOrZero(t, p.metrics(), "collector_engine_restarts_total") >= float64(k+1) &&
						testkit.MetricOrZero(t, p.metrics(), "collector_engine_up") == 1
				})
			}
			waitAcked(t, &mu, acked, 20)
			close(stop)
			wg.Wait()
			if !both {
				if n := testkit.Metric(t, p.metrics(), "collector_engine_restarts_total"); n < kills {
					t.Errorf("collector_engine_restarts_total %v after %d kills", n, kills)
				}
			}
			if err := cur.Load().stop(syscall.SIGTERM, 120*time.Second); err != nil {
				t.Fatalf("final SIGTERM: exit %v\n%s", err, cur.Load().logs.String())
			}
			stored := checkStoredOnce(t, dataDir, acked)
			t.Logf("acknowledged %d events over %d engine SIGKILLs (collector too: %v); stored %d", len(acked), kills, both, stored)
		})
	}
}
