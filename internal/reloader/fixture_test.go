package reloader

import (
	"bufio"
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
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/endpoints"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/fetch"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/ledger"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/poller"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/shard"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sentinel = "SENTINEL-TOKEN-7c9e6679f7d4"

// fixture is the whole exporter in-process, wired as main wires it, against
// the simulated API, with a config file on disk that tests rewrite.
type fixture struct {
	t        *testing.T
	sim      *simapi.Server
	api      *httptest.Server
	dir      string
	reloader *Reloader
	poller   *poller.Poller
	handler  http.Handler
	logs     *syncbuffer.Buffer
	cancel   context.CancelFunc
	done     chan struct{}
}

// newFixture serves n sample runs; wrap, if given, sits in front of the
// simulated API to make it misbehave. extra is appended to the config.
func newFixture(t *testing.T, n int, extra string, wrap ...func(http.Handler) http.Handler) *fixture {
	t.Helper()
	return newFixtureWith(t, n, extra, nil, wrap...)
}

// newFixtureWith is newFixture with the reloader's options changed by tune.
func newFixtureWith(t *testing.T, n int, extra string, tune func(*Options), wrap ...func(http.Handler) http.Handler) *fixture {
	t.Helper()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	sim := simapi.New(sentinel, simapi.SampleRuns(n, 1, now), simapi.WithClock(func() time.Time { return now }))
	var h http.Handler = sim
	for _, w := range wrap {
		h = w(h)
	}
	f := &fixture{t: t, sim: sim, api: httptest.NewServer(h), dir: t.TempDir(), logs: &syncbuffer.Buffer{}}
	t.Cleanup(f.api.Close)
	f.write("token", sentinel+"\n")
	f.writeConfig(sim.IDs(), extra)

	logger := level.NewFilter(log.NewLogfmtLogger(f.logs), level.AllowDebug())
	reg := prometheus.NewRegistry()
	store := collector.NewMetricsStore(100)
	f.poller = poller.New(poller.Options{Logger: logger, Registerer: reg, MetricsStore: store,
		Ledger:  ledger.New(ledger.Options{Logger: logger, Counter: store}),
		Backoff: fetch.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Attempts: 2}})
	o := Options{
		Logger: logger, Registerer: reg, Poller: f.poller, Shard: shard.Assignment{Count: 1},
		Load:         func() (*config.Config, error) { return config.LoadFile(filepath.Join(f.dir, "config.yml")) },
		Instrument:   api.NewMetrics(reg).Instrument,
		IDsFileCheck: 10 * time.Millisecond,
	}
	if tune != nil {
		tune(&o)
	}
	f.reloader = New(o)
	handler, err := endpoints.Handler(endpoints.Options{Logger: logger, MetricsPath: "/metrics", Runs: store, Self: reg,
		Ready: f.poller.Ready, Reload: f.reloader.Reload, Probe: f.poller.Probe})
	if err != nil {
		t.Fatal(err)
	}
	f.handler = handler
	return f
}

func (f *fixture) write(name, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// writeConfig writes a config listing ids, with fast poll cycles. extra is
// appended after the poll section, which comes last: lines indented by two
// spaces add to it.
func (f *fixture) writeConfig(ids []string, extra string) {
	f.write("config.yml", `
api:
  url: `+f.api.URL+`
  authorization:
    credentials_file: token
runs:
  ids: ["`+strings.Join(ids, `", "`)+`"]
poll:
  interval: 50ms
  max_requests_per_second: 1000
`+extra)
}

// start loads the configuration and polls until the test ends.
func (f *fixture) start() {
	f.t.Helper()
	if err := f.reloader.Reload(); err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		go f.reloader.Run(ctx)
		f.poller.Run(ctx)
	}()
	f.t.Cleanup(f.stop)
	f.waitFor("ready", f.poller.Ready)
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
			f.t.Fatalf("timed out after 10s waiting for %s; log:\n%s", what, f.logs.String())
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

// scrape parses /metrics.
func (f *fixture) scrape() map[string]*dto.MetricFamily {
	f.t.Helper()
	code, body := f.get("GET", "/metrics")
	if code != 200 {
		f.t.Fatalf("/metrics = %d: %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bufio.NewReader(strings.NewReader(body)))
	if err != nil {
		f.t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// series returns the value of the first series of name whose labels
// include match, and whether there is one.
func (f *fixture) series(name string, match map[string]string) (float64, bool) {
	f.t.Helper()
	return seriesIn(f.scrape(), name, match)
}

// seriesIn is series on one scrape.
func seriesIn(mfs map[string]*dto.MetricFamily, name string, match map[string]string) (float64, bool) {
	mf := mfs[name]
next:
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if v, ok := match[lp.GetName()]; ok && v != lp.GetValue() {
				continue next
			}
		}
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue(), true
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

func (f *fixture) gauge(name string) float64 {
	f.t.Helper()
	v, ok := f.series(name, nil)
	if !ok {
		f.t.Fatalf("metric %s not found", name)
	}
	return v
}
