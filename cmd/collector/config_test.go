package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestConfigErrors checks that every kind of bad setting is refused with a message that names it,
// that all problems are listed together, and that nothing starts (exit code 2).
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badYAML, []byte("tiers:\n  free: { retention_days: 30 }\nworkspaces:\n  - id: ws_a\n    tier: gold\n    domains: [a.example]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		wants []string // every one must appear in stderr
	}{
		{"unknown flag", []string{"config", "check", "-lisen", ":1"}, nil, []string{"flag provided but not defined: -lisen"}},
		{"bad flag value", []string{"config", "check", "-batch-rows", "0"}, nil, []string{"-batch-rows: must be between 1 and 1000000"}},
		{"bad duration", []string{"config", "check", "-batch-age", "soon"}, nil, []string{"invalid value \"soon\" for flag -batch-age"}},
		{"bad environment value", []string{"config", "check"}, map[string]string{"COLLECTOR_SPOOL_MAX_BYTES": "lots"}, []string{"environment COLLECTOR_SPOOL_MAX_BYTES"}},
		{"several problems at once", []string{"config", "check", "-listen", "nowhere", "-trusted-proxies", "10.0.0.0/33"},
			map[string]string{"COLLECTOR_LOG_LEVEL": "loud", "COLLECTOR_REDIS": "http://x"},
			[]string{"-listen: want host:port", "-trusted-proxies:", "-log-level: want debug", "-redis: want a redis://"}},
		{"TLS half configured", []string{"config", "check", "-tls-cert", badYAML}, nil, []string{"-tls-cert and -tls-key go together"}},
		{"missing workspaces file", []string{"config", "check", "-config", filepath.Join(dir, "nope.yaml")}, nil, []string{"-config: cannot read workspaces file"}},
		{"workspace with an unknown tier", []string{"config", "check", "-config", badYAML}, nil, []string{"gold"}},
		{"cluster without a server", []string{"config", "check", "-clickhouse-cluster", "c1"}, nil, []string{"-clickhouse-cluster: needs -clickhouse"}},
		{"async insert without a server", []string{"config", "check", "-clickhouse-async-insert"}, nil, []string{"-clickhouse-async-insert: needs -clickhouse"}},
		{"no workspaces file", []string{"config", "check"}, nil, []string{"-config: must be set"}},
		{"one engine port pinned", []string{"config", "check", "-engine-http-port", "28123"}, nil, []string{"-engine-native-port: -engine-native-port and -engine-http-port go together"}},
		{"engine ports with a server", []string{"config", "check", "-engine-http-port", "28123", "-engine-native-port", "29000", "-clickhouse", "clickhouse://h:9000/analytics"},
			nil, []string{"-engine-native-port: needs the managed engine"}},
		{"engine ports out of range", []string{"config", "check", "-engine-http-port", "80", "-engine-native-port", "70000"}, nil,
			[]string{"-engine-http-port: must be between 1024 and 65535, got 80", "-engine-native-port: must be between 1024 and 65535, got 70000"}},
		{"missing ring dir", []string{"config", "check"}, map[string]string{"COLLECTOR_SPOOL_RING_DIR": filepath.Join(dir, "nope")}, []string{"-spool-ring-dir: must be an existing directory"}},
		{"spool below two segments", []string{"config", "check", "-spool-max-bytes", "2097152"}, nil, []string{"-spool-max-bytes: must be at least 8 MiB"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, envOf(tc.env), &out, &errOut)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, errOut.String())
			}
			for _, w := range tc.wants {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut.String())
				}
			}
		})
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	c, _, err := parseConfig("serve", []string{"-batch-rows", "5"}, envOf(map[string]string{
		"COLLECTOR_BATCH_ROWS":          "7", // the command line wins
		"COLLECTOR_LISTEN":              "127.0.0.1:9999",
		"COLLECTOR_SPOOL_SYNC_INTERVAL": "250ms",
		"COLLECTOR_TRUSTED_PROXIES":     "10.0.0.0/8, ::1",
		"COLLECTOR_CONFIG":              "../../testdata/workspaces.example.yaml",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.BatchRows != 5 || c.Listen != "127.0.0.1:9999" || c.SpoolSyncInterval != 250*time.Millisecond || len(c.trusted) != 2 {
		t.Fatalf("got %+v", c)
	}
}

func TestConfigCheckAcceptsExample(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", "-config", "../../testdata/workspaces.example.yaml"}, envOf(nil), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
}

// TestBadConfigDoesNotStart runs the real binary with a bad environment value: it must exit at
// once with the message and never listen.
func TestBadConfigDoesNotStart(t *testing.T) {
	cmd := exec.Command(binPath, "serve", "-listen", "127.0.0.1:0", "-data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "COLLECTOR_BATCH_AGE=never")
	out, err := cmd.CombinedOutput()
	if exitCode(err) != 2 {
		t.Fatalf("exit %v, want 2\n%s", err, out)
	}
	if !strings.Contains(string(out), "COLLECTOR_BATCH_AGE") {
		t.Fatalf("message does not name the variable:\n%s", out)
	}
}

// TestFlagDefaultsMatchREADME checks that the flag table of the README gives every flag's real
// default: the numbers live in the packages' Default values (spool.DefaultConfig and the like),
// and the table must follow them.
func TestFlagDefaultsMatchREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := newFlagSet("serve", &config{}, &bytes.Buffer{})
	rows := 0
	for _, line := range strings.Split(string(readme), "\n") {
		if !strings.HasPrefix(line, "| `-") {
			continue
		}
		cols := strings.Split(line, " | ")
		if len(cols) < 3 {
			continue
		}
		name := strings.Trim(strings.TrimPrefix(cols[0], "| "), "`-")
		f := fs.Lookup(name)
		if f == nil {
			continue // a flag of another subcommand
		}
		rows++
		want := ""
		if d := cols[2]; d != "(empty)" {
			if i, j := strings.Index(d, "`"), strings.LastIndex(d, "`"); i >= 0 && j > i {
				want = d[i+1 : j]
			}
			want = strings.SplitN(want, "`", 2)[0]
		}
		if a, errA := time.ParseDuration(f.DefValue); errA == nil {
			if b, errB := time.ParseDuration(want); errB == nil && a == b {
				continue
			}
		}
		if f.DefValue != want && !(f.DefValue == "false" && want == "") {
			t.Errorf("-%s: README says %q, the flag's default is %q", name, cols[2], f.DefValue)
		}
	}
	if rows < 20 {
		t.Fatalf("only %d flag rows found in the README table", rows)
	}
}
