package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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
	client := &http.Client{Timeout: 5 * time.Second}
	for round := 0; round <= kills; round++ {
		p := startCollector(t, nil, args...)
		stop := make(chan struct{})
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
					req, _ := http.NewRequest("POST", "http://"+p.addr+"/api/event", strings.NewReader(body))
					req.Header.Set("Content-Type", "text/plain")
					req.Header.Set("User-Agent", chromeUA)
					req.Header.Set("Accept-Language", "en")
					req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", seq.Load()%250+1))
					resp, err := client.Do(req)
					if err != nil {
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
		if round < kills {
			time.Sleep(time.Duration(100+rand.IntN(600)) * time.Millisecond)
			_ = p.stop(syscall.SIGKILL, 30*time.Second)
		} else {
			time.Sleep(300 * time.Millisecond)
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
	t.Logf("acknowledged %d events over %d SIGKILLs; stored %d distinct markers", len(acked), kills, len(stored))
	if missing > 0 || doubled > 0 {
		t.Fatalf("%d acknowledged events missing, %d stored more than once", missing, doubled)
	}
}
