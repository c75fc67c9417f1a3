// Package runs is the exporter's model of a workflow run: what the API said
// about it (Run), what the exporter knows about it over time (State), and
// the lifecycle totals of finished runs (Totals). The model decides what is
// exported; the API client decides only what the API said.
package runs

import (
	"strconv"
	"time"
)

// Status is a run's state as reported by the API. Values outside the known
// set are kept verbatim: API drift must show up in the metrics, not vanish.
type Status string

// The statuses the API documents.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusFailed    Status = "failed"
	StatusCompleted Status = "completed"
	StatusStopped   Status = "stopped"
)

// KnownStatuses lists the documented statuses in a stable order; the
// state-set metrics have one series for each of them.
var KnownStatuses = []Status{StatusQueued, StatusRunning, StatusFailed, StatusCompleted, StatusStopped}

// Known reports whether s is one of the documented statuses.
func (s Status) Known() bool {
	for _, k := range KnownStatuses {
		if s == k {
			return true
		}
	}
	return false
}

// Terminal reports whether a run in this status can no longer change, so it
// never needs to be fetched again. An unknown status is not terminal: it may
// still change.
func (s Status) Terminal() bool {
	return s == StatusFailed || s == StatusCompleted || s == StatusStopped
}

// Run is one run as the API described it. Optional values the API left out,
// or sent in a form that cannot be trusted, are zero (HasProgress false for
// progress), so that nothing is invented for them.
type Run struct {
	ID           string
	GroupID      string
	WorkflowID   string
	WorkflowName string
	WorkflowType string
	Source       string
	Status       Status

	Progress    float64 // finite and not negative when HasProgress
	HasProgress bool

	CreatedAt  time.Time // zero when missing or unparsable
	FinishedAt time.Time // zero while unfinished
}

// Duration returns finished_at − created_at. ok is false while the run is
// unfinished, when a timestamp is missing, or when the API reported a finish
// before the start: a negative duration is never exported.
func (r *Run) Duration() (d time.Duration, ok bool) {
	if r.CreatedAt.IsZero() || r.FinishedAt.IsZero() {
		return 0, false
	}
	d = r.FinishedAt.Sub(r.CreatedAt)
	if d < 0 {
		return 0, false
	}
	return d, true
}

// ProgressRatio returns progress / progressMax. ok is false when the API
// sent no progress, or one above progressMax: a ratio above 1 means
// api.progress_max does not match the API's scale, and is left out rather
// than exported wrong.
func (r *Run) ProgressRatio(progressMax float64) (ratio float64, ok bool) {
	if !r.HasProgress || r.Progress > progressMax {
		return 0, false
	}
	return r.Progress / progressMax, true
}

// Problems names what of this run is exported differently from what the API
// documents, one short phrase each, for a warning in the log.
func (r *Run) Problems(progressMax float64) []string {
	var p []string
	if !r.Status.Known() {
		p = append(p, "unknown status "+strconv.Quote(string(r.Status)))
	}
	if r.HasProgress && r.Progress > progressMax {
		p = append(p, "progress "+strconv.FormatFloat(r.Progress, 'g', -1, 64)+" is above api.progress_max")
	}
	if !r.CreatedAt.IsZero() && !r.FinishedAt.IsZero() && r.FinishedAt.Before(r.CreatedAt) {
		p = append(p, "finished_at is before created_at")
	}
	return p
}
