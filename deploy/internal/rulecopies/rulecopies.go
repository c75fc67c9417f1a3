// Package rulecopies renders the copies of the alert rules that the Helm
// chart and the Kubernetes manifests need from prometheus/alerts.yml, the
// one file people edit. cmd/genrules writes them; a test checks that the
// files in the tree are what Render returns now.
package rulecopies

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Source is the rules file, relative to the deploy directory.
const Source = "prometheus/alerts.yml"

// Paths of the generated copies, relative to the deploy directory.
const (
	HelmCopy       = "helm/workflow-runs-exporter/files/alerts.yml"
	PrometheusRule = "kubernetes/prometheusrule.yaml"
)

// ThresholdPlaceholder stands for an alert's threshold in the exprs of the
// Helm chart's copy; the chart's templates/prometheusrule.yaml writes the
// value of alerts.rules.<alert>.threshold, or the default, in its place. It
// is not valid PromQL, so a placeholder left behind cannot pass as a rule.
const ThresholdPlaceholder = "${threshold}"

const header = "# Generated from deploy/" + Source + " by `go run ./cmd/genrules` in deploy/.\n" +
	"# Do not edit: edit the source and run the command again.\n"

// helmHeader explains the chart's copy, which is data for a template rather
// than a rules file.
const helmHeader = header +
	"#\n" +
	"# templates/prometheusrule.yaml renders these rules with the chart's alerts values.\n" +
	"# In each expr, " + ThresholdPlaceholder + " stands for the alert's threshold; thresholds holds\n" +
	"# the defaults (\"\" for an alert without one).\n"

// prometheusRuleHead is the PrometheusRule object around the rules. The
// release label is the one a default kube-prometheus-stack selects rules by.
const prometheusRuleHead = `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: workflow-runs-exporter
  labels:
    app.kubernetes.io/name: workflow-runs-exporter
    release: kube-prometheus-stack
spec:
`

// Rules is a parsed rules file.
type Rules struct {
	Spec monitoringv1.PrometheusRuleSpec
	// Thresholds holds, by alert name, the number its expr compares with,
	// as written in the file; "" for an alert without one.
	Thresholds map[string]string
}

// thresholdLine is a line of the header's list of thresholds:
// "#   <alert>: <number or -> <what it means>".
var thresholdLine = regexp.MustCompile(`^#\s{2,}([A-Z][A-Za-z0-9]*):\s+(\S+)(?:\s|$)`)

// Parse reads a rules file: it must fit a PrometheusRule's spec, and the
// comment above "groups:" must list every alert with its threshold, which
// must occur exactly once in the alert's expr.
func Parse(source []byte) (*Rules, error) {
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(source, &spec); err != nil {
		return nil, fmt.Errorf("%s does not fit a PrometheusRule spec: %w", Source, err)
	}
	if len(spec.Groups) == 0 {
		return nil, fmt.Errorf("%s has no rule groups", Source)
	}
	end := bytes.Index(source, []byte("\ngroups:"))
	if end < 0 {
		return nil, fmt.Errorf("%s: no top-level groups: line", Source)
	}
	listed := map[string]string{}
	for i, line := range strings.Split(string(source[:end]), "\n") {
		m := thresholdLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := listed[m[1]]; dup {
			return nil, fmt.Errorf("%s:%d: %s listed twice", Source, i+1, m[1])
		}
		if m[2] == "-" {
			listed[m[1]] = ""
			continue
		}
		if _, err := strconv.ParseFloat(m[2], 64); err != nil {
			return nil, fmt.Errorf("%s:%d: threshold of %s is %q, want a number or -", Source, i+1, m[1], m[2])
		}
		listed[m[1]] = m[2]
	}

	rules := &Rules{Spec: spec, Thresholds: map[string]string{}}
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if _, dup := rules.Thresholds[r.Alert]; dup {
				return nil, fmt.Errorf("%s: alert %s defined twice; the chart's values are by alert name", Source, r.Alert)
			}
			threshold, ok := listed[r.Alert]
			if !ok {
				return nil, fmt.Errorf("%s: the header does not list the threshold of %s (%q, or - for none)", Source, r.Alert, "#   "+r.Alert+": <number>")
			}
			if threshold != "" {
				if n := len(numberAt(r.Expr.String(), threshold)); n != 1 {
					return nil, fmt.Errorf("%s: the threshold %s of %s occurs %d times in its expr, want once", Source, threshold, r.Alert, n)
				}
			}
			rules.Thresholds[r.Alert] = threshold
			delete(listed, r.Alert)
		}
	}
	if len(listed) > 0 {
		names := make([]string, 0, len(listed))
		for name := range listed {
			names = append(names, name)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("%s: the header lists thresholds of alerts it does not define: %s", Source, strings.Join(names, ", "))
	}
	return rules, nil
}

// numberAt returns the offsets at which number occurs in expr as a number
// of its own: not a part of a longer number, name or duration.
func numberAt(expr, number string) []int {
	inToken := func(b byte) bool {
		return b == '.' || b == '_' || b == ':' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
	}
	var at []int
	for from := 0; ; {
		i := strings.Index(expr[from:], number)
		if i < 0 {
			return at
		}
		i += from
		end := i + len(number)
		if (i == 0 || !inToken(expr[i-1])) && (end == len(expr) || !inToken(expr[end])) {
			at = append(at, i)
		}
		from = i + 1
	}
}

// helmRules is the content of the Helm chart's copy.
type helmRules struct {
	Thresholds map[string]string        `json:"thresholds"`
	Groups     []monitoringv1.RuleGroup `json:"groups"`
}

// Render returns the content of every generated file by path.
func Render(source []byte) (map[string][]byte, error) {
	rules, err := Parse(source)
	if err != nil {
		return nil, err
	}

	// The chart's copy: the rules with each threshold replaced by the
	// placeholder, and the defaults beside them.
	helm := helmRules{Thresholds: rules.Thresholds}
	for _, g := range rules.Spec.Groups {
		g = *g.DeepCopy()
		for i, r := range g.Rules {
			threshold := rules.Thresholds[r.Alert]
			if r.Alert == "" || threshold == "" {
				continue
			}
			expr := r.Expr.String()
			at := numberAt(expr, threshold)[0]
			g.Rules[i].Expr = intstr.FromString(expr[:at] + ThresholdPlaceholder + expr[at+len(threshold):])
		}
		helm.Groups = append(helm.Groups, g)
	}
	helmYAML, err := yaml.Marshal(helm)
	if err != nil {
		return nil, err
	}

	// The plain manifests' copy: the source as it is, inside a
	// PrometheusRule.
	var kube bytes.Buffer
	kube.WriteString(header)
	kube.WriteString(prometheusRuleHead)
	for _, line := range bytes.SplitAfter(source, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			kube.WriteString("  ")
		}
		kube.Write(line)
	}
	return map[string][]byte{
		HelmCopy:       append([]byte(helmHeader), helmYAML...),
		PrometheusRule: kube.Bytes(),
	}, nil
}
