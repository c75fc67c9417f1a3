package runs

import (
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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

func TestStateSeesAFinishOnce(t *testing.T) {
	var s State
	running := &Run{Status: StatusRunning, WorkflowName: "wf", WorkflowType: "flow", CreatedAt: t0}
	if sight := s.Succeeded(running, t0, time.Minute); sight.Finished || !s.FinishTime().IsZero() {
		t.Fatalf("running run seen finished: %+v", sight)
	}
	done := &Run{Status: StatusFailed, WorkflowName: "wf", WorkflowType: "flow", CreatedAt: t0, FinishedAt: t0.Add(time.Minute)}
	if sight := s.Succeeded(done, t0.Add(2*time.Minute), time.Minute); !sight.Finished {
		t.Fatal("first terminal sight not reported")
	}
	if sight := s.Succeeded(done, t0.Add(3*time.Minute), time.Minute); sight.Finished {
		t.Error("terminal sight reported twice")
	}
	if !s.FinishedSeen.Equal(t0.Add(2*time.Minute)) || !s.StatusSinceTime().Equal(done.FinishedAt) || !s.FinishTime().Equal(done.FinishedAt) {
		t.Errorf("finished seen %s, status since %s; want the first sight and finished_at", s.FinishedSeen, s.StatusSinceTime())
	}
	if s.RetentionOver(t0.Add(61*time.Minute), time.Hour) || !s.RetentionOver(t0.Add(62*time.Minute), time.Hour) || s.RetentionOver(t0.Add(1000*time.Hour), 0) {
		t.Error("retention counts from the first sight of the finish, and 0 keeps runs forever")
	}
	// Without finished_at, the finish time is the first terminal sight.
	var n State
	n.Succeeded(&Run{Status: StatusStopped}, t0.Add(time.Hour), time.Minute)
	if !n.FinishTime().Equal(t0.Add(time.Hour)) {
		t.Errorf("finish time without finished_at = %s, want the first sight", n.FinishTime())
	}
}

func TestQueueWaitEstimate(t *testing.T) {
	created := t0
	for _, tc := range []struct {
		name      string
		sights    []Run // fetched one a minute, from t0+1m
		maxGap    time.Duration
		wantWait  time.Duration
		wantKnown bool
	}{
		{"midpoint of the two polls", []Run{{Status: StatusQueued}, {Status: StatusQueued}, {Status: StatusRunning}}, time.Hour,
			150 * time.Second, true}, // last queued at 2m, running at 3m: left at 2m30s
		{"narrowed by finished_at", []Run{{Status: StatusQueued}, {Status: StatusCompleted, FinishedAt: t0.Add(80 * time.Second)}}, time.Hour,
			70 * time.Second, true}, // between 1m and min(2m, 1m20s)
		{"never seen queued", []Run{{Status: StatusRunning}, {Status: StatusCompleted}}, time.Hour, 0, false},
		{"still queued", []Run{{Status: StatusQueued}, {Status: StatusQueued}}, time.Hour, 0, false},
		{"sights too far apart", []Run{{Status: StatusQueued}, {Status: StatusRunning}}, 30 * time.Second, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			left := 0
			for i, r := range tc.sights {
				r.CreatedAt = created
				if s.Succeeded(&r, t0.Add(time.Duration(i+1)*time.Minute), tc.maxGap).LeftQueue {
					left++
				}
			}
			wait, ok := s.QueueWait()
			if ok != tc.wantKnown || wait != tc.wantWait {
				t.Errorf("queue wait %s %v, want %s %v", wait, ok, tc.wantWait, tc.wantKnown)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.wantKnown]; left != want {
				t.Errorf("left the queue %d times, want %d", left, want)
			}
		})
	}
	// Queued again after it started: the wait is estimated once.
	var s State
	s.Succeeded(&Run{Status: StatusQueued, CreatedAt: created}, t0.Add(time.Minute), time.Hour)
	s.Succeeded(&Run{Status: StatusRunning, CreatedAt: created}, t0.Add(2*time.Minute), time.Hour)
	s.Succeeded(&Run{Status: StatusQueued, CreatedAt: created}, t0.Add(3*time.Minute), time.Hour)
	if s.Succeeded(&Run{Status: StatusRunning, CreatedAt: created}, t0.Add(4*time.Minute), time.Hour).LeftQueue {
		t.Error("a second queue wait was estimated")
	}
	if w, _ := s.QueueWait(); w != 90*time.Second {
		t.Errorf("queue wait %s, want the first one, 1m30s", w)
	}
}

func TestStateTimestamps(t *testing.T) {
	var s State
	s.Succeeded(&Run{Status: StatusQueued}, t0, time.Minute)
	s.Succeeded(&Run{Status: StatusRunning, Progress: 0, HasProgress: true}, t0.Add(time.Minute), time.Minute)
	s.Succeeded(&Run{Status: StatusRunning, Progress: 0, HasProgress: true}, t0.Add(2*time.Minute), time.Minute)
	if !s.StatusSince.Equal(t0.Add(time.Minute)) || !s.ProgressUpdated.Equal(t0.Add(time.Minute)) {
		t.Errorf("status since %s, progress updated %s, want both at t0+1m", s.StatusSince, s.ProgressUpdated)
	}
	s.Failed("timeout", false, t0.Add(3*time.Minute), 0)
	s.Succeeded(&Run{Status: StatusRunning, Progress: 5, HasProgress: true}, t0.Add(4*time.Minute), time.Minute)
	if !s.StatusSince.Equal(t0.Add(time.Minute)) || !s.ProgressUpdated.Equal(t0.Add(4*time.Minute)) {
		t.Errorf("after a failure and progress: status since %s, progress updated %s", s.StatusSince, s.ProgressUpdated)
	}
}

func TestTotalsBuckets(t *testing.T) {
	tot := NewTotals()
	key := TotalKey{"wf", "flow", StatusCompleted}
	for _, secs := range []float64{0.5, 1, 1.5, 86400, 86401} {
		tot.AddFinish(Finish{Key: key, Duration: time.Duration(secs * float64(time.Second)), HasDuration: true})
	}
	tot.AddFinish(Finish{Key: key}) // duration unknown: counted, not observed
	got := tot.Finished[key]
	if got.Runs != 6 || got.Duration.Count != 5 || got.Duration.Sum != 0.5+1+1.5+86400+86401 {
		t.Errorf("runs %d observed %d sum %v", got.Runs, got.Duration.Count, got.Duration.Sum)
	}
	want := make([]uint64, len(DurationBuckets)+1)
	want[0] = 2                      // 0.5 and 1: le="1" includes its bound
	want[1] = 1                      // 1.5
	want[len(DurationBuckets)-1] = 1 // 86400
	want[len(DurationBuckets)] = 1   // above the last bound
	if !reflect.DeepEqual(got.Duration.Buckets, want) {
		t.Errorf("buckets %v, want %v", got.Duration.Buckets, want)
	}
	c := tot.Clone()
	c.Finished[key].Duration.Buckets[0] = 99
	c.Finished[key].Duration.Native[0] = 99
	if tot.Finished[key].Duration.Buckets[0] == 99 || tot.Finished[key].Duration.Native[0] == 99 {
		t.Error("Clone shares buckets")
	}
}

// TestNativeBucketsMatchClientGolang: the native buckets are the ones
// client_golang would fill for the same observations at schema 3.
func TestNativeBucketsMatchClientGolang(t *testing.T) {
	ref := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ref", Help: "ref",
		// The smallest schema whose growth factor is at most 1.1 is 3.
		NativeHistogramBucketFactor:    1.1,
		NativeHistogramMaxBucketNumber: 0,
	})
	h := NewHistogram()
	values := []float64{0, 1e-9, 0.001, 0.5, 1, 1.0905, 1.0906, 2, 3, 59.99, 60, 61, 3600, 86400, 1e7}
	for i := range 200 {
		values = append(values, float64(i)*1.37+0.01)
	}
	for _, v := range values {
		ref.Observe(v)
		h.Observe(v)
	}
	var m dto.Metric
	if err := ref.Write(&m); err != nil {
		t.Fatal(err)
	}
	rh := m.GetHistogram()
	if rh.GetSchema() != NativeSchema {
		t.Fatalf("reference schema %d, want %d", rh.GetSchema(), NativeSchema)
	}
	want := map[int]uint64{}
	idx, count := 0, int64(0)
	deltas := rh.GetPositiveDelta()
	di := 0
	for _, span := range rh.GetPositiveSpan() {
		idx += int(span.GetOffset())
		for range span.GetLength() {
			count += deltas[di]
			di++
			if count != 0 {
				want[idx] = uint64(count)
			}
			idx++
		}
	}
	if !reflect.DeepEqual(h.Native, want) || h.ZeroCount != rh.GetZeroCount() {
		t.Errorf("native buckets %v zero %d, client_golang %v zero %d", h.Native, h.ZeroCount, want, rh.GetZeroCount())
	}
}
