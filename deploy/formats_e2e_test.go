package deploy

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// storedExemplar is an exemplar Prometheus stored: its series' name and
// le label, its run_id and value.
type storedExemplar struct {
	name, le, runID string
	value           float64
}

// promExemplars returns the exemplars Prometheus stored for query over the
// last hour.
func promExemplars(prom, query string) ([]storedExemplar, error) {
	now := time.Now()
	var data []struct {
		SeriesLabels map[string]string `json:"seriesLabels"`
		Exemplars    []struct {
			Labels map[string]string `json:"labels"`
			Value  string            `json:"value"`
		} `json:"exemplars"`
	}
	if err := promAPI(prom, "query_exemplars", url.Values{
		"query": {query}, "start": {strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)}, "end": {strconv.FormatInt(now.Add(time.Minute).Unix(), 10)},
	}, &data); err != nil {
		return nil, err
	}
	var out []storedExemplar
	for _, d := range data {
		for _, e := range d.Exemplars {
			v, _ := strconv.ParseFloat(e.Value, 64)
			out = append(out, storedExemplar{name: d.SeriesLabels["__name__"], le: d.SeriesLabels["le"], runID: e.Labels["run_id"], value: v})
		}
	}
	return out, nil
}

// targetHealth returns the health and last scrape error of the one target
// of a Prometheus.
func targetHealth(prom string) (health, lastError string, err error) {
	var data struct {
		ActiveTargets []struct {
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := promAPI(prom, "targets", nil, &data); err != nil {
		return "", "", err
	}
	if n := len(data.ActiveTargets); n != 1 {
		return "", "", fmt.Errorf("%d targets, want 1", n)
	}
	return data.ActiveTargets[0].Health, data.ActiveTargets[0].LastError, nil
}

// startScrapingPrometheus runs a Prometheus with the given feature flags
// that scrapes target every second, and returns its address.
func startScrapingPrometheus(t *testing.T, dir, name, target string, features string) string {
	t.Helper()
	cfg := filepath.Join(dir, name+".yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
  - job_name: workflow_runs_exporter
    static_configs: [{targets: ['%s']}]
`, target)), 0o600)
	run(t, tool(t, "promtool"), "check", "config", cfg)
	addr := freeAddr(t)
	start(t, tool(t, "prometheus"), "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, name),
		"--web.listen-address="+addr, "--enable-feature="+features)
	return addr
}

// TestPrometheusReadsEveryFormat: a real Prometheus scrapes the exporter in
// OpenMetrics (its default with exemplar storage) and stores the exemplars
// of the finished-run counter and duration histogram, which point to the
// run; another, with native histograms, scrapes protobuf and reads the
// duration histogram with histogram_count(). Both see the target up with
// no scrape error.
func TestPrometheusReadsEveryFormat(t *testing.T) {
	dir := t.TempDir()
	api := newFakeAPI(t)
	exporter := freeAddr(t)
	start(t, exporterBinary(t), "--config.file="+writeConfig(t, dir, "exporter.yml", api.URL, "5s", failedRun, lateRun),
		"--web.listen-address="+exporter)
	// lateRun is seen running, then finished: counted whatever the
	// counting rules for runs first seen finished.
	eventually(t, "lateRun fetched running", 30*time.Second, func() error {
		if api.requestsFor(lateRun) == 0 {
			return fmt.Errorf("not fetched yet")
		}
		return nil
	})
	api.finishLate.Store(true)

	withExemplars := startScrapingPrometheus(t, dir, "exemplars", exporter, "exemplar-storage")
	native := startScrapingPrometheus(t, dir, "native", exporter, "native-histograms,exemplar-storage")

	for _, prom := range []string{withExemplars, native} {
		eventually(t, "the target up with no scrape error ("+prom+")", 60*time.Second, func() error {
			health, lastError, err := targetHealth(prom)
			if err == nil && (health != "up" || lastError != "") {
				err = fmt.Errorf("target %s: %q", health, lastError)
			}
			return err
		})
	}
	// lateRun: created a minute before the test started, finished when
	// the API said so: the counter's exemplar is 1, the duration's 60 s
	// (the API's times are whole seconds) in the bucket le="60.0", as
	// OpenMetrics writes the bound.
	for _, tc := range []struct {
		query  string
		le     string
		lo, hi float64
	}{
		{`workflow_runs_finished_total{status="completed"}`, "", 1, 1},
		{`workflow_runs_finished_duration_seconds_bucket{status="completed"}`, "60.0", 59, 60},
	} {
		eventually(t, "the exemplar of lateRun on "+tc.query, 60*time.Second, func() error {
			ex, err := promExemplars(withExemplars, tc.query)
			if err != nil {
				return err
			}
			for _, e := range ex {
				if e.runID == lateRun && e.le == tc.le && e.value >= tc.lo && e.value <= tc.hi {
					return nil
				}
			}
			return fmt.Errorf("no exemplar of %s (le %q, value in [%v, %v]) among %+v", lateRun, tc.le, tc.lo, tc.hi, ex)
		})
	}

	eventually(t, "histogram_count() of the native duration histogram", 60*time.Second, func() error {
		res, err := promSamples(native, `sum(histogram_count(workflow_runs_finished_duration_seconds))`)
		if err == nil && (len(res) != 1 || res[0].value != 2) {
			err = fmt.Errorf("histogram_count = %v, want 2 (failedRun, lateRun)", res)
		}
		return err
	})
	// Its schema-3 buckets (about 9% wide) put lateRun's 60 s in
	// (58.7, 64] s.
	res, err := promSamples(native, `histogram_quantile(0.5, sum(workflow_runs_finished_duration_seconds{status="completed"}))`)
	if err != nil || len(res) != 1 || res[0].value < 58.6 || res[0].value > 64.1 {
		t.Errorf("median of the native histogram of completed runs = %v (%v), want lateRun's 60 s within its bucket (58.7, 64]", res, err)
	}
	// The native form only, as Prometheus keeps it by default.
	if res, err := promQuery(native, `workflow_runs_finished_duration_seconds_bucket`); err != nil || len(res) != 0 {
		t.Errorf("classic buckets stored beside the native histogram: %d series, %v", len(res), err)
	}
	if res, err := promQuery(withExemplars, `histogram_count(workflow_runs_finished_duration_seconds)`); err != nil || len(res) != 0 {
		t.Errorf("a native histogram without native histograms enabled: %v, %v", res, err)
	}
}
