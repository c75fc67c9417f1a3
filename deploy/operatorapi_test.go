package deploy

import (
	"reflect"
	"slices"
	"testing"
)

// TestHelmOperatorObjectsFollowTheAPIs: the ServiceMonitor and the
// PrometheusRule render only where monitoring.coreos.com/v1 is served, the
// ScrapeConfig only where monitoring.coreos.com/v1alpha1 is, each only
// while enabled; assumeOperatorCRDs renders the enabled ones whatever the
// cluster serves (helm template for a GitOps repository). A cluster
// without the operator would refuse the whole install over any of them.
func TestHelmOperatorObjectsFollowTheAPIs(t *testing.T) {
	v1 := []string{"--api-versions", "monitoring.coreos.com/v1"}
	v1alpha1 := []string{"--api-versions", "monitoring.coreos.com/v1alpha1"}
	scrape := []string{"--set", "scrapeConfig.enabled=true", "--set", "scrapeConfig.httpSDConfigs[0].url=http://run-registry/targets"}
	off := []string{"--set", "serviceMonitor.enabled=false,prometheusRule.enabled=false,scrapeConfig.enabled=false"}
	force := []string{"--set", "assumeOperatorCRDs=true"}
	all := []string{"PrometheusRule", "ScrapeConfig", "ServiceMonitor"}
	for _, tc := range []struct {
		name string
		args [][]string
		want []string
	}{
		{"no operator", [][]string{scrape}, nil},
		{"v1", [][]string{scrape, v1}, []string{"PrometheusRule", "ServiceMonitor"}},
		{"v1alpha1 only", [][]string{scrape, v1alpha1}, []string{"ScrapeConfig"}},
		{"both", [][]string{scrape, v1, v1alpha1}, all},
		{"both, ScrapeConfig not enabled", [][]string{v1, v1alpha1}, []string{"PrometheusRule", "ServiceMonitor"}},
		{"both, all disabled", [][]string{scrape, v1, v1alpha1, off}, nil},
		{"forced without the APIs", [][]string{scrape, force}, all},
		{"forced, all disabled", [][]string{scrape, force, off}, nil},
		{"forced, ServiceMonitor disabled", [][]string{force, {"--set", "serviceMonitor.enabled=false"}}, []string{"PrometheusRule"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := slices.Clone(minimal)
			for _, a := range tc.args {
				args = append(args, a...)
			}
			var got []string
			for _, o := range helmTemplate(t, args...) {
				if slices.Contains(operatorKinds, o.kind) {
					got = append(got, o.kind)
				}
			}
			slices.Sort(got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("operator objects = %v, want %v", got, tc.want)
			}
		})
	}
}
