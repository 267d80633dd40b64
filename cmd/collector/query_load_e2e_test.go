package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// procKB reads a "Name:   N kB" line of /proc/PID/status.
func procKB(t *testing.T, pid int, name string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return 0
}

// TestQueryHammerKeepsIngest runs the large answer (10,000 rows of
// 20 kB, about 200 MB) from 12 concurrent callers of one token, three
// times each, against the built binary, while beacons keep arriving. Every
// beacon must be answered 202, every query too_large or too_busy (none may
// carry the answer). The collector reads answers over HTTP from its managed
// engine and stops at the 64 MiB answer limit, at most 4 statements at once,
// each read into a buffer that may double once: its peak memory must stay
// within 512 MiB of what it held before. The engine's within 1.25 GiB: one
// statement's max_memory_usage (1 GiB) plus its output, which the HTTP
// interface holds whole (wait_end_of_query) before it sends any. Three such queries
// took the collector, with the engine in process, from 0.33 to 3.5 GB
// before the limits.
func TestQueryHammerKeepsIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and drives the binary under load; run without -short")
	}
	keys := newConnectKeys(t)
	token, _ := keys.tokenFile(t, "ws_acme", "ws://127.0.0.1:1/connect")
	dataDir, args := e2eEnv(t)
	p := startCollector(t, nil, append(args, "-jwks", keys.jwks)...)
	pid := p.cmd.Process.Pid
	before := procKB(t, pid, "VmRSS")
	// The managed engine is a child process; its pid is in <data-dir>/engine/engine.pid.
	pidText, err := os.ReadFile(filepath.Join(dataDir, "engine", "engine.pid"))
	if err != nil {
		t.Fatal(err)
	}
	enginePID, err := strconv.Atoi(strings.Fields(string(pidText))[0])
	if err != nil {
		t.Fatal(err)
	}
	engineBefore := procKB(t, enginePID, "VmRSS")

	stop := make(chan struct{})
	var sent, accepted atomic.Int64
	var ingest sync.WaitGroup
	ingest.Add(1)
	go func() {
		defer ingest.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			code, _, _ := p.send(t, beacon{body: `{"n":"pageview","u":"https://acme.example/load","d":"acme.example"}`,
				ip: fmt.Sprintf("203.0.113.%d", i%250+1), ua: chromeUA})
			sent.Add(1)
			if code == 202 {
				accepted.Add(1)
			}
		}
	}()

	msg, _ := json.Marshal(map[string]any{"id": "big", "op": "execute_query", "params": map[string]any{
		"sql": "SELECT arrayJoin(range(10000)) AS a, repeat('z', 20000) AS b"}})
	var mu sync.Mutex
	codes := map[string]int{}
	var biggest int
	var callers sync.WaitGroup
	start := time.Now()
	for c := 0; c < 12; c++ {
		callers.Add(1)
		go func() {
			defer callers.Done()
			for range 3 {
				req, _ := http.NewRequest("POST", "http://"+p.addr+"/api/query", strings.NewReader(string(msg)))
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var r struct {
					Type  string
					Error struct{ Code string }
				}
				_ = json.Unmarshal(body, &r)
				mu.Lock()
				codes[r.Type+":"+r.Error.Code]++
				biggest = max(biggest, len(body))
				mu.Unlock()
			}
		}()
	}
	callers.Wait()
	elapsed := time.Since(start)
	close(stop)
	ingest.Wait()
	peak := procKB(t, pid, "VmHWM")
	after := procKB(t, pid, "VmRSS")
	enginePeak, engineAfter := procKB(t, enginePID, "VmHWM"), procKB(t, enginePID, "VmRSS")
	t.Logf("36 large queries in %s: answers %v, largest answer %d bytes; collector RSS %d MB before, peak %d MB, %d MB after; engine RSS %d MB before, peak %d MB, %d MB after; beacons %d sent, %d answered 202 (%.1f%%)",
		elapsed.Round(time.Millisecond), codes, biggest, before/1024, peak/1024, after/1024, engineBefore/1024, enginePeak/1024, engineAfter/1024, sent.Load(), accepted.Load(),
		100*float64(accepted.Load())/float64(max(sent.Load(), 1)))
	for k := range codes {
		if k != "error:too_large" && k != "error:too_busy" {
			t.Errorf("answer %q: every large query must be refused", k)
		}
	}
	if biggest > 4096 {
		t.Errorf("an answer of %d bytes: the refusal must not carry data", biggest)
	}
	if sent.Load() == 0 || accepted.Load() != sent.Load() {
		t.Errorf("%d of %d beacons answered 202 while the query path was hammered", accepted.Load(), sent.Load())
	}
	if peak-before > 512<<10 {
		t.Errorf("collector peak RSS %d MB, %d MB above the %d MB before the queries; want under 512 MiB more", peak/1024, (peak-before)/1024, before/1024)
	}
	if enginePeak-engineBefore > 1280<<10 {
		t.Errorf("engine peak RSS %d MB, %d MB above the %d MB before the queries; want under 1.25 GiB more", enginePeak/1024, (enginePeak-engineBefore)/1024, engineBefore/1024)
	}
}
