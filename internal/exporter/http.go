package exporter

import (
	"fmt"
	"net/http"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
)

// HandlerOptions configure the HTTP endpoints.
type HandlerOptions struct {
	MetricsPath string
	// Gatherer serves everything but the run metrics: at least the
	// Registerer given to New, plus go/process metrics if wanted.
	Gatherer prometheus.Gatherer
	// Instrument, when set, wraps /metrics in promhttp's own metrics
	// (promhttp_metric_handler_*); nil with --web.disable-exporter-metrics.
	Instrument prometheus.Registerer
}

// Handler returns the exporter's HTTP endpoints: metrics, landing page,
// /-/healthy, /-/ready and POST /-/reload.
func (e *Exporter) Handler(o HandlerOptions) (http.Handler, error) {
	mux := http.NewServeMux()

	var metrics http.Handler = promhttp.HandlerFor(e.Gatherer(o.Gatherer), promhttp.HandlerOpts{
		ErrorLog: promhttpLogger{e.logger},
		// One broken label value must not cost the whole scrape.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 10,
		EnableOpenMetrics:   true,
	})
	if o.Instrument != nil {
		metrics = promhttp.InstrumentMetricHandler(o.Instrument, metrics)
	}
	mux.Handle(o.MetricsPath, metrics)

	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("Healthy.\n"))
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !e.Ready() {
			http.Error(w, "Not ready: the first poll cycle has not finished.", http.StatusServiceUnavailable)
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
		if err := e.Reload(); err != nil {
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

// Gatherer returns everything /metrics serves: others followed by the run
// metrics.
func (e *Exporter) Gatherer(others prometheus.Gatherer) prometheus.Gatherer {
	return collector.Concat(others, e.runMetrics)
}

// promhttpLogger adapts go-kit logging to promhttp's error log.
type promhttpLogger struct{ logger log.Logger }

func (l promhttpLogger) Println(v ...any) {
	level.Error(l.logger).Log("msg", "serving metrics failed", "err", fmt.Sprint(v...))
}
