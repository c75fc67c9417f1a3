package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"
)

// probeShardAddress is the address prometheus/prometheus-probe.yml sends a
// run's probe to: shard $1 of the StatefulSet, by its stable name.
const probeShardAddress = "workflow-runs-exporter-$1.workflow-runs-exporter-headless.monitoring.svc:10025"

// probeShardHost matches the addresses probeShardAddress expands to.
var probeShardHost = regexp.MustCompile(`^workflow-runs-exporter-(\d+)\.workflow-runs-exporter-headless\.monitoring\.svc:10025$`)

// probeRelabelConfigs returns the probe job's relabel_configs of the shipped
// prometheus/prometheus-probe.yml, as Prometheus itself decodes and
// validates them, with the hashmod modulus set to shards.
func probeRelabelConfigs(t *testing.T, shards int) []*relabel.Config {
	t.Helper()
	cfgs := shippedProbeRelabelling(t)
	hashmods := 0
	for _, c := range cfgs {
		if c.Action == relabel.HashMod {
			c.Modulus = uint64(shards)
			hashmods++
		}
	}
	if hashmods != 1 {
		t.Fatalf("prometheus-probe.yml: %d hashmod rules in the probe job, want 1", hashmods)
	}
	return cfgs
}

// shippedProbeRelabelling returns the probe job's relabel_configs of the
// shipped prometheus/prometheus-probe.yml, validated.
func shippedProbeRelabelling(t *testing.T) []*relabel.Config {
	t.Helper()
	text, err := os.ReadFile("prometheus/prometheus-probe.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := decodeProbeRelabelling(text)
	if err != nil {
		t.Fatalf("prometheus-probe.yml: %v", err)
	}
	return cfgs
}

// decodeProbeRelabelling returns the relabel_configs of the job
// workflow_runs_probe in a Prometheus configuration, validated.
func decodeProbeRelabelling(text []byte) ([]*relabel.Config, error) {
	var file struct {
		ScrapeConfigs []struct {
			JobName        string            `yaml:"job_name"`
			RelabelConfigs []*relabel.Config `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(text, &file); err != nil {
		return nil, err
	}
	for _, sc := range file.ScrapeConfigs {
		if sc.JobName != "workflow_runs_probe" {
			continue
		}
		for _, c := range sc.RelabelConfigs {
			if err := c.Validate(model.UTF8Validation); err != nil {
				return nil, err
			}
		}
		return sc.RelabelConfigs, nil
	}
	return nil, errors.New("no job workflow_runs_probe")
}

// TestReadmeProbeRelabellingIsTheShippedOne: the probe job the README's
// Scaling section shows relabels exactly as the shipped file does.
func TestReadmeProbeRelabellingIsTheShippedOne(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```yaml\n(scrape_configs:\n  - job_name: workflow_runs_probe\n.*?)```").
		FindStringSubmatch(readmeSection(string(readme), "## Scaling"))
	if block == nil {
		t.Fatal("README's Scaling section shows no probe job (```yaml scrape_configs: - job_name: workflow_runs_probe)")
	}
	shown, err := decodeProbeRelabelling([]byte(block[1]))
	if err != nil {
		t.Fatalf("README's probe job: %v", err)
	}
	a, _ := yaml.Marshal(shown)
	b, _ := yaml.Marshal(shippedProbeRelabelling(t))
	if string(a) != string(b) {
		t.Errorf("README's probe relabelling:\n%s\nprometheus-probe.yml's:\n%s", a, b)
	}
}

// routeProbe applies the relabelling to the target a service discovery
// gives for run id, and returns the shard its probe goes to and the run_id
// parameter of the probe.
func routeProbe(cfgs []*relabel.Config, id string) (shard int, param string, err error) {
	lb := labels.NewBuilder(labels.FromStrings(model.AddressLabel, id))
	if !relabel.ProcessBuilder(lb, cfgs...) {
		return 0, "", fmt.Errorf("target %s dropped", id)
	}
	addr := lb.Get(model.AddressLabel)
	m := probeShardHost.FindStringSubmatch(addr)
	if m == nil {
		return 0, "", fmt.Errorf("target %s sent to %q, not to a shard", id, addr)
	}
	shard, _ = strconv.Atoi(m[1])
	return shard, lb.Get(model.ParamLabelPrefix + "run_id"), nil
}

// hashmod returns the shard of run id among shards as Prometheus' hashmod
// relabel action computes it for the lower-case ID: the rule the exporter
// documents for --shard.count.
func hashmod(t *testing.T, id string, shards int) int {
	t.Helper()
	c := &relabel.Config{SourceLabels: model.LabelNames{"run_id"}, Action: relabel.HashMod, Modulus: uint64(shards), TargetLabel: "shard"}
	if err := c.Validate(model.UTF8Validation); err != nil {
		t.Fatal(err)
	}
	lb := labels.NewBuilder(labels.FromStrings("run_id", strings.ToLower(id)))
	relabel.ProcessBuilder(lb, c)
	n, err := strconv.Atoi(lb.Get("shard"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// randomRunIDs returns n distinct version 4 UUIDs with their letters in
// random case, as a discovery service might hand them out.
func randomRunIDs(n int) []string {
	ids := make([]string, 0, n)
	seen := map[string]bool{}
	for len(ids) < n {
		a, b := rand.Uint64(), rand.Uint64()
		a = a&^0xf000 | 0x4000
		b = b&^(0xc<<60) | 0x8<<60
		id := []byte(fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff))
		for i, c := range id {
			if c >= 'a' && c <= 'f' && rand.IntN(2) == 0 {
				id[i] = c - 'a' + 'A'
			}
		}
		if s := string(id); !seen[strings.ToLower(s)] {
			seen[strings.ToLower(s)] = true
			ids = append(ids, s)
		}
	}
	return ids
}

// exportedRunIDs returns the run_id of every workflow_run_fetch_success
// series the exporter at addr serves.
func exportedRunIDs(addr string) ([]string, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range mfs["workflow_run_fetch_success"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "run_id" {
				ids = append(ids, l.GetValue())
			}
		}
	}
	return ids, nil
}

// TestShardAssignmentIsPrometheusHashmod: for random run IDs in mixed case
// and several shard counts, the shard whose exporter tracks a run is
// Prometheus' hashmod of the lower-case ID, computed by Prometheus' own
// model/relabel; and the shipped probe relabelling, applied by the same
// code, sends the run's probe to that shard, asking for the ID in lower
// case.
//
// The exporter's side is the real binary (each shard a process, its
// tracked runs read from /metrics), not internal/shard imported: that
// would tie this module's go.mod to the exporter's.
func TestShardAssignmentIsPrometheusHashmod(t *testing.T) {
	ids := randomRunIDs(1500)
	finished := time.Now().Add(-48 * time.Hour)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/v1/runs/")
		json.NewEncoder(w).Encode(runDocument(id, "completed", 100, finished.Add(-time.Hour), &finished))
	}))
	t.Cleanup(api.Close)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "config.yml", api.URL, "5s", ids...)
	exporter := exporterBinary(t)

	for _, shards := range []int{2, 3, 7} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			cfgs := probeRelabelConfigs(t, shards)
			addrs := make([]string, shards)
			for i := range addrs {
				addrs[i] = freeAddr(t)
				start(t, exporter, "--config.file="+cfg, "--web.listen-address="+addrs[i],
					fmt.Sprintf("--shard.count=%d", shards), fmt.Sprintf("--shard.index=%d", i))
			}
			owner := map[string][]int{}
			for i, addr := range addrs {
				eventually(t, fmt.Sprintf("shard %d ready", i), 60*time.Second, func() error {
					resp, err := http.Get("http://" + addr + "/-/ready")
					if err != nil {
						return err
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("/-/ready: %s", resp.Status)
					}
					return nil
				})
				tracked, err := exportedRunIDs(addr)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range tracked {
					owner[id] = append(owner[id], i)
				}
			}
			owners, routes := 0, 0
			for _, id := range ids {
				want := hashmod(t, id, shards)
				if got := owner[strings.ToLower(id)]; len(got) != 1 || got[0] != want {
					if owners++; owners <= 10 {
						t.Errorf("run %s: tracked by shards %v of %d, Prometheus' hashmod of its lower-case ID is %d", id, got, shards, want)
					}
				}
				routed, param, err := routeProbe(cfgs, id)
				if err != nil {
					t.Fatal(err)
				}
				if routed != want || param != strings.ToLower(id) {
					if routes++; routes <= 10 {
						t.Errorf("run %s: prometheus-probe.yml sends /probe?run_id=%s to shard %d, want run_id in lower case and its owner %d", id, param, routed, want)
					}
				}
			}
			if owners+routes > 0 {
				t.Errorf("of %d runs, %d are owned by another shard than Prometheus' hashmod gives, %d are probed on another shard", len(ids), owners, routes)
			}
		})
	}
}
