package sink

import (
	"context"
	"testing"
	"time"

	"github.com/kyomi/collector/sink/row/rowtest"
)

// materializeTTL applies TTL now instead of at the next merge.
func materializeTTL(t *testing.T) {
	t.Helper()
	if err := testStore.Exec(context.Background(), "ALTER TABLE analytics.events MATERIALIZE TTL SETTINGS mutations_sync = 2"); err != nil {
		t.Fatal(err)
	}
}

func TestTTLDeletesExpiredRows(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC()
	tests := []struct {
		name string
		ws   string
		age  time.Duration
		days uint16
		want uint64
	}{
		{"free tier, older than 30 days", "ws_ttl_free_old", 40 * 24 * time.Hour, 30, 0},
		{"free tier, younger than 30 days", "ws_ttl_free_new", 10 * 24 * time.Hour, 30, 5},
		{"pro tier, older than 30 days", "ws_ttl_pro_old", 40 * 24 * time.Hour, 395, 5},
	}
	for _, tc := range tests {
		if err := testStore.Insert(ctx, rowtest.Events(tc.ws, 5, now.Add(-tc.age), tc.days), "ttl-"+tc.ws); err != nil {
			t.Fatal(err)
		}
	}
	materializeTTL(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := countRows(t, tc.ws); got != tc.want {
				t.Fatalf("got %d rows, want %d", got, tc.want)
			}
		})
	}
}

func TestApplyRetentionTierChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := time.Now().UTC().Add(-40 * 24 * time.Hour)
	young := time.Now().UTC().Add(-20 * 24 * time.Hour)
	down, stay, empty := fresh("ws_tier_down"), fresh("ws_tier_stay"), fresh("ws_tier_empty")
	// Two pro workspaces with 40-day-old rows; one moves to free (30 days)
	// and also has rows young enough to outlive the change.
	for _, ws := range []string{down, stay} {
		if err := testStore.Insert(ctx, rowtest.Events(ws, 7, old, 395), "tier-"+ws); err != nil {
			t.Fatal(err)
		}
	}
	if err := testStore.Insert(ctx, rowtest.Events(down, 3, young, 395), "tier-young-"+down); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint16{down: 30, stay: 395, empty: 30}
	acts, err := ApplyRetention(ctx, testStore, want)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]RetentionAction{}
	for _, a := range acts {
		got[a.WorkspaceID] = a
	}
	if a := got[down]; a.Outcome != RetentionIssued || a.MutationID == "" {
		t.Fatalf("%s: got %+v, want issued", down, a)
	}
	for _, ws := range []string{stay, empty} {
		if a := got[ws]; a.Outcome != RetentionCurrent {
			t.Fatalf("%s: got %+v, want current", ws, a)
		}
	}
	if err := WaitMutations(ctx, testStore, []string{got[down].MutationID}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	res, err := testStore.Select(ctx, "SELECT groupUniqArray(retention_days) FROM analytics.events WHERE workspace_id = "+QuoteString(down), nil)
	if err != nil {
		t.Fatal(err)
	}
	if days := res.Rows[0][0].([]any); len(days) != 1 || days[0].(interface{ String() string }).String() != "30" {
		t.Fatalf("retention after tier change: %v", days)
	}
	// Applying again finds nothing to do: no second mutation.
	acts, err = ApplyRetention(ctx, testStore, want)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.Outcome != RetentionCurrent {
			t.Fatalf("second run: %+v, want current", a)
		}
	}
	materializeTTL(t)
	if n := countRows(t, down); n != 3 {
		t.Fatalf("%s has %d rows, want the 3 younger than 30 days", down, n)
	}
	if n := countRows(t, stay); n != 7 {
		t.Fatalf("%s has %d rows, want 7", stay, n)
	}
}

func TestFindRetentionMutation(t *testing.T) {
	pending := []pendingMutation{
		{"mutation_7.txt", "UPDATE retention_days = 30 WHERE (workspace_id = 'ws_a') AND (retention_days != 30)"},
		{"mutation_8.txt", "DELETE WHERE workspace_id = 'ws_b'"},
	}
	tests := []struct {
		name string
		ws   string
		days uint16
		want string
	}{
		{"same change running", "ws_a", 30, "mutation_7.txt"},
		{"other days", "ws_a", 395, ""},
		{"delete is not a retention change", "ws_b", 30, ""},
		{"prefix of another id", "ws_", 30, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := findRetentionMutation(pending, tc.ws, tc.days); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestApplyRetentionNotReissued holds merges (and so mutations) stopped to
// see that a second ApplyRetention finds the running mutation instead of
// issuing another.
func TestApplyRetentionNotReissued(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	held := fresh("ws_tier_held")
	if err := testStore.Insert(ctx, rowtest.Events(held, 4, time.Now().UTC().Add(-time.Hour), 30), "tier-"+held); err != nil {
		t.Fatal(err)
	}
	if err := testStore.Exec(ctx, "SYSTEM STOP MERGES analytics.events"); err != nil {
		t.Fatal(err)
	}
	started := false
	t.Cleanup(func() {
		if !started {
			_ = testStore.Exec(context.Background(), "SYSTEM START MERGES analytics.events")
		}
	})
	want := map[string]uint16{held: 395}
	first, err := ApplyRetention(ctx, testStore, want)
	if err != nil {
		t.Fatal(err)
	}
	second, err := ApplyRetention(ctx, testStore, want)
	if err != nil {
		t.Fatal(err)
	}
	if first[0].Outcome != RetentionIssued || second[0].Outcome != RetentionRunning || second[0].MutationID != first[0].MutationID {
		t.Fatalf("first %+v, second %+v: want issued then running with the same id", first[0], second[0])
	}
	st, err := MutationState(ctx, testStore, []string{first[0].MutationID})
	if err != nil || len(st) != 1 || st[0].Done {
		t.Fatalf("state while merges are stopped: %+v %v", st, err)
	}
	if err := testStore.Exec(ctx, "SYSTEM START MERGES analytics.events"); err != nil {
		t.Fatal(err)
	}
	started = true
	if err := WaitMutations(ctx, testStore, []string{first[0].MutationID}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	third, err := ApplyRetention(ctx, testStore, want)
	if err != nil || third[0].Outcome != RetentionCurrent {
		t.Fatalf("after the mutation: %+v %v", third, err)
	}
}
