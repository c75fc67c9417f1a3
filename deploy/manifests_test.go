package deploy

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	yamlv3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The paths the exporter's container uses, as the Dockerfile, the chart and
// the manifests must agree on them.
const (
	stateDir      = "/var/lib/workflow_runs_exporter"
	configFile    = "/etc/workflow_runs_exporter/config.yml"
	runIDsFile    = "/etc/workflow_runs_exporter/runs/run_ids.txt"
	containerUser = 65532 // the distroless image's nonroot user and group
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
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "Service":
			obj = &corev1.Service{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Secret":
			obj = &corev1.Secret{}
		case "PersistentVolumeClaim":
			obj = &corev1.PersistentVolumeClaim{}
		case "ServiceMonitor":
			obj = &monitoringv1.ServiceMonitor{}
		case "PrometheusRule":
			obj = &monitoringv1.PrometheusRule{}
		case "ScrapeConfig":
			obj = &monitoringv1alpha1.ScrapeConfig{}
		case "PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
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

// one returns the only object of a kind, failing the test otherwise.
func one[T any](t *testing.T, objs []object, kind string) T {
	t.Helper()
	all := byKind(objs, kind)
	if len(all) != 1 {
		t.Fatalf("want one %s, got %d", kind, len(all))
	}
	return all[0].(T)
}

func configMapNamed(t *testing.T, objs []object, name string) *corev1.ConfigMap {
	t.Helper()
	for _, o := range byKind(objs, "ConfigMap") {
		if cm := o.(*corev1.ConfigMap); cm.Name == name {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return nil
}

// workload is the pod template of the one Deployment or StatefulSet.
func workload(t *testing.T, objs []object) (string, *corev1.PodTemplateSpec) {
	t.Helper()
	var names []string
	var tmpl *corev1.PodTemplateSpec
	for _, o := range objs {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			names, tmpl = append(names, "Deployment "+w.Name), &w.Spec.Template
		case *appsv1.StatefulSet:
			names, tmpl = append(names, "StatefulSet "+w.Name), &w.Spec.Template
		}
	}
	if len(names) != 1 {
		t.Fatalf("want one Deployment or StatefulSet, got %v", names)
	}
	return names[0], tmpl
}

// tokenReadable works out whether the exporter's user can read the API
// token file as the kubelet lays out a Secret volume: files owned by root,
// mode from the item or defaultMode (0644 when neither is set); with the
// pod's fsGroup, the file's group is fsGroup and, the volume being
// read-only, the group read bit is added (SetVolumeOwnership in
// kubernetes/pkg/volume); without it the group is root. The process runs
// with runAsUser, runAsGroup (the image's 65532:65532 when unset) and the
// supplementary groups fsGroup and supplementalGroups.
func tokenReadable(spec corev1.PodSpec, c corev1.Container) error {
	var vol *corev1.Volume
	for i, v := range spec.Volumes {
		if v.Secret != nil {
			vol = &spec.Volumes[i]
		}
	}
	if vol == nil {
		return fmt.Errorf("no Secret volume")
	}
	mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == vol.Name })
	if !mounted {
		return fmt.Errorf("Secret volume %s is not mounted in container %s", vol.Name, c.Name)
	}
	mode := int32(0o644)
	if vol.Secret.DefaultMode != nil {
		mode = *vol.Secret.DefaultMode
	}
	for _, it := range vol.Secret.Items {
		if it.Path == "token" && it.Mode != nil {
			mode = *it.Mode
		}
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	uid, gid := int64(containerUser), int64(containerUser)
	if psc.RunAsUser != nil {
		uid = *psc.RunAsUser
	}
	if psc.RunAsGroup != nil {
		gid = *psc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = *sc.RunAsGroup
		}
	}
	groups := append([]int64{gid}, psc.SupplementalGroups...)
	fileGID := int64(0)
	if psc.FSGroup != nil {
		groups = append(groups, *psc.FSGroup)
		fileGID = *psc.FSGroup
		mode |= 0o440
	}
	var readable bool
	switch {
	case uid == 0:
		readable = mode&0o400 != 0
	case slices.Contains(groups, fileGID):
		readable = mode&0o040 != 0
	default:
		readable = mode&0o004 != 0
	}
	if !readable {
		return fmt.Errorf("token file is 0:%d mode %#o; uid %d with groups %v cannot read it (set fsGroup: %d)",
			fileGID, mode, uid, groups, containerUser)
	}
	return nil
}

func int64p(v int64) *int64 { return &v }
func int32p(v int32) *int32 { return &v }

// TestTokenReadableModel checks the permission computation itself on the
// layouts that matter, the one the pod failed with included.
func TestTokenReadableModel(t *testing.T) {
	spec := func(mode int32, psc *corev1.PodSecurityContext) (corev1.PodSpec, corev1.Container) {
		c := corev1.Container{Name: "exporter", VolumeMounts: []corev1.VolumeMount{{Name: "token", MountPath: "/run/secrets/x"}}}
		return corev1.PodSpec{
			SecurityContext: psc,
			Containers:      []corev1.Container{c},
			Volumes: []corev1.Volume{{Name: "token", VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "s", DefaultMode: int32p(mode)}}}},
		}, c
	}
	nonroot := func(fsGroup *int64) *corev1.PodSecurityContext {
		return &corev1.PodSecurityContext{RunAsUser: int64p(containerUser), RunAsGroup: int64p(containerUser), FSGroup: fsGroup}
	}
	for _, tc := range []struct {
		name string
		mode int32
		psc  *corev1.PodSecurityContext
		ok   bool
	}{
		{"0440 without fsGroup (the pod that could not start)", 0o440, nonroot(nil), false},
		{"0440 with fsGroup 65532", 0o440, nonroot(int64p(containerUser)), true},
		{"0400 with fsGroup: the kubelet adds group read", 0o400, nonroot(int64p(containerUser)), true},
		{"0444 without fsGroup", 0o444, nonroot(nil), true},
		{"0440 with another fsGroup the process is in", 0o440, nonroot(int64p(2000)), true},
		{"0440, root group via supplementalGroups", 0o440, &corev1.PodSecurityContext{RunAsUser: int64p(containerUser), SupplementalGroups: []int64{0}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tokenReadable(spec(tc.mode, tc.psc))
			if (err == nil) != tc.ok {
				t.Errorf("readable = %v (%v), want %v", err == nil, err, tc.ok)
			}
		})
	}
}

func hasArg(c corev1.Container, arg string) bool { return slices.Contains(c.Args, arg) }

func mountAt(c corev1.Container, path string) *corev1.VolumeMount {
	for i, m := range c.VolumeMounts {
		if m.MountPath == path {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func volumeNamed(spec corev1.PodSpec, name string) *corev1.Volume {
	for i, v := range spec.Volumes {
		if v.Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// checkPod asserts what every exporter pod must have: the hardening, a
// token its user can read, the config and run list where the config says,
// and a writable state directory passed as --storage.path.
func checkPod(t *testing.T, source string, tmpl *corev1.PodTemplateSpec) {
	t.Helper()
	spec := tmpl.Spec
	fail := func(format string, args ...any) { t.Errorf("%s: "+format, append([]any{source}, args...)...) }
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
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != containerUser || psc.RunAsGroup == nil || *psc.RunAsGroup != containerUser ||
		psc.FSGroup == nil || *psc.FSGroup != containerUser {
		fail("want runAsUser, runAsGroup and fsGroup %d, got %+v", containerUser, psc)
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
			fail("volume %s is mounted with subPath; an update would not reach the pod", m.Name)
		}
	}
	if err := tokenReadable(spec, c); err != nil {
		fail("%v", err)
	}
	if !hasArg(c, "--config.file="+configFile) {
		fail("args %v lack --config.file=%s", c.Args, configFile)
	}
	if !hasArg(c, "--storage.path="+stateDir) {
		fail("args %v lack --storage.path=%s", c.Args, stateDir)
	}
	if m := mountAt(c, stateDir); m == nil || m.ReadOnly {
		fail("no writable volume mounted at %s", stateDir)
	}
	if m := mountAt(c, filepath.Dir(configFile)); m == nil {
		fail("nothing mounted at %s", filepath.Dir(configFile))
	}
}

// projectedFiles returns, for the volume mounted at dir, each file's path
// below dir and the ConfigMap and key it comes from.
func projectedFiles(t *testing.T, tmpl *corev1.PodTemplateSpec, dir string) map[string]string {
	t.Helper()
	m := mountAt(tmpl.Spec.Containers[0], dir)
	if m == nil {
		t.Fatalf("nothing mounted at %s", dir)
	}
	v := volumeNamed(tmpl.Spec, m.Name)
	out := map[string]string{}
	switch {
	case v == nil:
		t.Fatalf("volume %s missing", m.Name)
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			if s.ConfigMap == nil {
				continue
			}
			for _, it := range s.ConfigMap.Items {
				out[filepath.Join(dir, it.Path)] = s.ConfigMap.Name + "/" + it.Key
			}
		}
	case v.ConfigMap != nil:
		for _, it := range v.ConfigMap.Items {
			out[filepath.Join(dir, it.Path)] = v.ConfigMap.Name + "/" + it.Key
		}
	default:
		t.Fatalf("volume %s at %s is neither a ConfigMap nor projected", m.Name, dir)
	}
	return out
}

// exporterConfig is the part of the exporter's config the kit sets.
type exporterConfig struct {
	API struct {
		Authorization struct {
			CredentialsFile string `json:"credentials_file"`
		} `json:"authorization"`
	} `json:"api"`
	Runs struct {
		IDs               []string `json:"ids"`
		IDsFile           string   `json:"ids_file"`
		FinishedRetention string   `json:"finished_retention"`
	} `json:"runs"`
	Probe struct {
		MaxRuns int `json:"max_runs"`
	} `json:"probe"`
}

// checkConfigFiles follows the config's paths into the pod: the config
// file and run list come from ConfigMaps, the token from the Secret mount.
func checkConfigFiles(t *testing.T, objs []object, tmpl *corev1.PodTemplateSpec, wantRunList bool) (cfg exporterConfig, runList *corev1.ConfigMap) {
	t.Helper()
	files := projectedFiles(t, tmpl, filepath.Dir(configFile))
	src, ok := files[configFile]
	if !ok {
		t.Fatalf("%s is not in the mounted volume: %v", configFile, files)
	}
	name, key, _ := strings.Cut(src, "/")
	if err := yaml.Unmarshal([]byte(configMapNamed(t, objs, name).Data[key]), &cfg); err != nil {
		t.Fatalf("config: %v", err)
	}
	if tokenDir := filepath.Dir(cfg.API.Authorization.CredentialsFile); mountAt(tmpl.Spec.Containers[0], tokenDir) == nil {
		t.Errorf("credentials_file %s is not in a mounted directory", cfg.API.Authorization.CredentialsFile)
	}
	if !wantRunList {
		if cfg.Runs.IDsFile != "" {
			t.Errorf("probe-only config has runs.ids_file %s", cfg.Runs.IDsFile)
		}
		return cfg, nil
	}
	if cfg.Runs.IDsFile != runIDsFile {
		t.Fatalf("runs.ids_file = %q, want %s", cfg.Runs.IDsFile, runIDsFile)
	}
	src, ok = files[runIDsFile]
	if !ok {
		t.Fatalf("%s is not in the mounted volume: %v", runIDsFile, files)
	}
	runName, runKey, _ := strings.Cut(src, "/")
	if runName == name {
		t.Errorf("the run list is in the config's ConfigMap %s; it needs its own", name)
	}
	runList = configMapNamed(t, objs, runName)
	if _, ok := runList.Data[runKey]; !ok {
		t.Errorf("ConfigMap %s has no key %s", runName, runKey)
	}
	return cfg, runList
}

var uuidLine = regexp.MustCompile(`(?m)^\s*[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\s*$`)

func chartAppVersion(t *testing.T) string {
	t.Helper()
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	data, err := os.ReadFile("helm/workflow-runs-exporter/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &chart); err != nil {
		t.Fatal(err)
	}
	return chart.AppVersion
}

// TestKustomizationListsNoSecret: a Secret among the resources would be
// overwritten by every `kubectl apply -k`, replacing the real token.
func TestKustomizationListsNoSecret(t *testing.T) {
	var kust struct {
		Resources       []string `json:"resources"`
		SecretGenerator []any    `json:"secretGenerator"`
	}
	data, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &kust); err != nil {
		t.Fatal(err)
	}
	if len(kust.Resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	for _, r := range kust.Resources {
		data, err := os.ReadFile(filepath.Join("kubernetes", r))
		if err != nil {
			t.Fatalf("kustomization lists %s: %v", r, err)
		}
		for _, o := range decodeStrict(t, r, data) {
			if o.kind == "Secret" {
				t.Errorf("%s holds a Secret; create it out of band (see kustomization.yaml)", r)
			}
		}
	}
	if len(kust.SecretGenerator) != 0 {
		t.Error("the secretGenerator must stay commented: it needs a token file nobody ships")
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) != len(kust.Resources)+1 {
		t.Errorf("kubernetes/ has %d YAML files, kustomization.yaml lists %d: keep them in step", len(files), len(kust.Resources))
	}
}

// TestKubernetesManifests builds deploy/kubernetes with kustomize (the
// library kubectl and the kustomize binary use) and checks the result.
func TestKubernetesManifests(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), "kubernetes")
	if err != nil {
		t.Fatalf("kustomize build deploy/kubernetes: %v", err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	all := decodeStrict(t, "kustomize build", out)
	for kind, n := range map[string]int{"Deployment": 1, "Service": 1, "ConfigMap": 2, "PersistentVolumeClaim": 1,
		"ServiceMonitor": 1, "PrometheusRule": 1, "Secret": 0, "StatefulSet": 0} {
		if got := len(byKind(all, kind)); got != n {
			t.Errorf("want %d %s, got %d", n, kind, got)
		}
	}
	for _, o := range all {
		if ns := reflect.ValueOf(o.obj).Elem().FieldByName("Namespace").String(); ns != "monitoring" {
			t.Errorf("%s in namespace %q, want monitoring", o.kind, ns)
		}
	}
	d := one[*appsv1.Deployment](t, all, "Deployment")
	checkPod(t, "kubernetes", &d.Spec.Template)
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy = %q, want Recreate: the store's volume is ReadWriteOnce and locked by one process", d.Spec.Strategy.Type)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if want := defaultImage + ":" + chartAppVersion(t); c.Image != want {
		t.Errorf("image = %s, want %s (pinned to the chart's appVersion)", c.Image, want)
	}
	if want := chartDefaultResources(t); !equality.Semantic.DeepEqual(c.Resources, want) {
		t.Errorf("resources = %+v, want the chart's default sizing %+v", c.Resources, want)
	}
	if tok := d.Spec.Template.Spec.Volumes; volumeNamed(d.Spec.Template.Spec, "token") == nil ||
		volumeNamed(d.Spec.Template.Spec, "token").Secret.SecretName != "workflow-runs-exporter" {
		t.Errorf("token volume = %+v, want the Secret workflow-runs-exporter the README tells to create", tok)
	}
	pvc := one[*corev1.PersistentVolumeClaim](t, all, "PersistentVolumeClaim")
	state := volumeNamed(d.Spec.Template.Spec, mountAt(c, stateDir).Name)
	if state == nil || state.PersistentVolumeClaim == nil || state.PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Errorf("%s is not the PersistentVolumeClaim %s: %+v", stateDir, pvc.Name, state)
	}
	_, runList := checkConfigFiles(t, all, &d.Spec.Template, true)
	if ids := uuidLine.FindAllString(runList.Data["run_ids.txt"], -1); len(ids) != 0 {
		t.Errorf("the shipped run list has IDs %v; it must be empty or commented (an example ID 404s and keeps alerting)", ids)
	}
	sm := one[*monitoringv1.ServiceMonitor](t, all, "ServiceMonitor")
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack release: kube-prometheus-stack", sm.Labels)
	}
	svc := one[*corev1.Service](t, all, "Service")
	if svc.Labels[sm.Spec.JobLabel] != "workflow-runs-exporter" {
		t.Errorf("job label from %s = %q; the alert rules need workflow-runs-exporter", sm.Spec.JobLabel, svc.Labels[sm.Spec.JobLabel])
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
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runErr(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.String())
	}
	return out, nil
}

const (
	chart = "helm/workflow-runs-exporter"
	runA  = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	runB  = "7d1e2f3a-0d44-4b50-8888-8dd25736052b"
	// defaultImage is where the release workflow pushes the image, and
	// what the chart and the manifests pull by default.
	defaultImage = "ghcr.io/workflow-runs-exporter/workflow_runs_exporter"
)

// minimal are the fewest values a working install needs.
var minimal = []string{"--set", "token=t0ken,runIDs={" + runA + "}"}

// operatorAPIs makes helm template render as for a cluster that serves
// the prometheus-operator's APIs; without them it renders as for one
// that does not.
var operatorAPIs = []string{"--api-versions", "monitoring.coreos.com/v1", "--api-versions", "monitoring.coreos.com/v1alpha1"}

// operatorKinds are the kinds that exist only where the operator does.
var operatorKinds = []string{"ServiceMonitor", "PrometheusRule", "ScrapeConfig"}

func helmTemplate(t *testing.T, args ...string) []object {
	t.Helper()
	out := run(t, tool(t, "helm"), append([]string{"template", "release", chart}, args...)...)
	return decodeStrict(t, "helm template", out)
}

// serviceMonitorTargets returns the Services the ServiceMonitor selects.
func serviceMonitorTargets(objs []object, sm *monitoringv1.ServiceMonitor) []*corev1.Service {
	var out []*corev1.Service
	for _, o := range byKind(objs, "Service") {
		svc := o.(*corev1.Service)
		match := true
		for k, v := range sm.Spec.Selector.MatchLabels {
			if svc.Labels[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, svc)
		}
	}
	return out
}

// chartDefaultResources is the exporter container's resources with the
// chart's default values.
func chartDefaultResources(t *testing.T) corev1.ResourceRequirements {
	t.Helper()
	_, tmpl := workload(t, helmTemplate(t, minimal...))
	return tmpl.Spec.Containers[0].Resources
}

// checkNames asserts what the API server would refuse or the controllers
// would trip on: object names and label values too long or malformed,
// and a StatefulSet whose pods' labels would be (controller-revision-hash
// is the StatefulSet's name, a dash and up to 10 characters).
func checkNames(t *testing.T, source string, objs []object) {
	t.Helper()
	checkLabels := func(what string, labels map[string]string) {
		for k, v := range labels {
			for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: %s label %s=%q: %s", source, what, k, v, msg)
			}
		}
	}
	for _, o := range objs {
		m, ok := o.obj.(metav1.Object)
		if !ok {
			t.Fatalf("%s: %s has no object metadata", source, o.kind)
		}
		what := o.kind + " " + m.GetName()
		check := validation.IsDNS1123Subdomain
		if o.kind == "Service" {
			check = validation.IsDNS1035Label
		}
		for _, msg := range check(m.GetName()) {
			t.Errorf("%s: %s: name: %s", source, what, msg)
		}
		checkLabels(what, m.GetLabels())
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			checkLabels(what+" pod", w.Spec.Template.Labels)
		case *appsv1.StatefulSet:
			checkLabels(what+" pod", w.Spec.Template.Labels)
			checkLabels(what+" pod", map[string]string{"controller-revision-hash": w.Name + "-6d4c9f8b7c"})
			for i := range int(*w.Spec.Replicas) {
				pod := fmt.Sprintf("%s-%d", w.Name, i)
				// The pod's name is its host name, in DNS under the headless Service.
				for _, msg := range validation.IsDNS1123Label(pod) {
					t.Errorf("%s: %s: pod name %s: %s", source, what, pod, msg)
				}
				checkLabels(what+" pod", map[string]string{"statefulset.kubernetes.io/pod-name": pod})
				for _, vct := range w.Spec.VolumeClaimTemplates {
					checkLabels(what+" claim", vct.Labels)
					for _, msg := range validation.IsDNS1123Subdomain(vct.Name + "-" + pod) {
						t.Errorf("%s: %s: claim %s-%s: %s", source, what, vct.Name, pod, msg)
					}
				}
			}
		}
	}
}

// withoutKinds returns the objects that are not of the given kinds.
func withoutKinds(objs []object, kinds ...string) []object {
	var out []object
	for _, o := range objs {
		if !slices.Contains(kinds, o.kind) {
			out = append(out, o)
		}
	}
	return out
}

// TestHelmChart renders the chart for each set of values twice, for a
// cluster with the prometheus-operator's APIs and for one without: the
// second must be the first without the operator's objects.
func TestHelmChart(t *testing.T) {
	helm := tool(t, "helm")
	for _, tc := range []struct {
		name   string
		args   []string
		expect func(t *testing.T, objs []object)
	}{
		{"minimal values", minimal, func(t *testing.T, objs []object) {
			for kind, n := range map[string]int{"Deployment": 1, "StatefulSet": 0, "Service": 1, "ServiceAccount": 1, "ConfigMap": 2,
				"Secret": 1, "PersistentVolumeClaim": 1, "ServiceMonitor": 1, "PrometheusRule": 1, "ScrapeConfig": 0,
				"PodDisruptionBudget": 0, "NetworkPolicy": 0} {
				if got := len(byKind(objs, kind)); got != n {
					t.Errorf("want %d %s, got %d", n, kind, got)
				}
			}
			d := one[*appsv1.Deployment](t, objs, "Deployment")
			cfg, runList := checkConfigFiles(t, objs, &d.Spec.Template, true)
			if ids := uuidLine.FindAllString(runList.Data["run_ids.txt"], -1); len(ids) != 1 || strings.TrimSpace(ids[0]) != runA {
				t.Errorf("run_ids.txt = %q, want %s", runList.Data["run_ids.txt"], runA)
			}
			if cfg.Runs.FinishedRetention == "" || cfg.Runs.FinishedRetention == "0s" {
				t.Errorf("runs.finished_retention = %q; the chart's default must drop finished runs' series in the end", cfg.Runs.FinishedRetention)
			}
			c := d.Spec.Template.Spec.Containers[0]
			// Persistence is on by default, on the claim shard 0 of a
			// StatefulSet would get (see TestHelmUpgradePaths).
			pvc := one[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim")
			if v := volumeNamed(d.Spec.Template.Spec, mountAt(c, stateDir).Name); v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
				t.Errorf("state volume = %+v, want the claim %s", v, pvc.Name)
			}
			if pvc.Name != "state-release-workflow-runs-exporter-0" || pvc.Annotations["helm.sh/resource-policy"] != "keep" {
				t.Errorf("claim %s %v: want state-<statefulset>-0 with helm.sh/resource-policy: keep", pvc.Name, pvc.Annotations)
			}
			if img := c.Image; img != defaultImage+":"+chartAppVersion(t) {
				t.Errorf("image = %s, want %s:<appVersion>", img, defaultImage)
			}
			sa := one[*corev1.ServiceAccount](t, objs, "ServiceAccount")
			if d.Spec.Template.Spec.ServiceAccountName != sa.Name || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("service account %s (automount %v), pod uses %s", sa.Name, sa.AutomountServiceAccountToken, d.Spec.Template.Spec.ServiceAccountName)
			}
			sm := one[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor")
			if sm.Labels["release"] != "kube-prometheus-stack" {
				t.Errorf("ServiceMonitor labels %v lack the default release: kube-prometheus-stack", sm.Labels)
			}
			if rule := one[*monitoringv1.PrometheusRule](t, objs, "PrometheusRule"); rule.Labels["release"] != "kube-prometheus-stack" {
				t.Errorf("PrometheusRule labels %v lack the default release: kube-prometheus-stack", rule.Labels)
			}
			svcs := serviceMonitorTargets(objs, sm)
			if len(svcs) != 1 || svcs[0].Labels[sm.Spec.JobLabel] != "workflow-runs-exporter" {
				t.Errorf("the ServiceMonitor selects %d Services, job from %s; want one, with job workflow-runs-exporter", len(svcs), sm.Spec.JobLabel)
			}
			if ep := sm.Spec.Endpoints[0]; ep.Scheme == nil || *ep.Scheme != "http" || ep.TLSConfig != nil || ep.BasicAuth != nil {
				t.Errorf("endpoint = %+v, want plain http by default", ep)
			}
		}},
		{"all options", []string{"-f", "helm/all-options-values.yaml"}, func(t *testing.T, objs []object) {
			if n := len(byKind(objs, "Secret")); n != 0 {
				t.Errorf("existingSecret set, yet the chart created %d Secrets", n)
			}
			d := one[*appsv1.Deployment](t, objs, "Deployment")
			spec := d.Spec.Template.Spec
			if d.Name != "wre" {
				t.Errorf("fullnameOverride ignored: %s", d.Name)
			}
			if v := volumeNamed(spec, "token").Secret; v == nil || v.SecretName != "workflow-api-token" || v.Items[0].Key != "api-token" {
				t.Errorf("token volume = %+v, want the existing Secret's api-token key", v)
			}
			if d.Labels["team"] != "platform" || d.Spec.Template.Labels["team"] != "platform" {
				t.Errorf("extra labels missing: %v", d.Labels)
			}
			if d.Spec.Template.Labels["tier"] != "monitoring" || d.Spec.Template.Annotations["example.com/owner"] != "sre" {
				t.Errorf("podLabels or podAnnotations missing: %v %v", d.Spec.Template.Labels, d.Spec.Template.Annotations)
			}
			if d.Spec.Template.Labels["app.kubernetes.io/name"] != "runs-exporter" {
				t.Errorf("nameOverride ignored: %v", d.Spec.Template.Labels)
			}
			c := spec.Containers[0]
			if c.Image != "registry.example.com/workflow_runs_exporter:1.2.3" || c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("image = %s, %s", c.Image, c.ImagePullPolicy)
			}
			if !hasArg(c, "--web.disable-exporter-metrics") || !hasArg(c, "--log.level=debug") || !hasArg(c, "--web.config.file=/etc/workflow_runs_exporter-web/web.yml") {
				t.Errorf("args = %v", c.Args)
			}
			if !reflect.DeepEqual(spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "registry-credentials"}}) {
				t.Errorf("imagePullSecrets = %v", spec.ImagePullSecrets)
			}
			sa := one[*corev1.ServiceAccount](t, objs, "ServiceAccount")
			if sa.Name != "workflow-runs" || spec.ServiceAccountName != "workflow-runs" || sa.Annotations["example.com/role"] != "reader" {
				t.Errorf("service account %s %v, pod uses %s", sa.Name, sa.Annotations, spec.ServiceAccountName)
			}
			if spec.NodeSelector["kubernetes.io/os"] != "linux" || len(spec.Tolerations) != 1 || spec.Affinity == nil || spec.Affinity.NodeAffinity == nil {
				t.Errorf("scheduling values missing: %v %v %v", spec.NodeSelector, spec.Tolerations, spec.Affinity)
			}
			if want := resourceList("100m", "128Mi"); !equality.Semantic.DeepEqual(c.Resources.Requests, want) {
				t.Errorf("requests = %v, want the values' %v", c.Resources.Requests, want)
			}
			if want := resourceList("500m", "512Mi"); !equality.Semantic.DeepEqual(c.Resources.Limits, want) {
				t.Errorf("limits = %v, want the values' %v", c.Resources.Limits, want)
			}
			// extraVolumes and extraVolumeMounts: the API's CA bundle and
			// the web config, beside the kit's own mounts.
			for _, m := range []struct{ volume, path string }{{"api-ca", "/etc/ssl/api-ca"}, {"web-config", "/etc/workflow_runs_exporter-web"}} {
				if got := mountAt(c, m.path); got == nil || got.Name != m.volume || volumeNamed(spec, m.volume) == nil {
					t.Errorf("extra volume %s is not mounted at %s: %+v", m.volume, m.path, got)
				}
			}
			if p := c.LivenessProbe; p.HTTPGet.Scheme != corev1.URISchemeHTTPS || c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
				t.Errorf("probes %+v %+v: want the values' HTTPS", p.HTTPGet, c.ReadinessProbe.HTTPGet)
			}
			pvc := one[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim")
			if v := volumeNamed(spec, mountAt(c, stateDir).Name); v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
				t.Errorf("state volume = %+v, want the claim %s", v, pvc.Name)
			}
			if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast-ssd" ||
				pvc.Spec.Resources.Requests.Storage().String() != "5Gi" || pvc.Annotations["example.com/backup"] != "daily" {
				t.Errorf("PersistentVolumeClaim = %+v", pvc)
			}
			sm := one[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor")
			ep := sm.Spec.Endpoints[0]
			if ep.Interval != "15s" || sm.Labels["release"] != "prometheus" || ep.Scheme == nil || *ep.Scheme != "https" {
				t.Errorf("ServiceMonitor = %+v", sm)
			}
			if ep.TLSConfig == nil || ep.TLSConfig.CA.ConfigMap == nil || ep.TLSConfig.CA.ConfigMap.Name != "exporter-ca" || ep.TLSConfig.ServerName == nil {
				t.Errorf("ServiceMonitor tlsConfig = %+v", ep.TLSConfig)
			}
			if ep.BasicAuth == nil || ep.BasicAuth.Username.Name != "exporter-auth" || ep.BasicAuth.Password.Key != "password" {
				t.Errorf("ServiceMonitor basicAuth = %+v", ep.BasicAuth)
			}
			if svc := one[*corev1.Service](t, objs, "Service"); svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].Port != 9999 {
				t.Errorf("Service = %+v", svc.Spec)
			}
			sc := one[*monitoringv1alpha1.ScrapeConfig](t, objs, "ScrapeConfig")
			if sc.Labels["release"] != "prometheus" || len(sc.Spec.HTTPSDConfigs) != 1 || sc.Spec.Scheme == nil || *sc.Spec.Scheme != "HTTPS" ||
				sc.Spec.TLSConfig == nil || sc.Spec.BasicAuth == nil || sc.Spec.ScrapeInterval == nil || *sc.Spec.ScrapeInterval != "1m" {
				t.Errorf("ScrapeConfig = %+v", sc.Spec)
			}
			dash := configMapNamed(t, objs, "wre-dashboard")
			if dash.Namespace != "grafana" || dash.Labels["grafana_dashboard"] != "1" || dash.Annotations["grafana_folder"] != "Workflows" {
				t.Errorf("dashboard ConfigMap %s/%s labels %v annotations %v", dash.Namespace, dash.Name, dash.Labels, dash.Annotations)
			}
			if want, _ := os.ReadFile("../dashboards/workflow-runs.json"); strings.TrimSpace(dash.Data["workflow-runs.json"]) != strings.TrimSpace(string(want)) {
				t.Error("the dashboard ConfigMap does not hold dashboards/workflow-runs.json")
			}
			pdb := one[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || !selects(pdb.Spec.Selector, d.Spec.Template.Labels) {
				t.Errorf("PodDisruptionBudget = %+v", pdb.Spec)
			}
			np := one[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy")
			if !selects(&np.Spec.PodSelector, d.Spec.Template.Labels) || len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 ||
				len(np.Spec.Egress) != 2 || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
				t.Errorf("NetworkPolicy = %+v", np.Spec)
			}
			cfg, runList := checkConfigFiles(t, objs, &d.Spec.Template, true)
			if !strings.Contains(runList.Data["run_ids.txt"], runB) {
				t.Errorf("run_ids.txt = %q", runList.Data["run_ids.txt"])
			}
			if cfg.API.Authorization.CredentialsFile != "/run/secrets/workflow_runs_exporter/token" {
				t.Errorf("credentials_file = %s", cfg.API.Authorization.CredentialsFile)
			}
		}},
		{"existing claim", append([]string{"--set", "persistence.existingClaim=my-claim"}, minimal...), func(t *testing.T, objs []object) {
			d := one[*appsv1.Deployment](t, objs, "Deployment")
			if n := len(byKind(objs, "PersistentVolumeClaim")); n != 0 {
				t.Errorf("existingClaim set, yet %d claims rendered", n)
			}
			if v := volumeNamed(d.Spec.Template.Spec, "state"); v == nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "my-claim" {
				t.Errorf("state volume = %+v", v)
			}
		}},
		{"three shards", append([]string{"--set", "shards=3,persistence.size=2Gi"}, minimal...), func(t *testing.T, objs []object) {
			if n := len(byKind(objs, "Deployment")) + len(byKind(objs, "PersistentVolumeClaim")); n != 0 {
				t.Errorf("shards: 3 rendered %d Deployments or claims besides the StatefulSet", n)
			}
			s := one[*appsv1.StatefulSet](t, objs, "StatefulSet")
			if s.Spec.Replicas == nil || *s.Spec.Replicas != 3 {
				t.Errorf("replicas = %v, want 3", s.Spec.Replicas)
			}
			c := s.Spec.Template.Spec.Containers[0]
			if !hasArg(c, "--shard.count=3") || !hasArg(c, "--shard.from-hostname") || slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--shard.index") }) {
				t.Errorf("args = %v, want --shard.count=3 --shard.from-hostname and no --shard.index", c.Args)
			}
			if n := len(byKind(objs, "Service")); n != 2 {
				t.Fatalf("want 2 Services (scraped, headless), got %d", n)
			}
			sm := one[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor")
			scraped := serviceMonitorTargets(objs, sm)
			if len(scraped) != 1 || scraped[0].Name != "release-workflow-runs-exporter" || scraped[0].Spec.ClusterIP == corev1.ClusterIPNone {
				t.Errorf("the ServiceMonitor selects %d Services; want only release-workflow-runs-exporter, not headless, as at shards: 1", len(scraped))
			}
			var governing *corev1.Service
			for _, o := range byKind(objs, "Service") {
				if svc := o.(*corev1.Service); svc.Name == s.Spec.ServiceName {
					governing = svc
				}
			}
			if governing == nil || governing.Spec.ClusterIP != corev1.ClusterIPNone || !selects(&metav1.LabelSelector{MatchLabels: governing.Spec.Selector}, s.Spec.Template.Labels) {
				t.Errorf("serviceName %q: want a headless Service of its own selecting the pods, got %+v", s.Spec.ServiceName, governing)
			}
			if len(s.Spec.VolumeClaimTemplates) != 1 {
				t.Fatalf("volumeClaimTemplates = %d, want 1", len(s.Spec.VolumeClaimTemplates))
			}
			vct := s.Spec.VolumeClaimTemplates[0]
			if m := mountAt(c, stateDir); m == nil || m.Name != vct.Name || volumeNamed(s.Spec.Template.Spec, vct.Name) != nil {
				t.Errorf("%s is not the per-pod claim %s", stateDir, vct.Name)
			}
			if vct.Spec.Resources.Requests.Storage().String() != "2Gi" {
				t.Errorf("claim size = %s", vct.Spec.Resources.Requests.Storage())
			}
			if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
				t.Errorf("podManagementPolicy = %q, want Parallel: shards do not depend on one another", s.Spec.PodManagementPolicy)
			}
			checkConfigFiles(t, objs, &s.Spec.Template, true)
		}},
		{"two shards without persistence", append([]string{"--set", "shards=2,persistence.enabled=false"}, minimal...), func(t *testing.T, objs []object) {
			s := one[*appsv1.StatefulSet](t, objs, "StatefulSet")
			if len(s.Spec.VolumeClaimTemplates) != 0 || len(byKind(objs, "PersistentVolumeClaim")) != 0 {
				t.Error("claims without persistence")
			}
			if v := volumeNamed(s.Spec.Template.Spec, "state"); v == nil || v.EmptyDir == nil {
				t.Errorf("state volume = %+v, want an emptyDir", v)
			}
		}},
		{"no persistence", append([]string{"--set", "persistence.enabled=false"}, minimal...), func(t *testing.T, objs []object) {
			d := one[*appsv1.Deployment](t, objs, "Deployment")
			if v := volumeNamed(d.Spec.Template.Spec, "state"); v == nil || v.EmptyDir == nil || len(byKind(objs, "PersistentVolumeClaim")) != 0 {
				t.Errorf("state volume = %+v, want an emptyDir and no claim", v)
			}
		}},
		{"probe-only", []string{"--set", "token=t0ken,probeOnly=true"}, func(t *testing.T, objs []object) {
			if n := len(byKind(objs, "ConfigMap")); n != 1 {
				t.Errorf("probe-only renders %d ConfigMaps, want only the config", n)
			}
			d := one[*appsv1.Deployment](t, objs, "Deployment")
			cfg, _ := checkConfigFiles(t, objs, &d.Spec.Template, false)
			if cfg.Probe.MaxRuns != 10000 {
				t.Errorf("probe.max_runs = %d, want sizing.runsPerShard (10000): the memory limit is sized for that many runs", cfg.Probe.MaxRuns)
			}
		}},
		{"probe-only, three shards, ScrapeConfig", []string{"--set", "token=t0ken,probeOnly=true,shards=3,config.probe.max_runs=20000,scrapeConfig.enabled=true",
			"--set", "scrapeConfig.httpSDConfigs[0].url=http://run-registry/targets", "--namespace", "monitoring"}, func(t *testing.T, objs []object) {
			s := one[*appsv1.StatefulSet](t, objs, "StatefulSet")
			cfg, _ := checkConfigFiles(t, objs, &s.Spec.Template, false)
			if cfg.Probe.MaxRuns != 20000 {
				t.Errorf("probe.max_runs = %d, want the config's 20000", cfg.Probe.MaxRuns)
			}
			sc := one[*monitoringv1alpha1.ScrapeConfig](t, objs, "ScrapeConfig")
			if sc.Spec.MetricsPath == nil || *sc.Spec.MetricsPath != "/probe" {
				t.Errorf("metricsPath = %v, want /probe", sc.Spec.MetricsPath)
			}
			checkProbeRouting(t, sc, s, 3)
		}},
		{"probe-only, one instance, ScrapeConfig", []string{"--set", "token=t0ken,probeOnly=true,scrapeConfig.enabled=true",
			"--set", "scrapeConfig.staticConfigs[0].targets={" + runA + "}", "--namespace", "monitoring"}, func(t *testing.T, objs []object) {
			sc := one[*monitoringv1alpha1.ScrapeConfig](t, objs, "ScrapeConfig")
			checkProbeRouting(t, sc, nil, 1)
		}},
		{"monitoring objects off", append([]string{"--set", "serviceMonitor.enabled=false,prometheusRule.enabled=false,serviceAccount.create=false"}, minimal...), func(t *testing.T, objs []object) {
			if len(byKind(objs, "ServiceMonitor"))+len(byKind(objs, "PrometheusRule"))+len(byKind(objs, "ServiceAccount")) != 0 {
				t.Error("ServiceMonitor, PrometheusRule or ServiceAccount rendered while disabled")
			}
			if d := one[*appsv1.Deployment](t, objs, "Deployment"); d.Spec.Template.Spec.ServiceAccountName != "default" {
				t.Errorf("serviceAccountName = %q, want default", d.Spec.Template.Spec.ServiceAccountName)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, helm, append([]string{"lint", "--strict", chart}, tc.args...)...)
			objs := helmTemplate(t, append(tc.args, operatorAPIs...)...)
			_, tmpl := workload(t, objs)
			checkPod(t, "helm "+tc.name, tmpl)
			checkNames(t, "helm "+tc.name, objs)
			for _, o := range byKind(objs, "Deployment") {
				if d := o.(*appsv1.Deployment); d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
					t.Errorf("strategy = %q, want Recreate: a rolling update runs two pollers at once", d.Spec.Strategy.Type)
				}
			}
			tc.expect(t, objs)

			// Without the operator's APIs: the same objects, less the
			// operator's (helm install would fail on them).
			bare := helmTemplate(t, tc.args...)
			if want := withoutKinds(objs, operatorKinds...); !reflect.DeepEqual(bare, want) {
				t.Errorf("without the operator's APIs the chart renders %s; want %s", kindNames(bare), kindNames(want))
			}
		})
	}
}

// checkProbeRouting checks the ScrapeConfig's relabelling against the
// objects it routes to, rendered in namespace monitoring: each run's probe
// goes to the pod of the shard that owns it, by the shape of
// prometheus/prometheus-probe.yml (the run ID lower-cased into the probe's
// parameter and the instance label, its hashmod by the shard count, the
// pod's stable name through the StatefulSet's headless Service), or, with
// one instance, to the Service.
func checkProbeRouting(t *testing.T, sc *monitoringv1alpha1.ScrapeConfig, s *appsv1.StatefulSet, shards int) {
	t.Helper()
	type rule struct {
		source []string
		action string
		mod    int64
		target string
		repl   string
	}
	var got []rule
	for _, r := range sc.Spec.RelabelConfigs {
		var source []string
		for _, l := range r.SourceLabels {
			source = append(source, string(l))
		}
		var repl string
		if r.Replacement != nil {
			repl = *r.Replacement
		}
		got = append(got, rule{source, strings.ToLower(r.Action), r.Modulus, r.TargetLabel, repl})
	}
	want := []rule{
		{[]string{"__address__"}, "lowercase", 0, "__param_run_id", ""},
		{[]string{"__param_run_id"}, "", 0, "instance", ""},
	}
	if shards > 1 {
		port := s.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort
		want = append(want,
			rule{[]string{"__param_run_id"}, "hashmod", int64(shards), "__tmp_shard", ""},
			rule{[]string{"__tmp_shard"}, "", 0, "__address__", fmt.Sprintf("%s-$1.%s.monitoring.svc:%d", s.Name, s.Spec.ServiceName, port)})
	} else {
		want = append(want, rule{nil, "", 0, "__address__", "release-workflow-runs-exporter.monitoring.svc:10025"})
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ScrapeConfig relabelings:\n got %+v\nwant %+v", got, want)
	}
}

func resourceList(cpu, memory string) corev1.ResourceList {
	return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)}
}

// selects reports whether a label selector's matchLabels select labels.
func selects(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil || len(sel.MatchLabels) == 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func kindNames(objs []object) string {
	var out []string
	for _, o := range objs {
		out = append(out, o.kind+"/"+o.obj.(metav1.Object).GetName())
	}
	return strings.Join(out, " ")
}

// TestHelmChartRefusesBrokenValues: values that would give a pod that
// exits, or a silent exporter, fail the install with a message.
func TestHelmChartRefusesBrokenValues(t *testing.T) {
	helm := tool(t, "helm")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"defaults: no token", nil, "needs the API token: set token"},
		{"no run list", []string{"--set", "token=t0ken"}, "The run list is empty"},
		{"token and existingSecret", append([]string{"--set", "existingSecret=s"}, minimal...), "not both"},
		{"probeOnly with runIDs", append([]string{"--set", "probeOnly=true"}, minimal...), "probeOnly: true and runIDs exclude each other"},
		{"no shards", append([]string{"--set", "shards=0"}, minimal...), "at '/shards': minimum: got 0, want 1"},
		{"no shards, schema skipped", append([]string{"--skip-schema-validation", "--set", "shards=0"}, minimal...), "shards must be 1 or more"},
		{"shared claim across shards", append([]string{"--set", "shards=2,persistence.enabled=true,persistence.existingClaim=c"}, minimal...), "cannot be shared by several shards"},
		{"existing claim without persistence", append([]string{"--set", "persistence.enabled=false,persistence.existingClaim=c"}, minimal...), "persistence.existingClaim is set but persistence.enabled is false"},
		{"ScrapeConfig without runs to probe", []string{"--set", "token=t0ken,probeOnly=true,scrapeConfig.enabled=true"}, "scrapeConfig.enabled needs the runs to probe"},
		// values.schema.json
		{"run ID not a UUID", []string{"--set", "token=t0ken,runIDs={3c90c3cc-0d44-4b50-8888}"}, "at '/runIDs/0': '3c90c3cc-0d44-4b50-8888' does not match pattern"},
		{"run ID in config not a UUID", []string{"--set", "token=t0ken,probeOnly=true,config.runs.ids={run-1}"}, "at '/config/runs/ids/0'"},
		{"shards not a number", append([]string{"--set-string", "shards=three"}, minimal...), "at '/shards': got string, want integer"},
		{"misspelt value", append([]string{"--set", "persistance.enabled=true"}, minimal...), "additional properties 'persistance' not allowed"},
		{"misspelt nested value", append([]string{"--set", "serviceMonitor.intervall=1m"}, minimal...), "additional properties 'intervall' not allowed"},
		{"runs per shard not a number", append([]string{"--set-string", "sizing.runsPerShard=10k"}, minimal...), "at '/sizing/runsPerShard': got string, want integer"},
		{"bad duration", append([]string{"--set", "serviceMonitor.interval=30"}, minimal...), "at '/serviceMonitor/interval'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runErr(helm, append([]string{"template", "release", chart}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template: %v; want a failure saying %q", err, tc.want)
			}
		})
	}
}

// TestHelmRunIDsRollNoPod: the run list is outside the config checksum, so
// changing runIDs leaves the pod template as it was; changing the config
// does roll it (the control that the comparison can fail).
func TestHelmRunIDsRollNoPod(t *testing.T) {
	for _, extra := range [][]string{nil, {"--set", "shards=3,persistence.enabled=true"}} {
		t.Run(fmt.Sprint("args ", extra), func(t *testing.T) {
			render := func(args ...string) *corev1.PodTemplateSpec {
				_, tmpl := workload(t, helmTemplate(t, append(args, extra...)...))
				return tmpl
			}
			one := render("--set", "token=t0ken,runIDs={"+runA+"}")
			two := render("--set", "token=t0ken,runIDs={"+runA+","+runB+"}")
			if !reflect.DeepEqual(one, two) {
				t.Errorf("adding a run ID changed the pod template:\n%+v\n%+v", one.Annotations, two.Annotations)
			}
			otherConfig := render("--set", "token=t0ken,runIDs={"+runA+"},config.poll.interval=1m")
			if reflect.DeepEqual(one, otherConfig) {
				t.Error("changing config.poll.interval left the pod template unchanged; the config checksum is missing")
			}
		})
	}
}

// TestContainerImage checks the Dockerfile against go.mod and the paths
// the manifests use.
func TestContainerImage(t *testing.T) {
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goLine == nil {
		t.Fatal("no go line in ../go.mod")
	}
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{
		// The build stage runs on the builder's platform and
		// cross-compiles: a multi-arch build needs no emulation.
		"FROM --platform=$BUILDPLATFORM golang:" + string(goLine[1]) + "-bookworm AS build",
		"ARG TARGETOS\n", "ARG TARGETARCH\n", "GOOS=$TARGETOS GOARCH=$TARGETARCH go build",
		// The version stamp: the VERSION file unless make passes it, the
		// real branch, the build date.
		"COPY VERSION ./\n",
		"version.Version=${VERSION:-$(cat VERSION)}",
		"version.Branch=${BRANCH}",
		"version.BuildDate=${BUILDDATE:-$(date -u +%Y%m%d-%H:%M:%S)}",
		"COPY --from=build --chown=65532:65532 /out/state " + stateDir + "\n",
		"USER 65532:65532\n",
		`CMD ["--config.file=` + configFile + `", "--storage.path=` + stateDir + `"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// A VOLUME gives every plain `docker run` an anonymous volume that
	// outlives the container.
	if regexp.MustCompile(`(?m)^VOLUME`).MatchString(df) {
		t.Error("the Dockerfile declares a VOLUME")
	}
	// Only the final stage's FROM may lack --platform: it runs nothing.
	if froms := regexp.MustCompile(`(?m)^FROM .*$`).FindAllString(df, -1); len(froms) != 2 || !strings.Contains(froms[0], "--platform=$BUILDPLATFORM") {
		t.Errorf("stages %q: want a cross-compiling build stage and a final one", froms)
	}
	if regexp.MustCompile(`(?s)FROM gcr.io/distroless.*\nRUN `).MatchString(df) {
		t.Error("the final stage RUNs a command: a multi-arch build would need emulation")
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(ignore))
	if !slices.Contains(lines, "*") || !slices.Contains(lines, "**/*_test.go") {
		t.Errorf(".dockerignore must exclude everything but the sources the build copies: %v", lines)
	}
	// Every top-level directory with Go sources of the exporter is copied.
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "deploy" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		var hasGo bool
		filepath.WalkDir(filepath.Join("..", e.Name()), func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
				hasGo = true
			}
			return nil
		})
		if hasGo && !strings.Contains(df, "\nCOPY "+e.Name()+" ./"+e.Name()+"\n") {
			t.Errorf("../%s has Go sources the Dockerfile does not copy", e.Name())
		}
	}
	// Every COPY from the build context must be let in by .dockerignore.
	for _, m := range regexp.MustCompile(`(?m)^COPY ([^-].*)$`).FindAllStringSubmatch(df, -1) {
		f := strings.Fields(m[1])
		for _, src := range f[:len(f)-1] {
			if !fileExists(filepath.Join("..", src)) {
				t.Errorf("the Dockerfile copies %s, which does not exist", src)
			}
			if !slices.Contains(lines, "!"+strings.TrimSuffix(src, "/")) && !slices.Contains(lines, "!"+strings.TrimSuffix(src, "/")+"/") {
				t.Errorf("the Dockerfile copies %s, which .dockerignore leaves out", src)
			}
		}
	}
}

func TestComposeFile(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Command []string `json:"command"`
			Volumes []string `json:"volumes"`
		} `json:"services"`
		Volumes map[string]any `json:"volumes"`
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
			if _, named := compose.Volumes[src]; named {
				continue
			}
			if !fileExists(filepath.Join("docker-compose", src)) {
				t.Errorf("%s mounts %s, which does not exist", name, src)
			}
		}
	}
	if got := fmt.Sprint(compose.Services["prometheus"].Volumes); !strings.Contains(got, "../prometheus/prometheus.yml") || !strings.Contains(got, "../prometheus/alerts.yml") {
		t.Errorf("prometheus must mount the tested prometheus.yml and alerts.yml: %s", got)
	}
	exp := compose.Services["exporter"]
	if !slices.Contains(exp.Command, "--storage.path="+stateDir) {
		t.Errorf("exporter command %v lacks --storage.path=%s", exp.Command, stateDir)
	}
	stateOnVolume := slices.ContainsFunc(exp.Volumes, func(v string) bool {
		src, dst, _ := strings.Cut(v, ":")
		_, named := compose.Volumes[src]
		return named && dst == stateDir
	})
	if !stateOnVolume {
		t.Errorf("the exporter's store is not on a named volume: %v", exp.Volumes)
	}
}

// memoryFigures reads the sizing constants from the chart's helpers, the
// one place they live.
func memoryFigures(t *testing.T) (baseMiB, perRunKiB, limitFactor float64) {
	t.Helper()
	data, err := os.ReadFile(chart + "/templates/_helpers.tpl")
	if err != nil {
		t.Fatal(err)
	}
	figure := func(name string) float64 {
		m := regexp.MustCompile(`\{\{- define "wre\.memory\.` + name + `" -\}\}([0-9.]+)\{\{- end -\}\}`).FindSubmatch(data)
		if m == nil {
			t.Fatalf("_helpers.tpl has no wre.memory.%s", name)
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return figure("baseMiB"), figure("perRunKiB"), figure("limitFactor")
}

// TestHelmMemorySizing: the memory request and limit follow the documented
// formula from sizing.runsPerShard, and resources overrides them.
func TestHelmMemorySizing(t *testing.T) {
	base, perRun, factor := memoryFigures(t)
	if base <= 0 || perRun <= 0 || factor < 1 {
		t.Fatalf("figures base %v MiB, %v KiB per run, limit factor %v: want positive, and a limit at least the request", base, perRun, factor)
	}
	sized := func(runs int) (request, limit string) {
		r := math.Ceil(base + perRun*float64(runs)/1024)
		return fmt.Sprintf("%.0fMi", r), fmt.Sprintf("%.0fMi", math.Ceil(r*factor))
	}
	for _, tc := range []struct {
		name       string
		args       []string
		wantReq    string
		wantLimit  string
		runsPerPod int // 0: the explicit wantReq and wantLimit
	}{
		{name: "default", runsPerPod: 10000},
		{name: "100k runs", args: []string{"--set", "sizing.runsPerShard=100000"}, runsPerPod: 100000},
		{name: "one run", args: []string{"--set", "sizing.runsPerShard=1"}, runsPerPod: 1},
		{name: "shards size each pod", args: []string{"--set", "sizing.runsPerShard=40000,shards=4"}, runsPerPod: 40000},
		{name: "limit set", args: []string{"--set", "sizing.runsPerShard=100000,resources.limits.memory=1Gi"}, runsPerPod: 100000, wantLimit: "1Gi"},
		{name: "request set", args: []string{"--set", "resources.requests.memory=200Mi"}, runsPerPod: 10000, wantReq: "200Mi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tmpl := workload(t, helmTemplate(t, append(tc.args, minimal...)...))
			res := tmpl.Spec.Containers[0].Resources
			wantReq, wantLimit := sized(tc.runsPerPod)
			if tc.wantReq != "" {
				wantReq = tc.wantReq
			}
			if tc.wantLimit != "" {
				wantLimit = tc.wantLimit
			}
			if got := res.Requests[corev1.ResourceMemory]; got.Cmp(resource.MustParse(wantReq)) != 0 {
				t.Errorf("memory request = %s, want %s", got.String(), wantReq)
			}
			if got := res.Limits[corev1.ResourceMemory]; got.Cmp(resource.MustParse(wantLimit)) != 0 {
				t.Errorf("memory limit = %s, want %s", got.String(), wantLimit)
			}
			if got := res.Requests[corev1.ResourceCPU]; got.String() != "50m" {
				t.Errorf("cpu request = %s, want the values' 50m", got.String())
			}
		})
	}
	// The measured RSS (README "Performance") fits under the request.
	for runs, measuredMiB := range map[int]float64{10000: 38, 100000: 199} {
		req, _ := sized(runs)
		if q := resource.MustParse(req); q.Value() < int64(measuredMiB*(1<<20)) {
			t.Errorf("at %d runs the request %s is below the measured %v MiB", runs, req, measuredMiB)
		}
	}
}

// TestHelmLongReleaseName: a release name of 36 characters (and Helm's
// maximum, 53) renders names and labels the API server and the
// StatefulSet controller accept.
func TestHelmLongReleaseName(t *testing.T) {
	helm := tool(t, "helm")
	for _, release := range []string{"payments-platform-monitoring-prod-eu", strings.Repeat("r", 53)} {
		for _, shards := range []string{"1", "3"} {
			t.Run(fmt.Sprintf("%d characters, %s shards", len(release), shards), func(t *testing.T) {
				out := run(t, helm, append([]string{"template", release, chart, "--set", "shards=" + shards + ",grafanaDashboard.enabled=true,scrapeConfig.enabled=true,podDisruptionBudget.enabled=true,networkPolicy.enabled=true",
					"--set", "scrapeConfig.httpSDConfigs[0].url=http://r/t"}, append(minimal, operatorAPIs...)...)...)
				objs := decodeStrict(t, "helm template", out)
				checkNames(t, release, objs)
				for _, o := range byKind(objs, "StatefulSet") {
					s := o.(*appsv1.StatefulSet)
					if sc := one[*monitoringv1alpha1.ScrapeConfig](t, objs, "ScrapeConfig"); !strings.Contains(*sc.Spec.RelabelConfigs[3].Replacement, s.Name+"-$1."+s.Spec.ServiceName+".") {
						t.Errorf("the probe job routes to %s, not to the StatefulSet %s's pods", *sc.Spec.RelabelConfigs[3].Replacement, s.Name)
					}
				}
			})
		}
	}
}

// TestOneVersion: the VERSION file is the release version everywhere an
// image tag is named, and the release workflow pushes the image the
// chart and the manifests pull.
func TestOneVersion(t *testing.T) {
	raw, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(raw))
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(version) {
		t.Fatalf("VERSION = %q, want x.y.z", version)
	}
	if got := chartAppVersion(t); got != version {
		t.Errorf("Chart.yaml appVersion = %s, VERSION = %s", got, version)
	}
	var kust struct {
		Images []struct {
			Name   string `json:"name"`
			NewTag string `json:"newTag"`
		} `json:"images"`
	}
	readYAML(t, "kubernetes/kustomization.yaml", &kust)
	if len(kust.Images) != 1 || kust.Images[0].Name != defaultImage || kust.Images[0].NewTag != version {
		t.Errorf("kustomization images = %+v, want %s with tag %s", kust.Images, defaultImage, version)
	}
	var values struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
	}
	readYAML(t, chart+"/values.yaml", &values)
	if values.Image.Repository != defaultImage || values.Image.Tag != "" {
		t.Errorf("values image = %+v, want %s and the appVersion tag", values.Image, defaultImage)
	}
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VERSION   ?= $(shell cat VERSION)\n", "IMAGE     ?= " + defaultImage + "\n", "-t $(IMAGE):$(VERSION) .",
		"--build-arg BRANCH=$(BRANCH)", "--build-arg BUILDDATE=$(BUILDDATE)"} {
		if !strings.Contains(string(makefile), want) {
			t.Errorf("Makefile lacks %q", want)
		}
	}

	// YAML 1.2 (yaml/v3): to YAML 1.1 parsers `on` is the boolean true.
	var wf struct {
		On struct {
			Push struct {
				Tags []string `yaml:"tags"`
			} `yaml:"push"`
		} `yaml:"on"`
		Permissions map[string]string `yaml:"permissions"`
		Env         map[string]string `yaml:"env"`
		Jobs        map[string]struct {
			Steps []struct {
				Uses string            `yaml:"uses"`
				Run  string            `yaml:"run"`
				With map[string]string `yaml:"with"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	workflow, err := os.ReadFile("../.github/workflows/release.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yamlv3.Unmarshal(workflow, &wf); err != nil {
		t.Fatalf("release.yml: %v", err)
	}
	if !reflect.DeepEqual(wf.On.Push.Tags, []string{"v*"}) || wf.Permissions["packages"] != "write" || wf.Env["IMAGE"] != defaultImage {
		t.Errorf("release workflow: tags %v, permissions %v, IMAGE %q; want v* tags pushing %s", wf.On.Push.Tags, wf.Permissions, wf.Env["IMAGE"], defaultImage)
	}
	var checksTag, pushes bool
	for _, job := range wf.Jobs {
		for _, st := range job.Steps {
			if strings.Contains(st.Run, "cat VERSION") && strings.Contains(st.Run, `"${GITHUB_REF_NAME}" != "v${version}"`) {
				checksTag = true
			}
			if strings.HasPrefix(st.Uses, "docker/build-push-action@") {
				pushes = true
				platforms := strings.Split(st.With["platforms"], ",")
				if !slices.Contains(platforms, "linux/amd64") || !slices.Contains(platforms, "linux/arm64") || st.With["push"] != "true" ||
					st.With["tags"] != "${{ env.IMAGE }}:${{ env.VERSION }}" {
					t.Errorf("build-push-action with %v: want linux/amd64 and linux/arm64 pushed as $IMAGE:$VERSION", st.With)
				}
				for _, arg := range []string{"VERSION", "REVISION", "BRANCH", "BUILDDATE"} {
					if !strings.Contains(st.With["build-args"], arg+"=") {
						t.Errorf("the release build does not pass %s", arg)
					}
				}
			}
			if strings.Contains(st.Uses, "setup-qemu") {
				t.Error("the release workflow sets up QEMU: the Dockerfile cross-compiles")
			}
		}
	}
	if !checksTag || !pushes {
		t.Errorf("release workflow: checks the tag against VERSION %v, builds and pushes %v", checksTag, pushes)
	}

	// The README names the image with this version and no other.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	tags := regexp.MustCompile(regexp.QuoteMeta(defaultImage)+`:(\d+\.\d+\.\d+)`).FindAllStringSubmatch(string(readme), -1)
	if len(tags) == 0 {
		t.Errorf("README never names %s:%s", defaultImage, version)
	}
	for _, m := range tags {
		if m[1] != version {
			t.Errorf("README names %s, VERSION is %s", m[0], version)
		}
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestHelmDashboardCopy: the chart's dashboard is dashboards/workflow-runs.json
// (a chart cannot read files outside its directory, so it holds a copy).
func TestHelmDashboardCopy(t *testing.T) {
	src, err := os.ReadFile("../dashboards/workflow-runs.json")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := os.ReadFile(chart + "/files/workflow-runs.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, cp) {
		t.Errorf("%s/files/workflow-runs.json differs from dashboards/workflow-runs.json; run: cp dashboards/workflow-runs.json deploy/%s/files/", chart, chart)
	}
}

// TestKustomizeConfigRollsPod: a change to config.yml renames its
// generated ConfigMap and so changes the pod template (the pod rolls); a
// change to the run list does not.
func TestKustomizeConfigRollsPod(t *testing.T) {
	// build runs kustomize on a copy of deploy/kubernetes with one text
	// replaced in one file.
	build := func(file, old, replacement string) *corev1.PodTemplateSpec {
		t.Helper()
		fs := filesys.MakeFsInMemory()
		entries, err := os.ReadDir("kubernetes")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join("kubernetes", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if e.Name() == file {
				if !bytes.Contains(data, []byte(old)) {
					t.Fatalf("%s does not contain %q", file, old)
				}
				data = bytes.Replace(data, []byte(old), []byte(replacement), 1)
			}
			if err := fs.WriteFile(filepath.Join("/k", e.Name()), data); err != nil {
				t.Fatal(err)
			}
		}
		res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/k")
		if err != nil {
			t.Fatal(err)
		}
		out, err := res.AsYaml()
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeStrict(t, "kustomize build", out)
		d := one[*appsv1.Deployment](t, objs, "Deployment")
		files := projectedFiles(t, &d.Spec.Template, filepath.Dir(configFile))
		name, _, _ := strings.Cut(files[configFile], "/")
		if cfg := configMapNamed(t, objs, name).Data["config.yml"]; !strings.HasPrefix(name, "workflow-runs-exporter-") || file == "config.yml" && !strings.Contains(cfg, replacement) {
			t.Errorf("config.yml comes from %q, want the generated workflow-runs-exporter-<hash> with this config", name)
		}
		return &d.Spec.Template
	}
	base := build("", "", "")
	if reflect.DeepEqual(base, build("config.yml", "timeout: 10s", "timeout: 20s")) {
		t.Error("changing config.yml left the pod template unchanged: the pod would keep the old config")
	}
	if !reflect.DeepEqual(base, build("runs-configmap.yaml", "# 3c90c3cc-0d44-4b50-8888-8dd25736052a", runA)) {
		t.Error("changing the run list changed the pod template: adding a run would restart the exporter")
	}
}
