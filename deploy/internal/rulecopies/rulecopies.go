// Package rulecopies renders the copies of the alert rules that the Helm
// chart and the Kubernetes manifests need from prometheus/alerts.yml, the
// one file people edit. cmd/genrules writes them; a test checks that the
// files in the tree are what Render returns now.
package rulecopies

import (
	"bytes"
	"fmt"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

// Source is the rules file, relative to the deploy directory.
const Source = "prometheus/alerts.yml"

// Paths of the generated copies, relative to the deploy directory.
const (
	HelmCopy       = "helm/workflow-runs-exporter/files/alerts.yml"
	PrometheusRule = "kubernetes/prometheusrule.yaml"
)

const header = "# Generated from deploy/" + Source + " by `go run ./cmd/genrules` in deploy/.\n" +
	"# Do not edit: edit the source and run the command again.\n"

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

// Render returns the content of every generated file by path. source must
// be a valid rules file that also fits a PrometheusRule's spec.
func Render(source []byte) (map[string][]byte, error) {
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(source, &spec); err != nil {
		return nil, fmt.Errorf("%s does not fit a PrometheusRule spec: %w", Source, err)
	}
	if len(spec.Groups) == 0 {
		return nil, fmt.Errorf("%s has no rule groups", Source)
	}
	// The chart includes the file with .Files.Get, so it is the source
	// as is; the header is a YAML comment.
	helm := append([]byte(header), source...)

	var kube bytes.Buffer
	kube.WriteString(header)
	kube.WriteString(prometheusRuleHead)
	for _, line := range bytes.SplitAfter(source, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			kube.WriteString("  ")
		}
		kube.Write(line)
	}
	return map[string][]byte{HelmCopy: helm, PrometheusRule: kube.Bytes()}, nil
}
