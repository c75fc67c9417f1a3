package deploy

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/deploy/internal/rulecopies"
)

// The alerts the kit ships; each has a runbook section in the README.
var wantAlerts = []string{
	"WorkflowRunFailed", "WorkflowRunStuck", "WorkflowRunStalled",
	"WorkflowRunsExporterAPIErrors", "WorkflowRunsExporterDataStale",
	"WorkflowRunsExporterDown", "WorkflowRunsExporterAbsent",
}

const runbookBase = "https://github.com/workflow-runs-exporter/workflow_runs_exporter/blob/main/README.md#"

func loadRules(t *testing.T) ([]byte, monitoringv1.PrometheusRuleSpec) {
	t.Helper()
	data, err := os.ReadFile(rulecopies.Source)
	if err != nil {
		t.Fatal(err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(data, &spec); err != nil {
		t.Fatal(err)
	}
	return data, spec
}

// TestAlertRuleCopiesUpToDate fails when a generated copy of the rules
// differs from what the generator writes now.
func TestAlertRuleCopiesUpToDate(t *testing.T) {
	source, spec := loadRules(t)
	files, err := rulecopies.Render(source)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range files {
		have, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v; run: cd deploy && go run ./cmd/genrules", err)
			continue
		}
		if !bytes.Equal(have, want) {
			t.Errorf("%s is out of date with %s; run: cd deploy && go run ./cmd/genrules", path, rulecopies.Source)
		}
	}
	// The generated PrometheusRule must carry exactly the source's rules.
	kube, err := os.ReadFile(rulecopies.PrometheusRule)
	if err != nil {
		t.Fatal(err)
	}
	rule := one[*monitoringv1.PrometheusRule](t, decodeStrict(t, rulecopies.PrometheusRule, kube), "PrometheusRule")
	if !equalJSON(t, rule.Spec, spec) {
		t.Errorf("%s does not hold the rules of %s", rulecopies.PrometheusRule, rulecopies.Source)
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

// TestAlertRules checks what promtool does not: the expected alerts exist,
// each has a severity and a runbook_url whose README section exists, the
// per-run alerts ride over restarts, and the thresholds are in the header.
func TestAlertRules(t *testing.T) {
	source, spec := loadRules(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	runbooks := readmeSection(string(readme), "## Runbooks")
	if runbooks == "" {
		t.Fatal(`README.md has no "## Runbooks" section`)
	}
	var names []string
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			names = append(names, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s", r.Alert, a)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if got := r.Annotations["runbook_url"]; got != runbookBase+anchor {
				t.Errorf("%s: runbook_url = %q, want %s", r.Alert, got, runbookBase+anchor)
			}
			section := readmeSection(runbooks, "### "+r.Alert)
			if len(strings.Fields(section)) < 30 {
				t.Errorf(`%s: README "## Runbooks" has no "### %s" section saying what it means and what to do`, r.Alert, r.Alert)
			}
			if strings.HasPrefix(r.Alert, "WorkflowRun") && !strings.HasPrefix(r.Alert, "WorkflowRunsExporter") {
				if r.KeepFiringFor == nil {
					t.Errorf("%s: no keep_firing_for; an exporter restart would resolve it", r.Alert)
				}
				if !strings.Contains(r.Expr.String(), "without (instance, pod)") {
					t.Errorf("%s: keeps the instance label; a restarted pod would make it a new alert", r.Alert)
				}
			}
		}
	}
	slices.Sort(names)
	want := slices.Clone(wantAlerts)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("alerts = %v, want %v", names, want)
	}
	header := string(source[:bytes.Index(source, []byte("\ngroups:"))])
	for _, name := range wantAlerts {
		if !strings.Contains(header, name) {
			t.Errorf("the header of %s does not list %s's threshold", rulecopies.Source, name)
		}
	}
	if !strings.Contains(header, "1800 s") {
		t.Error("the header does not give WorkflowRunStalled's 1800 s threshold")
	}
}

// readmeSection returns the text under heading up to the next heading of
// the same or a higher level.
func readmeSection(doc, heading string) string {
	level := strings.Index(heading, " ")
	start := strings.Index(doc, "\n"+heading+"\n")
	if start < 0 {
		return ""
	}
	rest := doc[start+len(heading)+2:]
	next := regexp.MustCompile(`(?m)^#{1,` + string(rune('0'+level)) + `} `).FindStringIndex(rest)
	if next != nil {
		rest = rest[:next[0]]
	}
	return rest
}

func TestPromtoolRules(t *testing.T) {
	promtool := tool(t, "promtool")
	run(t, promtool, "check", "rules", rulecopies.Source, rulecopies.HelmCopy)
	run(t, promtool, "check", "config", "prometheus/prometheus.yml")
	out := run(t, promtool, "test", "rules", "prometheus/alerts_test.yml")
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
}

// TestPromtoolTestsCoverEveryAlert: alerts_test.yml checks each alert both
// firing and not firing.
func TestPromtoolTestsCoverEveryAlert(t *testing.T) {
	data, err := os.ReadFile("prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatal(err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, name := range wantAlerts {
		if !firing[name] || !quiet[name] {
			t.Errorf("%s: tested firing %v, not firing %v; want both", name, firing[name], quiet[name])
		}
	}
}
