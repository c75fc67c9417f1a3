package poller

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
)

// metrics are the poller's self-metrics. As in every package that owns
// self-metrics, they are defined here, registered once by newMetrics, and
// changed only by this package.
type metrics struct {
	fetchErrors   *prometheus.CounterVec
	cycleDuration prometheus.Histogram
	lastCycle     prometheus.Gauge
	trackedRuns   prometheus.Gauge
	probeRuns     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workflow_runs_exporter_fetch_errors_total",
			Help: "Fetches of a run that failed after all retries, by reason.",
		}, []string{"reason"}),
		cycleDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "workflow_runs_exporter_poll_cycle_duration_seconds",
			Help:    "Time from the start of a poll cycle until each of its runs was answered (retries included) or carried past the next interval's start.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
		}),
		lastCycle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_last_poll_cycle_timestamp_seconds",
			Help: "When the last poll cycle finished, as Unix time.",
		}),
		trackedRuns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_tracked_runs",
			Help: "Run IDs this instance tracks: configured, and in its shard.",
		}),
		probeRuns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_probe_runs",
			Help: "Probe-only runs (probed, not listed) in memory; at most probe.max_runs, the least recently probed let go first.",
		}),
	}
	// Every reason starts at 0, so that rate() works from the first error.
	for _, r := range api.Reasons {
		m.fetchErrors.WithLabelValues(string(r))
	}
	reg.MustRegister(m.fetchErrors, m.cycleDuration, m.lastCycle, m.trackedRuns, m.probeRuns)
	return m
}
