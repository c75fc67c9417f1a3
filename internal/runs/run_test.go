package runs

import (
	"reflect"
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

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestDuration(t *testing.T) {
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

func TestProgressRatioAndProblems(t *testing.T) {
	for _, tc := range []struct {
		name     string
		run      Run
		ratio    float64
		ok       bool
		problems []string
	}{
		{"in range", Run{Status: StatusRunning, Progress: 25, HasProgress: true}, 0.25, true, nil},
		{"done", Run{Status: StatusCompleted, Progress: 100, HasProgress: true}, 1, true, nil},
		{"none", Run{Status: StatusQueued}, 0, false, nil},
		{"above the maximum is left out", Run{Status: StatusRunning, Progress: 150, HasProgress: true}, 0, false,
			[]string{"progress 150 is above api.progress_max"}},
		{"unknown status and backwards times", Run{Status: "paused", CreatedAt: t0, FinishedAt: t0.Add(-time.Second)}, 0, false,
			[]string{`unknown status "paused"`, "finished_at is before created_at"}},
	} {
		ratio, ok := tc.run.ProgressRatio(100)
		if ratio != tc.ratio || ok != tc.ok {
			t.Errorf("%s: ProgressRatio = %v %v, want %v %v", tc.name, ratio, ok, tc.ratio, tc.ok)
		}
		if got := tc.run.Problems(100); !reflect.DeepEqual(got, tc.problems) {
			t.Errorf("%s: Problems = %q, want %q", tc.name, got, tc.problems)
		}
	}
}

func TestStateCountsAFinishOnce(t *testing.T) {
	var s State
	running := &Run{Status: StatusRunning, WorkflowName: "wf", WorkflowType: "flow", CreatedAt: t0}
	if f := s.Succeeded(running, t0); f != nil || s.Counted {
		t.Fatalf("running run counted: %+v", f)
	}
	done := &Run{Status: StatusFailed, WorkflowName: "wf", WorkflowType: "flow", CreatedAt: t0, FinishedAt: t0.Add(time.Minute)}
	f := s.Succeeded(done, t0.Add(2*time.Minute))
	want := &Finish{Key: TotalKey{"wf", "flow", StatusFailed}, Duration: time.Minute, HasDuration: true}
	if !reflect.DeepEqual(f, want) || !s.Counted {
		t.Fatalf("finish = %+v, want %+v", f, want)
	}
	if f := s.Succeeded(done, t0.Add(3*time.Minute)); f != nil {
		t.Errorf("counted again: %+v", f)
	}
	if !s.FinishedSeen.Equal(t0.Add(2*time.Minute)) || !s.StatusSinceTime().Equal(done.FinishedAt) {
		t.Errorf("finished seen %s, status since %s; want the first sight and finished_at", s.FinishedSeen, s.StatusSinceTime())
	}
	if s.RetentionOver(t0.Add(61*time.Minute), time.Hour) || !s.RetentionOver(t0.Add(62*time.Minute), time.Hour) || s.RetentionOver(t0.Add(1000*time.Hour), 0) {
		t.Error("retention counts from the first sight of the finish, and 0 keeps runs forever")
	}
}

func TestStateTimestamps(t *testing.T) {
	var s State
	s.Succeeded(&Run{Status: StatusQueued}, t0)
	s.Succeeded(&Run{Status: StatusRunning, Progress: 0, HasProgress: true}, t0.Add(time.Minute))
	s.Succeeded(&Run{Status: StatusRunning, Progress: 0, HasProgress: true}, t0.Add(2*time.Minute))
	if !s.StatusSince.Equal(t0.Add(time.Minute)) || !s.ProgressUpdated.Equal(t0.Add(time.Minute)) {
		t.Errorf("status since %s, progress updated %s, want both at t0+1m", s.StatusSince, s.ProgressUpdated)
	}
	s.Failed("timeout", false, t0.Add(3*time.Minute), 0)
	s.Succeeded(&Run{Status: StatusRunning, Progress: 5, HasProgress: true}, t0.Add(4*time.Minute))
	if !s.StatusSince.Equal(t0.Add(time.Minute)) || !s.ProgressUpdated.Equal(t0.Add(4*time.Minute)) {
		t.Errorf("after a failure and progress: status since %s, progress updated %s", s.StatusSince, s.ProgressUpdated)
	}
}

func TestTotalsBuckets(t *testing.T) {
	tot := Totals{}
	key := TotalKey{"wf", "flow", StatusCompleted}
	for _, secs := range []float64{0.5, 1, 1.5, 86400, 86401} {
		tot.Add(Finish{Key: key, Duration: time.Duration(secs * float64(time.Second)), HasDuration: true})
	}
	tot.Add(Finish{Key: key}) // duration unknown: counted, not observed
	got := tot[key]
	if got.Count != 6 || got.Observed != 5 || got.Sum != 0.5+1+1.5+86400+86401 {
		t.Errorf("count %d observed %d sum %v", got.Count, got.Observed, got.Sum)
	}
	want := make([]uint64, len(DurationBuckets)+1)
	want[0] = 2                      // 0.5 and 1: le="1" includes its bound
	want[1] = 1                      // 1.5
	want[len(DurationBuckets)-1] = 1 // 86400
	want[len(DurationBuckets)] = 1   // above the last bound
	if !reflect.DeepEqual(got.Buckets, want) {
		t.Errorf("buckets %v, want %v", got.Buckets, want)
	}
	c := tot.Clone()
	c[key].Buckets[0] = 99
	if tot[key].Buckets[0] == 99 {
		t.Error("Clone shares buckets")
	}
}
