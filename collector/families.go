// Package collector is the run metrics store: it renders each run's
// exposition lines once, when the run changes, keeps them in memory, and
// writes them out on a scrape with no per-series work (the model of
// kube-state-metrics' metrics store), in the text format, OpenMetrics or
// protobuf. It also keeps the aggregates over all runs, with their
// exemplars, up to date as runs change.
package collector

import (
	"strings"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// cached is appended to the HELP text of data that comes from the API:
// values are as of the last poll, not of the scrape.
const cached = " Cached from the last poll of the API."

// family is one metric family: its name, help and type, and its header in
// each format.
type family struct {
	name string
	help string
	typ  dto.MetricType
	// header is "# HELP" and "# TYPE" in the text format; omHeader the
	// same in OpenMetrics, which also escapes quotes in the help.
	header, omHeader []byte
	// pbHeader is the MetricFamily message without its metrics: name,
	// help and type, encoded by the protobuf library itself.
	pbHeader []byte
}

func newFamily(name string, typ dto.MetricType, help string) family {
	text := strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help)
	om := strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(help)
	typName := strings.ToLower(typ.String())
	pb, err := proto.Marshal(&dto.MetricFamily{Name: &name, Help: &help, Type: &typ})
	if err != nil {
		panic("collector: the header of " + name + " does not encode: " + err.Error()) // constant input
	}
	return family{name: name, help: help, typ: typ, pbHeader: pb,
		header:   []byte("# HELP " + name + " " + text + "\n# TYPE " + name + " " + typName + "\n"),
		omHeader: []byte("# HELP " + name + " " + om + "\n# TYPE " + name + " " + typName + "\n")}
}

// queueWaitHelp says what the two queue-wait families measure, and how the
// moment a run started is estimated: the API does not say.
const queueWaitHelp = "created_at to the moment the run left queued, estimated as the midpoint between the last poll that saw it queued and the first that did not"

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
	famQueueWait
	famStatus
	famStatusSince
	numRunFamilies
)

var runFamilies = [numRunFamilies]family{
	famCreated: newFamily("workflow_run_created_timestamp_seconds", dto.MetricType_GAUGE,
		"created_at of the run as Unix time."+cached),
	famDuration: newFamily("workflow_run_duration_seconds", dto.MetricType_GAUGE,
		"finished_at minus created_at of a finished run."+cached),
	famFetchErrorReason: newFamily("workflow_run_fetch_error_reason", dto.MetricType_GAUGE,
		"1 for the reason the last fetch of this run failed; absent while fetches succeed."),
	famFetchSuccess: newFamily("workflow_run_fetch_success", dto.MetricType_GAUGE,
		"1 if the last fetch of this run from the API succeeded, else 0."),
	famFinished: newFamily("workflow_run_finished_timestamp_seconds", dto.MetricType_GAUGE,
		"finished_at of a finished run as Unix time."+cached),
	famInfo: newFamily("workflow_run_info", dto.MetricType_GAUGE,
		"Static properties of the run; always 1."+cached),
	famLastFetch: newFamily("workflow_run_last_fetch_success_timestamp_seconds", dto.MetricType_GAUGE,
		"When this run's data was last fetched successfully, as Unix time."),
	famProgress: newFamily("workflow_run_progress_ratio", dto.MetricType_GAUGE,
		"Run progress as a ratio of api.progress_max (0 to 1)."+cached),
	famProgressUpdated: newFamily("workflow_run_progress_updated_timestamp_seconds", dto.MetricType_GAUGE,
		"When the exporter last saw the run's progress change (first sight counts), as Unix time."),
	famQueueWait: newFamily("workflow_run_queue_wait_seconds", dto.MetricType_GAUGE,
		"How long the run waited to start: "+queueWaitHelp+"; only for runs seen queued."+cached),
	famStatus: newFamily("workflow_run_status", dto.MetricType_GAUGE,
		"Run state set: 1 for the run's current status, 0 for the other known statuses."+cached),
	famStatusSince: newFamily("workflow_run_status_since_timestamp_seconds", dto.MetricType_GAUGE,
		"When the run entered its current status, as Unix time: finished_at for a finished run, else when the exporter first saw the status."),
}

// The aggregate families, over all runs, in exposition order.
const (
	famRuns = iota
	famFinishedDuration
	famFinishedTotal
	famQueueWaits
	numAggregateFamilies
)

var aggregateFamilies = [numAggregateFamilies]family{
	famRuns: newFamily("workflow_runs", dto.MetricType_GAUGE,
		"Tracked runs per workflow and status."+cached),
	famFinishedDuration: newFamily("workflow_runs_finished_duration_seconds", dto.MetricType_HISTOGRAM,
		"finished_at minus created_at of each finished run, observed once per run."),
	famFinishedTotal: newFamily("workflow_runs_finished_total", dto.MetricType_COUNTER,
		"Runs seen in a terminal status, each counted once."),
	famQueueWaits: newFamily("workflow_runs_queue_wait_seconds", dto.MetricType_HISTOGRAM,
		"How long runs waited to start, observed once per run seen queued: "+queueWaitHelp+"."),
}
