// Package endpoints serves the exporter's HTTP endpoints: /metrics, /probe,
// the landing page, /-/healthy, /-/ready and /-/reload. It builds the
// /metrics handler in one place, as node_exporter does, and the HTTP
// server with the timeouts that keep slow clients from holding it.
package endpoints

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Options configure the endpoints.
type Options struct {
	Logger      log.Logger
	MetricsPath string
	// Runs is the run metrics store /metrics writes out.
	Runs *collector.MetricsStore
	// Self gathers the exporter's own metrics (build info, API requests,
	// poll cycles, ...), written after the run metrics.
	Self prometheus.Gatherer
	// ExporterMetrics, when set, holds go_*, process_* and promhttp_*:
	// gathered with Self, and where the /metrics handler counts its own
	// requests and errors. nil with --web.disable-exporter-metrics.
	ExporterMetrics *prometheus.Registry
	// MaxRequests limits concurrent /metrics requests (--web.max-requests);
	// 0 means no limit.
	MaxRequests int
	Ready       func() bool
	Reload      func() error
	// Probe returns what is known of a run for /probe, fetching it first
	// when due; nil disables /probe.
	Probe func(ctx context.Context, id string) runs.State
}

// Handler returns every endpoint of the exporter.
func Handler(o Options) (http.Handler, error) {
	switch p := o.MetricsPath; {
	case !strings.HasPrefix(p, "/"):
		return nil, fmt.Errorf("--web.telemetry-path: %q must start with /", p)
	case p == "/probe" || strings.HasPrefix(p, "/-/"):
		return nil, fmt.Errorf("--web.telemetry-path: %q is taken by another endpoint", p)
	}
	mux := http.NewServeMux()
	mux.Handle(o.MetricsPath, metricsHandler(o))
	if o.Probe != nil {
		mux.Handle("/probe", probeHandler(o))
	}
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("Healthy.\n"))
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !o.Ready() {
			http.Error(w, "Not ready: not every run has been fetched once yet.", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("Ready.\n"))
	})
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "This endpoint requires a POST request.", http.StatusMethodNotAllowed)
			return
		}
		if err := o.Reload(); err != nil {
			http.Error(w, "Reload failed, the previous configuration stays in force: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write([]byte("Reloaded.\n"))
	})
	if o.MetricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "Workflow Runs Exporter",
			Description: "Prometheus exporter for the runs of an AI workflow platform",
			Version:     version.Info(),
			Form: web.LandingForm{Action: "/probe", Inputs: []web.LandingFormInput{
				{Label: "Run ID", Type: "text", Name: "run_id", Placeholder: "3c90c3cc-0d44-4b50-8888-8dd25736052a"},
			}},
			Links: []web.LandingLinks{
				{Address: o.MetricsPath, Text: "Metrics"},
				{Address: "/-/healthy", Text: "Health"},
				{Address: "/-/ready", Text: "Readiness"},
			},
		})
		if err != nil {
			return nil, err
		}
		mux.Handle("/", landing)
	}
	return mux, nil
}

// metricsHandler serves the run metrics store followed by the self-metrics.
// The self-metrics go through promhttp, for its in-flight limit, its error
// handling and promhttp_metric_handler_*; it is made to answer in the text
// format, uncompressed, and its output is appended to the run metrics in
// one body, compressed by the store when the client accepts gzip.
//
// Every scrape is answered in the Prometheus text format 0.0.4, whatever
// the Accept header asks for: Prometheus 2 and 3 parse a response by its
// Content-Type, the run metrics are rendered once in that format, and no
// metric here needs what OpenMetrics or protobuf add (exemplars, native
// histograms, created timestamps).
func metricsHandler(o Options) http.Handler {
	self := o.Self
	if o.ExporterMetrics != nil {
		self = prometheus.Gatherers{o.ExporterMetrics, o.Self}
	}
	opts := promhttp.HandlerOpts{
		ErrorLog: errorLogger{o.Logger},
		// One broken self-metric must not cost the whole scrape.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: o.MaxRequests,
		DisableCompression:  true,
	}
	if o.ExporterMetrics != nil {
		opts.Registry = o.ExporterMetrics
	}
	inner := promhttp.HandlerFor(self, opts)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gz := acceptsGzip(r)
		r = r.Clone(r.Context())
		r.Header.Set("Accept", "text/plain;version=0.0.4")
		r.Header.Del("Accept-Encoding")
		resp := &scrapeResponse{w: w, store: o.Runs, gzip: gz}
		inner.ServeHTTP(resp, r)
		if err := resp.finish(); err != nil {
			level.Debug(o.Logger).Log("msg", "writing metrics to the client failed", "err", err)
		}
	})
	if o.ExporterMetrics != nil {
		h = promhttp.InstrumentMetricHandler(o.ExporterMetrics, h)
	}
	return h
}

// scrapeResponse puts the run metrics in front of what promhttp writes, in
// the same body, when promhttp answers 200; any other answer (503 at the
// in-flight limit, 500) passes through alone.
type scrapeResponse struct {
	w           http.ResponseWriter
	store       *collector.MetricsStore
	gzip        bool
	wroteHeader bool
	body        *collector.Exposition
}

func (s *scrapeResponse) Header() http.Header { return s.w.Header() }

func (s *scrapeResponse) WriteHeader(code int) {
	if s.wroteHeader {
		return
	}
	s.wroteHeader = true
	if code != http.StatusOK {
		s.w.WriteHeader(code)
		return
	}
	h := s.w.Header()
	h.Del("Content-Length")
	if s.gzip {
		h.Set("Content-Encoding", "gzip")
	}
	h.Add("Vary", "Accept-Encoding")
	s.w.WriteHeader(code)
	s.body = collector.NewExposition(s.w, s.gzip)
	s.body.WriteRuns(s.store)
}

func (s *scrapeResponse) Write(p []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	if s.body != nil {
		return s.body.Write(p)
	}
	return s.w.Write(p)
}

// finish ends the body; with no self-metrics promhttp writes nothing, and
// the run metrics are still served.
func (s *scrapeResponse) finish() error {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	if s.body == nil {
		return nil
	}
	return s.body.Close()
}

// acceptsGzip reports whether the client takes gzip (Prometheus always
// does), honouring "gzip;q=0" as a refusal.
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q, found := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
		if !found {
			return true
		}
		v, err := strconv.ParseFloat(q, 64)
		return err == nil && v > 0
	}
	return false
}

// probeHandler answers GET /probe?run_id=<uuid> with the per-run metrics of
// that run, under the names /metrics uses, as blackbox_exporter answers a
// probe of one target. A bad run_id is refused before anything reaches
// the API.
func probeHandler(o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "This endpoint requires a GET request.", http.StatusMethodNotAllowed)
			return
		}
		id := r.URL.Query().Get("run_id")
		switch {
		case id == "":
			http.Error(w, "run_id parameter is missing: /probe?run_id=<run UUID>", http.StatusBadRequest)
			return
		case !config.IsRunID(id):
			http.Error(w, "run_id parameter is not a run UUID", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout(r))
		defer cancel()
		st := o.Probe(ctx, strings.ToLower(id))
		body := probeBodies.Get().(*[]byte)
		defer probeBodies.Put(body)
		*body = o.Runs.AppendRun((*body)[:0], &st)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(*body)))
		if _, err := w.Write(*body); err != nil {
			level.Debug(o.Logger).Log("msg", "writing a probe answer failed", "run_id", id, "err", err)
		}
	})
}

// probeBodies hold /probe answers while they are written: a Prometheus with
// thousands of probe targets asks for one every few milliseconds.
var probeBodies = sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}

// probeTimeout leaves the probe enough of Prometheus' scrape timeout to
// answer with what is known when the API is slow, as blackbox_exporter
// does with its timeout offset.
func probeTimeout(r *http.Request) time.Duration {
	const fallback, offset = 10 * time.Second, 500 * time.Millisecond
	secs, err := strconv.ParseFloat(r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"), 64)
	if err != nil || secs <= 0 {
		return fallback
	}
	return max(time.Duration(secs*float64(time.Second))-offset, 100*time.Millisecond)
}

// errorLogger adapts go-kit logging to promhttp's error log.
type errorLogger struct{ logger log.Logger }

func (l errorLogger) Println(v ...any) {
	level.Error(l.logger).Log("msg", "serving metrics failed", "err", fmt.Sprint(v...))
}

// ServerTimeouts bound how long a client may hold a connection, and with
// it a goroutine.
type ServerTimeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

// DefaultServerTimeouts let a large scrape over a slow link finish
// (60 s to write) while a client that never sends its headers is cut off
// after 10 s.
var DefaultServerTimeouts = ServerTimeouts{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 60 * time.Second, Idle: 2 * time.Minute}

// NewServer returns the HTTP server for h.
func NewServer(h http.Handler, t ServerTimeouts) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, WriteTimeout: t.Write, IdleTimeout: t.Idle}
}
