package api

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics instrument the client's requests. They outlive any one Client, so
// a config reload that builds a new client keeps counting in the same series.
type Metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.ObserverVec
}

// NewMetrics registers the request metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workflow_runs_exporter_api_requests_total",
			Help: "HTTP requests made to the workflow API, by response status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "workflow_runs_exporter_api_request_duration_seconds",
			Help:    "Time until the workflow API answered with response headers.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, nil),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// Instrument wraps a transport so that every request that got an answer is
// counted by status code and timed. Requests that got no answer at all show
// in workflow_runs_exporter_fetch_errors_total instead.
func (m *Metrics) Instrument(rt http.RoundTripper) http.RoundTripper {
	return promhttp.InstrumentRoundTripperCounter(m.requests,
		promhttp.InstrumentRoundTripperDuration(m.duration, rt))
}
