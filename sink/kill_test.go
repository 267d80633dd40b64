package sink

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
	"github.com/kyomi/collector/sink/engine"
	"github.com/kyomi/collector/sink/engine/enginetest"
	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/row/rowtest"
)

// killBatchRows is the size of every batch the inserter child writes.
const killBatchRows = 20

// killInserter is the child of TestReplayAfterSIGKILLStoresOnce. It starts a managed engine on
// dir (a child process of its own, which the kernel kills when this process dies, as the
// collector's engine) and writes to it through the server store. Like the Shipper, it records a
// batch as pending (fsynced) before inserting it with a token that names it, and records it done
// after; at start it first replays a batch left pending by a killed predecessor with
// ReplayInsert and the same token.
// With mode "count" it stops after that replay and prints "batch rows" lines.
func killInserter(dir, mode string, t0 time.Time) error {
	srv, err := enginetest.Start(enginetest.Options{Local: true, Dir: dir})
	if err != nil {
		return err
	}
	defer srv.Close()
	st, err := OpenServer(srv.DSN("default"))
	if err != nil {
		return err
	}
	defer st.Close()
	ctx := context.Background()
	if err := Migrate(ctx, st, SchemaConfig{}); err != nil {
		return err
	}
	stateFile := filepath.Join(dir, "state")
	batch := func(n int) []row.Event {
		// The same rows every time, as a replay from the spool has them.
		rows := rowtest.Events("ws_kill", killBatchRows, t0.Add(time.Duration(n)*time.Second), 30)
		for i := range rows {
			rows[i].PropKeys, rows[i].PropValues = []string{"batch"}, []string{strconv.Itoa(n)}
		}
		return rows
	}
	save := func(state string) error {
		f, err := os.Create(stateFile + ".tmp")
		if err != nil {
			return err
		}
		if _, err := f.WriteString(state); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		f.Close()
		return os.Rename(stateFile+".tmp", stateFile)
	}
	next, pending := 0, -1
	if b, err := os.ReadFile(stateFile); err == nil {
		fmt.Sscanf(string(b), "%d %d", &next, &pending)
	}
	if pending >= 0 {
		if err := st.ReplayInsert(ctx, batch(pending), "kill-"+strconv.Itoa(pending)); err != nil {
			return err
		}
		next = pending + 1
		if err := save(fmt.Sprintf("%d -1", next)); err != nil {
			return err
		}
	}
	fmt.Println("ready") // the parent's random kill starts counting now
	if mode == "count" {
		out, err := st.Raw(ctx, "SELECT props['batch'], count() FROM analytics.events WHERE workspace_id = 'ws_kill' GROUP BY 1", "TSV")
		if err != nil {
			return err
		}
		fmt.Printf("next %d\n%s", next, out)
		return nil
	}
	for n := next; ; n++ {
		if err := save(fmt.Sprintf("%d %d", n, n)); err != nil {
			return err
		}
		if err := st.Insert(ctx, batch(n), "kill-"+strconv.Itoa(n)); err != nil {
			return err
		}
		if err := save(fmt.Sprintf("%d -1", n+1)); err != nil {
			return err
		}
	}
}

// TestReplayAfterSIGKILLStoresOnce kills a process that inserts token-named batches into its
// managed engine at random moments, 20 times (the engine, its child, dies with it, in the middle
// of an insert or not), and restarts it on the same directory; each restart starts the engine
// again on the same data and replays the batch that was pending at the kill. Every batch must be
// stored exactly once. (With a plain Insert of the same token the engine's deduplication log
// alone decides, and this test caught it losing a batch on the in-process engine: the token
// survived the kill, the part did not.)
func TestReplayAfterSIGKILLStoresOnce(t *testing.T) {
	dir := t.TempDir()
	t0 := strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)
	run := func(mode string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SINK_KILL_DIR="+dir, "SINK_KILL_MODE="+mode, "SINK_KILL_T0="+t0)
		return cmd
	}
	for round := 0; round < 20; round++ {
		cmd := run("insert")
		var out strings.Builder
		cmd.Stderr = &out
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if line != "ready\n" {
			_ = cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: inserter did not start: %q\n%s", round, line, out.String())
		}
		time.Sleep(time.Duration(20+rand.IntN(800)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: inserter ended with %v before the kill:\n%s", round, err, out.String())
		}
		// The engine dies with its parent (the kernel kills it), in the middle of an insert or
		// not; the next round's engine is not the one that survived.
		b, err := os.ReadFile(filepath.Join(dir, "engine", "engine.pid"))
		if err != nil {
			t.Fatalf("round %d: no engine pid: %v", round, err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("round %d: the engine (pid %d) to die with its killed parent", round, pid), func() bool {
			return pid <= 0 || !engine.ProcessRunning(pid)
		})
	}
	out, err := run("count").CombinedOutput()
	if err != nil {
		t.Fatalf("count: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(strings.TrimPrefix(string(out), "ready\n")), "\n")
	var next int
	if _, err := fmt.Sscanf(lines[0], "next %d", &next); err != nil || next < 20 {
		t.Fatalf("only %d batches inserted over 20 rounds:\n%s", next, out)
	}
	got := map[int]int{}
	for _, l := range lines[1:] {
		var b, n int
		if _, err := fmt.Sscanf(l, "%d\t%d", &b, &n); err != nil {
			t.Fatalf("bad line %q", l)
		}
		got[b] = n
	}
	bad := 0
	for b := 0; b < next; b++ {
		if got[b] != killBatchRows {
			bad++
			t.Errorf("batch %d stored %d rows, want %d", b, got[b], killBatchRows)
		}
	}
	t.Logf("%d batches over 20 SIGKILLs, %d not stored exactly once", next, bad)
}
