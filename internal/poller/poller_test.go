package poller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeAPI answers from a script per run and records every call.
type fakeAPI struct {
	mu       sync.Mutex
	answers  map[string][]answer // consumed in order; the last one repeats
	calls    map[string]int
	starts   []time.Time
	inFlight int
	maxIn    int
	delay    time.Duration
}

type answer struct {
	run *runs.Run
	err error
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{answers: map[string][]answer{}, calls: map[string]int{}}
}

func (f *fakeAPI) set(id string, a ...answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[id] = a
}

func (f *fakeAPI) GetRun(ctx context.Context, id string) (*runs.Run, []string, error) {
	f.mu.Lock()
	f.calls[id]++
	f.starts = append(f.starts, time.Now())
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	list := f.answers[id]
	a := list[0]
	if len(list) > 1 {
		f.answers[id] = list[1:]
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if a.run != nil {
		r := *a.run
		return &r, nil, nil
	}
	return nil, nil, a.err
}

func (f *fakeAPI) callsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

func ok(status runs.Status, progress float64) answer {
	return answer{run: &runs.Run{Status: status, WorkflowName: "wf", Progress: progress, HasProgress: true}}
}

func fail(reason api.Reason) answer { return answer{err: &api.Error{Reason: reason}} }

type harness struct {
	p     *Poller
	api   *fakeAPI
	store *runs.Store
	reg   *prometheus.Registry
	logs  *syncbuffer.Buffer
	s     Settings
}

func newHarness(ids ...string) *harness {
	h := &harness{api: newFakeAPI(), store: runs.NewStore(), reg: prometheus.NewRegistry(), logs: &syncbuffer.Buffer{}}
	h.p = New(log.NewLogfmtLogger(h.logs), h.store, NewMetrics(h.reg), Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Attempts: 3})
	h.s = Settings{Fetcher: h.api, IDs: ids, Interval: time.Hour, Concurrency: 4, MaxRequestsPerSecond: 1000, ProgressMax: 100}
	return h
}

func (h *harness) cycle() *runs.Snapshot {
	h.p.cycle(context.Background(), h.s)
	return h.store.Load()
}

func tracked(s *runs.Snapshot, id string) runs.Tracked {
	for _, t := range s.Runs {
		if t.ID == id {
			return t
		}
	}
	panic("run not tracked: " + id)
}

func (h *harness) fetchErrors(reason api.Reason) float64 {
	return testutil.ToFloat64(h.p.metrics.fetchErrors.WithLabelValues(string(reason)))
}

func TestTerminalRunsAreFetchedUntilSeenTerminalOnce(t *testing.T) {
	h := newHarness("done", "later", "failed")
	h.api.set("done", ok(runs.StatusCompleted, 100))
	h.api.set("later", ok(runs.StatusQueued, 0), ok(runs.StatusRunning, 50), ok(runs.StatusStopped, 60))
	h.api.set("failed", ok(runs.StatusFailed, 10))
	for range 5 {
		h.cycle()
	}
	for id, want := range map[string]int{"done": 1, "failed": 1, "later": 3} {
		if got := h.api.callsOf(id); got != want {
			t.Errorf("%s fetched %d times, want %d", id, got, want)
		}
	}
	snap := h.store.Load()
	if r := tracked(snap, "later").Run; r == nil || r.Status != runs.StatusStopped || r.Progress != 60 {
		t.Errorf("later = %+v, want its last values (stopped, 60)", r)
	}
}

func TestFailedFetchKeepsLastGoodValues(t *testing.T) {
	for _, reason := range api.Reasons {
		if reason == api.ReasonNotFound {
			continue
		}
		t.Run(string(reason), func(t *testing.T) {
			h := newHarness("flaky", "healthy")
			h.api.set("flaky", ok(runs.StatusRunning, 30), fail(reason))
			h.api.set("healthy", ok(runs.StatusRunning, 10), ok(runs.StatusRunning, 20))
			h.cycle()
			snap := h.cycle()

			flaky := tracked(snap, "flaky")
			if flaky.FetchOK || flaky.Run == nil || flaky.Run.Progress != 30 {
				t.Errorf("flaky = %+v (run %+v), want fetch failed with the last good progress 30", flaky, flaky.Run)
			}
			if healthy := tracked(snap, "healthy"); !healthy.FetchOK || healthy.Run.Progress != 20 {
				t.Errorf("healthy = %+v, want fetched with progress 20", healthy)
			}
			if got := h.fetchErrors(reason); got != 1 {
				t.Errorf("fetch_errors_total{reason=%q} = %v, want 1", reason, got)
			}
			retried := reason == api.ReasonTimeout || reason == api.ReasonNetwork || reason == api.ReasonServerError || reason == api.ReasonRateLimited
			wantCalls := 2
			if retried {
				wantCalls = 1 + 3 // the first cycle, then three attempts
			}
			if got := h.api.callsOf("flaky"); got != wantCalls {
				t.Errorf("flaky fetched %d times, want %d (retried: %v)", got, wantCalls, retried)
			}
		})
	}
}

func TestRetrySucceedsWithinTheCycle(t *testing.T) {
	h := newHarness("r")
	h.api.set("r", fail(api.ReasonServerError), fail(api.ReasonTimeout), ok(runs.StatusRunning, 5))
	snap := h.cycle()
	if r := tracked(snap, "r"); !r.FetchOK {
		t.Fatalf("run not fetched after two transient failures: %+v", r)
	}
	if got := h.fetchErrors(api.ReasonServerError) + h.fetchErrors(api.ReasonTimeout); got != 0 {
		t.Errorf("fetch errors = %v, want 0: a fetch that succeeds on retry did not fail", got)
	}
}

func TestNotFoundRemovesTheRunsData(t *testing.T) {
	h := newHarness("gone")
	h.api.set("gone", ok(runs.StatusRunning, 30), fail(api.ReasonNotFound))
	h.cycle()
	snap := h.cycle()
	if g := tracked(snap, "gone"); g.FetchOK || g.Run != nil {
		t.Errorf("gone = %+v, want no data and fetch failed", g)
	}
	if got := h.fetchErrors(api.ReasonNotFound); got != 1 {
		t.Errorf("not_found errors = %v, want 1", got)
	}
}

func TestRepeatedFailuresWarnOnce(t *testing.T) {
	h := newHarness("r")
	h.api.set("r", fail(api.ReasonBadResponse), fail(api.ReasonBadResponse), fail(api.ReasonBadResponse),
		fail(api.ReasonNotFound), ok(runs.StatusRunning, 1))
	for range 5 {
		h.cycle()
	}
	logs := h.logs.String()
	// bad_response starts, not_found replaces it: two warnings, not four.
	if n := strings.Count(logs, "level=warn"); n != 2 {
		t.Errorf("%d warnings for 3 bad_response then 1 not_found, want 2:\n%s", n, logs)
	}
	if !strings.Contains(logs, "fetching run works again") {
		t.Errorf("recovery not logged:\n%s", logs)
	}
	if got := h.fetchErrors(api.ReasonBadResponse); got != 3 {
		t.Errorf("bad_response errors = %v, want 3: every failure is counted", got)
	}
}

func TestUnauthorizedLogsOneLinePerCycle(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e"}
	h := newHarness(ids...)
	for _, id := range ids {
		h.api.set(id, fail(api.ReasonUnauthorized))
	}
	h.cycle()
	h.cycle()
	logs := h.logs.String()
	if n := strings.Count(logs, "level=warn"); n != 2 {
		t.Errorf("%d warnings in two cycles, want 2 (one per cycle):\n%s", n, logs)
	}
	if !strings.Contains(logs, "runs=5") {
		t.Errorf("warning does not count the runs affected:\n%s", logs)
	}
	for _, id := range ids {
		if got := h.api.callsOf(id); got != 2 {
			t.Errorf("%s fetched %d times in two cycles, want 2: no retry storm on 401", id, got)
		}
	}
}

func TestRetryAfterPausesEveryRequest(t *testing.T) {
	h := newHarness("limited", "b", "c", "d")
	h.s.Concurrency = 1
	pause := 300 * time.Millisecond
	h.api.set("limited", answer{err: &api.Error{Reason: api.ReasonRateLimited, RetryAfter: pause}}, ok(runs.StatusRunning, 1))
	for _, id := range []string{"b", "c", "d"} {
		h.api.set(id, ok(runs.StatusRunning, 1))
	}
	h.cycle()
	// Order of the calls: limited (429), then, after the pause, everything
	// else. No request may start within the pause.
	starts := h.api.starts
	if len(starts) != 5 {
		t.Fatalf("%d requests, want 5", len(starts))
	}
	if gap := starts[1].Sub(starts[0]); gap < pause {
		t.Errorf("next request %s after the 429, want at least the Retry-After %s", gap, pause)
	}
	if snap := h.store.Load(); !tracked(snap, "limited").FetchOK {
		t.Error("rate-limited run was not fetched after the pause")
	}
}

func TestConcurrencyAndRateLimits(t *testing.T) {
	var ids []string
	for i := range 40 {
		ids = append(ids, fmt.Sprint("run-", i))
	}
	h := newHarness(ids...)
	h.s.Concurrency = 3
	h.s.MaxRequestsPerSecond = 100
	h.api.delay = 10 * time.Millisecond
	for _, id := range ids {
		h.api.set(id, ok(runs.StatusRunning, 1))
	}
	h.cycle()
	if h.api.maxIn > 3 {
		t.Errorf("%d requests in flight at once, want at most poll.concurrency 3", h.api.maxIn)
	}
	// The token bucket spaces requests 1/100 s apart: a 100 ms window holds
	// 10 starts, 11 at its edges, and a few more if workers were scheduled
	// late. Without the limit, three workers at 10 ms a request start 30.
	starts := h.api.starts
	for i := range starts {
		n := 0
		for j := i; j < len(starts) && starts[j].Sub(starts[i]) < 100*time.Millisecond; j++ {
			n++
		}
		if n > 14 {
			t.Fatalf("%d requests started within 100ms, want at most 14 at 100 requests/s", n)
		}
	}
}

func TestApplyKeepsStateOfUnchangedRuns(t *testing.T) {
	h := newHarness("done", "old")
	h.api.set("done", ok(runs.StatusCompleted, 100))
	h.api.set("old", ok(runs.StatusRunning, 1))
	h.api.set("new", ok(runs.StatusQueued, 0))
	h.cycle()
	h.s.IDs = []string{"done", "new"}
	snap := h.cycle()
	if got := h.api.callsOf("done"); got != 1 {
		t.Errorf("finished run fetched %d times across a reload, want 1", got)
	}
	if len(snap.Runs) != 2 || snap.Runs[0].ID != "done" || snap.Runs[1].ID != "new" {
		t.Errorf("tracked = %+v, want done and new", snap.Runs)
	}
	if r := tracked(snap, "done").Run; r == nil || r.Status != runs.StatusCompleted {
		t.Errorf("done lost its state: %+v", r)
	}
}

func TestProgressAboveMaxIsLeftOut(t *testing.T) {
	h := newHarness("r")
	h.api.set("r", ok(runs.StatusRunning, 150))
	snap := h.cycle()
	if r := tracked(snap, "r").Run; r.HasProgress {
		t.Errorf("progress 150 with progress_max 100 kept: %+v", r)
	}
	if !strings.Contains(h.logs.String(), "above api.progress_max") {
		t.Errorf("no warning logged:\n%s", h.logs.String())
	}
}

func TestRunStopsPromptlyWhenCancelled(t *testing.T) {
	h := newHarness("slow", "b")
	h.api.delay = time.Hour
	h.api.set("slow", ok(runs.StatusRunning, 1))
	h.api.set("b", ok(runs.StatusRunning, 1))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.p.Run(ctx)
		close(done)
	}()
	h.p.Apply(h.s)
	time.Sleep(50 * time.Millisecond) // requests are in flight now
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancellation")
	}
	if h.p.Ready() {
		t.Error("ready after a cycle that was cut short by shutdown")
	}
}

func TestRunBecomesReadyAfterTheFirstCycle(t *testing.T) {
	h := newHarness("a")
	h.api.set("a", ok(runs.StatusRunning, 1))
	h.s.Interval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.p.Run(ctx)
	if h.p.Ready() {
		t.Fatal("ready before any cycle")
	}
	h.p.Apply(h.s)
	deadline := time.Now().Add(5 * time.Second)
	for h.api.callsOf("a") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("fewer than 3 cycles in 5s at a 10ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !h.p.Ready() {
		t.Error("not ready after several cycles")
	}
	cancel()
}
