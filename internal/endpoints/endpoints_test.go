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
	store   *collector.MetricsStore
	self    *prometheus.Registry
	handler http.Handler
	probes  atomic.Int32
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
	o := Options{Logger: log.NewNopLogger(), MetricsPath: "/metrics", Runs: f.store, Self: f.self, MaxRequests: maxRequests,
		Ready: f.ready.Load, Reload: func() error { return f.reload() },
		Probe: func(_ context.Context, id string) runs.State { f.probes.Add(1); return *fetched(id, runs.StatusFailed) }}
	if exporterMetrics {
		o.ExporterMetrics = prometheus.NewRegistry()
		o.ExporterMetrics.MustRegister(collectors.NewGoCollector())
	}
	h, err := Handler(o)
	if err != nil {
		t.Fatal(err)
	}
	f.handler = h
	return f
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

// TestMetricsAnswerEveryAcceptHeader: whatever format a scraper asks for
// (Prometheus 2, Prometheus 3's default, OpenMetrics only, protobuf only),
// the answer is the text format, says so in its Content-Type, parses, and
// holds the run metrics and the self-metrics; gzip when asked for.
func TestMetricsAnswerEveryAcceptHeader(t *testing.T) {
	f := newFixture(t, true, 0)
	for _, accept := range []string{
		"", // curl
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",                                                                           // Prometheus 2
		"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.25,*/*;q=0.1", // Prometheus 3
		"application/openmetrics-text;version=1.0.0",
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
	} {
		for _, gz := range []bool{false, true} {
			h := http.Header{"Accept": {accept}}
			if gz {
				h.Set("Accept-Encoding", "gzip")
			}
			resp := f.do("GET", "/metrics", h)
			if resp.StatusCode != 200 {
				t.Fatalf("Accept %q: %s", accept, resp.Status)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
				t.Errorf("Accept %q: Content-Type %q, want the text format", accept, ct)
			}
			body := resp.Body
			if gz {
				if resp.Header.Get("Content-Encoding") != "gzip" {
					t.Fatalf("Accept %q with gzip: no Content-Encoding gzip", accept)
				}
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			mfs := parse(t, body)
			for _, name := range []string{"workflow_run_status", "workflow_runs", "workflow_runs_exporter_tracked_runs", "go_goroutines", "promhttp_metric_handler_errors_total"} {
				if mfs[name] == nil {
					t.Errorf("Accept %q gzip=%v: %s missing", accept, gz, name)
				}
			}
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
	block, entered := make(chan struct{}), make(chan struct{})
	f.self.MustRegister(blockingCollector{entered: entered, block: block})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.do("GET", "/metrics", nil)
	}()
	<-entered
	resp := f.do("GET", "/metrics", nil)
	body, _ := io.ReadAll(resp.Body)
	close(block)
	<-done
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(body), "workflow_run") {
		t.Errorf("second concurrent scrape = %s %q, want 503 with the limit message only", resp.Status, body)
	}
}

// blockingCollector holds a scrape inside promhttp until block is closed.
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

// stallScrape starts a scrape of /metrics from a client that reads its first
// bytes and no more; the connection closes when the test ends.
func stallScrape(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.(*net.TCPConn).SetReadBuffer(4096)
	conn.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := conn.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
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
// hold the connection beyond WriteTimeout.
func TestSlowReaderIsCutOff(t *testing.T) {
	f := newLargeFixture(t)
	addr, closed := serve(t, f.handler, ServerTimeouts{ReadHeader: time.Minute, Read: time.Minute, Write: 300 * time.Millisecond, Idle: time.Minute})
	stallScrape(t, addr)
	// The server gives up writing at 300 ms and closes its end, with its
	// handler and goroutine done, whatever the client does.
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Error("the server still holds the connection of a client that stopped reading, 5s after a 300ms WriteTimeout")
	}
}

// TestStalledScrapeDoesNotHoldUpdates: while a scrape is stalled on a client
// that does not read, the store takes updates at once, and another scrape
// sees them: the poller never waits on a scrape.
func TestStalledScrapeDoesNotHoldUpdates(t *testing.T) {
	f := newLargeFixture(t)
	addr, _ := serve(t, f.handler, ServerTimeouts{ReadHeader: time.Minute, Read: time.Minute, Write: time.Minute, Idle: time.Minute})
	stallScrape(t, addr)

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
