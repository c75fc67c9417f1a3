package poller

// Regressions found in a review of the ledger and the poller: sequences
// that counted a run twice, or kept a poll cycle from fetching a run.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Found in review: memory ledger, a counted run re-added and taken off again before its
// next fetch is forgotten (keepUntil with Run==nil), then counted again.
func TestRunReaddedAndDroppedBeforeItsFetchIsNotCountedTwice(t *testing.T) {
	h := newHarness(t, false, "r")
	h.api.set("r", ok(runs.StatusRunning, 1), ok(runs.StatusCompleted, 100))
	h.cycle()
	h.clock.advance(time.Minute)
	h.cycle()
	if h.out.finished() != 1 {
		t.Fatalf("want 1 counted, got %d", h.out.finished())
	}
	h.s.IDs = nil
	h.apply() // dropped: kept by the ledger
	h.s.IDs = []string{"r"}
	h.apply() // back: Verdict Counted, Run nil
	h.s.IDs = nil
	h.apply() // dropped again before its fetch
	t.Logf("kept after second drop: %d", h.led.Kept())
	h.s.IDs = []string{"r"}
	h.apply()
	h.cycle()
	if h.out.finished() != 1 {
		t.Errorf("run counted %d times, want 1", h.out.finished())
	}
}

// Found in review: a probe that never got a turn (deadline before a slot) keeps a
// tracked run out of the next poll cycle.
func TestAProbeWithoutATurnLeavesTheRunDue(t *testing.T) {
	h := newHarness(t, false, "r")
	h.api.set("r", ok(runs.StatusRunning, 1))
	h.cycle()
	h.clock.advance(2 * time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.p.Probe(ctx, "r") // never gets a slot
	before := h.api.callsOf("r")
	h.cycle()
	if got := h.api.callsOf("r"); got != before+1 {
		t.Errorf("tracked run fetched %d times in the cycle after a refused probe, want 1", got-before)
	}
}

// Found in review: memory ledger, a probe-only run counted and let go (kept), probed
// again; while that fetch is under way the LRU lets it go again: it is
// counted a second time.
func TestAProbeOnlyRunLetGoMidFetchIsNotCountedTwice(t *testing.T) {
	h := newHarness(t, false)
	h.s.ProbeMaxRuns = 1
	h.s.Interval = time.Minute
	h.apply()
	ctx := context.Background()
	done1 := ok(runs.StatusCompleted, 100)
	done1.run.FinishedAt = clockStart.Add(2 * time.Minute)
	h.api.set("p", ok(runs.StatusRunning, 1), done1)
	h.probe(ctx, "p")
	h.clock.advance(3 * time.Minute)
	h.probe(ctx, "p") // completed, counted
	if h.out.finished() != 1 {
		t.Fatalf("want 1, got %d", h.out.finished())
	}
	h.api.set("q", ok(runs.StatusRunning, 1))
	h.probe(ctx, "q") // p let go, kept by the ledger
	if h.p.Known("p") {
		t.Fatal("p still known")
	}
	hold := make(chan struct{})
	h.api.mu.Lock()
	h.api.hold = map[string]chan struct{}{"p": hold}
	h.api.mu.Unlock()
	done := make(chan struct{})
	go func() { h.probe(ctx, "p"); close(done) }()
	waitFor(t, "p in flight", func() bool { return h.api.inFlightNow() == 1 })
	h.api.set("s", ok(runs.StatusRunning, 1))
	h.probe(ctx, "s") // LRU lets p go mid-fetch
	close(hold)
	<-done
	if h.out.finished() != 1 {
		t.Errorf("p counted %d times, want 1", h.out.finished())
	}
}

// Found in review: a listed run counted, then taken off the list (the
// ledger keeps it), then probed. Probe let go the entry it had just made
// (its probe time still unset), and the probe's fetch counted the run
// again without a store; with one, the entry left memory on every probe.
// It must be counted once and stay in memory as a probe-only run.
func TestAProbeOfARunTakenOffTheListIsNotCountedTwice(t *testing.T) {
	for _, withJournal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%v", withJournal), func(t *testing.T) {
			h := newHarness(t, withJournal, "r")
			done := ok(runs.StatusCompleted, 100)
			done.run.FinishedAt = clockStart.Add(time.Minute)
			h.api.set("r", ok(runs.StatusRunning, 1), done)
			h.cycle()
			h.clock.advance(2 * time.Minute)
			h.cycle()
			if h.out.finished() != 1 {
				t.Fatalf("want 1 counted, got %d", h.out.finished())
			}
			h.clock.advance(5 * time.Minute)
			h.s.IDs = nil
			h.apply()
			h.clock.advance(5 * time.Minute)
			h.probe(context.Background(), "r")
			if h.out.finished() != 1 {
				t.Errorf("run counted %d times, want 1", h.out.finished())
			}
			if !h.p.Known("r") || h.metric(t, "workflow_runs_exporter_probe_runs") != 1 {
				t.Errorf("probed run not kept in memory as a probe-only run")
			}
		})
	}
}

// Found in review: store with count_window 0, probe-only: seen unfinished by a probe,
// restart, it finishes before the next probe: never counted.
func TestAProbeOnlyRunSeenUnfinishedCountsAcrossARestart(t *testing.T) {
	h := newHarness(t, true)
	h.s.CountWindow = 0
	h.apply()
	h.api.set("p", ok(runs.StatusRunning, 1))
	h.probe(context.Background(), "p")
	h.clock.advance(time.Minute)
	again := h.restart(t)
	again.s.CountWindow = 0
	again.apply()
	again.led.Sweep(again.clock.now(), again.p.ProbeIdle(), again.p.Known, again.p.KnownIDs())
	again.api.set("p", ok(runs.StatusCompleted, 100))
	again.probe(context.Background(), "p")
	if again.out.finished() != 1 {
		t.Errorf("probe-only run seen unfinished (with a store) counted %d times, want 1", again.out.finished())
	}
}
