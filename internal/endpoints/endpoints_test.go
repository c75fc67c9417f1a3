package endpoints

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const runID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"

func fetched(id string, status runs.Status) *runs.State {
	st := &runs.State{ID: id}
	st.Succeeded(&runs.Run{ID: id, Status: status, WorkflowName: "Invoice extraction", WorkflowType: "flow",
		Progress: 40, HasProgress: true, CreatedAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}, time.Date(2026, 11, 1, 0, 1, 0, 0, time.UTC), time.Minute)
	return st
}

type fixture struct {
	options Options
	store   *collector.MetricsStore
	self    *prometheus.Registry
	handler http.Handler
	probes  atomic.Int32
	refuse  atomic.Pointer[error]
	ready   atomic.Bool
	reload  func() error
}

func newFixture(t *testing.T, exporterMetrics bool, maxRequests int) *fixture {
	t.Helper()
	f := &fixture{store: collector.NewMetricsStore(100), self: prometheus.NewRegistry(), reload: func() error { return nil }}
	f.store.Update(fetched(runID, runs.StatusRunning))
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "workflow_runs_exporter_tracked_runs", Help: "Tracked runs."})
	up.Set(1)
	f.self.MustRegister(up)
	f.options = Options{Logger: log.NewNopLogger(), MetricsPath: "/metrics", Runs: f.store, Self: f.self, MaxRequests: maxRequests,
		Ready: f.ready.Load, Reload: func() error { return f.reload() },
		Probe: func(_ context.Context, id string) (runs.State, error) {
			f.probes.Add(1)
			if err := f.refuse.Load(); err != nil {
				return runs.State{}, *err
			}
			return *fetched(id, runs.StatusFailed), nil
		}}
	if exporterMetrics {
		f.options.ExporterMetrics = prometheus.NewRegistry()
	}
	f.rebuild(t, nil)
	return f
}

// goCollector is client_golang's Go collector without the memstats
// metrics: in OpenMetrics, go_memstats_alloc_bytes and the counter
// go_memstats_alloc_bytes_total have one family name, which the strict
// parser of these tests refuses (Prometheus reads it).
func goCollector() prometheus.Collector {
	return collectors.NewGoCollector(collectors.WithGoCollectorMemStatsMetricsDisabled())
}

// rebuild makes the handler again after change has changed its options;
// the exporter-metrics registry starts afresh.
func (f *fixture) rebuild(t *testing.T, change func(*Options)) {
	t.Helper()
	if change != nil {
		change(&f.options)
	}
	if f.options.ExporterMetrics != nil {
		f.options.ExporterMetrics = prometheus.NewRegistry()
		f.options.ExporterMetrics.MustRegister(goCollector())
	}
	h, err := Handler(f.options)
	if err != nil {
		t.Fatal(err)
	}
	f.handler = h
}

func (f *fixture) do(method, path string, header http.Header) *http.Response {
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec.Result()
}

func parse(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bufio.NewReader(r))
	if err != nil {
		t.Fatalf("the body does not parse: %v", err)
	}
	return mfs
}

// TestMetricsNegotiatesTheFormat: /metrics answers in the format the
// Accept header prefers among those it serves, as client_golang does, says
// so in its Content-Type, and the body decodes in that format with the run
// metrics and the self-metrics; gzip when asked for. A malformed header, or
// one asking only for what is not served, gets the text format.
func TestMetricsNegotiatesTheFormat(t *testing.T) {
	f := newFixture(t, true, 0)
	for _, tc := range []struct {
		name, accept, contentType string
	}{
		{"none (curl)", "", "text/plain; version=0.0.4; charset=utf-8"},
		{"Prometheus 2", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
			"application/openmetrics-text; version=1.0.0; charset=utf-8"},
		{"Prometheus 3", "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.25,*/*;q=0.1",
			"application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"},
		{"Prometheus with native histograms", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
			"application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"},
		{"OpenMetrics 0.0.1", "application/openmetrics-text;version=0.0.1", "application/openmetrics-text; version=0.0.1; charset=utf-8"},
		{"protobuf text only", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text", "text/plain; version=0.0.4; charset=utf-8"},
		{"malformed", `application/openmetrics-text;;version="1.0.0,;q=x,,\x00,text/plain;version=9`, "text/plain; version=0.0.4; charset=utf-8"},
		{"garbage", "\xff\xfe; q=; =;", "text/plain; version=0.0.4; charset=utf-8"},
	} {
		for _, gz := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s gzip=%v", tc.name, gz), func(t *testing.T) {
				h := http.Header{"Accept": {tc.accept}}
				if gz {
					h.Set("Accept-Encoding", "gzip")
				}
				resp := f.do("GET", "/metrics", h)
				if resp.StatusCode != 200 {
					t.Fatalf("%s", resp.Status)
				}
				ct := resp.Header.Get("Content-Type")
				if !strings.HasPrefix(ct, tc.contentType) {
					t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
				}
				var body io.Reader = resp.Body
				if gz {
					if resp.Header.Get("Content-Encoding") != "gzip" {
						t.Fatal("no Content-Encoding gzip")
					}
					zr, err := gzip.NewReader(resp.Body)
					if err != nil {
						t.Fatal(err)
					}
					body = zr
				}
				mfs, err := scrapetest.Families(body, expfmt.Format(ct))
				if err != nil {
					t.Fatalf("the body does not decode as %s: %v", ct, err)
				}
				names := map[string]bool{}
				for _, mf := range mfs {
					names[mf.GetName()] = true
				}
				for _, name := range []string{"workflow_run_status", "workflow_runs", "workflow_runs_exporter_tracked_runs", "go_goroutines", "promhttp_metric_handler_errors_total"} {
					if !names[name] {
						t.Errorf("%s missing", name)
					}
				}
			})
		}
	}
}

func TestExporterMetricsCanBeLeftOut(t *testing.T) {
	f := newFixture(t, false, 0)
	mfs := parse(t, f.do("GET", "/metrics", nil).Body)
	for name := range mfs {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "promhttp_") {
			t.Errorf("%s served with the exporter metrics disabled", name)
		}
	}
	if mfs["workflow_run_status"] == nil || mfs["workflow_runs_exporter_tracked_runs"] == nil {
		t.Error("run metrics or self-metrics missing")
	}
}

// TestMaxRequests: beyond --web.max-requests concurrent scrapes, promhttp
// answers 503, and that answer carries nothing else.
func TestMaxRequests(t *testing.T) {
	f := newFixture(t, true, 1)
	release := f.holdScrape()
	// It waits for a slot for half its scrape timeout, then gives up.
	resp := f.do("GET", "/metrics", http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"0.2"}})
	body, _ := io.ReadAll(resp.Body)
	release()
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(body), "workflow_run") {
		t.Errorf("second concurrent scrape = %s %q, want 503 with the limit message only", resp.Status, body)
	}
}

// TestBrokenSelfMetricCostsOnlyItself: a self-metric that fails to gather
// is logged and counted, and the scrape still serves everything else, as
// promhttp's ContinueOnError did.
func TestBrokenSelfMetricCostsOnlyItself(t *testing.T) {
	f := newFixture(t, true, 0)
	var logs syncbuffer.Buffer
	f.rebuild(t, func(o *Options) { o.Logger = log.NewLogfmtLogger(&logs) })
	f.self.MustRegister(brokenCollector{})
	resp := f.do("GET", "/metrics", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape with a broken self-metric: %s", resp.Status)
	}
	mfs := parse(t, resp.Body)
	for _, name := range []string{"workflow_run_status", "workflow_runs_exporter_tracked_runs", "go_goroutines"} {
		if mfs[name] == nil {
			t.Errorf("%s missing beside the broken self-metric", name)
		}
	}
	if mfs["workflow_runs_exporter_broken"] != nil {
		t.Error("the broken self-metric is served")
	}
	mfs = parse(t, f.do("GET", "/metrics", nil).Body)
	// Each scrape shows the errors of those before it.
	if got := counterValue(mfs, "promhttp_metric_handler_errors_total", "cause", "gathering"); got != 1 {
		t.Errorf(`promhttp_metric_handler_errors_total{cause="gathering"} = %v in the second scrape, want 1`, got)
	}
	if !strings.Contains(logs.String(), "gathering self-metrics failed") || !strings.Contains(logs.String(), "no value today") {
		t.Errorf("the failure is not logged with its reason:\n%s", logs.String())
	}
}

// brokenCollector is a self-metric whose collection fails.
type brokenCollector struct{}

var brokenDesc = prometheus.NewDesc("workflow_runs_exporter_broken", "Always fails.", nil, nil)

func (brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- brokenDesc }
func (brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(brokenDesc, errors.New("no value today"))
}

func counterValue(mfs map[string]*dto.MetricFamily, name, label, value string) float64 {
	for _, m := range mfs[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestHandlerCountsItsRequests: the handler's own instrumentation keeps
// the names promhttp gives it, counts the 503s of the limit, and is left
// out with the exporter metrics.
func TestHandlerCountsItsRequests(t *testing.T) {
	f := newFixture(t, true, 1)
	release := f.holdScrape()
	if resp := f.do("GET", "/metrics", http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"0.2"}}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second scrape beyond --web.max-requests=1: %s, want 503", resp.Status)
	}
	release()
	mfs := parse(t, f.do("GET", "/metrics", nil).Body)
	for code, want := range map[string]float64{"200": 1, "503": 1} {
		if got := counterValue(mfs, "promhttp_metric_handler_requests_total", "code", code); got != want {
			t.Errorf(`promhttp_metric_handler_requests_total{code=%q} = %v, want %v`, code, got, want)
		}
	}
	if g := mfs["promhttp_metric_handler_requests_in_flight"].GetMetric(); len(g) != 1 || g[0].GetGauge().GetValue() != 1 {
		t.Errorf("promhttp_metric_handler_requests_in_flight = %v, want 1 (this scrape)", g)
	}
}

// holdScrape starts a scrape that stays in its gathering, holding its
// slot, until release is called; release waits for it to end.
func (f *fixture) holdScrape() (release func()) {
	block, entered := make(chan struct{}), make(chan struct{}, 1) // entered is buffered: Collect may run before the test waits
	f.self.MustRegister(blockingCollector{entered: entered, block: block})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.do("GET", "/metrics", nil)
	}()
	<-entered
	return func() {
		close(block)
		<-done
	}
}

// blockingCollector holds a scrape in Gather until block is closed.
type blockingCollector struct{ entered, block chan struct{} }

func (blockingCollector) Describe(chan<- *prometheus.Desc) {}
func (b blockingCollector) Collect(chan<- prometheus.Metric) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.block
}

func TestProbe(t *testing.T) {
	f := newFixture(t, true, 0)
	for _, tc := range []struct {
		method, query string
		code          int
		contains      string
	}{
		{"GET", "", 400, "run_id parameter is missing"},
		{"GET", "?run_id=", 400, "run_id parameter is missing"},
		{"GET", "?run_id=nope", 400, "not a run UUID"},
		{"GET", "?run_id=../../etc/passwd", 400, "not a run UUID"},
		{"GET", "?run_id=" + runID + "&run_id=x", 400, "more than once"},
		{"GET", "?run_id=" + runID + "&run_id=" + runID, 400, "more than once"},
		{"POST", "?run_id=" + runID, 405, "GET"},
	} {
		resp := f.do(tc.method, "/probe"+tc.query, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.contains) {
			t.Errorf("%s /probe%s = %d %q, want %d with %q", tc.method, tc.query, resp.StatusCode, body, tc.code, tc.contains)
		}
	}
	if n := f.probes.Load(); n != 0 {
		t.Fatalf("%d probes reached the poller for bad requests, want 0", n)
	}
	other := "7d1e2f3a-0d44-4b50-8888-8dd25736052b"
	resp := f.do("GET", "/probe?run_id="+strings.ToUpper(other), nil)
	mfs := parse(t, resp.Body)
	if resp.StatusCode != 200 || f.probes.Load() != 1 {
		t.Fatalf("probe = %s, %d probes", resp.Status, f.probes.Load())
	}
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "workflow_run_") {
			t.Errorf("probe answer has %s; want only the run's own series", name)
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "run_id" && lp.GetValue() != other {
					t.Errorf("probe answer has run %s", lp.GetValue())
				}
			}
		}
	}
	if mfs["workflow_run_status"] == nil || mfs["workflow_run_fetch_success"] == nil {
		t.Error("probe answer lacks the run's status or fetch health")
	}

	// A probe the poller refuses: 503, with its reason in plain text.
	refused := errors.New("too many probes in flight")
	f.refuse.Store(&refused)
	resp = f.do("GET", "/probe?run_id="+runID, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "too many probes in flight") ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || strings.Contains(string(body), "workflow_run") {
		t.Errorf("refused probe = %s %q (%s), want 503 with the reason in plain text", resp.Status, body, resp.Header.Get("Content-Type"))
	}
}

func TestHealthReadyReload(t *testing.T) {
	f := newFixture(t, false, 0)
	check := func(method, path string, code int, contains string) {
		t.Helper()
		resp := f.do(method, path, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != code || !strings.Contains(string(body), contains) {
			t.Errorf("%s %s = %d %q, want %d with %q", method, path, resp.StatusCode, body, code, contains)
		}
	}
	check("GET", "/-/healthy", 200, "Healthy")
	check("GET", "/-/ready", 503, "Not ready")
	f.ready.Store(true)
	check("GET", "/-/ready", 200, "Ready")
	check("GET", "/-/reload", 405, "POST")
	check("POST", "/-/reload", 200, "Reloaded")
	f.reload = func() error { return errors.New("api.url: required") }
	check("POST", "/-/reload", 500, "previous configuration stays in force: api.url: required")
	check("GET", "/", 200, `action="/probe"`)
	check("GET", "/nope", 404, "")
}

// serve runs h on a loopback listener with the given server timeouts. The
// channel receives a value each time the server closes a connection.
func serve(t *testing.T, h http.Handler, timeouts ServerTimeouts) (string, chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{}, 10)
	srv := NewServer(h, timeouts)
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), closed
}

// newLargeFixture holds 3000 runs: a scrape body far larger than the
// socket buffers, so a client that stops reading stalls the scrape.
func newLargeFixture(t *testing.T) *fixture {
	f := newFixture(t, false, 0)
	for i := range 3000 {
		f.store.Update(fetched(fmt.Sprintf("%08x-0d44-4b50-8888-8dd25736052a", i), runs.StatusRunning))
	}
	return f
}

// TestClientWithoutHeadersIsCutOff: a client that never finishes its
// request headers loses its connection after ReadHeaderTimeout.
func TestClientWithoutHeadersIsCutOff(t *testing.T) {
	f := newFixture(t, false, 0)
	addr, _ := serve(t, f.handler, ServerTimeouts{ReadHeader: 200 * time.Millisecond, Read: time.Minute, Write: time.Minute, Idle: time.Minute})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	if elapsed := time.Since(start); err != nil || elapsed > 5*time.Second {
		t.Errorf("connection held %s (err %v); want it closed after about 200ms", elapsed, err)
	}
}

// TestSlowReaderIsCutOff: a client that reads a scrape too slowly cannot
// hold the connection beyond the deadline of its scrape (its scrape
// timeout and a second), whatever the server's own WriteTimeout.
func TestSlowReaderIsCutOff(t *testing.T) {
	f := newLargeFixture(t)
	addr, closed := serve(t, f.handler, ServerTimeouts{ReadHeader: time.Minute, Read: time.Minute, Write: time.Hour, Idle: time.Minute})
	start := time.Now()
	scrapetest.StallScrape(t, addr, "X-Prometheus-Scrape-Timeout-Seconds: 0.2\r\n")
	// The server gives up writing at 1.2 s and closes its end, with its
	// handler and goroutine done, whatever the client does.
	select {
	case <-closed:
		if took := time.Since(start); took < time.Second {
			t.Errorf("connection closed after %s, before the scrape's deadline of 1.2s", took)
		}
	case <-time.After(20 * time.Second):
		t.Error("the server still holds the connection of a client that stopped reading, 20s after its 1.2s deadline")
	}
}

func TestScrapeTime(t *testing.T) {
	for header, want := range map[string]time.Duration{
		"": 30 * time.Second, "10": 11 * time.Second, "0.5": 1500 * time.Millisecond, "0": 30 * time.Second, "-3": 30 * time.Second,
		"NaN": 30 * time.Second, "soon": 30 * time.Second, "1e9": 10 * time.Minute, "+Inf": 10 * time.Minute,
	} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		if header != "" {
			r.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", header)
		}
		if got := scrapeTime(r); got != want {
			t.Errorf("X-Prometheus-Scrape-Timeout-Seconds %q: %s, want %s", header, got, want)
		}
	}
}

// TestSlowReadersDoNotStarveScrapes: --web.max-requests clients send GET
// /metrics and never read. A scrape that comes next is served in full
// within its deadline, taking the slot of one of them.
func TestSlowReadersDoNotStarveScrapes(t *testing.T) {
	const limit = 4
	f := newLargeFixture(t)
	f.rebuild(t, func(o *Options) { o.MaxRequests = limit })
	addr, closed := serve(t, f.handler, ServerTimeouts{ReadHeader: time.Minute, Read: time.Minute, Write: time.Hour, Idle: time.Minute})
	for range limit {
		scrapetest.StallScrape(t, addr, "") // no scrape timeout: 30s each
	}
	const timeout = 10 * time.Second
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10") // and gzip, which the transport asks for and decodes
	client := &http.Client{Timeout: timeout}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("scrape beside %d stalled ones: %v", limit, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body) // a cut gzip body fails here
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape beside %d stalled ones: %s, %v; want 200 and the whole body", limit, resp.Status, err)
	}
	t.Logf("served in %s beside %d stalled scrapes", time.Since(start), limit)
	if n := strings.Count(string(body), "\nworkflow_run_status{"); n != 5*3001 || !strings.HasSuffix(string(body), "workflow_runs_exporter_tracked_runs 1\n") {
		t.Errorf("%d workflow_run_status series, want every run's and the self-metrics after them", n)
	}
	select {
	case <-closed: // the stalled scrape that gave up its slot
	case <-time.After(timeout):
		t.Error("no stalled scrape was cut off")
	}
}

// TestStalledScrapeDoesNotHoldUpdates: while a scrape is stalled on a client
// that does not read, the store takes updates at once, and another scrape
// sees them: the poller never waits on a scrape.
func TestStalledScrapeDoesNotHoldUpdates(t *testing.T) {
	f := newLargeFixture(t)
	addr, _ := serve(t, f.handler, ServerTimeouts{ReadHeader: time.Minute, Read: time.Minute, Write: time.Minute, Idle: time.Minute})
	scrapetest.StallScrape(t, addr, "")

	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			f.store.Update(fetched(runID, runs.StatusFailed))
			f.store.Update(fetched(runID, runs.StatusRunning))
		}
		f.store.Update(fetched(runID, runs.StatusCompleted))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("updates blocked behind a stalled scrape")
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `workflow_run_status{run_id="`+runID+`",status="completed",workflow_id="",workflow_name="Invoice extraction",workflow_type="flow"} 1`) {
		t.Error("a scrape beside the stalled one does not see the update")
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"": false, "gzip": true, "deflate, gzip;q=0.5": true, "gzip;q=0": false, "gzip; q=0.0": false, "br": false, "GZIP": true,
	} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.Header.Set("Accept-Encoding", header)
		if got := acceptsGzip(r); got != want {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", header, got, want)
		}
	}
}

func TestBadTelemetryPathIsAnError(t *testing.T) {
	for _, path := range []string{"", "metrics", "/probe", "/-/ready", "/-/reload"} {
		_, err := Handler(Options{MetricsPath: path, Runs: collector.NewMetricsStore(100), Self: prometheus.NewRegistry(),
			Ready: func() bool { return true }, Reload: func() error { return nil }})
		if err == nil || !strings.Contains(err.Error(), "--web.telemetry-path") {
			t.Errorf("--web.telemetry-path=%q: %v, want an error naming the flag", path, err)
		}
	}
}

// TestFamilyListsApplyToSelfMetrics: --metric-allowlist and
// --metric-denylist decide which self-metric families are served too, and
// an entry that matches no family is a warning naming it, not an error.
func TestFamilyListsApplyToSelfMetrics(t *testing.T) {
	for _, tc := range []struct {
		name, allow, deny string
		served, left      []string
		warned            string
	}{
		{name: "denylist", deny: "go_.*,promhttp_.*,workflow_run_stauts",
			served: []string{"workflow_run_status", "workflow_runs_exporter_tracked_runs"},
			left:   []string{"go_goroutines", "promhttp_metric_handler_requests_total", "promhttp_metric_handler_errors_total"},
			warned: "workflow_run_stauts"},
		{name: "allowlist", allow: "workflow_runs_exporter_.*,workflow_run_status,go_nothing",
			served: []string{"workflow_run_status", "workflow_runs_exporter_tracked_runs"},
			left:   []string{"go_goroutines", "workflow_runs", "workflow_run_fetch_success", "promhttp_metric_handler_requests_total"},
			warned: "go_nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true, 0)
			families, err := collector.NewFamilyFilter(tc.allow, tc.deny)
			if err != nil {
				t.Fatal(err)
			}
			var logs syncbuffer.Buffer
			f.store = collector.NewMetricsStore(100, collector.WithFamilies(families))
			f.store.Update(fetched(runID, runs.StatusRunning))
			f.rebuild(t, func(o *Options) { o.Families, o.Runs, o.Logger = families, f.store, log.NewLogfmtLogger(&logs) })
			mfs := parse(t, f.do("GET", "/metrics", nil).Body)
			for _, name := range tc.served {
				if mfs[name] == nil {
					t.Errorf("%s not served", name)
				}
			}
			for _, name := range tc.left {
				if mfs[name] != nil {
					t.Errorf("%s served", name)
				}
			}
			if got := logs.String(); strings.Count(got, "level=warn") != 1 || !strings.Contains(got, "entry="+tc.warned) {
				t.Errorf("want one warning naming %s; log:\n%s", tc.warned, got)
			}
		})
	}
}
