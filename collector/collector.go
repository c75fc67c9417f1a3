// Package collector turns the latest snapshot of tracked runs into
// Prometheus metrics. It never calls the API: a scrape costs only the
// rendering of data the poller already fetched.
package collector

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// cached is appended to every per-run HELP text: values are as of the last
// poll, not of the scrape.
const cached = " Cached from the last poll of the API."

var (
	runLabels = []string{"run_id", "workflow_id", "workflow_name", "workflow_type"}

	statusDesc = prometheus.NewDesc("workflow_run_status",
		"Run state set: 1 for the run's current status, 0 for the other known statuses."+cached,
		append(slices.Clone(runLabels), "status"), nil)
	progressDesc = prometheus.NewDesc("workflow_run_progress_ratio",
		"Run progress as a ratio of api.progress_max (0 to 1)."+cached, runLabels, nil)
	durationDesc = prometheus.NewDesc("workflow_run_duration_seconds",
		"finished_at minus created_at of a finished run."+cached, runLabels, nil)
	createdDesc = prometheus.NewDesc("workflow_run_created_timestamp_seconds",
		"created_at of the run as Unix time."+cached, runLabels, nil)
	finishedDesc = prometheus.NewDesc("workflow_run_finished_timestamp_seconds",
		"finished_at of a finished run as Unix time."+cached, runLabels, nil)
	infoDesc = prometheus.NewDesc("workflow_run_info",
		"Static properties of the run; always 1."+cached,
		append(slices.Clone(runLabels), "group_id", "source"), nil)
	fetchSuccessDesc = prometheus.NewDesc("workflow_run_fetch_success",
		"1 if the last fetch of this run from the API succeeded, else 0.",
		[]string{"run_id"}, nil)
	lastFetchDesc = prometheus.NewDesc("workflow_run_last_fetch_success_timestamp_seconds",
		"When this run's data was last fetched successfully, as Unix time.",
		[]string{"run_id"}, nil)
	aggregateDesc = prometheus.NewDesc("workflow_runs",
		"Tracked runs per workflow and status."+cached,
		[]string{"workflow_name", "workflow_type", "status"}, nil)
	trackedDesc = prometheus.NewDesc("workflow_runs_exporter_tracked_runs",
		"Run IDs currently configured for tracking.", nil, nil)
	lastCycleDesc = prometheus.NewDesc("workflow_runs_exporter_last_poll_cycle_timestamp_seconds",
		"When the last poll cycle finished, as Unix time.", nil, nil)
)

// Collector renders runs.Snapshot values. It holds no state of its own.
type Collector struct {
	load func() *runs.Snapshot
}

// New returns a collector that reads the latest snapshot from load on
// every scrape.
func New(load func() *runs.Snapshot) *Collector { return &Collector{load: load} }

// Describe sends the fixed descriptors.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{statusDesc, progressDesc, durationDesc, createdDesc,
		finishedDesc, infoDesc, fetchSuccessDesc, lastFetchDesc, aggregateDesc, trackedDesc, lastCycleDesc} {
		ch <- d
	}
}

type aggregateKey struct{ name, typ string }

// Collect sends the metrics of one snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.load()
	emit := func(desc *prometheus.Desc, v float64, labelValues ...string) {
		m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, labelValues...)
		if err != nil {
			// Reported per metric by promhttp (ContinueOnError); the
			// rest of the scrape is still served.
			m = prometheus.NewInvalidMetric(desc, err)
		}
		ch <- m
	}

	counts := map[aggregateKey]map[runs.Status]int{}
	for i := range snap.Runs {
		t := &snap.Runs[i]
		emit(fetchSuccessDesc, boolValue(t.FetchOK), t.ID)
		if !t.LastSuccess.IsZero() {
			emit(lastFetchDesc, unixSeconds(t.LastSuccess), t.ID)
		}
		r := t.Run
		if r == nil {
			continue
		}
		lv := []string{t.ID, r.WorkflowID, r.WorkflowName, r.WorkflowType}

		for _, s := range runs.KnownStatuses {
			emit(statusDesc, boolValue(r.Status == s), append(lv, string(s))...)
		}
		if !r.Status.Known() {
			emit(statusDesc, 1, append(lv, string(r.Status))...)
		}
		if r.HasProgress {
			emit(progressDesc, r.Progress/snap.ProgressMax, lv...)
		}
		if d, ok := r.Duration(); ok {
			emit(durationDesc, d.Seconds(), lv...)
		}
		if !r.CreatedAt.IsZero() {
			emit(createdDesc, unixSeconds(r.CreatedAt), lv...)
		}
		if !r.FinishedAt.IsZero() {
			emit(finishedDesc, unixSeconds(r.FinishedAt), lv...)
		}
		emit(infoDesc, 1, append(lv, r.GroupID, r.Source)...)

		k := aggregateKey{r.WorkflowName, r.WorkflowType}
		if counts[k] == nil {
			counts[k] = map[runs.Status]int{}
		}
		counts[k][r.Status]++
	}

	for k, byStatus := range counts {
		// Every known status is present, zero or not, so that a panel or
		// alert on status="failed" sees 0 rather than no data.
		for _, s := range runs.KnownStatuses {
			emit(aggregateDesc, float64(byStatus[s]), k.name, k.typ, string(s))
		}
		for s, n := range byStatus {
			if !s.Known() {
				emit(aggregateDesc, float64(n), k.name, k.typ, string(s))
			}
		}
	}

	emit(trackedDesc, float64(len(snap.Runs)))
	if !snap.CycleEnd.IsZero() {
		emit(lastCycleDesc, unixSeconds(snap.CycleEnd))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unixSeconds keeps sub-second precision, so durations and timestamps agree
// with the API to the millisecond.
// It avoids UnixNano, which overflows for dates past the year 2262.
func unixSeconds(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}
