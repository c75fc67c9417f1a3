package reloader

import "github.com/prometheus/client_golang/prometheus"

// metrics are the reloader's self-metrics.
type metrics struct {
	success     prometheus.Gauge
	successTime prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_config_last_reload_successful",
			Help: "1 if the last configuration load succeeded, else 0.",
		}),
		successTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully, as Unix time.",
		}),
	}
	reg.MustRegister(m.success, m.successTime)
	return m
}
