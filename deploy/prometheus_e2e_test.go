package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
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

// startShippedPrometheus runs Prometheus on the shipped configuration
// prometheus/<file>, changed by edit to fit the test, with the shipped alert
// rules beside it, once promtool has checked it; it returns the address
// Prometheus listens on.
func startShippedPrometheus(t *testing.T, dir, file string, edit func(cfg string) string) string {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join("prometheus", file))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(path, []byte(edit(string(cfg))), 0o600)
	rules, _ := os.ReadFile("prometheus/alerts.yml")
	os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o600)
	run(t, tool(t, "promtool"), "check", "config", path)
	prom := freeAddr(t)
	start(t, tool(t, "prometheus"), "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+prom)
	return prom
}

// promAPI gets endpoint of Prometheus' HTTP API (query, alerts, ...) with
// params, and decodes the data of its answer into data. An answer whose
// status is not "success" is an error, with Prometheus' reason.
func promAPI(prom, endpoint string, params url.Values, data any) error {
	resp, err := http.Get("http://" + prom + "/api/v1/" + endpoint + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return err
	}
	if body.Status != "success" {
		return fmt.Errorf("%s %q: %s", endpoint, params.Get("query"), body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// promQuery runs an instant query and returns its result vector.
func promQuery(prom, query string) ([]map[string]any, error) {
	var data struct {
		Result []map[string]any `json:"result"`
	}
	err := promAPI(prom, "query", url.Values{"query": {query}}, &data)
	return data.Result, err
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

// dashboardVars gives each dashboard variable the value a user choosing
// "All" (and the test's short time range) would give it; cluster and
// namespace are empty, as Grafana sets them where the series have no such
// label. stalled_after is 0 so that every running run counts as stalled
// and the panel has rows.
var dashboardVars = map[string]string{
	"$__rate_interval": "1m",
	"$__range_s":       "86400",
	"$__range":         "1d",
	"$cluster":         "",
	"$namespace":       "",
	"$job":             ".*",
	"$instance":        ".*",
	"$workflow_type":   ".*",
	"$workflow_name":   ".*",
	"$stalled_after":   "0",
}

// dashboardSubst replaces the dashboard's variables with the values of
// dashboardVars, overridden by vars (name, value, ...).
func dashboardSubst(vars ...string) *strings.Replacer {
	values := maps.Clone(dashboardVars)
	for i := 0; i+1 < len(vars); i += 2 {
		values[vars[i]] = vars[i+1]
	}
	// Longer names first, so that $__range_s is not taken for $__range.
	names := slices.SortedFunc(maps.Keys(values), func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, name := range names {
		pairs = append(pairs, name, values[name])
	}
	return strings.NewReplacer(pairs...)
}

// dashboardQueries returns every query of the dashboard's panels by
// "panel title/refId", with the template variables substituted
// (dashboardSubst).
func dashboardQueries(t *testing.T, vars ...string) map[string]string {
	t.Helper()
	subst := dashboardSubst(vars...)
	dash := loadDashboard(t)
	// $1 is label_replace's, which Grafana leaves alone (no variable has
	// that name).
	leftover := regexp.MustCompile(`\$\{?[a-zA-Z_]\w*`)
	queries := map[string]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			q := subst.Replace(tg.Expr)
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
	queuedRun   = "5b1c7e0a-8888-4b50-8888-8dd25736052a" // queued at its first fetch, running after: a queue wait
	fakeToken   = "e2e-token"
	stalePod    = "workflow-runs-exporter-2" // the pod label of the stale exporter's target
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
// queuedRun is queued at its first request and running after.
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
		queuedRun:  runDocument(queuedRun, "running", 0, now.Add(-time.Minute), nil),
	}
	firstQueued := runDocument(queuedRun, "queued", 0, now.Add(-time.Minute), nil)
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
		if id == queuedRun && !again {
			doc = firstQueued
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
	return writeExporterConfig(t, dir, name, apiURL, timeout, fmt.Sprintf("ids: [%s]", strings.Join(ids, ", ")))
}

// writeIDsFileConfig writes an exporter config that lists its runs in an
// ids_file, and the file, and returns the config's path.
func writeIDsFileConfig(t *testing.T, dir, name, apiURL, timeout string, ids ...string) string {
	t.Helper()
	list := filepath.Join(dir, name+".ids")
	if err := os.WriteFile(list, []byte(strings.Join(ids, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return writeExporterConfig(t, dir, name, apiURL, timeout, "ids_file: "+list)
}

func writeExporterConfig(t *testing.T, dir, name, apiURL, timeout, runs string) string {
	t.Helper()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte(fakeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("api:\n  url: %s\n  timeout: %s\n  authorization:\n    type: Bearer\n    credentials_file: %s\n"+
		"runs:\n  %s\npoll:\n  interval: 1s\n  max_requests_per_second: 1000\n", apiURL, timeout, token, runs)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPrometheusEndToEnd runs a real Prometheus with the shipped config,
// rules and dashboard queries against three exporters: the demo, one
// watching a fake API with a stuck, a failed, a missing, a flaky run and
// one that leaves the queue, and one whose API hangs after its first
// answer (a stale instance, with a pod label and an ids_file).
func TestPrometheusEndToEnd(t *testing.T) {
	dir := t.TempDir()
	exporter := exporterBinary(t)

	demoAddr, opsAddr, staleAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, exporter, "--demo", "--web.listen-address="+demoAddr)
	api := newFakeAPI(t)
	// The ops exporter keeps its state in a store, as the deploy kit does.
	opsArgs := []string{"--config.file=" + writeConfig(t, dir, "ops.yml", api.URL, "5s", stuckRun, failedRun, missingRun, flakyRun, doneRun, lateRun, queuedRun),
		"--web.listen-address=" + opsAddr, "--storage.path=" + filepath.Join(dir, "ops-state")}
	ops := start(t, exporter, opsArgs...)
	// The stale exporter reads its run from an ids_file, for the panel
	// that shows the file's health.
	start(t, exporter, "--config.file="+writeIDsFileConfig(t, dir, "stale.yml", api.URL, "1h", hangingRun), "--web.listen-address="+staleAddr,
		"--storage.path="+filepath.Join(dir, "stale-state"))

	// The shipped Prometheus config and rules, pointed at these exporters
	// and sped up.
	// The stale exporter's target has a pod label, as a ServiceMonitor
	// gives it, for the panels that show instances by pod name.
	targets := fmt.Sprintf("- targets: ['%s', '%s']\n      - targets: ['%s']\n        labels: {pod: %s}", demoAddr, opsAddr, staleAddr, stalePod)
	prom := startShippedPrometheus(t, dir, "prometheus.yml", strings.NewReplacer("- targets: ['exporter:10025']", targets, "15s", "1s").Replace)

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
		// The stale instance shows as its pod.
		if age[stalePod] < 20 || age[demoAddr] > 15 || age[opsAddr] > 15 {
			return fmt.Errorf("ages %v: want the stale instance %s above 20 s and the others below 15 s", age, stalePod)
		}
		return nil
	})

	// The instance variable: the pod's name shown, the address its value.
	eventually(t, "the instance variable's options", 30*time.Second, func() error {
		var instance dashVariable
		for _, v := range loadDashboard(t).Templating.List {
			if v.Name == "instance" {
				instance = v
			}
		}
		q := dashboardSubst().Replace(strings.TrimSuffix(strings.TrimPrefix(instance.Definition, "query_result("), ")"))
		res, err := promQuery(prom, q)
		if err != nil {
			return err
		}
		var lines []string
		for _, r := range res {
			lines = append(lines, grafanaQueryResultLine(r))
		}
		got := grafanaVariableValues(t, instance.Regex, lines)
		want := map[string]string{demoAddr: demoAddr, opsAddr: opsAddr, staleAddr: stalePod}
		if !maps.Equal(got, want) {
			return fmt.Errorf("options (value: text) %v, want %v; from %q", got, want, lines)
		}
		return nil
	})

	// Fetch health beside the unfinished runs: the flaky run, whose
	// fetches fail after the first, is stale, not stuck.
	eventually(t, "the fetch health of the unfinished runs", 30*time.Second, func() error {
		for id, want := range map[string]float64{stuckRun: 1, flakyRun: 0} {
			r, err := rowOf("Unfinished runs, oldest first/F", id)
			if err != nil {
				return err
			}
			if r.value != want {
				return fmt.Errorf("run %s: last fetch %v, want %v", id, r.value, want)
			}
		}
		age, err := rowOf("Unfinished runs, oldest first/E", flakyRun)
		if err == nil && age.value < 2 {
			err = fmt.Errorf("flaky run's data age %v s, want it growing past 2 s", age.value)
		}
		return err
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
	writeConfig(t, dir, "ops.yml", api.URL, "5s", stuckRun, failedRun, missingRun, flakyRun, lateRun, queuedRun)
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

// grafanaQueryResultLine writes one series of a query result as Grafana
// lists it for a query_result() variable: name{label="value",...} value
// timestamp, the labels in the order Prometheus gives them (sorted).
func grafanaQueryResultLine(r map[string]any) string {
	metric := r["metric"].(map[string]any)
	names := slices.Sorted(maps.Keys(metric))
	var labels []string
	for _, n := range names {
		if n != "__name__" {
			labels = append(labels, fmt.Sprintf("%s=%q", n, metric[n]))
		}
	}
	name, _ := metric["__name__"].(string)
	v := r["value"].([]any)
	return fmt.Sprintf("%s{%s} %s %v", name, strings.Join(labels, ","), v[1], v[0].(float64)*1000)
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
	var data struct {
		Alerts []struct {
			Labels   map[string]string `json:"labels"`
			State    string            `json:"state"`
			ActiveAt string            `json:"activeAt"`
		} `json:"alerts"`
	}
	if err := promAPI(prom, "alerts", nil, &data); err != nil {
		return nil, err
	}
	out := map[string]alert{}
	for _, a := range data.Alerts {
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
	prom := startShippedPrometheus(t, dir, "prometheus-probe.yml",
		strings.NewReplacer(probeShardAddress, exporterAddr, "30s", "1s", "'run_ids.json'", "'"+filepath.Join(dir, "run_ids.json")+"'").Replace)

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
	// Probe-only: the exporter has no workflow_runs, yet the dashboard
	// counts the runs by status.
	byStatus := dashboardQueries(t, "$job", "workflow_runs_probe")["Runs by status now/A"]
	eventually(t, "runs by status from the probes", 30*time.Second, func() error {
		res, err := promSamples(prom, byStatus)
		if err != nil {
			return err
		}
		got := map[string]float64{}
		for _, r := range res {
			got[r.labels["status"]] = r.value
		}
		want := map[string]float64{"failed": 10, "running": 6, "completed": 34}
		if !maps.Equal(got, want) {
			return fmt.Errorf("runs by status %v, want %v", got, want)
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

// nativeHistogram is a histogram family with one series whose count
// observations all have the value value, as a native histogram of schema 3
// (as the exporter's) and without classic buckets.
func nativeHistogram(name string, labels map[string]string, count uint64, value float64) *dto.MetricFamily {
	var pairs []*dto.LabelPair
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		pairs = append(pairs, &dto.LabelPair{Name: ref(k), Value: ref(labels[k])})
	}
	// Schema 3: bucket i holds (2^((i-1)/8), 2^(i/8)].
	bucket := int32(math.Ceil(math.Log2(value) * 8))
	return &dto.MetricFamily{
		Name: ref(name),
		Type: dto.MetricType_HISTOGRAM.Enum(),
		Metric: []*dto.Metric{{
			Label: pairs,
			Histogram: &dto.Histogram{
				SampleCount:   ref(count),
				SampleSum:     ref(float64(count) * value),
				Schema:        ref(int32(3)),
				ZeroThreshold: ref(1e-128),
				ZeroCount:     ref(uint64(0)),
				PositiveSpan:  []*dto.BucketSpan{{Offset: ref(bucket), Length: ref(uint32(1))}},
				PositiveDelta: []int64{int64(count)},
			},
		}},
	}
}

func ref[T any](v T) *T { return &v }

// TestDashboardNativeHistograms: Prometheus with native histograms on keeps
// only the native form of a histogram that has one, so the duration and
// queue-wait panels, and WorkflowQueueWaitHigh, must work on it too. A
// stand-in for the exporter serves the two histograms in the protobuf
// format only as native histograms, runs a Prometheus that scrapes them,
// and checks every panel query on them and the alert's condition.
func TestDashboardNativeHistograms(t *testing.T) {
	prometheus := tool(t, "prometheus")
	dir := t.TempDir()

	// Each scrape, 10 more runs that waited about 1,500 s in the queue and
	// took about 120 s.
	const waited, took = 1500, 120
	var scrapes atomic.Uint64
	exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := scrapes.Add(1) * 10
		format := expfmt.NewFormat(expfmt.TypeProtoDelim)
		w.Header().Set("Content-Type", string(format))
		enc := expfmt.NewEncoder(w, format)
		for _, mf := range []*dto.MetricFamily{
			nativeHistogram("workflow_runs_queue_wait_seconds", map[string]string{"workflow_name": "native", "workflow_type": "flow"}, n, waited),
			nativeHistogram("workflow_runs_finished_duration_seconds", map[string]string{"workflow_name": "native", "workflow_type": "flow", "status": "completed"}, n, took),
		} {
			if err := enc.Encode(mf); err != nil {
				return
			}
		}
	}))
	t.Cleanup(exporter.Close)

	cfg := fmt.Sprintf("global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: workflow_runs_exporter\n    static_configs:\n      - targets: ['%s']\n",
		strings.TrimPrefix(exporter.URL, "http://"))
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600)
	prom := freeAddr(t)
	start(t, prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--enable-feature=native-histograms",
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+prom)

	// The case this test is about: the native form, and no classic one.
	eventually(t, "native histograms scraped", 60*time.Second, func() error {
		res, err := promQuery(prom, `count_over_time(workflow_runs_queue_wait_seconds[1m])`)
		if err == nil && (len(res) != 1 || res[0]["value"].([]any)[1] == "1") {
			err = fmt.Errorf("%d series %v, want one with at least two samples", len(res), res)
		}
		if err != nil {
			return err
		}
		classic, err := promQuery(prom, `{__name__=~"workflow_runs_.+_(bucket|count|sum)"}`)
		if err == nil && len(classic) != 0 {
			err = fmt.Errorf("classic series stored: %v", classic)
		}
		return err
	})

	// The bounds of the schema-3 bucket that holds x.
	lo := func(x float64) float64 { return math.Pow(2, (math.Ceil(math.Log2(x)*8)-1)/8) }
	hi := func(x float64) float64 { return math.Pow(2, math.Ceil(math.Log2(x)*8)/8) }
	// Any query on the two histograms, in either form (not the per-run
	// workflow_run_queue_wait_seconds).
	histograms := regexp.MustCompile(`\bworkflow_runs_(finished_duration|queue_wait)_seconds`)
	var checked []string
	for key, q := range dashboardQueries(t) {
		title, _, _ := strings.Cut(key, "/")
		if !histograms.MatchString(q) || classicOnly[title] != "" {
			continue
		}
		checked = append(checked, key)
		res, err := promSamples(prom, q)
		if err != nil || len(res) != 1 {
			t.Errorf("dashboard panel %s on native histograms: %v, %d series, want one\n  query: %s", key, err, len(res), q)
			continue
		}
		if got := res[0].labels; got["workflow_name"] != "native" || got["workflow_type"] != "flow" {
			t.Errorf("dashboard panel %s: labels %v, want the workflow's name and type", key, got)
		}
		// Quantiles fall in the bucket of the value observed; the mean is
		// exact; counts are positive.
		v := res[0].value
		switch {
		case strings.Contains(q, "histogram_quantile") && strings.Contains(q, "queue_wait"):
			if v < lo(waited) || v > hi(waited) {
				t.Errorf("dashboard panel %s = %v, want within the bucket of %d s", key, v, waited)
			}
		case strings.Contains(q, "histogram_quantile"):
			if v < lo(took) || v > hi(took) {
				t.Errorf("dashboard panel %s = %v, want within the bucket of %d s", key, v, took)
			}
		case key == "Duration by workflow (selected range)/C": // the mean
			if math.Abs(v-took) > 0.001 {
				t.Errorf("dashboard panel %s = %v, want the mean %d s", key, v, took)
			}
		case v <= 0:
			t.Errorf("dashboard panel %s = %v, want a count above 0", key, v)
		}
	}
	slices.Sort(checked)
	t.Logf("checked on native histograms: %v", checked)
	if len(checked) < 7 {
		t.Errorf("only %d duration and queue-wait queries found: %v", len(checked), checked)
	}

	// WorkflowQueueWaitHigh's condition, as it is in the rules.
	_, rules := loadRules(t)
	expr := findRule(rules.Spec, "WorkflowQueueWaitHigh").Expr.String()
	res, err := promSamples(prom, expr)
	if err != nil || len(res) != 1 || res[0].labels["workflow_name"] != "native" || res[0].value < lo(waited) {
		t.Errorf("WorkflowQueueWaitHigh's expr on native histograms = %v, %v; want the workflow, about %d s", res, err, waited)
	}
}
