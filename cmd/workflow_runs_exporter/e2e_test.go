package main

// End-to-end tests: they build the real binary, start it against the
// simulated API over HTTP with a bearer token read from a file, and check
// what a Prometheus server would scrape.

import (
	"bufio"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
)

const e2eToken = "SENTINEL-E2E-TOKEN-5f4dcc3b5aa765d6"

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// buildBinary compiles the exporter once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binary = filepath.Join(buildDir, "workflow_runs_exporter")
		out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// process is a running exporter binary.
type process struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	logs *syncbuffer.Buffer
	done chan error
}

func startExporter(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{t: t, addr: freePort(t), logs: &syncbuffer.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(buildBinary(t), append([]string{"--web.listen-address=" + p.addr, "--log.level=debug"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("exporter log:\n%s", p.logs.String())
		}
	})
	return p
}

func (p *process) url(path string) string { return "http://" + p.addr + path }

func (p *process) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url("/-/ready"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("exporter not ready within 30s; log:\n%s", p.logs.String())
}

// scrape fetches and parses /metrics.
func (p *process) scrape() map[string]*dto.MetricFamily {
	p.t.Helper()
	resp, err := http.Get(p.url("/metrics"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		p.t.Fatalf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bufio.NewReader(resp.Body))
	if err != nil {
		p.t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// waitCycles waits until n more poll cycles have finished, and fails the
// test if they take more than 30s.
func (p *process) waitCycles(n int) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := p.lastCycle()
	for seen := 0; seen < n; {
		if time.Now().After(deadline) {
			p.t.Fatalf("%d of %d poll cycles finished within 30s; log:\n%s", seen, n, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
		if v := p.lastCycle(); v != last {
			seen++
			last = v
		}
	}
}

// lastCycle returns the line of the last poll cycle's timestamp.
func (p *process) lastCycle() string {
	p.t.Helper()
	return strings.Join(p.lines("workflow_runs_exporter_last_poll_cycle_timestamp_seconds "), "\n")
}

// lines returns the lines of /metrics that start with prefix, read without
// parsing the whole body: waiting on a large scrape stays cheap.
func (p *process) lines(prefix string) []string {
	p.t.Helper()
	// Plain text: decompressing megabytes in a -race test binary is slow.
	req, _ := http.NewRequest("GET", p.url("/metrics"), nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []string
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, lp := range m.GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

// gaugeValue returns the value of the series whose labels include match,
// or NaN when there is none.
func gaugeValue(mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	mf := mfs[name]
	if mf == nil {
		return math.NaN()
	}
next:
	for _, m := range mf.GetMetric() {
		l := labelsOf(m)
		for k, v := range match {
			if l[k] != v {
				continue next
			}
		}
		return m.GetGauge().GetValue()
	}
	return math.NaN()
}

// checkAgainstAPI compares every run's series with what the simulated API
// serves at its current time.
func checkAgainstAPI(t *testing.T, mfs map[string]*dto.MetricFamily, sim *simapi.Server) {
	t.Helper()
	now := sim.Now()
	for _, id := range sim.IDs() {
		r, _ := sim.Run(id)
		st := r.At(now)
		labels := map[string]string{"run_id": id, "workflow_id": r.WorkflowID, "workflow_name": r.WorkflowName, "workflow_type": r.WorkflowType}

		if got := gaugeValue(mfs, "workflow_run_fetch_success", map[string]string{"run_id": id}); got != 1 {
			t.Errorf("%s: fetch_success = %v, want 1", id, got)
		}
		for _, s := range runs.KnownStatuses {
			want := 0.0
			if s == st.Status {
				want = 1
			}
			l := map[string]string{"status": string(s)}
			for k, v := range labels {
				l[k] = v
			}
			if got := gaugeValue(mfs, "workflow_run_status", l); got != want {
				t.Errorf("%s: workflow_run_status{status=%q} = %v, want %v", id, s, got, want)
			}
		}
		if got, want := gaugeValue(mfs, "workflow_run_progress_ratio", labels), st.Progress/100; got != want {
			t.Errorf("%s: progress_ratio = %v, want %v", id, got, want)
		}
		created := float64(r.CreatedAt.UnixMilli()) / 1e3
		if got := gaugeValue(mfs, "workflow_run_created_timestamp_seconds", labels); math.Abs(got-created) > 5e-4 {
			t.Errorf("%s: created_timestamp = %v, want %v", id, got, created)
		}
		duration := gaugeValue(mfs, "workflow_run_duration_seconds", labels)
		finishedTS := gaugeValue(mfs, "workflow_run_finished_timestamp_seconds", labels)
		if st.FinishedAt.IsZero() {
			if !math.IsNaN(duration) || !math.IsNaN(finishedTS) {
				t.Errorf("%s: unfinished run has duration %v / finished timestamp %v", id, duration, finishedTS)
			}
		} else {
			want := st.FinishedAt.Sub(r.CreatedAt).Seconds()
			if math.Abs(duration-want) > 1e-3 {
				t.Errorf("%s: duration = %v, want %v (to the millisecond)", id, duration, want)
			}
			if want := float64(st.FinishedAt.UnixMilli()) / 1e3; math.Abs(finishedTS-want) > 5e-4 {
				t.Errorf("%s: finished_timestamp = %v, want %v", id, finishedTS, want)
			}
		}
		info := map[string]string{"group_id": r.GroupID, "source": r.Source}
		for k, v := range labels {
			info[k] = v
		}
		if got := gaugeValue(mfs, "workflow_run_info", info); got != 1 {
			t.Errorf("%s: workflow_run_info = %v, want 1", id, got)
		}
	}
}

type e2eEnv struct {
	sim   *simapi.Server
	clock *atomic.Int64
	api   *httptest.Server
	dir   string
	// hold, while true, keeps every API request waiting.
	hold *atomic.Bool
}

// e2eStart is the simulated API's time when a test starts: the time the
// tests started, so that finished_at values are as recent as the sample
// says when the exporter, on its own clock, decides whether a run first
// seen finished falls within runs.count_window (1h).
var e2eStart = time.Now().UTC().Truncate(time.Second)

// newE2EEnv serves n sample runs (see simapi.SampleRuns).
func newE2EEnv(t *testing.T, n int) *e2eEnv {
	return newE2EEnvOf(t, simapi.SampleRuns(n, 42, e2eStart))
}

// newE2EEnvOf serves the given runs, with a config file listing them all.
func newE2EEnvOf(t *testing.T, list []simapi.Run) *e2eEnv {
	t.Helper()
	clock := &atomic.Int64{}
	clock.Store(e2eStart.UnixNano())
	sim := simapi.New(e2eToken, list,
		simapi.WithClock(func() time.Time { return time.Unix(0, clock.Load()).UTC() }),
		simapi.WithDelay(2*time.Millisecond))
	hold := &atomic.Bool{}
	held := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for hold.Load() {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		sim.ServeHTTP(w, r)
	})
	env := &e2eEnv{sim: sim, clock: clock, api: httptest.NewServer(held), dir: t.TempDir(), hold: hold}
	t.Cleanup(env.api.Close)
	env.write("token", e2eToken+"\n")
	env.write("config.yml", fmt.Sprintf(`
api:
  url: %s
  authorization:
    type: Bearer
    credentials_file: token
runs:
  ids_file: ids.txt
poll:
  interval: 300ms
  concurrency: 4
  max_requests_per_second: 5000
`, env.api.URL))
	env.write("ids.txt", "# sample runs\n"+strings.Join(sim.IDs(), "\n")+"\n")
	return env
}

func (e *e2eEnv) write(name, content string) {
	if err := os.WriteFile(filepath.Join(e.dir, name), []byte(content), 0o600); err != nil {
		panic(err)
	}
}

func (e *e2eEnv) config() string { return "--config.file=" + filepath.Join(e.dir, "config.yml") }

func TestEndToEndMetricsMatchTheAPI(t *testing.T) {
	env := newE2EEnv(t, 300)
	p := startExporter(t, env.config())
	p.waitReady()
	p.waitCycles(2)

	mfs := p.scrape()
	checkAgainstAPI(t, mfs, env.sim)
	promtoolCheckMetrics(t, p.url("/metrics"))
	if got := gaugeValue(mfs, "workflow_runs_exporter_tracked_runs", nil); got != 300 {
		t.Errorf("tracked_runs = %v, want 300", got)
	}

	// Finished runs were requested exactly once; remember the running ones.
	var running []string
	for _, id := range env.sim.IDs() {
		r, _ := env.sim.Run(id)
		switch st := r.At(env.sim.Now()); {
		case st.Status.Terminal():
			if n := env.sim.Requests(id); n != 1 {
				t.Errorf("finished run %s requested %d times, want 1", id, n)
			}
		case st.Status == runs.StatusRunning:
			running = append(running, id)
		}
	}
	if len(running) == 0 {
		t.Fatal("the sample has no running run")
	}

	// Let one running run (and whatever else is due) finish during the test.
	r, _ := env.sim.Run(running[0])
	env.clock.Store(r.CreatedAt.Add(r.Queued + r.Running + time.Second).UnixNano())
	if st := r.At(env.sim.Now()); !st.Status.Terminal() {
		t.Fatalf("run %s did not finish: %+v", running[0], st)
	}
	p.waitCycles(2)
	checkAgainstAPI(t, p.scrape(), env.sim)

	counts := map[string]int{}
	for _, id := range env.sim.IDs() {
		counts[id] = env.sim.Requests(id)
	}
	p.waitCycles(3)
	for _, id := range env.sim.IDs() {
		r, _ := env.sim.Run(id)
		if r.At(env.sim.Now()).Status.Terminal() && env.sim.Requests(id) != counts[id] {
			t.Errorf("finished run %s was requested again: %d -> %d", id, counts[id], env.sim.Requests(id))
		}
	}
	if m := env.sim.MaxInFlight(); m > 4 {
		t.Errorf("%d requests in flight at once, want at most poll.concurrency 4", m)
	}
	if strings.Contains(p.logs.String(), e2eToken) {
		t.Error("the token appears in the exporter's debug log")
	}
}

func TestEndToEndReloadAndShutdown(t *testing.T) {
	env := newE2EEnv(t, 20)
	p := startExporter(t, env.config())
	p.waitReady()

	// SIGHUP with a broken config: the old one keeps running.
	env.write("config.yml", "api: {url: 42, unknown_key: 1}\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for gaugeValue(p.scrape(), "workflow_runs_exporter_config_last_reload_successful", nil) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("config_last_reload_successful did not drop to 0 after SIGHUP with a broken config")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.waitCycles(1)
	if got := gaugeValue(p.scrape(), "workflow_runs_exporter_tracked_runs", nil); got != 20 {
		t.Errorf("tracked_runs = %v after a failed reload, want the old 20", got)
	}

	// SIGTERM during a poll cycle whose requests hang: exit 0, promptly.
	var hanging atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hanging.Add(1)
		<-r.Context().Done()
	}))
	defer hang.Close()
	env.write("config.yml", fmt.Sprintf("api: {url: %s, authorization: {credentials_file: token}}\nruns: {ids_file: ids.txt}\n", hang.URL))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "requests hanging", func() bool { return hanging.Load() >= 4 })
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s to exit after SIGTERM", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10s of SIGTERM")
	}
}

func TestEndToEndBadConfigExitsWithTheField(t *testing.T) {
	const id = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	for _, tc := range []struct{ name, config, want string }{
		{"unknown key", "api: {url: https://x, urll: y}\nruns: {ids: [" + id + "]}\n", "field urll not found"},
		{"wrong type", "api: {url: https://x}\nruns: {ids: [" + id + "]}\npoll: {concurrency: many}\n", "line 3: cannot unmarshal !!str (value hidden) into int"},
		{"bad duration", "api: {url: https://x, timeout: 10 parsecs}\nruns: {ids: [" + id + "]}\n", `api.timeout: "10 parsecs" is not a duration`},
		{"missing url", "runs: {ids: [" + id + "]}\n", "api.url: required"},
		{"malformed run ID", "api: {url: https://x}\nruns: {ids: [not-a-uuid]}\n", `runs.ids[0]: "not-a-uuid" is not a UUID`},
		{"duplicate run ID", "api: {url: https://x}\nruns: {ids: [" + id + ", " + id + "]}\n", "listed more than once"},
		{"missing credentials file", "api: {url: https://x, authorization: {credentials_file: nowhere}}\nruns: {ids: [" + id + "]}\n", "api.authorization.credentials_file: open"},
		{"empty credentials file", "api: {url: https://x, authorization: {credentials_file: empty}}\nruns: {ids: [" + id + "]}\n", "api.authorization.credentials_file: file"},
		{"missing CA file", "api: {url: https://x, tls_config: {ca_file: nowhere.crt}}\nruns: {ids: [" + id + "]}\n", "nowhere.crt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "c.yml")
			os.WriteFile(cfg, []byte(tc.config), 0o600)
			os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
			for _, args := range [][]string{{"--config.check"}, {}} {
				cmd := exec.Command(buildBinary(t), append([]string{"--config.file=" + cfg, "--web.listen-address=" + freePort(t)}, args...)...)
				out, _ := cmd.CombinedOutput()
				if code := cmd.ProcessState.ExitCode(); code != 1 {
					t.Errorf("%v: exit code %d, want 1", args, code)
				}
				text := strings.ReplaceAll(string(out), `\"`, `"`) // logfmt quotes the message
				if !strings.Contains(text, tc.want) {
					t.Errorf("%v: output does not contain %q:\n%s", args, tc.want, out)
				}
			}
		})
	}
	cfg := filepath.Join(t.TempDir(), "c.yml")
	os.WriteFile(cfg, []byte("api: {url: https://x}\nruns: {ids: ["+id+"]}\n"), 0o600)
	out, err := exec.Command(buildBinary(t), "--config.file="+cfg, "--config.check").CombinedOutput()
	if err != nil {
		t.Errorf("--config.check on a valid file: %v\n%s", err, out)
	}
}

// promtoolCheckMetrics lints a real scrape with Prometheus' own checker.
// The README's test command installs promtool; without it this test fails
// rather than skips, so CI can never pass without running it.
func promtoolCheckMetrics(t *testing.T, url string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found in PATH; `make tools` installs it (Debian package prometheus)")
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = resp.Body
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
