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
	// kept are the runs out of memory whose record must stay: counted, and
	// finished less than the window ago, or (after the start-up sweep)
	// fetched lately. With a store the record is there; without one, this
	// map is the record, about 100 bytes a run.
	kept map[string]keptRun
	// err is the first error reading the store, for the start to report.
	err error
}

// keptRun is what the ledger keeps in memory of a run out of memory.
type keptRun struct {
	// finished is when a counted run finished: its record goes once that
	// is count_window ago (the window in force then, so a window made
	// longer before that keeps it longer). Zero for a run not counted.
	finished time.Time
	// until keeps the record at least this long.
	until time.Time
}

// expiry is when the record of k may go. Called with l.mu held.
func (l *Ledger) expiry(k keptRun) time.Time {
	if k.finished.IsZero() || k.until.After(k.finished.Add(l.window)) {
		return k.until
	}
	return k.finished.Add(l.window)
}

// New returns a ledger.
func New(o Options) *Ledger {
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	if o.Owns == nil {
		o.Owns = func(string) bool { return true }
	}
	return &Ledger{logger: o.Logger, owns: o.Owns, store: o.Store, counter: o.Counter, window: o.Window, kept: map[string]keptRun{}}
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
			l.mu.Lock()
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
		}
		for id, st := range stored {
			out[id] = st
		}
	}
	l.mu.Lock()
	for _, id := range ids {
		if k, ok := l.kept[id]; ok {
			delete(l.kept, id) // in memory again: the entry is the record
			if l.store == nil && !k.finished.IsZero() {
				// All a memory-backed ledger knows: counted, and when it
				// finished, which Drop needs if it goes again before it
				// is fetched.
				out[id] = runs.State{ID: id, Verdict: runs.Counted, FinishedSeen: k.finished}
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
	return l.drop(st, now, time.Time{})
}

// drop is Drop keeping the record at least until until. Called without
// l.mu held.
func (l *Ledger) drop(st runs.State, now, until time.Time) (kept bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := keptRun{until: until}
	if st.Verdict == runs.Counted {
		k.finished = st.FinishTime()
		if k.finished.IsZero() {
			// Counted and not finished: a run restored from this map that
			// goes again before it is fetched (FinishedSeen is then its
			// finish time), or a record that says so. Kept for a window
			// from now rather than risk counting it twice.
			k.finished = st.FinishedSeen
			if k.finished.IsZero() {
				k.finished = now
			}
		}
	}
	if now.Before(l.expiry(k)) {
		l.kept[st.ID] = k
		return true
	}
	if l.store != nil {
		l.store.Delete(st.ID)
	}
	return false
}

// Err returns the first error met reading the state store, if any: at a
// start, a damaged record of a tracked run is a damaged store.
func (l *Ledger) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Prune forgets the records of dropped runs that can no longer be counted
// again. The poller calls it once a cycle; it costs one map walk over the
// dropped runs still kept (those finished within the window).
func (l *Ledger) Prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, k := range l.kept {
		if !now.Before(l.expiry(k)) {
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
// that is not in memory is kept or deleted by the rule of Drop, and kept
// at least until recent after its last good fetch: a probe-only run probed
// before the restart keeps what counting needs of it (seen unfinished, say)
// for as long as it would have stayed in memory. So the store holds the
// runs being tracked plus what counting needs, whatever earlier processes
// left, and the next start reads no more than that. The caller sweeps only
// once the run list is known (a late ids_file is read first). It returns
// how many records it deleted.
func (l *Ledger) Sweep(now time.Time, recent time.Duration, known func(id string) bool, knownNow map[string]struct{}) (deleted int, err error) {
	if l.store == nil {
		return 0, nil
	}
	// knownNow, a copy of the runs in memory, decides inside the read
	// transaction which records to decode; known, which takes the poller's
	// lock, is asked only outside it (a run may have come into memory
	// meanwhile), never while the transaction holds the store's map.
	var out []runs.State
	err = l.store.EachExcept(func(id string) bool { _, ok := knownNow[id]; return ok }, func(st runs.State) bool {
		out = append(out, runs.State{ID: st.ID, Verdict: st.Verdict, Run: st.Run, FinishedSeen: st.FinishedSeen, LastSuccess: st.LastSuccess})
		return true
	})
	for _, st := range out {
		if known(st.ID) {
			continue
		}
		var until time.Time
		if !st.LastSuccess.IsZero() {
			until = st.LastSuccess.Add(recent)
		}
		if !l.drop(st, now, until) {
			deleted++
		}
	}
	return deleted, err
}
