package deploy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The upgrade tests replay `helm upgrade` on a model of a namespace, with
// the rules Helm 3 and the API server apply, so that the chart's upgrade
// paths are checked without a cluster:
//
//   - Helm creates what is rendered and missing, and patches what exists
//     with the change from the release's last manifest to the new one
//     (for an object it adopts, from the new one itself).
//   - It adopts an object it did not create only if the object carries its
//     ownership marks (label app.kubernetes.io/managed-by: Helm,
//     annotations meta.helm.sh/release-name and -namespace); otherwise the
//     upgrade fails ("exists and cannot be imported").
//   - It deletes what the last manifest had and the new one has not,
//     unless the live object says helm.sh/resource-policy: keep.
//   - The API server refuses changes to immutable fields: a Service's
//     clusterIP, a Deployment's selector, a StatefulSet's spec other than
//     replicas, template, updateStrategy, the claim retention policy,
//     minReadySeconds and ordinals, a claim's spec other than a larger
//     storage request, a Secret's type.
//   - The StatefulSet controller creates claim <template>-<statefulset>-<i>
//     for each pod, from the template, when it does not exist, and uses it
//     when it does; it leaves claims in place when pods or the StatefulSet
//     go (the default retention policy).
//
// (helm.sh/helm/v3 pkg/action/upgrade.go, pkg/action/validate.go,
// pkg/kube/client.go; ValidateStatefulSetUpdate and
// ValidatePersistentVolumeClaimUpdate in kubernetes/pkg/apis.)

const (
	upgradeRelease   = "wre"
	upgradeNamespace = "monitoring"
)

type objKey struct{ kind, name string }

func keyOf(o object) objKey { return objKey{o.kind, o.obj.(metav1.Object).GetName()} }

// liveObject is an object in the namespace.
type liveObject struct {
	obj         object // as last applied
	uid         int    // new when the object is created again: a claim's data
	labels      map[string]string
	annotations map[string]string
}

type namespace struct {
	t        *testing.T
	release  map[objKey]object // the release's last manifest
	live     map[objKey]*liveObject
	lastUID  int
	problems []string
}

func newNamespace(t *testing.T) *namespace {
	return &namespace{t: t, release: map[objKey]object{}, live: map[objKey]*liveObject{}}
}

func (n *namespace) create(o object, labels, annotations map[string]string) {
	n.lastUID++
	n.live[keyOf(o)] = &liveObject{obj: o, uid: n.lastUID, labels: labels, annotations: annotations}
}

// helmMarks returns an object's labels and annotations with the ownership
// marks Helm adds to every object it applies.
func helmMarks(o object) (labels, annotations map[string]string) {
	m := o.obj.(metav1.Object)
	labels, annotations = map[string]string{}, map[string]string{}
	for k, v := range m.GetLabels() {
		labels[k] = v
	}
	for k, v := range m.GetAnnotations() {
		annotations[k] = v
	}
	labels["app.kubernetes.io/managed-by"] = "Helm"
	annotations["meta.helm.sh/release-name"] = upgradeRelease
	annotations["meta.helm.sh/release-namespace"] = upgradeNamespace
	return labels, annotations
}

// upgrade applies a rendering as `helm upgrade --install` does, then lets
// the StatefulSet controller create its claims. It returns what Helm or the
// API server would refuse; n.problems collects them too.
func (n *namespace) upgrade(rendered []object) []string {
	var problems []string
	target := map[objKey]object{}
	for _, o := range rendered {
		target[keyOf(o)] = o
	}
	for _, o := range rendered {
		k := keyOf(o)
		live, exists := n.live[k]
		if !exists {
			labels, annotations := helmMarks(o)
			n.create(o, labels, annotations)
			continue
		}
		baseline, inRelease := n.release[k]
		if !inRelease {
			if live.labels["app.kubernetes.io/managed-by"] != "Helm" || live.annotations["meta.helm.sh/release-name"] != upgradeRelease ||
				live.annotations["meta.helm.sh/release-namespace"] != upgradeNamespace {
				problems = append(problems, fmt.Sprintf("%s %s exists and cannot be imported into the release: invalid ownership metadata", k.kind, k.name))
				continue
			}
			// Adopted: Helm patches from the new manifest to itself, so
			// only fields the live object has otherwise change.
			baseline = live.obj
		}
		for _, field := range immutableChanges(baseline, o) {
			problems = append(problems, fmt.Sprintf("%s %s: %s is immutable", k.kind, k.name, field))
		}
		live.obj = o
		live.labels, live.annotations = helmMarks(o)
	}
	for k := range n.release {
		if _, kept := target[k]; kept {
			continue
		}
		live, exists := n.live[k]
		if !exists {
			continue
		}
		if live.annotations["helm.sh/resource-policy"] == "keep" {
			continue
		}
		delete(n.live, k)
		if k.kind == "PersistentVolumeClaim" {
			problems = append(problems, fmt.Sprintf("PersistentVolumeClaim %s is deleted, and the state store on it", k.name))
		}
	}
	n.release = target
	n.runControllers()
	n.problems = append(n.problems, problems...)
	return problems
}

// runControllers creates the claims of each StatefulSet's pods.
func (n *namespace) runControllers() {
	for _, live := range n.live {
		s, ok := live.obj.obj.(*appsv1.StatefulSet)
		if !ok {
			continue
		}
		for i := range int(*s.Spec.Replicas) {
			for _, vct := range s.Spec.VolumeClaimTemplates {
				name := fmt.Sprintf("%s-%s-%d", vct.Name, s.Name, i)
				if _, exists := n.live[objKey{"PersistentVolumeClaim", name}]; exists {
					continue
				}
				pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: vct.Labels, Annotations: vct.Annotations}, Spec: vct.Spec}
				n.create(object{kind: "PersistentVolumeClaim", obj: pvc}, vct.Labels, vct.Annotations)
			}
		}
	}
}

// kubectlDelete is `kubectl delete <kind> <name>` (with --cascade=orphan
// for a StatefulSet: its pods and claims stay).
func (n *namespace) kubectlDelete(kind, name string) {
	n.t.Helper()
	if _, ok := n.live[objKey{kind, name}]; !ok {
		n.t.Fatalf("kubectl delete %s %s: not found", kind, name)
	}
	delete(n.live, objKey{kind, name})
}

// kubectlAnnotateKeep is `kubectl annotate <kind> <name> helm.sh/resource-policy=keep`.
func (n *namespace) kubectlAnnotateKeep(kind, name string) {
	n.t.Helper()
	live, ok := n.live[objKey{kind, name}]
	if !ok {
		n.t.Fatalf("kubectl annotate %s %s: not found", kind, name)
	}
	live.annotations["helm.sh/resource-policy"] = "keep"
}

// shardClaims returns, for each shard of the release, the uid of the
// claim its pod mounts for the store (0: no claim).
func (n *namespace) shardClaims() []int {
	n.t.Helper()
	uid := func(claim string) int {
		live, ok := n.live[objKey{"PersistentVolumeClaim", claim}]
		if !ok {
			n.t.Fatalf("the pod mounts the claim %s, which does not exist", claim)
		}
		return live.uid
	}
	var out []int
	for _, o := range n.release {
		switch w := o.obj.(type) {
		case *appsv1.Deployment:
			v := volumeNamed(w.Spec.Template.Spec, "state")
			if v.PersistentVolumeClaim == nil {
				return []int{0}
			}
			return []int{uid(v.PersistentVolumeClaim.ClaimName)}
		case *appsv1.StatefulSet:
			if len(w.Spec.VolumeClaimTemplates) == 0 {
				return make([]int, *w.Spec.Replicas)
			}
			for i := range int(*w.Spec.Replicas) {
				out = append(out, uid(fmt.Sprintf("%s-%s-%d", w.Spec.VolumeClaimTemplates[0].Name, w.Name, i)))
			}
			return out
		}
	}
	n.t.Fatal("the release has no workload")
	return nil
}

// scrapedService returns the one Service the release's ServiceMonitor
// selects, and fails the test if it is not one.
func scrapedService(t *testing.T, objs []object) *corev1.Service {
	t.Helper()
	sm := one[*monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor")
	svcs := serviceMonitorTargets(objs, sm)
	if len(svcs) != 1 {
		t.Fatalf("the ServiceMonitor selects %d Services, want 1", len(svcs))
	}
	return svcs[0]
}

// immutableChanges lists the immutable fields that differ between two
// versions of one object.
func immutableChanges(before, after object) []string {
	var out []string
	switch b := before.obj.(type) {
	case *corev1.Service:
		if a := after.obj.(*corev1.Service); a.Spec.ClusterIP != b.Spec.ClusterIP {
			out = append(out, fmt.Sprintf("spec.clusterIP (%q -> %q)", b.Spec.ClusterIP, a.Spec.ClusterIP))
		}
	case *appsv1.Deployment:
		if a := after.obj.(*appsv1.Deployment); !equality.Semantic.DeepEqual(a.Spec.Selector, b.Spec.Selector) {
			out = append(out, "spec.selector")
		}
	case *appsv1.StatefulSet:
		a := after.obj.(*appsv1.StatefulSet)
		if a.Spec.ServiceName != b.Spec.ServiceName {
			out = append(out, fmt.Sprintf("spec.serviceName (%q -> %q)", b.Spec.ServiceName, a.Spec.ServiceName))
		}
		if !equality.Semantic.DeepEqual(a.Spec.VolumeClaimTemplates, b.Spec.VolumeClaimTemplates) {
			out = append(out, "spec.volumeClaimTemplates")
		}
		bs, as := b.Spec.DeepCopy(), a.Spec.DeepCopy()
		for _, s := range []*appsv1.StatefulSetSpec{bs, as} {
			s.Replicas, s.Template, s.UpdateStrategy = nil, corev1.PodTemplateSpec{}, appsv1.StatefulSetUpdateStrategy{}
			s.PersistentVolumeClaimRetentionPolicy, s.MinReadySeconds, s.Ordinals = nil, 0, nil
			s.ServiceName, s.VolumeClaimTemplates = "", nil
		}
		if !equality.Semantic.DeepEqual(as, bs) {
			out = append(out, "spec (selector, podManagementPolicy, ...)")
		}
	case *corev1.PersistentVolumeClaim:
		a := after.obj.(*corev1.PersistentVolumeClaim)
		bs, as := b.Spec.DeepCopy(), a.Spec.DeepCopy()
		bs.Resources, as.Resources = corev1.VolumeResourceRequirements{}, corev1.VolumeResourceRequirements{}
		if !equality.Semantic.DeepEqual(as, bs) {
			out = append(out, "spec")
		}
		if a.Spec.Resources.Requests.Storage().Cmp(*b.Spec.Resources.Requests.Storage()) < 0 {
			out = append(out, "spec.resources.requests.storage (shrunk)")
		}
	case *corev1.Secret:
		if a := after.obj.(*corev1.Secret); a.Type != b.Type {
			out = append(out, "type")
		}
	}
	return out
}

// renderRelease renders the chart as release wre in namespace monitoring,
// for a cluster with the operator's APIs.
func renderRelease(t *testing.T, set string) []object {
	t.Helper()
	args := []string{"template", upgradeRelease, chart, "--namespace", upgradeNamespace, "--set", "token=t0ken,runIDs={" + runA + "}"}
	if set != "" {
		args = append(args, "--set", set)
	}
	out := run(t, tool(t, "helm"), append(args, operatorAPIs...)...)
	return decodeStrict(t, "helm template "+set, out)
}

// TestHelmUpgradePaths replays the upgrade paths the README documents on
// renderings of the chart: each step must go through without a problem,
// shard 0 must keep the single instance's claim (and the single instance
// shard 0's), and the Service the ServiceMonitor selects must keep its
// name and type.
func TestHelmUpgradePaths(t *testing.T) {
	type step struct {
		set string // --set values of this step
		// freshClaims: how many shards start on a claim created by this step
		freshClaims int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"install at shards 1", []step{{"", 1}}},
		{"install at shards 3", []step{{"shards=3", 3}}},
		{"shards 1 -> 3 -> 1 -> 3", []step{{"", 1}, {"shards=3", 2}, {"", 0}, {"shards=3", 0}}},
		{"shards 3 -> 1 -> 3", []step{{"shards=3", 3}, {"", 0}, {"shards=3", 0}}},
		{"shards 2 -> 5 -> 3", []step{{"shards=2", 2}, {"shards=5", 3}, {"shards=3", 0}}},
		{"without persistence, shards 1 -> 3 -> 1", []step{{"persistence.enabled=false", 0}, {"persistence.enabled=false,shards=3", 0}, {"persistence.enabled=false", 0}}},
		{"persistence turned on, then shards 3", []step{{"persistence.enabled=false", 0}, {"", 1}, {"shards=3", 2}}},
		{"probe-only with a ScrapeConfig, shards 1 -> 4", []step{
			{"runIDs=null,probeOnly=true,scrapeConfig.enabled=true,scrapeConfig.httpSDConfigs[0].url=http://r/t", 1},
			{"runIDs=null,probeOnly=true,scrapeConfig.enabled=true,scrapeConfig.httpSDConfigs[0].url=http://r/t,shards=4", 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNamespace(t)
			var shard0 int
			var scraped *corev1.Service
			for i, st := range tc.steps {
				objs := renderRelease(t, st.set)
				before := map[int]bool{}
				for _, o := range ns.live {
					before[o.uid] = true
				}
				for _, p := range ns.upgrade(objs) {
					t.Errorf("step %d (%s): %s", i, st.set, p)
				}
				claims := ns.shardClaims()
				fresh := 0
				for _, uid := range claims {
					if uid != 0 && !before[uid] {
						fresh++
					}
				}
				if fresh != st.freshClaims {
					t.Errorf("step %d (%s): %d shards start on a new claim, want %d", i, st.set, fresh, st.freshClaims)
				}
				if i > 0 && shard0 != 0 && claims[0] != shard0 {
					t.Errorf("step %d (%s): shard 0 lost the store it had", i, st.set)
				}
				if claims[0] != 0 {
					shard0 = claims[0]
				}
				svc := scrapedService(t, objs)
				if scraped != nil && (svc.Name != scraped.Name || svc.Spec.Type != scraped.Spec.Type || svc.Spec.ClusterIP != scraped.Spec.ClusterIP) {
					t.Errorf("step %d (%s): the ServiceMonitor selects %s (%s, clusterIP %q), before %s (%s, clusterIP %q)", i, st.set,
						svc.Name, svc.Spec.Type, svc.Spec.ClusterIP, scraped.Name, scraped.Spec.Type, scraped.Spec.ClusterIP)
				}
				scraped = svc
			}
		})
	}
}

// TestHelmUpgradeFrom010 replays the upgrades from the chart at 0.1.0
// (testdata/chart-0.1.0) that the README's upgrade notes describe: a plain
// `helm upgrade` where it works, the documented steps where it does not,
// and the failure those steps avoid.
func TestHelmUpgradeFrom010(t *testing.T) {
	const fullname = "wre-workflow-runs-exporter"
	for _, tc := range []struct {
		name    string
		fixture string
		set     string
		steps   func(ns *namespace)
		// problems without the steps, each named by a substring; none
		// with them.
		problems []string
		// keepsState: shard 0 (or the one instance) keeps its claim.
		keepsState bool
	}{
		{name: "one instance without persistence", fixture: "default", set: ""},
		{name: "one instance with persistence, onto existingClaim", fixture: "persistence",
			set: "persistence.existingClaim=" + fullname + "-state",
			steps: func(ns *namespace) {
				ns.kubectlAnnotateKeep("PersistentVolumeClaim", fullname+"-state")
			},
			problems:   []string{"PersistentVolumeClaim " + fullname + "-state is deleted"},
			keepsState: true},
		{name: "three shards", fixture: "shards3", set: "shards=3",
			steps: func(ns *namespace) {
				ns.kubectlDelete("StatefulSet", fullname)
				ns.kubectlDelete("Service", fullname)
			},
			problems: []string{"StatefulSet " + fullname + ": spec.serviceName", "StatefulSet " + fullname + ": spec.volumeClaimTemplates",
				"Service " + fullname + ": spec.clusterIP"},
			keepsState: true},
	} {
		for _, withSteps := range []bool{false, true} {
			if withSteps && tc.steps == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s, documented steps %v", tc.name, withSteps), func(t *testing.T) {
				data, err := os.ReadFile("testdata/chart-0.1.0/" + tc.fixture + ".yaml")
				if err != nil {
					t.Fatal(err)
				}
				ns := newNamespace(t)
				if p := ns.upgrade(decodeStrict(t, tc.fixture, data)); len(p) != 0 {
					t.Fatalf("installing 0.1.0: %v", p)
				}
				before := ns.shardClaims()
				if withSteps {
					tc.steps(ns)
				}
				problems := ns.upgrade(renderRelease(t, tc.set))
				if withSteps || len(tc.problems) == 0 {
					for _, p := range problems {
						t.Errorf("upgrade: %s", p)
					}
				} else {
					for _, want := range tc.problems {
						if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, want) }) {
							t.Errorf("upgrade without the steps: no problem %q in %q; the upgrade notes would be out of date", want, problems)
						}
					}
					return
				}
				if after := ns.shardClaims(); tc.keepsState && after[0] != before[0] {
					t.Error("shard 0 lost the store it had")
				}
			})
		}
	}
}
