// Package runs holds the exporter's model of a workflow run and the immutable
// snapshot of all tracked runs that the poller publishes and the collector reads.
package runs

import "time"

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
// collector emits one state-set series for each of them.
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
// never needs to be fetched again.
func (s Status) Terminal() bool {
	return s == StatusFailed || s == StatusCompleted || s == StatusStopped
}

// Run is one run as decoded and validated from the API. Optional values the
// API left out, or sent in a form that cannot be trusted, have their Has*
// flag false so that the collector omits the metric instead of inventing one.
type Run struct {
	ID           string
	GroupID      string
	WorkflowID   string
	WorkflowName string
	WorkflowType string
	Source       string
	Status       Status

	Progress    float64
	HasProgress bool

	CreatedAt  time.Time // zero when missing or unparsable
	FinishedAt time.Time // zero while unfinished
}

// Duration returns finished_at − created_at for a finished run. ok is false
// while the run is unfinished, when a timestamp is missing, or when the API
// reported a finish before the start: a negative duration is never exported.
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
