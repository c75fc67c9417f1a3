// Package collector is the run metrics store: it renders each run's
// exposition lines once, when the run changes, keeps them in memory, and
// writes them out on a scrape with no per-series work (the model of
// kube-state-metrics' metrics store). It also keeps the aggregates over all
// runs up to date as runs change.
package collector

import "strings"

// cached is appended to the HELP text of data that comes from the API:
// values are as of the last poll, not of the scrape.
const cached = " Cached from the last poll of the API."

// family is one metric family: its name, its exposition header and the
// names of its labels, sorted as client_golang sorts them so the output
// reads the same as any other exporter's.
type family struct {
	name   string
	help   string
	typ    string
	header []byte
}

func newFamily(name, typ, help string) family {
	escaped := strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help)
	return family{name: name, help: help, typ: typ,
		header: []byte("# HELP " + name + " " + escaped + "\n# TYPE " + name + " " + typ + "\n")}
}

// The per-run families, in exposition order (by name, as client_golang
// orders families).
const (
	famCreated = iota
	famDuration
	famFetchErrorReason
	famFetchSuccess
	famFinished
	famInfo
	famLastFetch
	famProgress
	famProgressUpdated
	famStatus
	famStatusSince
	numRunFamilies
)

var runFamilies = [numRunFamilies]family{
	famCreated: newFamily("workflow_run_created_timestamp_seconds", "gauge",
		"created_at of the run as Unix time."+cached),
	famDuration: newFamily("workflow_run_duration_seconds", "gauge",
		"finished_at minus created_at of a finished run."+cached),
	famFetchErrorReason: newFamily("workflow_run_fetch_error_reason", "gauge",
		"1 for the reason the last fetch of this run failed; absent while fetches succeed."),
	famFetchSuccess: newFamily("workflow_run_fetch_success", "gauge",
		"1 if the last fetch of this run from the API succeeded, else 0."),
	famFinished: newFamily("workflow_run_finished_timestamp_seconds", "gauge",
		"finished_at of a finished run as Unix time."+cached),
	famInfo: newFamily("workflow_run_info", "gauge",
		"Static properties of the run; always 1."+cached),
	famLastFetch: newFamily("workflow_run_last_fetch_success_timestamp_seconds", "gauge",
		"When this run's data was last fetched successfully, as Unix time."),
	famProgress: newFamily("workflow_run_progress_ratio", "gauge",
		"Run progress as a ratio of api.progress_max (0 to 1)."+cached),
	famProgressUpdated: newFamily("workflow_run_progress_updated_timestamp_seconds", "gauge",
		"When the exporter last saw the run's progress change (first sight counts), as Unix time."),
	famStatus: newFamily("workflow_run_status", "gauge",
		"Run state set: 1 for the run's current status, 0 for the other known statuses."+cached),
	famStatusSince: newFamily("workflow_run_status_since_timestamp_seconds", "gauge",
		"When the run entered its current status, as Unix time: finished_at for a finished run, else when the exporter first saw the status."),
}

// The aggregate families, over all runs, in exposition order.
const (
	famRuns = iota
	famFinishedDuration
	famFinishedTotal
	numAggregateFamilies
)

var aggregateFamilies = [numAggregateFamilies]family{
	famRuns: newFamily("workflow_runs", "gauge",
		"Tracked runs per workflow and status."+cached),
	famFinishedDuration: newFamily("workflow_runs_finished_duration_seconds", "histogram",
		"finished_at minus created_at of each finished run, observed once per run."),
	famFinishedTotal: newFamily("workflow_runs_finished_total", "counter",
		"Runs seen in a terminal status, each counted once."),
}
