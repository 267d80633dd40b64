package deploy

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

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
