package collector

import (
	"fmt"
	"strings"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

var (
	created  = time.Date(2026, 11, 7, 5, 31, 56, 250_000_000, time.UTC)
	finished = created.Add(90*time.Second + 500*time.Millisecond)
	fetched  = time.Date(2026, 11, 7, 6, 0, 0, 0, time.UTC)
)

func baseRun(id string, status runs.Status) *runs.Run {
	return &runs.Run{
		ID: id, WorkflowID: "wf-1", WorkflowName: "Invoice extraction",
		WorkflowType: "flow", GroupID: "g-1", Source: "api", Status: status,
		Progress: 40, HasProgress: true, CreatedAt: created,
	}
}

func finishedRun(id string, status runs.Status) *runs.Run {
	r := baseRun(id, status)
	r.FinishedAt, r.Progress = finished, 100
	return r
}

// fetchedState is a run fetched once, successfully, at fetched.
func fetchedState(r *runs.Run) *runs.State {
	st := &runs.State{ID: r.ID}
	st.Succeeded(r, fetched, time.Minute)
	return st
}

func id(n int) string { return fmt.Sprintf("%08x-0d44-4b50-8888-8dd25736052a", n) }

// sampleStates covers what the exposition must get right: every status, an
// unknown one, missing and odd fields, label values with quotes, newlines,
// backslashes, invalid UTF-8 and over-long text, runs never fetched, failing
// and answering 404.
func sampleStates() []*runs.State {
	var out []*runs.State
	for i, s := range runs.KnownStatuses {
		r := baseRun(id(i+1), s)
		if s.Terminal() {
			r = finishedRun(id(i+1), s)
		}
		out = append(out, fetchedState(r))
	}

	unknown := baseRun(id(10), "paused")
	out = append(out, fetchedState(unknown))

	bare := &runs.Run{ID: id(11), Status: runs.StatusCompleted}
	out = append(out, fetchedState(bare))

	backwards := finishedRun(id(12), runs.StatusCompleted)
	backwards.FinishedAt = created.Add(-time.Second)
	out = append(out, fetchedState(backwards))

	odd := baseRun(id(13), runs.StatusRunning)
	odd.WorkflowName = "Support triage & routing: \"VIP\" é\nline two \\ end"
	odd.Source = "bad \xff\xfe bytes"
	odd.GroupID = strings.Repeat("é", 300)
	out = append(out, fetchedState(odd))

	aboveMax := baseRun(id(14), runs.StatusRunning)
	aboveMax.Progress = 250
	out = append(out, fetchedState(aboveMax))

	noProgress := baseRun(id(15), runs.StatusQueued)
	noProgress.HasProgress = false
	out = append(out, fetchedState(noProgress))

	out = append(out, &runs.State{ID: id(16)}) // never fetched

	failing := fetchedState(baseRun(id(17), runs.StatusRunning))
	failing.Failed("timeout", false, fetched.Add(time.Minute), 0)
	out = append(out, failing)

	gone := fetchedState(baseRun(id(18), runs.StatusRunning))
	gone.Failed("not_found", true, fetched.Add(time.Minute), 15*time.Minute) // within the grace: data kept
	out = append(out, gone)

	neverFound := &runs.State{ID: id(19)}
	neverFound.Failed("not_found", true, fetched, 15*time.Minute)
	out = append(out, neverFound)

	other := finishedRun(id(20), runs.StatusFailed)
	other.WorkflowName, other.WorkflowType = "Résumé parser", "handler"
	out = append(out, fetchedState(other))

	// Seen queued, then running: a queue wait, the midpoint of the two
	// polls (45 s after created_at).
	started := &runs.State{ID: id(21)}
	started.Succeeded(baseRun(id(21), runs.StatusQueued), created.Add(30*time.Second), time.Minute)
	started.Succeeded(baseRun(id(21), runs.StatusRunning), created.Add(60*time.Second), time.Minute)
	out = append(out, started)
	return out
}

// sampleTotals are lifecycle totals for the sample states' workflows.
func sampleTotals() runs.Totals {
	t := runs.NewTotals()
	for _, d := range []time.Duration{500 * time.Millisecond, 90 * time.Second, 2 * time.Hour, 30 * time.Hour} {
		t.AddFinish(runs.Finish{Key: runs.TotalKey{WorkflowName: "Invoice extraction", WorkflowType: "flow", Status: runs.StatusCompleted}, Duration: d, HasDuration: true})
	}
	t.AddFinish(runs.Finish{Key: runs.TotalKey{WorkflowName: "Résumé parser", WorkflowType: "handler", Status: runs.StatusFailed}})
	for _, d := range []time.Duration{0, 45 * time.Second, 3 * time.Hour} {
		t.AddQueueWait(runs.QueueWait{Key: runs.WorkflowKey{WorkflowName: "Invoice extraction", WorkflowType: "flow"}, Wait: d})
	}
	return t
}

func storeOf(states []*runs.State, totals runs.Totals) *MetricsStore {
	s := NewMetricsStore(100)
	for _, st := range states {
		s.Update(st)
	}
	if totals.Finished != nil {
		s.SetTotals(totals)
	}
	return s
}
