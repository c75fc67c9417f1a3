// Package ledger is the one place that decides whether a run is counted in
// the lifecycle totals (workflow_runs_finished_total, the finished-duration
// and queue-wait histograms), and what must be remembered of a run so that
// it is never counted twice (DESIGN §8 "What counts" and "Bounded").
//
// The rules, in one place:
//   - Only the shard that owns a run counts it, also when it is probed.
//   - A run the owner saw unfinished is counted when it is seen finished.
//     What a state store remembers from before a restart counts as seen.
//   - A run first seen already finished is counted only if it finished at
//     most runs.count_window before that first sight; a terminal run
//     without finished_at cannot be admitted by the window.
//   - A queue wait is observed once, when the owner first sees the run out
//     of queued after it saw it queued (runs.State.Succeeded estimates it).
//   - A run that leaves memory keeps a record only while re-adding it could
//     count it again: counted, and finished less than count_window ago.
//
// The ledger is backed by the state store when --storage.path is set, and
// by memory otherwise; the rules are the same. With a store, what is
// counted becomes visible on /metrics only once it is committed (the store
// hands it on), so the counters never go down, even after a crash.
package ledger

import (
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// StateStore is the state store as the ledger uses it;
// *statestore.Store implements it. Put and Delete queue a change and never
// wait on the disk.
type StateStore interface {
	// GetMany returns the stored states of ids that have one.
	GetMany(ids []string) (map[string]runs.State, error)
	// Put queues st, and counts c in the same commit; once the commit is
	// durable, the store hands c on to the run metrics store.
	Put(st runs.State, c runs.Counts)
	// Delete queues the removal of a run's record.
	Delete(id string)
	// EachExcept calls fn with every stored state but those whose key
	// (the lower-case run ID) skip reports, in key order, until fn returns
	// false.
	EachExcept(skip func(key string) bool, fn func(st runs.State) bool) error
}

// Counter receives what was counted; the run metrics store implements it.
type Counter interface{ AddCounts(runs.Counts) }

// Options configure a Ledger.
type Options struct {
	Logger log.Logger
	// Window is runs.count_window.
	Window time.Duration
	// Owns reports whether this shard owns a run.
	Owns func(id string) bool
	// Store backs the ledger; nil keeps it in memory, and Counter receives
	// counts at once.
	Store StateStore
	// Counter receives the counts of a memory-backed ledger. (A
	// store-backed ledger's counts reach the run metrics store through the
	// store, after they are committed.)
	Counter Counter
}

// Ledger decides what is counted and keeps what counting needs. Safe for
// concurrent use.
type Ledger struct {
	logger  log.Logger
	owns    func(id string) bool
	store   StateStore
	counter Counter

	mu     sync.Mutex
	window time.Duration
	// kept are the runs out of memory whose record must stay until the
	// given time: counted, and finished less than the window ago. With a
	// store the record is there; without one, this map is the record (a
	// counted run), about 80 bytes each.
	kept map[string]time.Time
}

// New returns a ledger.
func New(o Options) *Ledger {
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	if o.Owns == nil {
		o.Owns = func(string) bool { return true }
	}
	return &Ledger{logger: o.Logger, owns: o.Owns, store: o.Store, counter: o.Counter, window: o.Window, kept: map[string]time.Time{}}
}

// SetWindow changes runs.count_window (on reload). Runs already decided
// stay as they are.
func (l *Ledger) SetWindow(w time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.window = w
}

// Load returns what the ledger remembers of runs coming into memory (listed,
// or probed): their stored states, or for a memory-backed ledger the
// counted mark of a run dropped within the window. A finished run the
// owner has not decided on (moved to this shard, stored by a shard that did
// not own it) is decided now: now is its first sight by its owner.
func (l *Ledger) Load(ids []string, now time.Time) map[string]runs.State {
	out := map[string]runs.State{}
	if l.store != nil {
		stored, err := l.store.GetMany(ids)
		if err != nil {
			level.Warn(l.logger).Log("msg", "reading run states from the state store failed; fetching them again", "runs", len(ids), "err", err)
		}
		for id, st := range stored {
			out[id] = st
		}
	}
	l.mu.Lock()
	for _, id := range ids {
		if _, ok := l.kept[id]; ok {
			delete(l.kept, id) // in memory again: the entry is the record
			if l.store == nil {
				out[id] = runs.State{ID: id, Verdict: runs.Counted}
			}
		}
	}
	l.mu.Unlock()
	for id, st := range out {
		if st.Finished() && st.Verdict == runs.Undecided && l.owns(id) {
			l.Save(&st, runs.Sight{Finished: true}, now)
			out[id] = st
		}
	}
	return out
}

// Save records a change of a run's state: after a fetch (sight says what it
// showed for the first time) or any other change (a zero sight). It
// decides what the change counts, marks the decision in st, and hands st
// and the counts on: to the state store, which commits both at once, or
// without one to the counter.
func (l *Ledger) Save(st *runs.State, sight runs.Sight, now time.Time) {
	var c runs.Counts
	if l.owns(st.ID) && st.Run != nil {
		r := st.Run
		if !r.Status.Terminal() {
			st.SeenUnfinished = true
		}
		if sight.Finished && st.Verdict == runs.Undecided {
			st.Verdict = l.verdict(st, now)
			if st.Verdict == runs.Counted {
				f := runs.Finish{RunID: st.ID, Key: runs.TotalKey{WorkflowName: r.WorkflowName, WorkflowType: r.WorkflowType, Status: r.Status},
					FinishedAt: r.FinishedAt}
				// A run seen unfinished whose finish time the API does not
				// give is counted, but its duration is unknown.
				f.Duration, f.HasDuration = r.Duration()
				c.Finishes = append(c.Finishes, f)
			}
		}
		if sight.LeftQueue {
			if wait, ok := st.QueueWait(); ok {
				c.QueueWaits = append(c.QueueWaits, runs.QueueWait{RunID: st.ID,
					Key: runs.WorkflowKey{WorkflowName: r.WorkflowName, WorkflowType: r.WorkflowType}, LeftQueue: st.LeftQueue, Wait: wait})
			}
		}
	}
	if l.store != nil {
		l.store.Put(*st, c)
		return
	}
	if !c.Empty() && l.counter != nil {
		l.counter.AddCounts(c)
	}
}

// verdict decides on counting a run seen finished for the first time.
func (l *Ledger) verdict(st *runs.State, now time.Time) runs.Verdict {
	if st.SeenUnfinished {
		return runs.Counted
	}
	l.mu.Lock()
	window := l.window
	l.mu.Unlock()
	// First seen already finished: added late, restored without a store,
	// moved to this shard, probed for the first time. Without finished_at
	// the moment is unknown, so the window cannot admit it.
	fin := st.Run.FinishedAt
	if fin.IsZero() || window <= 0 || now.Sub(fin) > window {
		return runs.NotCounted
	}
	return runs.Counted
}

// Drop is called when a run leaves memory: taken off the list, or a
// probe-only run no longer probed. Its record stays only while re-adding
// the run could count it again (counted, and finished less than
// count_window ago); anything else is forgotten at once, because re-adding
// the run then decides the same way from the API's answer.
// It reports whether the record stays.
func (l *Ledger) Drop(st runs.State, now time.Time) (kept bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until, keep := l.keepUntil(st); keep && now.Before(until) {
		l.kept[st.ID] = until
		return true
	}
	if l.store != nil {
		l.store.Delete(st.ID)
	}
	return false
}

// keepUntil says how long the record of a dropped run must stay. Called
// with l.mu held.
func (l *Ledger) keepUntil(st runs.State) (time.Time, bool) {
	if st.Verdict != runs.Counted {
		return time.Time{}, false
	}
	fin := st.FinishTime()
	if fin.IsZero() {
		// Counted but not finished cannot happen; a record that says so
		// is kept rather than risk counting the run twice, for one window.
		fin = st.LastSuccess
	}
	return fin.Add(l.window), true
}

// Prune forgets the records of dropped runs that can no longer be counted
// again. The poller calls it once a cycle; it costs one map walk over the
// dropped runs still kept (those finished within the window).
func (l *Ledger) Prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, until := range l.kept {
		if !now.Before(until) {
			delete(l.kept, id)
			if l.store != nil {
				l.store.Delete(id)
			}
		}
	}
}

// Kept returns how many dropped runs the ledger still remembers.
func (l *Ledger) Kept() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.kept)
}

// Sweep goes once over the state store at start: the record of each run
// that is not in memory (neither listed nor probed since the start) is kept
// or deleted by the rule of Drop. So the store holds the runs being tracked
// plus what counting needs, whatever earlier processes left, and the next
// start reads no more than that. (A probe-only run therefore loses its
// state at a restart unless it was counted within the window: its next
// probe fetches it again, and the ledger decides the same way.) It returns
// how many records it deleted.
func (l *Ledger) Sweep(now time.Time, inMemory func(id string) bool) (deleted int, err error) {
	if l.store == nil {
		return 0, nil
	}
	var out []runs.State
	err = l.store.EachExcept(inMemory, func(st runs.State) bool {
		out = append(out, runs.State{ID: st.ID, Verdict: st.Verdict, Run: st.Run, FinishedSeen: st.FinishedSeen, LastSuccess: st.LastSuccess})
		return true
	})
	for _, st := range out {
		if !l.Drop(st, now) {
			deleted++
		}
	}
	return deleted, err
}
