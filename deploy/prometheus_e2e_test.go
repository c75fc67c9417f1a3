package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// process is a command running until stopped or until the test ends; its
// output is shown when the test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *strings.Builder
	once sync.Once
}

func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	p := &process{name: filepath.Base(name), cmd: exec.Command(name, args...), out: &strings.Builder{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s %s output:\n%s", p.name, strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// stop kills the process, as a crash or an OOM kill would.
func (p *process) stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
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

// sample is one series of a query result: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

func promSamples(prom, query string) ([]sample, error) {
	res, err := promQuery(prom, query)
	if err != nil {
		return nil, err
	}
	var out []sample
	for _, r := range res {
		s := sample{labels: map[string]string{}}
		for k, v := range r["metric"].(map[string]any) {
			s.labels[k] = v.(string)
		}
		if v, ok := r["value"].([]any); ok && len(v) == 2 {
			s.value, _ = strconv.ParseFloat(v[1].(string), 64)
		}
		out = append(out, s)
	}
	return out, nil
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

// dashboardSubst gives each dashboard variable the value a user choosing
// "All" (and the test's short time range) would give it. stalled_after is
// 0 so that every running run counts as stalled and the panel has rows.
var dashboardSubst = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__range_s", "86400", // before $__range: the replacer tries them in this order
	"$__range", "1d",
	"$job", ".*",
	"$instance", ".*",
	"$workflow_type", ".*",
	"$workflow_name", ".*",
	"$stalled_after", "0",
)

// dashboardQueries returns every query of the dashboard's panels by
// "panel title/refId", with the template variables substituted.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	dash := loadDashboard(t)
	leftover := regexp.MustCompile(`\$\{?\w+`)
	queries := map[string]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			q := dashboardSubst.Replace(tg.Expr)
			if v := leftover.FindString(q); v != "" {
				t.Errorf("panel %q uses variable %s, which the test does not set", p.Title, v)
			}
			queries[p.Title+"/"+tg.RefID] = q
		}
	}
	return queries
}

// Runs of the fake API the second exporter watches.
const (
	stuckRun    = "5b1c7e0a-1111-4b50-8888-8dd25736052a" // running for 2 h
	failedRun   = "5b1c7e0a-2222-4b50-8888-8dd25736052a" // failed 10 min ago
	missingRun  = "5b1c7e0a-3333-4b50-8888-8dd25736052a" // 404
	hangingRun  = "5b1c7e0a-4444-4b50-8888-8dd25736052a" // answers once, then hangs
	flakyRun    = "5b1c7e0a-5555-4b50-8888-8dd25736052a" // answers once, then 500
	doneRun     = "5b1c7e0a-6666-4b50-8888-8dd25736052a" // completed; taken off the list before the restart
	lateRun     = "5b1c7e0a-7777-4b50-8888-8dd25736052a" // running, completed once the API's finishLate is set
	fakeToken   = "e2e-token"
	runningForS = 7200
)

func runDocument(id, status string, progress float64, created time.Time, finished *time.Time) map[string]any {
	var fin any
	if finished != nil {
		fin = finished.UTC().Format(time.RFC3339)
	}
	return map[string]any{
		"id": id, "group_id": "g1", "workflow_id": "wf-e2e", "status": status, "progress": progress,
		"created_at": created.UTC().Format(time.RFC3339), "finished_at": fin, "source": "api",
		"workflow": map[string]any{"id": "wf-e2e", "name": "E2E workflow", "type": "flow"},
	}
}

// fakeAPI serves the runs above and counts the requests for each. The
// first request for hangingRun is answered; later ones hang until the
// client gives up or the test ends. flakyRun answers once, then fails.
type fakeAPI struct {
	*httptest.Server
	mu         sync.Mutex
	requests   map[string]int
	finishLate atomic.Bool
}

func (f *fakeAPI) requestsFor(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[id]
}

func newFakeAPI(t *testing.T) *fakeAPI {
	now := time.Now()
	finished := now.Add(-10 * time.Minute)
	docs := map[string]map[string]any{
		stuckRun:   runDocument(stuckRun, "running", 10, now.Add(-runningForS*time.Second), nil),
		failedRun:  runDocument(failedRun, "failed", 40, now.Add(-30*time.Minute), &finished),
		hangingRun: runDocument(hangingRun, "running", 5, now.Add(-time.Minute), nil),
		flakyRun:   runDocument(flakyRun, "running", 20, now.Add(-time.Minute), nil),
		doneRun:    runDocument(doneRun, "completed", 100, now.Add(-time.Hour), &finished),
		lateRun:    runDocument(lateRun, "running", 50, now.Add(-time.Minute), nil),
	}
	late := runDocument(lateRun, "completed", 100, now.Add(-time.Minute), &now)
	release := make(chan struct{})
	f := &fakeAPI{requests: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			http.Error(w, `{"detail":"Not authenticated"}`, http.StatusUnauthorized)
			return
		}
		id := strings.TrimPrefix(r.URL.Path, "/v1/runs/")
		f.mu.Lock()
		f.requests[id]++
		again := f.requests[id] > 1
		f.mu.Unlock()
		switch {
		case id == hangingRun && again:
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		case id == flakyRun && again:
			http.Error(w, `{"detail":"Internal error"}`, http.StatusInternalServerError)
			return
		}
		doc, ok := docs[id]
		if id == lateRun && f.finishLate.Load() {
			doc = late
		}
		if !ok {
			http.Error(w, `{"detail":"Run not found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(f.Close)
	t.Cleanup(func() { close(release) }) // runs before f.Close
	return f
}

// writeConfig writes an exporter config for the fake API and returns its path.
func writeConfig(t *testing.T, dir, name, apiURL, timeout string, ids ...string) string {
	t.Helper()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte(fakeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("api:\n  url: %s\n  timeout: %s\n  authorization:\n    type: Bearer\n    credentials_file: %s\n"+
		"runs:\n  ids: [%s]\npoll:\n  interval: 1s\n  max_requests_per_second: 1000\n", apiURL, timeout, token, strings.Join(ids, ", "))
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPrometheusEndToEnd runs a real Prometheus with the shipped config,
// rules and dashboard queries against three exporters: the demo, one
// watching a fake API with a stuck, a failed, a missing and a flaky run,
// and one whose API hangs after its first answer (a stale instance).
func TestPrometheusEndToEnd(t *testing.T) {
	promtool := tool(t, "promtool")
	prometheus := tool(t, "prometheus")
	dir := t.TempDir()
	exporter := exporterBinary(t)

	demoAddr, opsAddr, staleAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, exporter, "--demo", "--web.listen-address="+demoAddr)
	api := newFakeAPI(t)
	// The ops exporter keeps its state in a store, as the deploy kit does.
	opsArgs := []string{"--config.file=" + writeConfig(t, dir, "ops.yml", api.URL, "5s", stuckRun, failedRun, missingRun, flakyRun, doneRun, lateRun),
		"--web.listen-address=" + opsAddr, "--storage.path=" + filepath.Join(dir, "ops-state")}
	ops := start(t, exporter, opsArgs...)
	start(t, exporter, "--config.file="+writeConfig(t, dir, "stale.yml", api.URL, "1h", hangingRun), "--web.listen-address="+staleAddr,
		"--storage.path="+filepath.Join(dir, "stale-state"))

	// The shipped Prometheus config and rules, pointed at these exporters
	// and sped up.
	cfg, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	targets := fmt.Sprintf("'%s', '%s', '%s'", demoAddr, opsAddr, staleAddr)
	cfgText := strings.NewReplacer("'exporter:10025'", targets, "15s", "1s").Replace(string(cfg))
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfgText), 0o600)
	rules, _ := os.ReadFile("prometheus/alerts.yml")
	os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o600)
	run(t, promtool, "check", "config", filepath.Join(dir, "prometheus.yml"))

	prom := freeAddr(t)
	start(t, prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+prom)

	upTargets := func(want int) func() error {
		return func() error {
			res, err := promQuery(prom, `up{job="workflow_runs_exporter"} == 1`)
			if err == nil && len(res) != want {
				err = fmt.Errorf("%d targets up, want %d", len(res), want)
			}
			return err
		}
	}
	eventually(t, "targets up", 60*time.Second, upTargets(3))

	// The failed runs, straight from the exporters.
	failed := failedRuns(t, "http://"+demoAddr+"/metrics")
	if len(failed) == 0 {
		t.Fatal("the demo has no failed run")
	}
	failed[failedRun] = map[string]string{"workflow_name": "E2E workflow", "workflow_type": "flow"}
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
				if got.labels[k] != labels[k] {
					return fmt.Errorf("alert for %s has %s=%q, want %q", id, k, got.labels[k], labels[k])
				}
			}
			if _, ok := got.labels["instance"]; ok {
				return fmt.Errorf("alert for %s has an instance label; a restarted pod would make it a new alert", id)
			}
		}
		return nil
	})

	queries := dashboardQueries(t)
	panelRows := func(key string) ([]sample, error) {
		q, ok := queries[key]
		if !ok {
			t.Fatalf("the dashboard has no query %s", key)
		}
		return promSamples(prom, q)
	}

	// rowOf returns the row of one run in a table panel.
	rowOf := func(key, runID string) (sample, error) {
		rows, err := panelRows(key)
		if err != nil {
			return sample{}, err
		}
		for _, r := range rows {
			if r.labels["run_id"] == runID {
				return r, nil
			}
		}
		return sample{}, fmt.Errorf("run %s not among %d rows of %s", runID, len(rows), key)
	}

	eventually(t, "the stuck run in the unfinished-runs table with its age", 30*time.Second, func() error {
		r, err := rowOf("Unfinished runs, oldest first/A", stuckRun)
		if err == nil && (r.value < runningForS-60 || r.value > runningForS+300 || r.labels["status"] != "running") {
			err = fmt.Errorf("stuck run: age %v, status %q; want about %d s, running", r.value, r.labels["status"], runningForS)
		}
		return err
	})

	eventually(t, "the failed run in the recent failures table", 30*time.Second, func() error {
		r, err := rowOf("Recent failed runs/A", failedRun)
		if err != nil {
			return err
		}
		if finished := time.UnixMilli(int64(r.value)); time.Since(finished) < 9*time.Minute || time.Since(finished) > 12*time.Minute {
			return fmt.Errorf("failed run finished %v ago, want about 10 min", time.Since(finished))
		}
		return nil
	})

	eventually(t, "the data age of each instance, the stale one included", 60*time.Second, func() error {
		rows, err := panelRows("Data age/A")
		if err != nil {
			return err
		}
		age := map[string]float64{}
		for _, r := range rows {
			age[r.labels["instance"]] = r.value
		}
		if len(age) != 3 {
			return fmt.Errorf("data age for %d instances, want 3: %v", len(age), age)
		}
		if age[staleAddr] < 20 || age[demoAddr] > 15 || age[opsAddr] > 15 {
			return fmt.Errorf("ages %v: want the stale instance %s above 20 s and the others below 15 s", age, staleAddr)
		}
		return nil
	})

	// A restart of the exporter with its store (kill, a gap of failed
	// scrapes, start): the failed run's alert keeps firing throughout,
	// with the same start, and the finished run is not fetched again. The
	// lifecycle counter neither resets nor counts twice: doneRun, counted,
	// is taken off the list (without a store its count would be lost),
	// failedRun stays (without a store it would be counted again only if
	// counting were broken), and lateRun finishes while the exporter is down.
	finishedTotal := fmt.Sprintf(`sum(workflow_runs_finished_total{instance=%q})`, opsAddr)
	eventually(t, "the finished runs counted before the restart", 30*time.Second, func() error {
		res, err := promSamples(prom, finishedTotal)
		if err == nil && (len(res) != 1 || res[0].value != 2) {
			err = fmt.Errorf("finished_total = %v, want 2 (failedRun, doneRun)", res)
		}
		return err
	})
	beforeRestart := time.Now()
	time.Sleep(2 * time.Second) // samples of the counter before the restart
	before, err := firingAlerts(prom, "WorkflowRunFailed")
	if err != nil {
		t.Fatal(err)
	}
	activeAt := before[failedRun].activeAt
	ops.stop()
	eventually(t, "the exporter's series gone after it was killed", 30*time.Second, func() error {
		res, err := promQuery(prom, fmt.Sprintf(`workflow_run_status{run_id=%q}`, failedRun))
		if err == nil && len(res) != 0 {
			err = fmt.Errorf("%d series left", len(res))
		}
		return err
	})
	checkStillFiring := func(when string) {
		t.Helper()
		firing, err := firingAlerts(prom, "WorkflowRunFailed")
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := firing[failedRun]; !ok || got.activeAt != activeAt {
			t.Fatalf("%s: alert for %s = %+v (present %v), want firing since %s", when, failedRun, got, ok, activeAt)
		}
	}
	time.Sleep(3 * time.Second) // several rule evaluations without the run's series
	checkStillFiring("while the exporter is down")
	fetchedBefore := api.requestsFor(failedRun)
	api.finishLate.Store(true)
	writeConfig(t, dir, "ops.yml", api.URL, "5s", stuckRun, failedRun, missingRun, flakyRun, lateRun)
	start(t, exporter, opsArgs...)
	eventually(t, "targets up after the restart", 60*time.Second, upTargets(3))
	eventually(t, "the failed run exported again", 30*time.Second, func() error {
		res, err := promQuery(prom, fmt.Sprintf(`workflow_run_status{run_id=%q, status="failed"} == 1`, failedRun))
		if err == nil && len(res) != 1 {
			err = fmt.Errorf("%d series", len(res))
		}
		return err
	})
	time.Sleep(2 * time.Second)
	checkStillFiring("after the restart")
	if n := api.requestsFor(failedRun) - fetchedBefore; n != 0 {
		t.Errorf("the restarted exporter fetched the finished run %s %d times; its store has it", failedRun, n)
	}
	eventually(t, "increase(workflow_runs_finished_total) over the restart = the one run that finished", 30*time.Second, func() error {
		window := int(time.Since(beforeRestart).Seconds()) + 1
		q := fmt.Sprintf(`sum(increase(workflow_runs_finished_total{instance=%q}[%ds]))`, opsAddr, window)
		res, err := promSamples(prom, q)
		if err != nil {
			return err
		}
		// increase() extrapolates to the window's edges: round it.
		if len(res) != 1 || math.Round(res[0].value) != 1 {
			return fmt.Errorf("%s = %v, want 1 (lateRun)", q, res)
		}
		resets, err := promSamples(prom, fmt.Sprintf(`sum(resets(workflow_runs_finished_total{instance=%q}[%ds]))`, opsAddr, window))
		if err == nil && (len(resets) != 1 || resets[0].value != 0) {
			err = fmt.Errorf("counter resets over the restart: %v, want 0", resets)
		}
		return err
	})

	// Every panel query returns data. All are retried together, and each
	// one that never does is reported.
	pending := map[string]string{}
	for k, v := range queries {
		pending[k] = v
	}
	lastErr := map[string]error{}
	deadline := time.Now().Add(60 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		for name, q := range pending {
			res, err := promQuery(prom, q)
			if err == nil && len(res) == 0 {
				err = fmt.Errorf("no data")
			}
			if err == nil {
				delete(pending, name)
			}
			lastErr[name] = err
		}
		if len(pending) > 0 {
			time.Sleep(time.Second)
		}
	}
	names := make([]string, 0, len(pending))
	for name := range pending {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Errorf("dashboard panel %s: %v\n  query: %s", name, lastErr[name], pending[name])
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

type alert struct {
	labels   map[string]string
	activeAt string
}

// firingAlerts returns the firing alerts of one name, by run_id.
func firingAlerts(prom, name string) (map[string]alert, error) {
	resp, err := http.Get("http://" + prom + "/api/v1/alerts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Alerts []struct {
				Labels   map[string]string `json:"labels"`
				State    string            `json:"state"`
				ActiveAt string            `json:"activeAt"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	out := map[string]alert{}
	for _, a := range body.Data.Alerts {
		if a.Labels["alertname"] == name && a.State == "firing" {
			out[a.Labels["run_id"]] = alert{labels: a.Labels, activeAt: a.ActiveAt}
		}
	}
	return out, nil
}

// TestPrometheusProbesWithFileSD runs the shipped probe configuration: a
// real Prometheus with file-based service discovery over 50 run IDs scrapes
// /probe of an exporter that has no run list. Every run's series arrive,
// each failed run's alert fires, and finished runs are fetched once.
func TestPrometheusProbesWithFileSD(t *testing.T) {
	promtool := tool(t, "promtool")
	prometheus := tool(t, "prometheus")
	dir := t.TempDir()

	// 50 runs: every fifth failed, every seventh still running, the
	// rest completed.
	now := time.Now()
	done := now.Add(-5 * time.Minute)
	docs := map[string]map[string]any{}
	var ids, failed []string
	for i := range 50 {
		id := fmt.Sprintf("6c1d8f1b-%04d-4b50-8888-8dd25736052a", i)
		ids = append(ids, id)
		switch {
		case i%5 == 0:
			docs[id] = runDocument(id, "failed", 30, now.Add(-time.Hour), &done)
			failed = append(failed, id)
		case i%7 == 0:
			docs[id] = runDocument(id, "running", 30, now.Add(-time.Minute), nil)
		default:
			docs[id] = runDocument(id, "completed", 100, now.Add(-time.Hour), &done)
		}
	}
	var mu sync.Mutex
	requests := map[string]int{}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/v1/runs/")
		mu.Lock()
		requests[id]++
		mu.Unlock()
		doc, ok := docs[id]
		if !ok || r.Header.Get("Authorization") != "Bearer "+fakeToken {
			http.Error(w, `{"detail":"Run not found"}`, http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(api.Close)

	// Fifty targets are probed within each second: at the default 10
	// requests/s most first fetches would queue past the probes' deadline
	// and be fetched again, which is right, but not what this test is about.
	cfg := writeConfig(t, dir, "probe.yml", api.URL, "5s")
	exporterAddr := freeAddr(t)
	start(t, exporterBinary(t), "--config.file="+cfg, "--web.listen-address="+exporterAddr)

	var sd strings.Builder
	json.NewEncoder(&sd).Encode([]map[string]any{{"targets": ids, "labels": map[string]string{"team": "e2e"}}})
	os.WriteFile(filepath.Join(dir, "run_ids.json"), []byte(sd.String()), 0o600)
	promCfg, err := os.ReadFile("prometheus/prometheus-probe.yml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer(probeShardAddress, exporterAddr, "30s", "1s", "'run_ids.json'", "'"+filepath.Join(dir, "run_ids.json")+"'").Replace(string(promCfg))
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(text), 0o600)
	rules, _ := os.ReadFile("prometheus/alerts.yml")
	os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o600)
	run(t, promtool, "check", "config", filepath.Join(dir, "prometheus.yml"))
	prom := freeAddr(t)
	start(t, prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+prom)

	eventually(t, "every run's series from its probe", 60*time.Second, func() error {
		res, err := promQuery(prom, `workflow_run_status{job="workflow_runs_probe", status="completed"}`)
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, r := range res {
			m := r["metric"].(map[string]any)
			if m["instance"] != m["run_id"] || m["team"] != "e2e" {
				return fmt.Errorf("series labels %v: want instance = run_id and the target's labels", m)
			}
			got[m["run_id"].(string)] = true
		}
		if len(got) != len(ids) {
			return fmt.Errorf("series for %d runs, want %d", len(got), len(ids))
		}
		return nil
	})
	eventually(t, "WorkflowRunFailed for every failed run", 60*time.Second, func() error {
		firing, err := firingAlerts(prom, "WorkflowRunFailed")
		if err != nil {
			return err
		}
		for _, id := range failed {
			if _, ok := firing[id]; !ok {
				return fmt.Errorf("no alert for failed run %s (%d firing)", id, len(firing))
			}
		}
		if len(firing) != len(failed) {
			return fmt.Errorf("%d alerts firing, want %d", len(firing), len(failed))
		}
		return nil
	})
	time.Sleep(3 * time.Second) // a few more rounds of probes
	mu.Lock()
	defer mu.Unlock()
	for id, doc := range docs {
		if doc["status"] != "running" && requests[id] != 1 {
			t.Errorf("finished run %s fetched %d times by repeated probes, want 1", id, requests[id])
		}
	}
}
