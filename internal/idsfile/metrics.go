package idsfile

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	readSuccessfulDesc = prometheus.NewDesc(
		"workflow_runs_exporter_ids_file_read_successful",
		"1 if the last read of runs.ids_file succeeded, 0 while it cannot be read (missing, unreadable, not a regular file, too large); its last list read stays in force. Absent without runs.ids_file.",
		nil, nil)
	invalidLinesDesc = prometheus.NewDesc(
		"workflow_runs_exporter_ids_file_invalid_lines",
		"Lines of runs.ids_file skipped at its last successful read: not a run ID (UUID), or an ID listed before in the file or in runs.ids. Absent without runs.ids_file.",
		nil, nil)
)

// Metrics are the ids_file's self-metrics. They outlive the watchers (a
// reload with another path starts a new one) and are absent while no
// ids_file is configured: a constant "1, 0" for a file that does not exist
// would say something false.
type Metrics struct {
	mu         sync.Mutex
	configured bool
	readOK     bool
	invalid    int
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	reg.MustRegister(m)
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- readSuccessfulDesc
	ch <- invalidLinesDesc
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	configured, readOK, invalid := m.configured, m.readOK, m.invalid
	m.mu.Unlock()
	if !configured {
		return
	}
	ok := 0.0
	if readOK {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(readSuccessfulDesc, prometheus.GaugeValue, ok)
	ch <- prometheus.MustNewConstMetric(invalidLinesDesc, prometheus.GaugeValue, float64(invalid))
}

// Unconfigured removes the series: no ids_file is configured.
func (m *Metrics) Unconfigured() {
	m.mu.Lock()
	m.configured, m.readOK, m.invalid = false, false, 0
	m.mu.Unlock()
}

// read records a read: its invalid lines, or that it failed (the count of
// the last successful read stays). first starts from nothing: a new path.
func (m *Metrics) read(c *Contents, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if first {
		m.invalid = 0
	}
	m.configured, m.readOK = true, c.Err == nil
	if c.Err == nil {
		m.invalid = c.Invalid
	}
}
