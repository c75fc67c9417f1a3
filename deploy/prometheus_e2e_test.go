package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs a command until the test ends and shows its output on failure.
func start(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out.String())
		}
	})
}

// promQuery runs an instant query and returns its result vector.
func promQuery(prom, query string) ([]map[string]any, error) {
	resp, err := http.Get("http://" + prom + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []map[string]any `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", query, body.Error)
	}
	return body.Data.Result, nil
}

func eventually(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// dashboardQueries returns every query of the dashboard's panels, with the
// template variables set to "All".
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../dashboards/workflow-runs.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID != "workflow-runs" {
		t.Errorf("dashboard uid = %q; it must stay stable for links", dash.UID)
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
	}
	for _, want := range []string{"datasource", "job", "workflow_type", "workflow_name"} {
		if !vars[want] {
			t.Errorf("template variable %s missing", want)
		}
	}
	subst := strings.NewReplacer("$__rate_interval", "1m", "$job", ".*", "$workflow_type", ".*", "$workflow_name", ".*")
	leftover := regexp.MustCompile(`\$\w+`)
	queries := map[string]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			q := subst.Replace(tg.Expr)
			if v := leftover.FindString(q); v != "" {
				t.Errorf("panel %q uses unknown variable %s", p.Title, v)
			}
			queries[p.Title+"/"+tg.RefID] = q
		}
	}
	return queries
}

func TestPrometheusEndToEnd(t *testing.T) {
	promtool := tool(t, "promtool")
	prometheus := tool(t, "prometheus")
	dir := t.TempDir()

	exporter := filepath.Join(dir, "workflow_runs_exporter")
	build := exec.Command("go", "build", "-o", exporter, "./cmd/workflow_runs_exporter")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the exporter: %v\n%s", err, out)
	}
	exporterAddr := freeAddr(t)
	start(t, exporter, "--demo", "--web.listen-address="+exporterAddr)

	// The shipped Prometheus config and rules, pointed at this exporter and
	// sped up.
	cfg, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfgText := strings.NewReplacer("exporter:10025", exporterAddr, "15s", "1s").Replace(string(cfg))
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfgText), 0o600)
	rules, _ := os.ReadFile("prometheus/alerts.yml")
	os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o600)
	run(t, promtool, "check", "config", filepath.Join(dir, "prometheus.yml"))

	prom := freeAddr(t)
	start(t, prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+prom)

	eventually(t, "target up", 60*time.Second, func() error {
		res, err := promQuery(prom, `up{job="workflow_runs_exporter"} == 1`)
		if err == nil && len(res) != 1 {
			err = fmt.Errorf("%d targets up", len(res))
		}
		return err
	})

	// The failed runs, straight from the exporter.
	failed := failedRuns(t, "http://"+exporterAddr+"/metrics")
	if len(failed) == 0 {
		t.Fatal("the demo has no failed run")
	}
	eventually(t, "WorkflowRunFailed firing for every failed run", 60*time.Second, func() error {
		firing, err := firingAlerts(prom, "WorkflowRunFailed")
		if err != nil {
			return err
		}
		for id, labels := range failed {
			got, ok := firing[id]
			if !ok {
				return fmt.Errorf("no alert for failed run %s (firing: %d)", id, len(firing))
			}
			for _, k := range []string{"workflow_name", "workflow_type"} {
				if got[k] != labels[k] {
					return fmt.Errorf("alert for %s has %s=%q, want %q", id, k, got[k], labels[k])
				}
			}
		}
		return nil
	})

	for name, q := range dashboardQueries(t) {
		eventually(t, "dashboard panel "+name, 60*time.Second, func() error {
			res, err := promQuery(prom, q)
			if err == nil && len(res) == 0 {
				err = fmt.Errorf("query %q returned no data", q)
			}
			return err
		})
	}
}

// failedRuns scrapes the exporter and returns the labels of every run in
// status failed, by run ID.
func failedRuns(t *testing.T, metricsURL string) map[string]map[string]string {
	t.Helper()
	var out map[string]map[string]string
	eventually(t, "exporter ready", 30*time.Second, func() error {
		resp, err := http.Get(metricsURL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(io.Reader(resp.Body))
		if err != nil {
			return err
		}
		out = map[string]map[string]string{}
		for _, m := range mfs["workflow_run_status"].GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["status"] == "failed" && m.GetGauge().GetValue() == 1 {
				out[l["run_id"]] = l
			}
		}
		if len(out) == 0 {
			return fmt.Errorf("no failed run exported yet")
		}
		return nil
	})
	return out
}

// firingAlerts returns the labels of the firing alerts of one name, by run_id.
func firingAlerts(prom, name string) (map[string]map[string]string, error) {
	resp, err := http.Get("http://" + prom + "/api/v1/alerts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for _, a := range body.Data.Alerts {
		if a.Labels["alertname"] == name && a.State == "firing" {
			out[a.Labels["run_id"]] = a.Labels
		}
	}
	return out, nil
}
