package deploy

import (
	"bytes"
	"os"
	"path/filepath"
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
	"WorkflowRunFailed", "WorkflowRunStuck", "WorkflowRunStalled", "WorkflowRunNotFound",
	"WorkflowFailureRatioHigh", "WorkflowQueueWaitHigh",
	"WorkflowRunsExporterAPIErrors", "WorkflowRunsExporterDataStale", "WorkflowRunsExporterFirstCycleSlow",
	"WorkflowRunsExporterConfigReloadFailed", "WorkflowRunsExporterIDsFileUnreadable",
	"WorkflowRunsExporterIDsFileInvalidLines", "WorkflowRunsExporterStorageErrors",
	"WorkflowRunsExporterDown", "WorkflowRunsExporterAbsent",
}

// perRunAlerts carry a run_id: one alert per run, which must survive a
// restart of the exporter and a change of the pod that serves the run.
var perRunAlerts = []string{"WorkflowRunFailed", "WorkflowRunStuck", "WorkflowRunStalled", "WorkflowRunNotFound"}

// freshDataAlerts read a run's status or progress as of its last good
// fetch, so they must not fire while its fetches fail (an API outage).
var freshDataAlerts = []string{"WorkflowRunStuck", "WorkflowRunStalled"}

const runbookBase = "https://github.com/workflow-runs-exporter/workflow_runs_exporter/blob/main/README.md#"

func loadRules(t *testing.T) ([]byte, *rulecopies.Rules) {
	t.Helper()
	data, err := os.ReadFile(rulecopies.Source)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := rulecopies.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return data, rules
}

// TestAlertRuleCopiesUpToDate fails when a generated copy of the rules
// differs from what the generator writes now.
func TestAlertRuleCopiesUpToDate(t *testing.T) {
	source, rules := loadRules(t)
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
	if !equalJSON(t, rule.Spec, rules.Spec) {
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
// per-run alerts ride over restarts and need fresh data, and the README's
// "Alerts" section names each.
func TestAlertRules(t *testing.T) {
	_, rules := loadRules(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	runbooks := readmeSection(string(readme), "## Runbooks")
	if runbooks == "" {
		t.Fatal(`README.md has no "## Runbooks" section`)
	}
	alertsDoc := readmeSection(string(readme), "## Alerts")
	var names []string
	for _, g := range rules.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			names = append(names, r.Alert)
			if s := r.Labels["severity"]; s != "info" && s != "warning" && s != "critical" {
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
			if !strings.Contains(alertsDoc, "`"+r.Alert+"`") {
				t.Errorf(`%s: README "## Alerts" does not list it`, r.Alert)
			}
			expr := r.Expr.String()
			if slices.Contains(perRunAlerts, r.Alert) {
				if r.KeepFiringFor == nil {
					t.Errorf("%s: no keep_firing_for; an exporter restart would resolve it", r.Alert)
				}
				if !strings.HasPrefix(expr, "max without (instance, pod) (") {
					t.Errorf("%s: keeps the instance label; a restarted pod would make it a new alert", r.Alert)
				}
			}
			if slices.Contains(freshDataAlerts, r.Alert) && !strings.Contains(expr, "and on (job, instance, run_id)\n  (workflow_run_fetch_success == 1)") {
				t.Errorf("%s: does not need workflow_run_fetch_success == 1; an API outage would fire it for every unfinished run", r.Alert)
			}
		}
	}
	slices.Sort(names)
	want := slices.Clone(wantAlerts)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("alerts = %v, want %v", names, want)
	}
	if got := rules.Thresholds["WorkflowRunStalled"]; got != "1800" {
		t.Errorf("WorkflowRunStalled's threshold is %q; DESIGN documents 1800 s", got)
	}
}

// TestRuleSourceHeader: the generator refuses a source whose list of
// thresholds does not match its rules, naming what is wrong.
func TestRuleSourceHeader(t *testing.T) {
	source, _ := loadRules(t)
	text := string(source)
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"threshold changed in the expr only", "workflow_run_created_timestamp_seconds > 3600", "workflow_run_created_timestamp_seconds > 7200",
			"the threshold 3600 of WorkflowRunStuck occurs 0 times in its expr"},
		{"threshold twice in an expr", "(workflow_run_fetch_success == 1)\n          )\n        for: 5m", "(workflow_run_fetch_success == 1)\n            and workflow_run_status > 3600\n          )\n        for: 5m",
			"the threshold 3600 of WorkflowRunStuck occurs 2 times"},
		{"alert missing from the header", "#   WorkflowRunNotFound: -", "#",
			"the header does not list the threshold of WorkflowRunNotFound"},
		{"alert listed but not defined", "#   WorkflowRunsExporterDown: -", "#   WorkflowRunsExporterDown: -\n#   WorkflowRunsExporterGone: 5",
			"the header lists thresholds of alerts it does not define: WorkflowRunsExporterGone"},
		{"threshold not a number", "#   WorkflowRunStalled: 1800", "#   WorkflowRunStalled: 30m",
			`threshold of WorkflowRunStalled is "30m", want a number or -`},
		{"alert listed twice", "#   WorkflowRunsExporterDown: -", "#   WorkflowRunsExporterDown: -\n#   WorkflowRunsExporterDown: -",
			"WorkflowRunsExporterDown listed twice"},
		{"a part of a longer number is not the threshold", "workflow_run_created_timestamp_seconds > 3600", "workflow_run_created_timestamp_seconds > 36000",
			"the threshold 3600 of WorkflowRunStuck occurs 0 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(text, tc.old) {
				t.Fatalf("the source has no %q to change", tc.old)
			}
			_, err := rulecopies.Render([]byte(strings.Replace(text, tc.old, tc.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Render = %v, want an error with %q", err, tc.want)
			}
		})
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
	run(t, promtool, "check", "rules", rulecopies.Source)
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

// helmRules renders the chart's PrometheusRule with the given values.
func helmRules(t *testing.T, args ...string) monitoringv1.PrometheusRuleSpec {
	t.Helper()
	args = append([]string{"template", "release", chart, "--api-versions", "monitoring.coreos.com/v1",
		"--show-only", "templates/prometheusrule.yaml"}, append(minimal, args...)...)
	out := run(t, tool(t, "helm"), args...)
	return one[*monitoringv1.PrometheusRule](t, decodeStrict(t, "helm template", out), "PrometheusRule").Spec
}

func findRule(spec monitoringv1.PrometheusRuleSpec, alert string) *monitoringv1.Rule {
	for _, g := range spec.Groups {
		for i, r := range g.Rules {
			if r.Alert == alert {
				return &g.Rules[i]
			}
		}
	}
	return nil
}

// TestHelmAlertValues: with default values the chart's rules are those of
// the source; the alerts values change thresholds, for, severity, labels,
// runbook URLs and which alerts exist, and what they render is valid and
// does what it says (promtool).
func TestHelmAlertValues(t *testing.T) {
	_, source := loadRules(t)
	if got := helmRules(t); !equalJSON(t, got, source.Spec) {
		t.Errorf("with default values, the chart's rules differ from %s", rulecopies.Source)
	}

	spec := helmRules(t, "--set", strings.Join([]string{
		"alerts.runbookBaseURL=https://wiki.example.com/runbooks#",
		"alerts.labels.team=sre",
		"alerts.rules.WorkflowRunStuck.threshold=7200",
		"alerts.rules.WorkflowRunStuck.for=15m",
		"alerts.rules.WorkflowRunNotFound.enabled=false",
		"alerts.rules.WorkflowFailureRatioHigh.threshold=0.05",
		"alerts.rules.WorkflowFailureRatioHigh.severity=critical",
		"alerts.rules.WorkflowFailureRatioHigh.labels.page=true",
		"alerts.rules.WorkflowFailureRatioHigh.labels.team=data",
		"alerts.rules.WorkflowRunsExporterFirstCycleSlow.for=2h",
	}, ","))
	if findRule(spec, "WorkflowRunNotFound") != nil {
		t.Error("WorkflowRunNotFound rendered while disabled")
	}
	var count int
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			count++
			// An alert's own labels win over those for every alert.
			if team := map[bool]string{true: "data", false: "sre"}[r.Alert == "WorkflowFailureRatioHigh"]; r.Labels["team"] != team {
				t.Errorf("%s: labels %v, want team=%s", r.Alert, r.Labels, team)
			}
			if want := "https://wiki.example.com/runbooks#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if strings.Contains(r.Expr.String(), rulecopies.ThresholdPlaceholder) {
				t.Errorf("%s: placeholder left in %s", r.Alert, r.Expr.String())
			}
		}
	}
	if count != len(wantAlerts)-1 {
		t.Errorf("%d alerts rendered, want %d", count, len(wantAlerts)-1)
	}
	ratio := findRule(spec, "WorkflowFailureRatioHigh")
	if ratio == nil || ratio.Labels["severity"] != "critical" || ratio.Labels["page"] != "true" || !strings.Contains(ratio.Expr.String(), "> 0.05\n") {
		t.Errorf("WorkflowFailureRatioHigh = %+v, want threshold 0.05, severity critical, label page", ratio)
	}
	// The API server refuses a label that is not a string; the typed
	// decoding above would have turned true into "true".
	var raw struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert  string         `json:"alert"`
					Labels map[string]any `json:"labels"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	args := append([]string{"template", "release", chart, "--api-versions", "monitoring.coreos.com/v1", "--show-only", "templates/prometheusrule.yaml"},
		append(minimal, "--set", "alerts.rules.WorkflowFailureRatioHigh.labels.page=true,alerts.labels.tier=1")...)
	if err := yaml.Unmarshal(run(t, tool(t, "helm"), args...), &raw); err != nil {
		t.Fatal(err)
	}
	for _, g := range raw.Spec.Groups {
		for _, r := range g.Rules {
			for k, v := range r.Labels {
				if _, ok := v.(string); !ok {
					t.Errorf("%s: label %s is %T %v, want a string", r.Alert, k, v, v)
				}
			}
		}
	}

	if slow := findRule(spec, "WorkflowRunsExporterFirstCycleSlow"); slow == nil || slow.For == nil || *slow.For != "2h" {
		t.Errorf("WorkflowRunsExporterFirstCycleSlow = %+v, want for 2h", slow)
	}

	// What the values rendered, run: the stuck threshold moved from 1 h to
	// 2 h and its for from 5 m to 15 m.
	dir := t.TempDir()
	rulesYAML, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "rules.yml"), rulesYAML, 0o600)
	os.WriteFile(filepath.Join(dir, "test.yml"), []byte(`rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'workflow_run_created_timestamp_seconds{job="j",instance="i",run_id="r",workflow_id="w",workflow_name="n",workflow_type="flow"}'
        values: '0x200'
      - series: 'workflow_run_status{job="j",instance="i",run_id="r",workflow_id="w",workflow_name="n",workflow_type="flow",status="running"}'
        values: '1x200'
      - series: 'workflow_run_fetch_success{job="j",instance="i",run_id="r"}'
        values: '1x200'
    alert_rule_test:
      - eval_time: 90m
        alertname: WorkflowRunStuck
        exp_alerts: []
      - eval_time: 130m
        alertname: WorkflowRunStuck
        exp_alerts: []
      - eval_time: 136m
        alertname: WorkflowRunStuck
        exp_alerts:
          - exp_labels: {severity: warning, team: sre, job: j, run_id: r, workflow_id: w, workflow_name: n, workflow_type: flow}
            exp_annotations:
              summary: 'Workflow run r of "n" is stuck'
              description: 'Run r of the flow workflow "n" was created 2h 16m 0s ago and is still queued or running.'
              runbook_url: 'https://wiki.example.com/runbooks#workflowrunstuck'
`), 0o600)
	promtool := tool(t, "promtool")
	run(t, promtool, "check", "rules", filepath.Join(dir, "rules.yml"))
	run(t, promtool, "test", "rules", filepath.Join(dir, "test.yml"))

	if spec := helmRules(t, "--set", "alerts.runbookBaseURL="); findRule(spec, "WorkflowRunFailed").Annotations["runbook_url"] != "" {
		t.Error(`runbookBaseURL "" leaves runbook_url in`)
	}
}

// TestHelmAlertValuesRefused: alert values that cannot work fail the
// install, naming the value: the chart's values.schema.json refuses most,
// the template the rest (and all of them when the schema is skipped).
func TestHelmAlertValuesRefused(t *testing.T) {
	helm := tool(t, "helm")
	for _, tc := range []struct {
		name, set, want string
	}{
		{"unknown alert", "alerts.rules.WorkflowRunStuk.threshold=7200", "invalid propertyName 'WorkflowRunStuk'"},
		{"threshold of an alert without one", "alerts.rules.WorkflowRunsExporterDown.threshold=1", "alerts.rules.WorkflowRunsExporterDown.threshold: this alert has no threshold"},
		{"threshold not a number", "alerts.rules.WorkflowRunStuck.threshold=2h", "'/alerts/rules/WorkflowRunStuck/threshold': '2h' does not match"},
		{"for not a duration", "alerts.rules.WorkflowRunStuck.for=ten", "'/alerts/rules/WorkflowRunStuck/for': 'ten' does not match"},
		{"unknown alert, schema skipped", "alerts.rules.WorkflowRunStuk.threshold=7200 --skip-schema-validation", "alerts.rules.WorkflowRunStuk: there is no such alert. The alerts are: WorkflowFailureRatioHigh,"},
		{"threshold not a number, schema skipped", "alerts.rules.WorkflowRunStuck.threshold=2h --skip-schema-validation", "alerts.rules.WorkflowRunStuck.threshold must be a number"},
		{"for not a duration, schema skipped", "alerts.rules.WorkflowRunStuck.for=ten --skip-schema-validation", "alerts.rules.WorkflowRunStuck.for must be a Prometheus duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", "release", chart, "--api-versions", "monitoring.coreos.com/v1"}, minimal...)
			out, err := runErr(helm, append(args, append([]string{"--set"}, strings.Fields(tc.set)...)...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template --set %s: %v\n%s; want an error with %q", tc.set, err, out, tc.want)
			}
		})
	}
}
