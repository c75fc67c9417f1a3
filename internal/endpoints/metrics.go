package endpoints

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
)

// metricsHandler serves /metrics: the run metrics store's exposition and
// the self-metrics, gathered from the registries and encoded by expfmt,
// in one response. It owns what promhttp would do for it (the in-flight
// limit, errors, compression), as kube-state-metrics' and node_exporter's
// handlers do, because the body is mostly the store's stored bytes, not
// what a registry gathers.
type metricsHandler struct {
	logger   log.Logger
	store    *collector.MetricsStore
	gatherer prometheus.Gatherer
	// slots limit the scrapes served at once; nil: no limit.
	slots *scrapeSlots
	// errors is promhttp_metric_handler_errors_total; nil without the
	// exporter metrics.
	errors *prometheus.CounterVec
}

// newMetricsHandler builds the /metrics handler of o, instrumented as
// promhttp.InstrumentMetricHandler does when the exporter metrics are on.
func newMetricsHandler(o Options) http.Handler {
	h := &metricsHandler{logger: o.Logger, store: o.Runs, gatherer: o.Self}
	if o.MaxRequests > 0 {
		h.slots = newScrapeSlots(o.MaxRequests)
	}
	if o.ExporterMetrics == nil {
		return h
	}
	h.gatherer = prometheus.Gatherers{o.ExporterMetrics, o.Self}
	// The name, help and labels promhttp gives its own error counter, so
	// that dashboards made for any Go exporter work here too.
	h.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "promhttp_metric_handler_errors_total",
		Help: "Total number of internal errors encountered by the promhttp metric handler.",
	}, []string{"cause"})
	h.errors.WithLabelValues("gathering")
	h.errors.WithLabelValues("encoding")
	o.ExporterMetrics.MustRegister(h.errors)
	return promhttp.InstrumentMetricHandler(o.ExporterMetrics, h)
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A scrape that cannot be written within its deadline fails, and
	// gives up its slot and its memory: a client that stops reading holds
	// neither for longer than Prometheus itself would wait.
	limit := scrapeTime(r)
	rc := http.NewResponseController(w)
	var cutOff func()
	if rc.SetWriteDeadline(time.Now().Add(limit)) == nil {
		cutOff = func() { rc.SetWriteDeadline(time.Now()) }
	}
	var out io.Writer = w
	if h.slots != nil {
		slot, ok := h.slots.acquire(r.Context(), limit/2, cutOff)
		if !ok {
			http.Error(w, fmt.Sprintf("Limit of concurrent requests reached (%d), try again later.", h.slots.limit), http.StatusServiceUnavailable)
			return
		}
		defer slot.release()
		out = slot.writer(w)
	}
	// A self-metric that fails to gather costs only itself: the run
	// metrics and every other self-metric are still served.
	mfs, err := h.gatherer.Gather()
	if err != nil {
		level.Error(h.logger).Log("msg", "gathering self-metrics failed; serving the rest", "err", err)
		h.countError("gathering")
	}

	gz := acceptsGzip(r)
	header := w.Header()
	header.Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	header.Add("Vary", "Accept-Encoding")
	if gz {
		header.Set("Content-Encoding", "gzip")
	}
	body := collector.NewExposition(out, gz)
	body.WriteRuns(h.store)
	enc := expfmt.NewEncoder(body, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			h.encodingFailed(err)
			break
		}
	}
	if err := body.Close(); err != nil {
		level.Debug(h.logger).Log("msg", "writing metrics to the client failed", "err", err)
	}
}

// encodingFailed logs and counts an error of the self-metrics' encoder;
// one the client caused (it went away) is only logged at debug level.
func (h *metricsHandler) encodingFailed(err error) {
	var write *collector.WriteError
	if errors.As(err, &write) {
		level.Debug(h.logger).Log("msg", "writing metrics to the client failed", "err", err)
		return
	}
	level.Error(h.logger).Log("msg", "encoding self-metrics failed", "err", err)
	h.countError("encoding")
}

func (h *metricsHandler) countError(cause string) {
	if h.errors != nil {
		h.errors.WithLabelValues(cause).Inc()
	}
}

// scrapeTime is how long a scrape may take to write: the scrape timeout
// Prometheus sends (X-Prometheus-Scrape-Timeout-Seconds), when it gives up,
// plus a second for the network; without one, 30 s. Longer than ten
// minutes is taken for ten minutes.
func scrapeTime(r *http.Request) time.Duration {
	const fallback, margin, most = 30 * time.Second, time.Second, 10 * time.Minute
	secs, err := strconv.ParseFloat(r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"), 64)
	if err != nil || !(secs > 0) {
		return fallback
	}
	return min(time.Duration(min(secs, most.Seconds())*float64(time.Second))+margin, most)
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
