package retention

import (
	"testing"

	"github.com/kyomi/collector/collector/workspace"
)

func snapshot(t *testing.T, yaml string) *workspace.Snapshot {
	t.Helper()
	s, err := workspace.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestChanged checks when a reload can need a mutation: only when some
// workspace's retention differs from before, or the workspace is new.
func TestChanged(t *testing.T) {
	const tiers = "tiers:\n  free: { retention_days: 30 }\n  pro: { retention_days: 395 }\n"
	base := snapshot(t, tiers+"workspaces:\n  - {id: ws_a, tier: free, domains: [a.example]}\n  - {id: ws_b, tier: pro, domains: [b.example]}\n")
	tests := []struct {
		name string
		old  *workspace.Snapshot
		new  *workspace.Snapshot
		want bool
	}{
		{"first load", nil, base, true},
		{"same tiers", base, snapshot(t, tiers+"workspaces:\n  - {id: ws_a, tier: free, domains: [a.example, www.a.example]}\n  - {id: ws_b, tier: pro, domains: [b.example]}\n"), false},
		{"tier moved", base, snapshot(t, tiers+"workspaces:\n  - {id: ws_a, tier: pro, domains: [a.example]}\n  - {id: ws_b, tier: pro, domains: [b.example]}\n"), true},
		{"workspace added", base, snapshot(t, tiers+"workspaces:\n  - {id: ws_a, tier: free, domains: [a.example]}\n  - {id: ws_b, tier: pro, domains: [b.example]}\n  - {id: ws_c, tier: free, domains: [c.example]}\n"), true},
		{"workspace removed", base, snapshot(t, tiers+"workspaces:\n  - {id: ws_a, tier: free, domains: [a.example]}\n"), false},
		{"tier's days changed", base, snapshot(t, "tiers:\n  free: { retention_days: 60 }\n  pro: { retention_days: 395 }\nworkspaces:\n  - {id: ws_a, tier: free, domains: [a.example]}\n  - {id: ws_b, tier: pro, domains: [b.example]}\n"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := changed(tt.old, tt.new); got != tt.want {
				t.Fatalf("changed = %v, want %v", got, tt.want)
			}
		})
	}
}
