package query

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestPartialLimitsKeepTheOthers checks that a Limits that sets one bound keeps every other bound
// at its default in the statement's SETTINGS: a zero field must never reach ClickHouse, which reads
// 0 as unlimited.
func TestPartialLimitsKeepTheOthers(t *testing.T) {
	g := &Guard{Limits: Limits{MaxMemory: 1 << 20}}
	p := g.scoped("ws_a", "SELECT 1", g.clampRows(0))
	for _, want := range []string{
		"max_memory_usage=1048576",
		"max_result_rows=10001",
		"max_result_bytes=67108864",
		"max_execution_time=30",
		"max_rows_to_read=200000000",
	} {
		if !strings.Contains(p.Settings, want) {
			t.Errorf("settings lack %s:\n%s", want, p.Settings)
		}
	}
	for _, name := range []string{"max_result_rows", "max_result_bytes", "max_memory_usage", "max_execution_time", "max_rows_to_read"} {
		if strings.Contains(p.Settings, name+"=0,") {
			t.Errorf("%s is 0 (unlimited):\n%s", name, p.Settings)
		}
	}
}

// TestConfigDefaults checks that a zero field takes DefaultConfig's value and a set one is kept.
func TestConfigDefaults(t *testing.T) {
	got := Config{MaxQueries: 9, Limits: Limits{MaxRows: 7}}.withDefaults()
	want := DefaultConfig
	want.MaxQueries = 9
	want.Limits.MaxRows = 7
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if err := DefaultConfig.Validate(); err != nil {
		t.Fatal(err)
	}
	a := AgentConfig{PingInterval: time.Second}.withDefaults()
	if a.PingInterval != time.Second || a.BackoffBase != DefaultAgentConfig.BackoffBase || a.HandshakeTimeout != DefaultAgentConfig.HandshakeTimeout {
		t.Fatalf("agent defaults: %+v", a)
	}
}

// TestConfigValidate checks that every bad field is reported at once, by name.
func TestConfigValidate(t *testing.T) {
	token := func() (string, error) { return "", nil }
	cases := []struct {
		name  string
		err   error
		wants []string
	}{
		{"config", Config{MaxBodyBytes: -1, AuthTimeout: -time.Second, Limits: Limits{MaxMemory: -1, MaxRowsToRead: -2}}.Validate(), []string{
			"query.Config.MaxBodyBytes must be >= 0", "query.Config.AuthTimeout must be >= 0", "query.Limits.MaxMemory must be >= 0 (0 takes the default), got -1", "query.Limits.MaxRowsToRead must be >= 0 (0 takes the default), got -2", "AuthTimeout must be >= 0 (0 takes the default), got -1s"}},
		{"agent without token or registerer", AgentConfig{}.Validate(), []string{"query.AgentConfig.Token is required", "query.AgentConfig.Registerer is required"}},
		{"agent durations", AgentConfig{Token: token, Registerer: prometheus.NewRegistry(), PingInterval: -1, BackoffBase: time.Hour}.Validate(), []string{
			"query.AgentConfig.PingInterval must be >= 0", "query.AgentConfig.BackoffMax 1m0s must not be below BackoffBase 1h0m0s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wants {
				if !strings.Contains(tc.err.Error(), w) {
					t.Errorf("error %q lacks %q", tc.err, w)
				}
			}
		})
	}
}
