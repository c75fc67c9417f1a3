package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// object is one decoded manifest.
type object struct {
	source string
	kind   string
	obj    any
}

// decodeStrict decodes a multi-document YAML stream into the Kubernetes and
// prometheus-operator types; an unknown or misspelled field is an error.
func decodeStrict(t *testing.T, source string, data []byte) []object {
	t.Helper()
	var out []object
	for i, doc := range bytes.Split(data, []byte("\n---")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s doc %d: %v", source, i, err)
		}
		if meta.Kind == "" {
			continue // comments only
		}
		var obj any
		switch meta.Kind {
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "Service":
			obj = &corev1.Service{}
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Secret":
			obj = &corev1.Secret{}
		case "ServiceMonitor":
			obj = &monitoringv1.ServiceMonitor{}
		case "PrometheusRule":
			obj = &monitoringv1.PrometheusRule{}
		default:
			t.Fatalf("%s doc %d: unexpected kind %q", source, i, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Errorf("%s doc %d (%s): %v", source, i, meta.Kind, err)
			continue
		}
		out = append(out, object{source: source, kind: meta.Kind, obj: obj})
	}
	return out
}

func byKind(objs []object, kind string) []any {
	var out []any
	for _, o := range objs {
		if o.kind == kind {
			out = append(out, o.obj)
		}
	}
	return out
}

// checkHardened asserts the security settings every deployment must keep.
func checkHardened(t *testing.T, source string, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	fail := func(what string) { t.Errorf("%s: deployment %s: %s", source, d.Name, what) }
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		fail("automountServiceAccountToken is not false")
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		fail("runAsNonRoot is not true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		fail("seccompProfile is not RuntimeDefault")
	}
	if len(spec.Containers) != 1 {
		fail("want exactly one container")
		return
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("readOnlyRootFilesystem is not true")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("allowPrivilegeEscalation is not false")
	}
	if sc == nil || sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		fail("capabilities do not drop ALL")
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		fail("memory request or limit missing")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/-/healthy" {
		fail("liveness probe is not on /-/healthy")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/-/ready" {
		fail("readiness probe is not on /-/ready")
	}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" {
			fail("volume " + m.Name + " is mounted with subPath; a rotated Secret would not reach the pod")
		}
	}
	secretMounted := false
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			secretMounted = true
		}
	}
	if !secretMounted {
		fail("the API token Secret is not mounted")
	}
}

func TestKubernetesManifests(t *testing.T) {
	var kust struct {
		Resources []string `json:"resources"`
	}
	data, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &kust); err != nil {
		t.Fatal(err)
	}
	var all []object
	for _, r := range kust.Resources {
		data, err := os.ReadFile(filepath.Join("kubernetes", r))
		if err != nil {
			t.Fatalf("kustomization lists %s: %v", r, err)
		}
		all = append(all, decodeStrict(t, r, data)...)
	}
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "Secret", "ServiceMonitor", "PrometheusRule"} {
		if len(byKind(all, kind)) != 1 {
			t.Errorf("want one %s, got %d", kind, len(byKind(all, kind)))
		}
	}
	for _, d := range byKind(all, "Deployment") {
		checkHardened(t, "kubernetes", d.(*appsv1.Deployment))
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) != len(kust.Resources)+1 {
		t.Errorf("kubernetes/ has %d YAML files, kustomization.yaml lists %d: keep them in step", len(files), len(kust.Resources))
	}
}

// tool finds a command in PATH or in the tools directory `make tools`
// fills. A missing tool fails the test: CI must run it, never skip it.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("..", ".build", "bin", name); fileExists(p) {
		abs, _ := filepath.Abs(p)
		return abs
	}
	t.Fatalf("%s not found; `make tools` installs it", name)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

func TestHelmChart(t *testing.T) {
	helm := tool(t, "helm")
	const chart = "helm/workflow-runs-exporter"
	for _, tc := range []struct {
		name   string
		args   []string
		expect func(t *testing.T, objs []object)
	}{
		{"default values", nil, func(t *testing.T, objs []object) {
			for _, kind := range []string{"Deployment", "Service", "ConfigMap", "Secret", "ServiceMonitor", "PrometheusRule"} {
				if len(byKind(objs, kind)) != 1 {
					t.Errorf("want one %s, got %d", kind, len(byKind(objs, kind)))
				}
			}
		}},
		{"all options", []string{"-f", "helm/all-options-values.yaml"}, func(t *testing.T, objs []object) {
			if n := len(byKind(objs, "Secret")); n != 0 {
				t.Errorf("existingSecret set, yet the chart created %d Secrets", n)
			}
			d := byKind(objs, "Deployment")[0].(*appsv1.Deployment)
			if v := d.Spec.Template.Spec.Volumes[1].Secret; v == nil || v.SecretName != "workflow-api-token" || v.Items[0].Key != "api-token" {
				t.Errorf("token volume = %+v, want the existing Secret's api-token key", v)
			}
			if d.Labels["team"] != "platform" {
				t.Errorf("extra labels missing: %v", d.Labels)
			}
			if img := d.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/workflow_runs_exporter:1.2.3" {
				t.Errorf("image = %s", img)
			}
			sm := byKind(objs, "ServiceMonitor")[0].(*monitoringv1.ServiceMonitor)
			if sm.Spec.Endpoints[0].Interval != "15s" || sm.Labels["release"] != "kube-prometheus-stack" {
				t.Errorf("ServiceMonitor = %+v", sm)
			}
			cm := byKind(objs, "ConfigMap")[0].(*corev1.ConfigMap)
			if !strings.Contains(cm.Data["run_ids.txt"], "7d1e2f3a-0d44-4b50-8888-8dd25736052b") {
				t.Errorf("run_ids.txt = %q", cm.Data["run_ids.txt"])
			}
		}},
		{"monitoring objects off", []string{"--set", "serviceMonitor.enabled=false,prometheusRule.enabled=false"}, func(t *testing.T, objs []object) {
			if len(byKind(objs, "ServiceMonitor"))+len(byKind(objs, "PrometheusRule")) != 0 {
				t.Error("ServiceMonitor or PrometheusRule rendered while disabled")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, helm, append([]string{"lint", "--strict", chart}, tc.args...)...)
			out := run(t, helm, append([]string{"template", "release", chart}, tc.args...)...)
			objs := decodeStrict(t, "helm template", out)
			for _, d := range byKind(objs, "Deployment") {
				checkHardened(t, "helm "+tc.name, d.(*appsv1.Deployment))
			}
			tc.expect(t, objs)
		})
	}
}

// TestAlertRulesInSync keeps the rules in the plain file, the Kubernetes
// PrometheusRule and the Helm chart identical.
func TestAlertRulesInSync(t *testing.T) {
	var plain monitoringv1.PrometheusRuleSpec
	data, _ := os.ReadFile("prometheus/alerts.yml")
	if err := yaml.UnmarshalStrict(data, &plain); err != nil {
		t.Fatal(err)
	}
	chartCopy, _ := os.ReadFile("helm/workflow-runs-exporter/files/alerts.yml")
	if !bytes.Equal(chartCopy, data) {
		t.Error("helm/workflow-runs-exporter/files/alerts.yml differs from prometheus/alerts.yml; copy it over")
	}
	kube, _ := os.ReadFile("kubernetes/prometheusrule.yaml")
	objs := decodeStrict(t, "prometheusrule.yaml", kube)
	rule := byKind(objs, "PrometheusRule")[0].(*monitoringv1.PrometheusRule)
	if !reflect.DeepEqual(rule.Spec, plain) {
		t.Error("kubernetes/prometheusrule.yaml differs from prometheus/alerts.yml; regenerate it (see its first line)")
	}
	names := map[string]bool{}
	for _, g := range plain.Groups {
		for _, r := range g.Rules {
			names[r.Alert] = true
		}
	}
	for _, want := range []string{"WorkflowRunFailed", "WorkflowRunStuck", "WorkflowRunsExporterAPIErrors", "WorkflowRunsExporterDataStale", "WorkflowRunsExporterDown"} {
		if !names[want] {
			t.Errorf("alert %s missing", want)
		}
	}
}

func TestPromtoolRules(t *testing.T) {
	promtool := tool(t, "promtool")
	run(t, promtool, "check", "rules", "prometheus/alerts.yml")
	run(t, promtool, "check", "config", "prometheus/prometheus.yml")
	out := run(t, promtool, "test", "rules", "prometheus/alerts_test.yml")
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
}

func TestComposeFileReferencesExist(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Volumes []string `json:"volumes"`
		} `json:"services"`
	}
	data, err := os.ReadFile("docker-compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"exporter", "prometheus", "grafana"} {
		if _, ok := compose.Services[want]; !ok {
			t.Errorf("service %s missing", want)
		}
	}
	for name, s := range compose.Services {
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if !fileExists(filepath.Join("docker-compose", src)) {
				t.Errorf("%s mounts %s, which does not exist", name, src)
			}
		}
	}
	if got := fmt.Sprint(compose.Services["prometheus"].Volumes); !strings.Contains(got, "../prometheus/prometheus.yml") || !strings.Contains(got, "../prometheus/alerts.yml") {
		t.Errorf("prometheus must mount the tested prometheus.yml and alerts.yml: %s", got)
	}
}
