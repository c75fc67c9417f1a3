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
	// families are the self-metric families served (the store applies the
	// same filter to its own); nil: all.
	families     *collector.FamilyFilter
	createdLines bool
}

// newMetricsHandler builds the /metrics handler of o, instrumented as
// promhttp.InstrumentMetricHandler does when the exporter metrics are on.
func newMetricsHandler(o Options) http.Handler {
	h := &metricsHandler{logger: o.Logger, store: o.Runs, gatherer: o.Self, families: o.Families, createdLines: o.CreatedLines}
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

	format := negotiate(r)
	opts := collector.WriteOptions{Format: formatOf(format), Gzip: acceptsGzip(r), CreatedLines: h.createdLines}
	header := w.Header()
	header.Set("Content-Type", string(format))
	header.Add("Vary", "Accept")
	header.Add("Vary", "Accept-Encoding")
	if opts.Gzip {
		header.Set("Content-Encoding", "gzip")
	}
	body := collector.NewExposition(out, opts)
	body.WriteRuns(h.store)
	var encOpts []expfmt.EncoderOption
	if h.createdLines {
		encOpts = append(encOpts, expfmt.WithCreatedLines())
	}
	enc := expfmt.NewEncoder(body, format, encOpts...)
	for _, mf := range mfs {
		if !h.families.Allows(mf.GetName()) {
			continue
		}
		if err := enc.Encode(mf); err != nil {
			if h.encodingFailed(err) {
				return
			}
		}
	}
	// OpenMetrics' "# EOF" ends the body.
	if closer, ok := enc.(expfmt.Closer); ok {
		if err := closer.Close(); err != nil && h.encodingFailed(err) {
			return
		}
	}
	if err := body.Close(); err != nil {
		level.Debug(h.logger).Log("msg", "writing metrics to the client failed", "err", err)
	}
}

// offered are the formats /metrics serves, in the order client_golang
// prefers them with OpenMetrics enabled. The protobuf text formats, which
// no scraper asks for, are left out: asked for them alone, the handler
// answers in the text format.
var offered = []expfmt.Format{
	expfmt.FmtOpenMetrics_1_0_0,
	expfmt.FmtOpenMetrics_0_0_1,
	expfmt.FmtProtoDelim,
	expfmt.FmtText,
}

// negotiate picks the format of the answer from the Accept header, as
// client_golang does. A header that asks for nothing offered, or does not
// parse, gets the text format.
func negotiate(r *http.Request) expfmt.Format {
	return expfmt.NegotiateAccept(r.Header, offered...)
}

func formatOf(f expfmt.Format) collector.Format {
	switch f.FormatType() {
	case expfmt.TypeOpenMetrics:
		return collector.FormatOpenMetrics
	case expfmt.TypeProtoDelim:
		return collector.FormatProtobuf
	}
	return collector.FormatText
}

// encodingFailed logs and counts an error of the self-metrics' encoder,
// and reports whether the scrape must stop: when the client caused it (it
// went away, or did not read in time), which is only logged at debug
// level. A family that does not encode is left out, as promhttp's
// ContinueOnError does.
func (h *metricsHandler) encodingFailed(err error) (stop bool) {
	var write *collector.WriteError
	if errors.As(err, &write) {
		level.Debug(h.logger).Log("msg", "writing metrics to the client failed", "err", err)
		return true
	}
	level.Error(h.logger).Log("msg", "encoding self-metrics failed", "err", err)
	h.countError("encoding")
	return false
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
