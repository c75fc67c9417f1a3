package ledger

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// counter records what a memory-backed ledger counts.
type counter struct {
	mu sync.Mutex
	c  runs.Counts
}

func (c *counter) AddCounts(x runs.Counts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c.Finishes = append(c.c.Finishes, x.Finishes...)
	c.c.QueueWaits = append(c.c.QueueWaits, x.QueueWaits...)
}

// store is a state store that commits at once.
type store struct {
	states map[string]runs.State
	counts runs.Counts
}

func newStore() *store { return &store{states: map[string]runs.State{}} }

func (s *store) GetMany(ids []string) (map[string]runs.State, error) {
	out := map[string]runs.State{}
	for _, id := range ids {
		if st, ok := s.states[id]; ok {
			out[id] = st
		}
	}
	return out, nil
}

func (s *store) Put(st runs.State, c runs.Counts) {
	s.states[st.ID] = st
	s.counts.Finishes = append(s.counts.Finishes, c.Finishes...)
	s.counts.QueueWaits = append(s.counts.QueueWaits, c.QueueWaits...)
}

func (s *store) Delete(id string) { delete(s.states, id) }

func (s *store) EachExcept(skip func(string) bool, fn func(runs.State) bool) error {
	ids := make([]string, 0, len(s.states))
	for id := range s.states {
		if skip == nil || !skip(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		if !fn(s.states[id]) {
			break
		}
	}
	return nil
}

// sight is one successful fetch: the run as the API answers at a moment.
type sight struct {
	at  time.Time
	run runs.Run
}

func run(status runs.Status, finished time.Time) runs.Run {
	return runs.Run{Status: status, WorkflowName: "wf", WorkflowType: "flow", CreatedAt: t0.Add(-time.Hour), FinishedAt: finished}
}

// TestWhatCounts is DESIGN §8 "What counts", rule by rule: each case is a
// sequence of sights of one run by one ledger, and what it must count.
func TestWhatCounts(t *testing.T) {
	done := t0.Add(-10 * time.Minute) // finished_at of most cases
	cases := []struct {
		name     string
		window   time.Duration
		owns     bool
		sights   []sight
		counted  int  // finishes counted
		duration bool // the finish has a duration
		verdict  runs.Verdict
	}{
		{"seen unfinished, then finished: counted", time.Hour, true,
			[]sight{{t0, run(runs.StatusRunning, time.Time{})}, {t0.Add(time.Minute), run(runs.StatusCompleted, t0.Add(30*time.Second))}},
			1, true, runs.Counted},
		{"seen unfinished, finished long before it was seen finished: counted all the same", time.Minute, true,
			[]sight{{t0, run(runs.StatusRunning, time.Time{})}, {t0.Add(24 * time.Hour), run(runs.StatusFailed, t0.Add(time.Minute))}},
			1, true, runs.Counted},
		{"first seen finished within the window: counted", time.Hour, true,
			[]sight{{t0, run(runs.StatusFailed, done)}}, 1, true, runs.Counted},
		{"first seen finished at the window's edge: counted", 10 * time.Minute, true,
			[]sight{{t0, run(runs.StatusFailed, done)}}, 1, true, runs.Counted},
		{"backfill: first seen finished before the window: never counted", 5 * time.Minute, true,
			[]sight{{t0, run(runs.StatusFailed, done)}, {t0.Add(time.Minute), run(runs.StatusFailed, done)}}, 0, false, runs.NotCounted},
		{"window 0: only runs seen unfinished count", 0, true,
			[]sight{{t0, run(runs.StatusFailed, t0)}}, 0, false, runs.NotCounted},
		{"terminal without finished_at, seen unfinished: counted without a duration", time.Hour, true,
			[]sight{{t0, run(runs.StatusRunning, time.Time{})}, {t0.Add(time.Minute), run(runs.StatusStopped, time.Time{})}},
			1, false, runs.Counted},
		{"terminal without finished_at, first seen so: the window cannot admit it", time.Hour, true,
			[]sight{{t0, run(runs.StatusStopped, time.Time{})}}, 0, false, runs.NotCounted},
		{"an unknown status is not terminal, and counts as unfinished", time.Minute, true,
			[]sight{{t0, run("paused", time.Time{})}, {t0.Add(time.Hour), run(runs.StatusCompleted, t0)}}, 1, true, runs.Counted},
		{"not the owner: never counted", time.Hour, false,
			[]sight{{t0, run(runs.StatusRunning, time.Time{})}, {t0.Add(time.Minute), run(runs.StatusCompleted, t0)}}, 0, false, runs.Undecided},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c counter
			l := New(Options{Window: tc.window, Owns: func(string) bool { return tc.owns }, Counter: &c})
			st := runs.State{ID: "r"}
			for _, s := range tc.sights {
				r := s.run
				l.Save(&st, st.Succeeded(&r, s.at, time.Hour), s.at)
			}
			if len(c.c.Finishes) != tc.counted || st.Verdict != tc.verdict {
				t.Fatalf("counted %d (verdict %d), want %d (verdict %d)", len(c.c.Finishes), st.Verdict, tc.counted, tc.verdict)
			}
			if tc.counted == 1 {
				f := c.c.Finishes[0]
				if f.HasDuration != tc.duration || f.RunID != "r" || f.Key.Status != st.Run.Status || !f.FinishedAt.Equal(st.Run.FinishedAt) {
					t.Errorf("finish %+v", f)
				}
			}
			if !tc.owns && st.SeenUnfinished {
				t.Error("a shard that does not own the run marked it seen unfinished")
			}
		})
	}
}

// A queue wait is counted once, by the owner, when the run is first seen
// out of the queue.
func TestQueueWaitCountedOnceByTheOwner(t *testing.T) {
	for _, owns := range []bool{true, false} {
		var c counter
		l := New(Options{Window: time.Hour, Owns: func(string) bool { return owns }, Counter: &c})
		st := runs.State{ID: "q"}
		for i, status := range []runs.Status{runs.StatusQueued, runs.StatusRunning, runs.StatusRunning, runs.StatusCompleted} {
			r := run(status, time.Time{})
			at := t0.Add(time.Duration(i) * time.Minute)
			l.Save(&st, st.Succeeded(&r, at, time.Hour), at)
		}
		want := 0
		if owns {
			want = 1
		}
		if len(c.c.QueueWaits) != want {
			t.Fatalf("owns %v: %d queue waits counted, want %d", owns, len(c.c.QueueWaits), want)
		}
		if owns {
			q := c.c.QueueWaits[0]
			// created t0-1h, queued at t0, running at t0+1m: left at t0+30s.
			if q.Wait != time.Hour+30*time.Second || !q.LeftQueue.Equal(t0.Add(30*time.Second)) || q.RunID != "q" {
				t.Errorf("queue wait %+v", q)
			}
		}
	}
}

// TestDroppedRuns: a run taken off the list is remembered only while
// re-adding it could count it again, with a store and without one.
func TestDroppedRuns(t *testing.T) {
	for _, withStore := range []bool{false, true} {
		var c counter
		s := newStore()
		o := Options{Window: time.Hour, Counter: &c}
		if withStore {
			o.Store = s
		}
		l := New(o)
		counted := func() int {
			if withStore {
				return len(s.counts.Finishes)
			}
			return len(c.c.Finishes)
		}
		// "recent" finished 10 minutes before it was seen: counted, and
		// remembered until its finish is an hour old. "old" was not
		// counted, "running" is unfinished: both forgotten at once.
		recent := runs.State{ID: "recent"}
		r := run(runs.StatusFailed, t0.Add(-10*time.Minute))
		l.Save(&recent, recent.Succeeded(&r, t0, time.Hour), t0)
		old := runs.State{ID: "old"}
		o2 := run(runs.StatusFailed, t0.Add(-48*time.Hour))
		l.Save(&old, old.Succeeded(&o2, t0, time.Hour), t0)
		running := runs.State{ID: "running"}
		r3 := run(runs.StatusRunning, time.Time{})
		l.Save(&running, running.Succeeded(&r3, t0, time.Hour), t0)
		if counted() != 1 {
			t.Fatalf("store %v: %d counted, want 1", withStore, counted())
		}
		if !l.Drop(recent, t0) || l.Drop(old, t0) || l.Drop(running, t0) {
			t.Fatalf("store %v: only the counted, recently finished run is kept", withStore)
		}
		if withStore && len(s.states) != 1 {
			t.Fatalf("store holds %d records, want 1", len(s.states))
		}
		// Re-added within the window: known as counted, not counted again.
		back := l.Load([]string{"recent", "old"}, t0.Add(time.Minute))["recent"]
		if back.Verdict != runs.Counted {
			t.Errorf("store %v: re-added run %+v, want it known as counted", withStore, back)
		}
		again := run(runs.StatusFailed, t0.Add(-10*time.Minute))
		l.Save(&back, back.Succeeded(&again, t0.Add(time.Minute), time.Hour), t0.Add(time.Minute))
		if counted() != 1 {
			t.Errorf("store %v: re-added run counted again", withStore)
		}
		// Dropped again and pruned once the window has passed: gone, and
		// re-adding it counts nothing (it finished before the window).
		l.Drop(back, t0.Add(time.Minute))
		l.Prune(t0.Add(49 * time.Minute))
		if l.Kept() != 1 {
			t.Errorf("store %v: pruned before the window passed", withStore)
		}
		l.Prune(t0.Add(50 * time.Minute))
		if l.Kept() != 0 || (withStore && len(s.states) != 0) {
			t.Errorf("store %v: %d kept, %d stored after the window", withStore, l.Kept(), len(s.states))
		}
		fresh := l.Load([]string{"recent"}, t0.Add(2*time.Hour))["recent"]
		late := run(runs.StatusFailed, t0.Add(-10*time.Minute))
		l.Save(&fresh, fresh.Succeeded(&late, t0.Add(2*time.Hour), time.Hour), t0.Add(2*time.Hour))
		if counted() != 1 || fresh.Verdict != runs.NotCounted {
			t.Errorf("store %v: re-added after the window: %d counted, verdict %d", withStore, counted(), fresh.Verdict)
		}
	}
}

// With a store, counts go to the store with the state (which commits both
// at once and hands the counts on), never straight to the counter; and a
// finished run restored undecided (stored by a shard that did not own it)
// is decided when it comes into memory, with that moment as its first
// sight.
func TestStoreBackedLedger(t *testing.T) {
	var c counter
	s := newStore()
	owner := false
	l := New(Options{Window: time.Hour, Owns: func(string) bool { return owner }, Store: s, Counter: &c})
	probed := runs.State{ID: "moved"}
	r := run(runs.StatusCompleted, t0.Add(-5*time.Minute))
	l.Save(&probed, probed.Succeeded(&r, t0, time.Hour), t0)
	if s.states["moved"].Verdict != runs.Undecided || len(s.counts.Finishes) != 0 {
		t.Fatalf("a probe on a shard that does not own the run decided: %+v", s.states["moved"])
	}
	// A reshard: this shard owns it now. Within the window: counted once.
	owner = true
	got := l.Load([]string{"moved"}, t0.Add(10*time.Minute))["moved"]
	if got.Verdict != runs.Counted || len(s.counts.Finishes) != 1 || len(c.c.Finishes) != 0 {
		t.Errorf("restored: %+v, %d counted in the store, %d at once", got, len(s.counts.Finishes), len(c.c.Finishes))
	}
	// Loaded again (a restart): not counted twice.
	l.Load([]string{"moved"}, t0.Add(11*time.Minute))
	if len(s.counts.Finishes) != 1 {
		t.Errorf("counted %d times", len(s.counts.Finishes))
	}
	// The same after the window: not counted.
	old := runs.State{ID: "moved-late"}
	owner = false
	l.Save(&old, old.Succeeded(&r, t0, time.Hour), t0)
	owner = true
	if got := l.Load([]string{"moved-late"}, t0.Add(2*time.Hour))["moved-late"]; got.Verdict != runs.NotCounted {
		t.Errorf("moved after the window: %+v", got)
	}
}

// The start-up sweep deletes the records of runs not in memory but those
// counting still needs.
func TestSweep(t *testing.T) {
	s := newStore()
	l := New(Options{Window: time.Hour, Store: s})
	put := func(id string, status runs.Status, finished time.Time, v runs.Verdict) {
		s.states[id] = runs.State{ID: id, Run: &runs.Run{ID: id, Status: status, FinishedAt: finished}, Verdict: v}
	}
	put("tracked", runs.StatusRunning, time.Time{}, runs.Undecided)
	put("gone-running", runs.StatusRunning, time.Time{}, runs.Undecided)
	put("gone-old", runs.StatusCompleted, t0.Add(-2*time.Hour), runs.Counted)
	put("gone-not-counted", runs.StatusCompleted, t0.Add(-time.Minute), runs.NotCounted)
	put("gone-recent", runs.StatusCompleted, t0.Add(-time.Minute), runs.Counted)
	known := func(id string) bool { return id == "tracked" }
	deleted, err := l.Sweep(t0, time.Hour, known, map[string]struct{}{"tracked": {}})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for id := range s.states {
		left = append(left, id)
	}
	sort.Strings(left)
	if deleted != 3 || len(left) != 2 || left[0] != "gone-recent" || left[1] != "tracked" || l.Kept() != 1 {
		t.Errorf("deleted %d, left %v, kept %d; want 3 deleted, gone-recent and tracked left", deleted, left, l.Kept())
	}
}
