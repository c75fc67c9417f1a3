package runs

import (
	"testing"
	"time"
)

func TestStatusClassification(t *testing.T) {
	for _, tc := range []struct {
		s               Status
		known, terminal bool
	}{
		{StatusQueued, true, false},
		{StatusRunning, true, false},
		{StatusFailed, true, true},
		{StatusCompleted, true, true},
		{StatusStopped, true, true},
		// An unknown status may still change: keep fetching it.
		{"paused", false, false},
		{"", false, false},
	} {
		if tc.s.Known() != tc.known || tc.s.Terminal() != tc.terminal {
			t.Errorf("%q: known %v terminal %v, want %v %v", tc.s, tc.s.Known(), tc.s.Terminal(), tc.known, tc.terminal)
		}
	}
}

func TestDuration(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name              string
		created, finished time.Time
		want              time.Duration
		ok                bool
	}{
		{"finished", t0, t0.Add(1500 * time.Millisecond), 1500 * time.Millisecond, true},
		{"unfinished", t0, time.Time{}, 0, false},
		{"no created_at", time.Time{}, t0, 0, false},
		{"finished before created", t0, t0.Add(-time.Second), 0, false},
		{"zero length", t0, t0, 0, true},
	} {
		r := Run{CreatedAt: tc.created, FinishedAt: tc.finished}
		if d, ok := r.Duration(); d != tc.want || ok != tc.ok {
			t.Errorf("%s: Duration() = %s %v, want %s %v", tc.name, d, ok, tc.want, tc.ok)
		}
	}
}

func TestStorePublishesSnapshots(t *testing.T) {
	s := NewStore()
	if snap := s.Load(); snap == nil || len(snap.Runs) != 0 || !snap.CycleEnd.IsZero() {
		t.Fatalf("initial snapshot = %+v, want empty", snap)
	}
	next := &Snapshot{Runs: []Tracked{{ID: "a"}}}
	s.Publish(next)
	if s.Load() != next {
		t.Error("Load did not return the published snapshot")
	}
}
