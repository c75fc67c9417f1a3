package exporter

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/poller"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sentinel = "SENTINEL-TOKEN-7c9e6679f7d4"

// fixture is an exporter in-process against the simulated API, with a
// config file on disk that tests rewrite.
type fixture struct {
	t       *testing.T
	sim     *simapi.Server
	api     *httptest.Server
	dir     string
	exp     *Exporter
	reg     *prometheus.Registry
	handler http.Handler
	logs    *syncbuffer.Buffer
	cancel  context.CancelFunc
	done    chan struct{}
}

// newFixture serves n sample runs; wrap, if given, sits in front of the
// simulated API to make it misbehave.
func newFixture(t *testing.T, n int, wrap ...func(http.Handler) http.Handler) *fixture {
	t.Helper()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	sim := simapi.New(sentinel, simapi.SampleRuns(n, 1, now), simapi.WithClock(func() time.Time { return now }))
	var h http.Handler = sim
	for _, w := range wrap {
		h = w(h)
	}
	f := &fixture{t: t, sim: sim, api: httptest.NewServer(h), dir: t.TempDir(), reg: prometheus.NewRegistry(), logs: &syncbuffer.Buffer{}}
	t.Cleanup(f.api.Close)
	f.write("token", sentinel+"\n")
	f.writeConfig(sim.IDs())
	logger := level.NewFilter(log.NewLogfmtLogger(f.logs), level.AllowDebug())
	f.exp = New(Options{
		Logger: logger, Registerer: f.reg,
		Load:         func() (*config.Config, error) { return config.LoadFile(filepath.Join(f.dir, "config.yml")) },
		Backoff:      poller.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Attempts: 2},
		IDsFileCheck: 10 * time.Millisecond,
	})
	h, err := f.exp.Handler(HandlerOptions{MetricsPath: "/metrics", Gatherer: f.reg, Instrument: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	f.handler = h
	return f
}

func (f *fixture) write(name, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) writeConfig(ids []string) {
	f.write("config.yml", `
api:
  url: `+f.api.URL+`
  timeout: 300ms
  authorization:
    credentials_file: token
runs:
  ids: ["`+strings.Join(ids, `", "`)+`"]
poll:
  interval: 50ms
  max_requests_per_second: 1000
`)
}

func (f *fixture) start() {
	f.t.Helper()
	if err := f.exp.Reload(); err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		f.exp.Run(ctx)
		close(f.done)
	}()
	f.t.Cleanup(f.stop)
	f.waitFor("ready", f.exp.Ready)
}

func (f *fixture) stop() {
	f.cancel()
	<-f.done
}

func (f *fixture) waitFor(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fixture) get(method, path string) (int, string) {
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func (f *fixture) gauge(name string) float64 {
	mfs, err := f.exp.Gatherer(f.reg).Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	f.t.Fatalf("metric %s not found", name)
	return 0
}

func TestEndpoints(t *testing.T) {
	f := newFixture(t, 5)
	if code, _ := f.get("GET", "/-/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/-/ready before the first cycle = %d, want 503", code)
	}
	f.start()
	for _, tc := range []struct {
		method, path string
		code         int
		contains     string
	}{
		{"GET", "/-/healthy", 200, "Healthy"},
		{"GET", "/-/ready", 200, "Ready"},
		{"GET", "/", 200, "/metrics"},
		{"GET", "/metrics", 200, "workflow_run_status{"},
		{"GET", "/-/reload", 405, "POST"},
		{"POST", "/-/reload", 200, "Reloaded"},
		{"GET", "/nope", 404, ""},
	} {
		code, body := f.get(tc.method, tc.path)
		if code != tc.code || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s = %d %.80q, want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.contains)
		}
	}
}

func TestReloadWithBrokenConfigKeepsTheOldOne(t *testing.T) {
	f := newFixture(t, 6)
	f.start()
	f.write("config.yml", "api: {url: [broken\n")
	code, body := f.get("POST", "/-/reload")
	if code != http.StatusInternalServerError || !strings.Contains(body, "previous configuration stays in force") {
		t.Errorf("reload of a broken config = %d %q, want 500 saying the old config stays", code, body)
	}
	if got := f.gauge("workflow_runs_exporter_config_last_reload_successful"); got != 0 {
		t.Errorf("config_last_reload_successful = %v, want 0", got)
	}
	// Polling goes on with the old configuration.
	before := f.gauge("workflow_runs_exporter_last_poll_cycle_timestamp_seconds")
	f.waitFor("another poll cycle", func() bool {
		return f.gauge("workflow_runs_exporter_last_poll_cycle_timestamp_seconds") > before
	})

	// A good reload applies; finished runs are not fetched again.
	ids := f.sim.IDs()
	finished := map[string]int{}
	for _, id := range ids {
		if r, _ := f.sim.Run(id); r.At(f.sim.Now()).Status.Terminal() {
			finished[id] = f.sim.Requests(id)
		}
	}
	if len(finished) == 0 {
		t.Fatal("sample has no finished run")
	}
	f.writeConfig(ids[:4])
	if code, body := f.get("POST", "/-/reload"); code != 200 {
		t.Fatalf("good reload = %d %q", code, body)
	}
	if got := f.gauge("workflow_runs_exporter_config_last_reload_successful"); got != 1 {
		t.Errorf("config_last_reload_successful = %v, want 1", got)
	}
	f.waitFor("4 tracked runs", func() bool { return f.gauge("workflow_runs_exporter_tracked_runs") == 4 })
	for id, n := range finished {
		if got := f.sim.Requests(id); got != 1 || n != 1 {
			t.Errorf("finished run %s requested %d times (before reload %d), want 1", id, got, n)
		}
	}
}

func TestIDsFileChangesApplyWithoutRestart(t *testing.T) {
	f := newFixture(t, 4)
	ids := f.sim.IDs()
	f.write("ids.txt", ids[0]+"\n")
	f.write("config.yml", `
api: {url: `+f.api.URL+`, authorization: {credentials_file: token}}
runs: {ids_file: ids.txt}
poll: {interval: 50ms, max_requests_per_second: 1000}
`)
	f.start()
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 1 {
		t.Fatalf("tracked_runs = %v, want 1", got)
	}
	f.write("ids.txt", strings.Join(ids, "\n")+"\n")
	f.waitFor("all runs tracked", func() bool { return f.gauge("workflow_runs_exporter_tracked_runs") == 4 })
	f.write("ids.txt", "garbage\n")
	f.waitFor("the broken ids_file to be logged", func() bool {
		return strings.Contains(f.logs.String(), "keeping the previous run list")
	})
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 4 {
		t.Errorf("tracked_runs after a broken ids_file = %v, want the previous 4", got)
	}
	time.Sleep(100 * time.Millisecond) // ten more checks of the same broken file
	if n := strings.Count(f.logs.String(), "keeping the previous run list"); n != 1 {
		t.Errorf("the broken ids_file was logged %d times, want once", n)
	}
}

func TestIDsFileHalfWrittenIsNotApplied(t *testing.T) {
	f := newFixture(t, 4)
	ids := f.sim.IDs()
	f.write("ids.txt", strings.Join(ids, "\n")+"\n")
	f.write("config.yml", `
api: {url: `+f.api.URL+`, authorization: {credentials_file: token}}
runs: {ids_file: ids.txt}
`)
	if err := f.exp.Reload(); err != nil {
		t.Fatal(err)
	}
	tracked := func() int {
		f.exp.mu.Lock()
		defer f.exp.mu.Unlock()
		return len(f.exp.ids)
	}
	// An editor caught mid-save: the file is empty for one check.
	f.write("ids.txt", "")
	f.exp.checkIDsFile()
	f.write("ids.txt", strings.Join(ids[:2], "\n")+"\n")
	f.exp.checkIDsFile()
	if n := tracked(); n != 4 {
		t.Fatalf("%d runs after single reads of a changing file, want the previous 4", n)
	}
	f.exp.checkIDsFile()
	if n := tracked(); n != 2 {
		t.Errorf("%d runs after two equal reads, want the new 2", n)
	}
}

func TestTokenNeverLeaks(t *testing.T) {
	f := newFixture(t, 5)
	f.start()
	// Make every request fail with 401 for a while, and log at debug.
	f.write("token", "wrong-token\n")
	f.waitFor("a failed fetch", func() bool { return strings.Contains(f.logs.String(), "unauthorized") })
	f.write("token", sentinel+"\n")
	f.write("config.yml", "api: {url: https://x, authorization: {credentials: "+sentinel+", credentials_file: token}}\nruns: {ids: []}\n")
	_, reloadBody := f.get("POST", "/-/reload")
	_, metrics := f.get("GET", "/metrics")
	_, landing := f.get("GET", "/")
	for what, text := range map[string]string{"logs": f.logs.String(), "metrics": metrics, "reload error": reloadBody, "landing page": landing} {
		if strings.Contains(text, sentinel) {
			t.Errorf("%s contain the token", what)
		}
	}
}

func TestEveryRunIsExported(t *testing.T) {
	f := newFixture(t, 12)
	f.start()
	// Per-value comparison against the API is the end-to-end test's job;
	// here the state-set series count proves every run made it through.
	mfs, err := f.exp.Gatherer(f.reg).Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		if mf.GetName() == "workflow_run_status" {
			series += len(mf.GetMetric())
		}
	}
	if series != 12*5 {
		t.Errorf("workflow_run_status series = %d, want %d", series, 12*5)
	}
}
