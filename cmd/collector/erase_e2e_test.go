package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEraseCoversSpooledEvents: events acknowledged but still in the spool when the collector died
// are covered by `collector erase-workspace`. It ships the spool first; otherwise the next start
// would insert the erased workspace's events again. The other workspace's events are kept.
func TestEraseCoversSpooledEvents(t *testing.T) {
	dataDir, args := e2eEnv(t)
	// No flush while the events arrive: they stay in the spool until the SIGKILL.
	args = append(args, "-batch-age", "10m", "-batch-rows", "100000")
	p := startCollector(t, nil, args...)
	for i := range 5 {
		for _, d := range []string{"acme.example", "globex.example"} {
			body := fmt.Sprintf(`{"n":"pageview","u":"https://%s/p%d","d":"%s"}`, d, i, d)
			if code, _, resp := p.send(t, beacon{body: body, ip: "203.0.113.8", ua: chromeUA}); code != 202 {
				t.Fatalf("%s: %d %s", d, code, resp)
			}
		}
	}
	_ = p.stop(syscall.SIGKILL, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binPath, "erase-workspace", "-data-dir", dataDir, "ws_acme").CombinedOutput()
	if err != nil {
		t.Fatalf("erase-workspace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "shipped 10 spooled events") || !strings.Contains(string(out), "workspace ws_acme") {
		t.Fatalf("erase-workspace said:\n%s", out)
	}
	count := func() string {
		return strings.Join(sql(t, dataDir, "SELECT workspace_id, count() FROM analytics.events GROUP BY 1 ORDER BY 1"), ";")
	}
	if got := count(); got != "ws_globex\t5" {
		t.Fatalf("after the erasure: %q, want only ws_globex's 5 events", got)
	}
	// A restart finds nothing left to replay.
	p = startCollector(t, nil, args...)
	if err := p.stop(syscall.SIGTERM, 2*time.Minute); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.logs.String())
	}
	if got := count(); got != "ws_globex\t5" {
		t.Fatalf("after a restart: %q, want only ws_globex's 5 events", got)
	}
}
