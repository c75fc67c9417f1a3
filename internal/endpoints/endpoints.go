// Package endpoints serves the exporter's HTTP endpoints: /metrics, /probe,
// the landing page, /-/healthy, /-/ready and /-/reload. It owns the
// /metrics handler (format negotiation, write deadlines, the request
// limit), as kube-state-metrics does, and builds the HTTP server with the
// timeouts that keep slow clients from holding it.
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
	// CreatedLines adds _created lines to OpenMetrics answers
	// (--web.openmetrics-created-lines).
	CreatedLines bool
	// Families are the self-metric families served (--metric-allowlist,
	// --metric-denylist; Runs applies the same to its own); nil: all.
	Families *collector.FamilyFilter
	Ready    func() bool
	Reload   func() error
	// Probe returns what is known of a run for /probe, fetching it first
	// when due; nil disables /probe. An error means the probe was refused
	// (too many in flight, say): /probe answers 503 with it.
	Probe func(ctx context.Context, id string) (runs.State, error)
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
	mux.Handle(o.MetricsPath, newMetricsHandler(o))
	warnUnmatchedFamilies(o)
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

// warnUnmatchedFamilies warns about each entry of --metric-allowlist or
// --metric-denylist that matches no family served: a typo, or a family of
// another version. It is not an error, since families come and go across
// versions. A labelled self-metric that has no series yet is not served
// yet either, so it may be warned about too.
func warnUnmatchedFamilies(o Options) {
	if o.Families == nil {
		return
	}
	known := collector.FamilyNames()
	gatherers := []prometheus.Gatherer{o.Self}
	if o.ExporterMetrics != nil {
		gatherers = append(gatherers, o.ExporterMetrics)
	}
	for _, g := range gatherers {
		mfs, _ := g.Gather() // what fails to gather is left out, as in a scrape
		for _, mf := range mfs {
			known = append(known, mf.GetName())
		}
	}
	for _, entry := range o.Families.Unmatched(known) {
		level.Warn(o.Logger).Log("msg", "no metric family matches a family list entry; it is kept for families that appear later", "flag", o.Families.Flag(), "entry", entry)
	}
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
		ids := r.URL.Query()["run_id"]
		var id string
		if len(ids) > 0 {
			id = ids[0]
		}
		switch {
		case id == "":
			http.Error(w, "run_id parameter is missing: /probe?run_id=<run UUID>", http.StatusBadRequest)
			return
		case len(ids) > 1:
			http.Error(w, "run_id parameter is given more than once: /probe answers for one run", http.StatusBadRequest)
			return
		case !config.IsRunID(id):
			http.Error(w, "run_id parameter is not a run UUID", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout(r))
		defer cancel()
		st, err := o.Probe(ctx, strings.ToLower(id))
		if err != nil {
			http.Error(w, "Probe refused: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
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
