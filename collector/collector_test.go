package collector

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

var (
	created  = time.Date(2026, 11, 7, 5, 31, 56, 250_000_000, time.UTC)
	finished = created.Add(90*time.Second + 500*time.Millisecond)
	fetched  = time.Date(2026, 11, 7, 6, 0, 0, 0, time.UTC)
)

func snapshotOf(t ...runs.Tracked) *runs.Snapshot {
	return &runs.Snapshot{Runs: t, ProgressMax: 100, CycleEnd: fetched}
}

func fetchedRun(r runs.Run) runs.Tracked {
	return runs.Tracked{ID: r.ID, Run: &r, FetchOK: true, LastSuccess: fetched}
}

func baseRun(status runs.Status) runs.Run {
	return runs.Run{
		ID: "3c90c3cc-0d44-4b50-8888-8dd25736052a", WorkflowID: "wf-1", WorkflowName: "Invoice extraction",
		WorkflowType: "flow", GroupID: "g-1", Source: "api", Status: status,
		Progress: 40, HasProgress: true, CreatedAt: created,
	}
}

func finishedRun(status runs.Status) runs.Run {
	r := baseRun(status)
	r.FinishedAt, r.Progress = finished, 100
	return r
}

const labels = `run_id="3c90c3cc-0d44-4b50-8888-8dd25736052a",workflow_id="wf-1",workflow_name="Invoice extraction",workflow_type="flow"`

// statusLines renders the expected state set for the labels above.
func statusLines(current string) string {
	var b strings.Builder
	b.WriteString("# HELP workflow_run_status Run state set: 1 for the run's current status, 0 for the other known statuses. Cached from the last poll of the API.\n# TYPE workflow_run_status gauge\n")
	for _, s := range []string{"completed", "failed", "queued", "running", "stopped"} {
		v := "0"
		if s == current {
			v = "1"
		}
		b.WriteString(statusSeries(s) + " " + v + "\n")
	}
	return b.String()
}

// statusSeries names one state-set series; labels in sorted order, as the
// comparison expects.
func statusSeries(status string) string {
	return `workflow_run_status{run_id="3c90c3cc-0d44-4b50-8888-8dd25736052a",status="` + status +
		`",workflow_id="wf-1",workflow_name="Invoice extraction",workflow_type="flow"}`
}

const header = `
# HELP workflow_run_created_timestamp_seconds created_at of the run as Unix time. Cached from the last poll of the API.
# TYPE workflow_run_created_timestamp_seconds gauge
workflow_run_created_timestamp_seconds{` + labels + `} 1.79402951625e+09
# HELP workflow_run_fetch_success 1 if the last fetch of this run from the API succeeded, else 0.
# TYPE workflow_run_fetch_success gauge
workflow_run_fetch_success{run_id="3c90c3cc-0d44-4b50-8888-8dd25736052a"} 1
# HELP workflow_run_info Static properties of the run; always 1. Cached from the last poll of the API.
# TYPE workflow_run_info gauge
workflow_run_info{group_id="g-1",run_id="3c90c3cc-0d44-4b50-8888-8dd25736052a",source="api",workflow_id="wf-1",workflow_name="Invoice extraction",workflow_type="flow"} 1
# HELP workflow_run_last_fetch_success_timestamp_seconds When this run's data was last fetched successfully, as Unix time.
# TYPE workflow_run_last_fetch_success_timestamp_seconds gauge
workflow_run_last_fetch_success_timestamp_seconds{run_id="3c90c3cc-0d44-4b50-8888-8dd25736052a"} 1.7940312e+09
`

const finishedLines = `
# HELP workflow_run_duration_seconds finished_at minus created_at of a finished run. Cached from the last poll of the API.
# TYPE workflow_run_duration_seconds gauge
workflow_run_duration_seconds{` + labels + `} 90.5
# HELP workflow_run_finished_timestamp_seconds finished_at of a finished run as Unix time. Cached from the last poll of the API.
# TYPE workflow_run_finished_timestamp_seconds gauge
workflow_run_finished_timestamp_seconds{` + labels + `} 1.79402960675e+09
`

func progressLines(v string) string {
	return "# HELP workflow_run_progress_ratio Run progress as a ratio of api.progress_max (0 to 1). Cached from the last poll of the API.\n# TYPE workflow_run_progress_ratio gauge\nworkflow_run_progress_ratio{" + labels + "} " + v + "\n"
}

func aggregateLines(counts map[string]int, extra string) string {
	var b strings.Builder
	b.WriteString("# HELP workflow_runs Tracked runs per workflow and status. Cached from the last poll of the API.\n# TYPE workflow_runs gauge\n")
	for _, s := range []string{"completed", "failed", "queued", "running", "stopped"} {
		b.WriteString(`workflow_runs{status="` + s + `",workflow_name="Invoice extraction",workflow_type="flow"} ` + strconv.Itoa(counts[s]) + "\n")
	}
	b.WriteString(extra)
	return b.String()
}

var perRunMetrics = []string{
	"workflow_run_status", "workflow_run_progress_ratio", "workflow_run_duration_seconds",
	"workflow_run_created_timestamp_seconds", "workflow_run_finished_timestamp_seconds",
	"workflow_run_info", "workflow_run_fetch_success", "workflow_run_last_fetch_success_timestamp_seconds",
	"workflow_runs",
}

func TestCollectorPerStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  runs.Run
		want string
	}{
		{"queued", func() runs.Run { r := baseRun(runs.StatusQueued); r.Progress = 0; return r }(),
			header + statusLines("queued") + progressLines("0") + aggregateLines(map[string]int{"queued": 1}, "")},
		{"running", baseRun(runs.StatusRunning),
			header + statusLines("running") + progressLines("0.4") + aggregateLines(map[string]int{"running": 1}, "")},
		{"completed", finishedRun(runs.StatusCompleted),
			header + finishedLines + statusLines("completed") + progressLines("1") + aggregateLines(map[string]int{"completed": 1}, "")},
		{"failed", finishedRun(runs.StatusFailed),
			header + finishedLines + statusLines("failed") + progressLines("1") + aggregateLines(map[string]int{"failed": 1}, "")},
		{"stopped", finishedRun(runs.StatusStopped),
			header + finishedLines + statusLines("stopped") + progressLines("1") + aggregateLines(map[string]int{"stopped": 1}, "")},
		{"unknown status gets its own series and is never dropped", baseRun("paused"),
			header + statusLines("") + statusSeries("paused") + " 1\n" + progressLines("0.4") +
				aggregateLines(nil, `workflow_runs{status="paused",workflow_name="Invoice extraction",workflow_type="flow"} 1`+"\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := snapshotOf(fetchedRun(tc.run))
			c := New(func() *runs.Snapshot { return snap })
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), perRunMetrics...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCollectorOmitsWhatIsUnknown(t *testing.T) {
	// Missing workflow, progress and dates: the run is still exported with
	// empty labels; no progress, duration or timestamps are invented.
	bare := runs.Run{ID: "3c90c3cc-0d44-4b50-8888-8dd25736052a", Status: runs.StatusCompleted}
	// finished_at before created_at: no duration, never a negative one.
	backwards := finishedRun(runs.StatusCompleted)
	backwards.ID = "33333333-0d44-4b50-8888-8dd25736052a"
	backwards.FinishedAt = created.Add(-time.Second)

	neverFetched := runs.Tracked{ID: "11111111-0d44-4b50-8888-8dd25736052a"}
	notFound := runs.Tracked{ID: "22222222-0d44-4b50-8888-8dd25736052a", LastSuccess: fetched}

	snap := snapshotOf(fetchedRun(bare), fetchedRun(backwards), neverFetched, notFound)
	c := New(func() *runs.Snapshot { return snap })

	want := `
# HELP workflow_run_duration_seconds finished_at minus created_at of a finished run. Cached from the last poll of the API.
# TYPE workflow_run_duration_seconds gauge
# HELP workflow_run_fetch_success 1 if the last fetch of this run from the API succeeded, else 0.
# TYPE workflow_run_fetch_success gauge
workflow_run_fetch_success{run_id="11111111-0d44-4b50-8888-8dd25736052a"} 0
workflow_run_fetch_success{run_id="22222222-0d44-4b50-8888-8dd25736052a"} 0
workflow_run_fetch_success{run_id="33333333-0d44-4b50-8888-8dd25736052a"} 1
workflow_run_fetch_success{run_id="3c90c3cc-0d44-4b50-8888-8dd25736052a"} 1
# HELP workflow_run_progress_ratio Run progress as a ratio of api.progress_max (0 to 1). Cached from the last poll of the API.
# TYPE workflow_run_progress_ratio gauge
workflow_run_progress_ratio{run_id="33333333-0d44-4b50-8888-8dd25736052a",workflow_id="wf-1",workflow_name="Invoice extraction",workflow_type="flow"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"workflow_run_duration_seconds", "workflow_run_fetch_success", "workflow_run_progress_ratio"); err != nil {
		t.Fatal(err)
	}
	// The bare run still has its state set and info, with empty workflow labels.
	if n := testutil.CollectAndCount(c, "workflow_run_status"); n != 10 {
		t.Errorf("workflow_run_status series = %d, want 10 (5 per fetched run)", n)
	}
	if n := testutil.CollectAndCount(c, "workflow_run_created_timestamp_seconds"); n != 1 {
		t.Errorf("created timestamps = %d, want 1 (the bare run has none)", n)
	}
	if n := testutil.CollectAndCount(c, "workflow_run_last_fetch_success_timestamp_seconds"); n != 3 {
		t.Errorf("last fetch timestamps = %d, want 3 (never-fetched run has none)", n)
	}
}

func TestCollectorEscapesLabelValues(t *testing.T) {
	r := baseRun(runs.StatusRunning)
	r.WorkflowName = "Support triage & routing: \"VIP\" é\nline two \\ end"
	snap := snapshotOf(fetchedRun(r))
	c := New(func() *runs.Snapshot { return snap })
	want := `
# HELP workflow_run_progress_ratio Run progress as a ratio of api.progress_max (0 to 1). Cached from the last poll of the API.
# TYPE workflow_run_progress_ratio gauge
workflow_run_progress_ratio{run_id="3c90c3cc-0d44-4b50-8888-8dd25736052a",workflow_id="wf-1",workflow_name="Support triage & routing: \"VIP\" é\nline two \\ end",workflow_type="flow"} 0.4
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "workflow_run_progress_ratio"); err != nil {
		t.Fatal(err)
	}
}

func TestCollectorSelfMetrics(t *testing.T) {
	snap := snapshotOf(fetchedRun(baseRun(runs.StatusRunning)), runs.Tracked{ID: "x"})
	c := New(func() *runs.Snapshot { return snap })
	want := `
# HELP workflow_runs_exporter_last_poll_cycle_timestamp_seconds When the last poll cycle finished, as Unix time.
# TYPE workflow_runs_exporter_last_poll_cycle_timestamp_seconds gauge
workflow_runs_exporter_last_poll_cycle_timestamp_seconds 1.7940312e+09
# HELP workflow_runs_exporter_tracked_runs Run IDs currently configured for tracking.
# TYPE workflow_runs_exporter_tracked_runs gauge
workflow_runs_exporter_tracked_runs 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"workflow_runs_exporter_tracked_runs", "workflow_runs_exporter_last_poll_cycle_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
	// Before the first cycle there is no cycle timestamp to report.
	empty := &runs.Snapshot{ProgressMax: 100}
	c = New(func() *runs.Snapshot { return empty })
	if n := testutil.CollectAndCount(c, "workflow_runs_exporter_last_poll_cycle_timestamp_seconds"); n != 0 {
		t.Errorf("cycle timestamp before the first cycle: %d series, want 0", n)
	}
}

func TestCollectorPassesLint(t *testing.T) {
	snap := snapshotOf(fetchedRun(finishedRun(runs.StatusFailed)), fetchedRun(func() runs.Run {
		r := baseRun("paused")
		r.ID = "44444444-0d44-4b50-8888-8dd25736052a"
		return r
	}()))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(New(func() *runs.Snapshot { return snap }))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
