package runs

import "time"

// State is what the exporter knows about one run ID over time: the last
// good data, the health of its fetches, when its status and progress last
// changed, when it left the queue, and what the ledger decided about
// counting it. It is what the state store persists, so a restart continues
// where the last process stopped.
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
	// QueuedSeen is when the exporter last saw the run queued; zero if it
	// never did.
	QueuedSeen time.Time
	// LeftQueue is the estimated moment the run left queued: the midpoint
	// between the last sight of it queued and the first sight of it not
	// queued, narrowed by created_at and finished_at. Zero until known, and
	// left zero when the two sights are too far apart to say.
	LeftQueue time.Time
	// Retired reports that runs.finished_retention has passed since
	// FinishedSeen: the run's series are no longer exported, and it is
	// never fetched again.
	Retired bool

	// SeenUnfinished and Verdict belong to the ledger, the one place that
	// decides whether a run is counted (internal/ledger).
	//
	// SeenUnfinished: the shard that owns the run saw it in a status that is
	// not terminal (in this process or, with a state store, an earlier one).
	SeenUnfinished bool
	// Verdict is the ledger's decision on counting the run as finished,
	// taken once and never changed.
	Verdict Verdict
}

// Verdict is the ledger's decision on counting a finished run.
type Verdict uint8

const (
	// Undecided: the owning shard has not seen the run finished yet.
	Undecided Verdict = iota
	// Counted: counted in workflow_runs_finished_total, once.
	Counted
	// NotCounted: first seen already finished, longer ago than
	// runs.count_window (or with no finished_at): exported, never counted.
	NotCounted
)

// Sight is what one successful fetch showed for the first time, for the
// ledger to count.
type Sight struct {
	// Finished: the run is seen in a terminal status for the first time.
	Finished bool
	// LeftQueue: the run is seen out of queued for the first time after it
	// was seen queued, and State.LeftQueue holds the estimate.
	LeftQueue bool
}

// Finished reports whether the last known data is in a terminal status,
// so the run needs no more fetching.
func (s *State) Finished() bool { return s.Run != nil && s.Run.Status.Terminal() }

// FinishTime is when the run finished for pruning and the count window:
// finished_at, or when the exporter first saw it terminal if the API gave
// no finished_at. Zero while unfinished.
func (s *State) FinishTime() time.Time {
	if !s.Finished() {
		return time.Time{}
	}
	if !s.Run.FinishedAt.IsZero() {
		return s.Run.FinishedAt
	}
	return s.FinishedSeen
}

// StatusSinceTime is when the run entered its current status: finished_at
// for a finished run (when the API gave it), else when the exporter first
// saw the status.
func (s *State) StatusSinceTime() time.Time {
	if s.Finished() && !s.Run.FinishedAt.IsZero() {
		return s.Run.FinishedAt
	}
	return s.StatusSince
}

// QueueWait returns how long the run waited in queued before it started:
// from created_at to the estimated moment it left the queue. ok is false
// when it was never seen queued, has not left it, or has no created_at.
func (s *State) QueueWait() (d time.Duration, ok bool) {
	if s.LeftQueue.IsZero() || s.Run == nil || s.Run.CreatedAt.IsZero() {
		return 0, false
	}
	return max(s.LeftQueue.Sub(s.Run.CreatedAt), 0), true
}

// Succeeded records run, fetched at now. maxQueueGap is the longest time
// between the last sight of the run queued and the first sight of it not
// queued for which the moment it left the queue is estimated; past it the
// estimate would say little, and the queue wait stays unknown.
func (s *State) Succeeded(run *Run, now time.Time, maxQueueGap time.Duration) Sight {
	prev := s.Run
	if prev == nil || prev.Status != run.Status {
		s.StatusSince = now
	}
	if prev == nil || prev.HasProgress != run.HasProgress || prev.Progress != run.Progress {
		s.ProgressUpdated = now
	}
	s.Run, s.FetchOK, s.LastSuccess = run, true, now
	s.FailReason, s.NotFoundSince = "", time.Time{}

	var sight Sight
	switch {
	case run.Status == StatusQueued:
		s.QueuedSeen = now
	case !s.QueuedSeen.IsZero() && s.LeftQueue.IsZero():
		if left, ok := estimateLeftQueue(s.QueuedSeen, now, run, maxQueueGap); ok {
			s.LeftQueue, sight.LeftQueue = left, true
		}
		s.QueuedSeen = time.Time{} // estimated once, or never
	}
	if run.Status.Terminal() && s.FinishedSeen.IsZero() {
		s.FinishedSeen, sight.Finished = now, true
	}
	return sight
}

// estimateLeftQueue estimates when a run seen queued at lastQueued and not
// queued at firstNot left the queue: the midpoint of the interval, narrowed
// to the moments the API's own timestamps allow (not before created_at, not
// after finished_at). Its error is at most half the narrowed interval.
func estimateLeftQueue(lastQueued, firstNot time.Time, run *Run, maxGap time.Duration) (time.Time, bool) {
	if firstNot.Sub(lastQueued) > maxGap {
		return time.Time{}, false
	}
	lo, hi := lastQueued, firstNot
	if run.CreatedAt.After(lo) {
		lo = run.CreatedAt
	}
	if !run.FinishedAt.IsZero() && run.FinishedAt.Before(hi) {
		hi = run.FinishedAt
	}
	if hi.Before(lo) {
		hi = lo
	}
	return lo.Add(hi.Sub(lo) / 2), true
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
