package collector

import (
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

func TestGathererRendersEachSnapshotOnce(t *testing.T) {
	var current atomic.Pointer[runs.Snapshot]
	current.Store(snapshotOf(fetchedRun(baseRun(runs.StatusRunning))))
	g := NewGatherer(current.Load)

	first, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := g.Gather()
	if &first[0] != &again[0] {
		t.Error("the same snapshot was rendered twice")
	}

	current.Store(snapshotOf(fetchedRun(finishedRun(runs.StatusFailed))))
	next, _ := g.Gather()
	if &next[0] == &first[0] {
		t.Fatal("a new snapshot was not rendered")
	}
	failed := 0.0
	for _, mf := range next {
		if mf.GetName() != "workflow_run_status" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "status" && l.GetValue() == "failed" {
					failed = m.GetGauge().GetValue()
				}
			}
		}
	}
	if failed != 1 {
		t.Errorf("status failed = %v after the new snapshot, want 1", failed)
	}
}

func TestConcatKeepsEveryFamily(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "other_total", Help: "h"})
	reg.MustRegister(c)
	snap := snapshotOf(fetchedRun(baseRun(runs.StatusRunning)))
	mfs, err := Concat(reg, NewGatherer(func() *runs.Snapshot { return snap })).Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		if names[mf.GetName()] {
			t.Errorf("family %s twice", mf.GetName())
		}
		names[mf.GetName()] = true
	}
	for _, want := range []string{"other_total", "workflow_run_status", "workflow_runs_exporter_tracked_runs"} {
		if !names[want] {
			t.Errorf("family %s missing", want)
		}
	}
}
