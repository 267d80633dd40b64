package sink

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/row/rowtest"
)

func TestEraseWorkspace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ts := time.Now().UTC().Add(-time.Hour)
	erase, keep := fresh("ws_erase_me"), fresh("ws_erase_keep")
	for _, ws := range []string{erase, keep} {
		if err := testStore.Insert(ctx, rowtest.Events(ws, 50, ts, 30), "erase-"+ws); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := EraseWorkspaceWith(ctx, testStore, erase, EraseConfig{Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.RowsBefore != 50 || rep.RowsAfter != 0 || !rep.Rewritten || rep.MutationID == "" {
		t.Fatalf("report: %+v", rep)
	}
	if !strings.Contains(rep.String(), erase) {
		t.Fatalf("report text: %s", rep)
	}
	if n := countRows(t, erase); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	if n := countRows(t, keep); n != 50 {
		t.Fatalf("other workspace has %d rows, want 50", n)
	}
	// The rewritten parts hold no trace of the erased workspace.
	res, err := testStore.Select(ctx, "SELECT count() FROM analytics.events WHERE workspace_id = "+QuoteString(erase)+" SETTINGS apply_mutations_on_fly = 0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := asUint64(res.Rows[0][0]); n != 0 {
		t.Fatalf("%d rows still in parts", n)
	}
}

func TestEraseWorkspaceEmptyID(t *testing.T) {
	if _, err := EraseWorkspace(context.Background(), testStore, " "); err == nil {
		t.Fatal("want an error")
	}
}

// TestEraseWorkspacePhysicallyComplete waits until the replaced parts are
// removed from disk. The table is told to remove old parts after one
// second instead of eight minutes, and to look for them every second
// (an idle cleanup thread otherwise backs off up to five minutes), so the
// test stays short.
//
// The cleanup thread reads those settings only when it schedules its next
// run; MODIFY SETTING does not reschedule it. A thread that last ran under
// the defaults sleeps 30 s to five minutes: the first run is up to 40 s
// after the table is created, and after the RESET of an earlier pass
// (go test -count=2) the engine logged "Scheduling next cleanup after
// 195000ms", longer than this test waits. SYSTEM START CLEANUP wakes it
// at once, and from then on it runs every second.
func TestEraseWorkspacePhysicallyComplete(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := testStore.Exec(ctx, "ALTER TABLE analytics.events MODIFY SETTING old_parts_lifetime = 1, cleanup_delay_period = 1, max_cleanup_delay_period = 1, cleanup_delay_period_random_add = 0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testStore.Exec(context.Background(), "ALTER TABLE analytics.events RESET SETTING old_parts_lifetime, cleanup_delay_period, max_cleanup_delay_period, cleanup_delay_period_random_add"); err != nil {
			t.Error(err)
		}
	})
	if err := testStore.Exec(ctx, "SYSTEM START CLEANUP analytics.events"); err != nil {
		t.Fatal(err)
	}
	ws := fresh("ws_erase_disk")
	if err := testStore.Insert(ctx, rowtest.Events(ws, 20, time.Now().UTC(), 30), "erase-"+ws); err != nil {
		t.Fatal(err)
	}
	dirs := partDirsHolding(t, ws)
	rep, err := EraseWorkspaceWith(ctx, testStore, ws, EraseConfig{Poll: 100 * time.Millisecond, WaitRemoval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || rep.OldPartsPending != 0 || rep.RowsBefore != 20 {
		t.Fatalf("report: %+v", rep)
	}
	if !strings.Contains(rep.String(), "physically complete") {
		t.Fatalf("report text: %s", rep)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("part directory %s that held the workspace is still on disk (stat: %v)", d, err)
		}
	}
	t.Logf("%s", rep)
}

// partDirsHolding returns the directories on disk of the active parts that
// hold rows of workspace ws.
func partDirsHolding(t *testing.T, ws string) []string {
	t.Helper()
	res, err := testStore.Select(context.Background(), "SELECT path FROM system.parts WHERE database = 'analytics' AND table = 'events' AND active"+
		" AND name IN (SELECT DISTINCT _part FROM analytics.events WHERE workspace_id = "+QuoteString(ws)+")", nil)
	if err != nil {
		t.Fatal(err)
	}
	dirs := make([]string, 0, len(res.Rows))
	for _, row := range res.Rows {
		d, _ := row[0].(string)
		if _, err := os.Stat(d); err != nil { // else the check that it is gone proves nothing
			t.Fatalf("part directory of workspace %s: %v", ws, err)
		}
		dirs = append(dirs, d)
	}
	if len(dirs) == 0 {
		t.Fatalf("no part holds workspace %s", ws)
	}
	return dirs
}
