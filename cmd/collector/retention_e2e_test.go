package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
)

// TestTierChangeMovesStoredRows moves a workspace from a 30-day to a 395-day tier while the binary
// runs: rows stored under the old tier get the new retention through one mutation, rows of the
// other workspace keep theirs, and a reload that changes nothing issues no mutation.
func TestTierChangeMovesStoredRows(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ws.yaml")
	dataDir := filepath.Join(dir, "data")
	write := func(s string) { t.Helper(); testkit.WriteFile(t, cfg, []byte(s)) }
	const tiers = "tiers:\n  free: { retention_days: 30 }\n  pro: { retention_days: 395 }\nworkspaces:\n"
	const other = "  - id: ws_b\n    tier: free\n    domains: [b.example]\n"
	write(tiers + "  - id: ws_a\n    tier: free\n    domains: [a.example]\n" + other)
	p := startCollector(t, nil, "-config", cfg, "-data-dir", dataDir, "-trusted-proxies", "127.0.0.1/32",
		"-batch-age", "100ms")

	for i, d := range []string{"a.example", "a.example", "b.example"} {
		ev := beacon{body: `{"n":"pageview","u":"https://` + d + `/p","d":"` + d + `"}`, ip: "203.0.113." + string(rune('1'+i)), ua: chromeUA}
		if code, hdr, body := p.send(t, ev); code != 202 || hdr.Get("X-Collector-Dropped") != "" {
			t.Fatalf("event %d: %d %q %s", i, code, hdr.Get("X-Collector-Dropped"), body)
		}
	}
	waitMetric(t, p, "collector_sink_rows_flushed_total", 3)
	if v := testkit.MetricOrZero(t, p.metrics(), "collector_retention_mutations_issued_total"); v != 0 {
		t.Fatalf("%v mutations issued before any tier change", v)
	}

	write(tiers + "  - id: ws_a\n    tier: pro\n    domains: [a.example]\n" + other)
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitMetric(t, p, "collector_retention_mutations_issued_total", 1)
	waitLog(t, p, "retention mutations done")

	// A reload with the same tiers (only a domain added) finds nothing to change.
	write(tiers + "  - id: ws_a\n    tier: pro\n    domains: [a.example, c.example]\n" + other)
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	// The reload is in force once it is logged (each distinct content once, by SIGHUP or polling);
	// the keeper decided on it before that reload returned.
	testkit.Eventually(t, 20*time.Second, "the second reload in force", func() bool {
		return strings.Count(p.logs.String(), "workspaces file reloaded") >= 2
	})
	if v := testkit.Metric(t, p.metrics(), "collector_retention_mutations_issued_total"); v != 1 {
		t.Fatalf("%v retention mutations after a reload that changed no tier, want 1", v)
	}
	if v := testkit.MetricOrZero(t, p.metrics(), "collector_retention_errors_total"); v != 0 {
		t.Fatalf("%v retention errors\n%s", v, p.logs.String())
	}
	if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.logs.String())
	}
	got := strings.Join(sql(t, dataDir, "SELECT workspace_id, retention_days, count() FROM analytics.events GROUP BY 1, 2 ORDER BY 1, 2"), "\n")
	want := "ws_a\t395\t2\nws_b\t30\t1"
	if got != want {
		t.Fatalf("stored retention:\n%s\nwant:\n%s", got, want)
	}
}

// waitMetric waits until the unlabelled counter name of p reaches want.
func waitMetric(t *testing.T, p *proc, name string, want float64) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, fmt.Sprintf("%s >= %v", name, want), func() bool {
		return testkit.MetricOrZero(t, p.metrics(), name) >= want
	})
}

// waitLog waits until p has logged msg.
func waitLog(t *testing.T, p *proc, msg string) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, fmt.Sprintf("the log %q", msg), func() bool {
		return strings.Contains(p.logs.String(), msg)
	})
}
