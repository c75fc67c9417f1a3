package runs

import "time"

// State is what the exporter knows about one run ID over time: the last
// good data, the health of its fetches, when its status and progress last
// changed, and whether it has been counted as finished. It is what the
// state store persists, so a restart continues where the last process
// stopped.
type State struct {
	ID string
	// Run is the last successfully fetched data; nil when the run was never
	// fetched successfully, or answered 404 for longer than the grace. A Run
	// is never modified once stored, so copies of a State may share it.
	Run *Run
	// FetchOK reports whether the most recent fetch succeeded.
	FetchOK bool
	// FailReason is the reason (an api.Reason) of the current run of
	// failed fetches; empty while fetches succeed.
	FailReason string
	// LastSuccess is when Run was fetched; zero if never.
	LastSuccess time.Time
	// NotFoundSince is when the current run of 404 answers began.
	NotFoundSince time.Time
	// StatusSince is when the exporter first saw the current status.
	StatusSince time.Time
	// ProgressUpdated is when the exporter last saw progress change; the
	// first sight counts as a change.
	ProgressUpdated time.Time
	// FinishedSeen is when the exporter first saw the run in a terminal
	// status; zero while it has not.
	FinishedSeen time.Time
	// Counted reports whether the run has been counted in the lifecycle
	// totals. It is set once and never cleared: each run is counted once.
	Counted bool
	// Retired reports that runs.finished_retention has passed since
	// FinishedSeen: the run's series are no longer exported, and it is
	// never fetched again.
	Retired bool
}

// Finish is a run seen in a terminal status for the first time: one
// observation for the lifecycle totals.
type Finish struct {
	Key      TotalKey
	Duration time.Duration
	// HasDuration is false when the run's duration is unknown (a timestamp
	// missing or backwards); the run is counted, but not observed in the
	// duration histogram.
	HasDuration bool
}

// Finished reports whether the last known data is in a terminal status,
// so the run needs no more fetching.
func (s *State) Finished() bool { return s.Run != nil && s.Run.Status.Terminal() }

// StatusSinceTime is when the run entered its current status: finished_at
// for a finished run (when the API gave it), else when the exporter first
// saw the status.
func (s *State) StatusSinceTime() time.Time {
	if s.Finished() && !s.Run.FinishedAt.IsZero() {
		return s.Run.FinishedAt
	}
	return s.StatusSince
}

// Succeeded records run, fetched at now. It returns the finish to count when
// this is the first time the run is seen in a terminal status, else nil.
func (s *State) Succeeded(run *Run, now time.Time) *Finish {
	prev := s.Run
	if prev == nil || prev.Status != run.Status {
		s.StatusSince = now
	}
	if prev == nil || prev.HasProgress != run.HasProgress || prev.Progress != run.Progress {
		s.ProgressUpdated = now
	}
	s.Run, s.FetchOK, s.LastSuccess = run, true, now
	s.FailReason, s.NotFoundSince = "", time.Time{}
	if !run.Status.Terminal() {
		return nil
	}
	if s.FinishedSeen.IsZero() {
		s.FinishedSeen = now
	}
	if s.Counted {
		return nil
	}
	s.Counted = true
	f := &Finish{Key: TotalKey{WorkflowName: run.WorkflowName, WorkflowType: run.WorkflowType, Status: run.Status}}
	f.Duration, f.HasDuration = run.Duration()
	return f
}

// Failed records a fetch that failed at now for reason. A run that answers
// 404 keeps its last data for grace after the first 404, then loses it: a
// glitch in the API must not resolve an alert, but a deleted run must not
// linger.
func (s *State) Failed(reason string, notFound bool, now time.Time, grace time.Duration) {
	s.FetchOK, s.FailReason = false, reason
	if !notFound {
		s.NotFoundSince = time.Time{}
		return
	}
	if s.NotFoundSince.IsZero() {
		s.NotFoundSince = now
	}
	if s.Run != nil && now.Sub(s.NotFoundSince) >= grace {
		s.Run = nil
	}
}

// RetentionOver reports whether a finished run has been known finished for
// retention (> 0) at now, so its series should be dropped.
func (s *State) RetentionOver(now time.Time, retention time.Duration) bool {
	return retention > 0 && !s.FinishedSeen.IsZero() && now.Sub(s.FinishedSeen) >= retention
}
