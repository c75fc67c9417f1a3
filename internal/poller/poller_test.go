package poller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/fetch"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/ledger"
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
	release  chan struct{}            // when set, every request waits for it
	hold     map[string]chan struct{} // requests for a run wait for its channel
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
	if len(list) == 0 {
		f.mu.Unlock()
		panic("no answer scripted for " + id)
	}
	a := list[0]
	if len(list) > 1 {
		f.answers[id] = list[1:]
	}
	delay, release, hold := f.delay, f.release, f.hold[id]
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if a.run != nil {
		r := *a.run
		r.ID = id
		return &r, nil, nil
	}
	return nil, nil, a.err
}

func (f *fakeAPI) callsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

func (f *fakeAPI) totalCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

func (f *fakeAPI) inFlightNow() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inFlight
}

// ok answers with a run created two minutes before the test clock starts
// and, if terminal, finished a minute later: within runs.count_window, so
// a run first seen finished is counted unless the test says otherwise.
func ok(status runs.Status, progress float64) answer {
	r := &runs.Run{Status: status, WorkflowName: "wf", WorkflowType: "flow", Progress: progress, HasProgress: true,
		CreatedAt: clockStart.Add(-2 * time.Minute)}
	if status.Terminal() {
		r.FinishedAt = r.CreatedAt.Add(time.Minute)
	}
	return answer{run: r}
}

func fail(reason api.Reason) answer { return answer{err: &api.Error{Reason: reason}} }

// publisher records what the poller hands on, as the run metrics store
// would receive it.
type publisher struct {
	mu         sync.Mutex
	states     map[string]runs.State
	updates    int
	finishes   []runs.Finish
	queueWaits []runs.QueueWait
	max        float64
	resets     int
}

func (p *publisher) Update(st *runs.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.states[st.ID] = *st
	p.updates++
}

func (p *publisher) Delete(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		delete(p.states, id)
	}
}

func (p *publisher) Reset(progressMax float64, states []*runs.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.max = progressMax
	p.states = map[string]runs.State{}
	for _, st := range states {
		p.states[st.ID] = *st
	}
	p.resets++
}

func (p *publisher) AddCounts(c runs.Counts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finishes = append(p.finishes, c.Finishes...)
	p.queueWaits = append(p.queueWaits, c.QueueWaits...)
}

func (p *publisher) state(id string) (runs.State, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.states[id]
	return st, ok
}

func (p *publisher) finished() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.finishes)
}

// journal is an in-memory stand-in for the state store: what was put is
// there at once, and what is counted is counted as soon as it is put.
type journal struct {
	mu     sync.Mutex
	states map[string]runs.State
	puts   int
	out    *publisher
}

func newJournal(out *publisher) *journal { return &journal{states: map[string]runs.State{}, out: out} }

func (j *journal) GetMany(ids []string) (map[string]runs.State, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string]runs.State{}
	for _, id := range ids {
		if st, ok := j.states[id]; ok {
			out[id] = st
		}
	}
	return out, nil
}

func (j *journal) Put(st runs.State, c runs.Counts) {
	j.mu.Lock()
	j.states[st.ID] = st
	j.puts++
	j.mu.Unlock()
	if !c.Empty() {
		j.out.AddCounts(c)
	}
}

func (j *journal) Delete(id string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.states, id)
}

func (j *journal) EachExcept(skip func(string) bool, fn func(runs.State) bool) error {
	j.mu.Lock()
	states := make([]runs.State, 0, len(j.states))
	for id, st := range j.states {
		if skip == nil || !skip(id) {
			states = append(states, st)
		}
	}
	j.mu.Unlock()
	for _, st := range states {
		if !fn(st) {
			break
		}
	}
	return nil
}

func (j *journal) len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.states)
}

func (j *journal) get(id string) (runs.State, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	st, ok := j.states[id]
	return st, ok
}

// clock is a settable time for the run states' timestamps.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

// clockStart is when the test clock starts.
var clockStart = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func newClock() *clock {
	c := &clock{}
	c.t.Store(clockStart.UnixNano())
	return c
}

type harness struct {
	p     *Poller
	api   *fakeAPI
	out   *publisher
	j     *journal
	led   *ledger.Ledger
	reg   *prometheus.Registry
	logs  *syncbuffer.Buffer
	clock *clock
	s     Settings
	ctx   context.Context
	owns  func(id string) bool
}

// newHarness returns a poller over a fake API with ids tracked. Its retries
// run in the background until the test ends.
func newHarness(t *testing.T, withJournal bool, ids ...string) *harness {
	return newShardHarness(t, withJournal, nil, ids...)
}

// newShardHarness is newHarness for a shard that owns the runs owns says
// it does (all of them when nil).
func newShardHarness(t *testing.T, withJournal bool, owns func(string) bool, ids ...string) *harness {
	h := &harness{api: newFakeAPI(), out: &publisher{states: map[string]runs.State{}}, reg: prometheus.NewRegistry(),
		logs: &syncbuffer.Buffer{}, clock: newClock(), owns: owns}
	if withJournal {
		h.j = newJournal(h.out)
	}
	h.s = Settings{IDs: ids, Interval: time.Hour, Concurrency: 4, MaxRequestsPerSecond: 1000, ProgressMax: 100,
		NotFoundGrace: 15 * time.Minute, CountWindow: time.Hour, ProbeMaxRuns: 50000}
	h.p = h.newPoller()
	h.p.Apply(h.api, h.s)
	h.startRetries(t)
	return h
}

// newPoller returns a new poller over the harness's API, journal and
// clock, as a restarted process would have.
func (h *harness) newPoller() *Poller {
	lo := ledger.Options{Logger: log.NewNopLogger(), Counter: h.out, Window: time.Hour, Owns: h.owns}
	if h.j != nil {
		lo.Store = h.j
	}
	h.led = ledger.New(lo)
	return New(Options{
		Logger: log.NewLogfmtLogger(h.logs), Registerer: h.reg, MetricsStore: h.out, Ledger: h.led, Now: h.clock.now,
		Backoff: fetch.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Attempts: 3},
	})
}

// startRetries sends retries in the background, as Run does, for the
// cycles the test runs itself, until the test ends; then it waits for
// every request and retry to be over.
func (h *harness) startRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h.ctx = ctx
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.p.runRetries(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		h.p.attempts.Wait()
	})
}

// cycle runs one poll cycle with the current settings, and waits until
// each of its runs has been answered, retries included.
func (h *harness) cycle() {
	<-h.p.startCycle(h.ctx).done
}

func (h *harness) apply() { h.p.Apply(h.api, h.s) }

// restart returns a harness over the same journal (the state store) and
// clock, with a new poller, ledger, API and run metrics store: a new
// process. Without a journal nothing carries over but the clock. Call
// Apply on it.
func (h *harness) restart(t *testing.T) *harness {
	again := &harness{api: newFakeAPI(), out: &publisher{states: map[string]runs.State{}}, reg: prometheus.NewRegistry(),
		logs: &syncbuffer.Buffer{}, clock: h.clock, s: h.s, owns: h.owns}
	if h.j != nil {
		again.j = &journal{states: h.j.states, out: again.out}
	}
	again.p = again.newPoller()
	again.startRetries(t)
	return again
}

func (h *harness) state(t *testing.T, id string) runs.State {
	t.Helper()
	st, ok := h.out.state(id)
	if !ok {
		t.Fatalf("run %s is not published", id)
	}
	return st
}

// probe probes run id, failing the test if the probe is refused.
func (h *harness) probe(ctx context.Context, id string) runs.State {
	st, err := h.p.Probe(ctx, id)
	if err != nil {
		panic("probe of " + id + " refused: " + err.Error())
	}
	return st
}

// metric returns the value of the one series of the named family.
func (h *harness) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

func (h *harness) fetchErrors(reason api.Reason) float64 {
	return testutil.ToFloat64(h.p.metrics.fetchErrors.WithLabelValues(string(reason)))
}

func TestTerminalRunsAreFetchedUntilSeenTerminalOnce(t *testing.T) {
	h := newHarness(t, false, "done", "later", "failed")
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
	if r := h.state(t, "later").Run; r == nil || r.Status != runs.StatusStopped || r.Progress != 60 {
		t.Errorf("later = %+v, want its last values (stopped, 60)", r)
	}
}

func TestFailedFetchKeepsLastGoodValues(t *testing.T) {
	for _, reason := range api.Reasons {
		if reason == api.ReasonNotFound {
			continue // has a grace of its own, below
		}
		t.Run(string(reason), func(t *testing.T) {
			h := newHarness(t, false, "flaky", "healthy")
			h.api.set("flaky", ok(runs.StatusRunning, 30), fail(reason))
			h.api.set("healthy", ok(runs.StatusRunning, 10), ok(runs.StatusRunning, 20))
			h.cycle()
			h.cycle()

			flaky := h.state(t, "flaky")
			if flaky.FetchOK || flaky.Run == nil || flaky.Run.Progress != 30 || flaky.FailReason != string(reason) {
				t.Errorf("flaky = %+v (run %+v), want fetch failed (%s) with the last good progress 30", flaky, flaky.Run, reason)
			}
			if healthy := h.state(t, "healthy"); !healthy.FetchOK || healthy.Run.Progress != 20 {
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
	h := newHarness(t, false, "r")
	h.api.set("r", fail(api.ReasonServerError), fail(api.ReasonTimeout), ok(runs.StatusRunning, 5))
	h.cycle()
	if r := h.state(t, "r"); !r.FetchOK {
		t.Fatalf("run not fetched after two transient failures: %+v", r)
	}
	if got := h.fetchErrors(api.ReasonServerError) + h.fetchErrors(api.ReasonTimeout); got != 0 {
		t.Errorf("fetch errors = %v, want 0: a fetch that succeeds on retry did not fail", got)
	}
}

// TestNotFoundKeepsDataForTheGrace: a glitch in the API (one 404) must not
// resolve an alert, but a deleted run must not linger; a run never fetched
// has no data at all.
func TestNotFoundKeepsDataForTheGrace(t *testing.T) {
	h := newHarness(t, false, "gone", "never")
	h.api.set("gone", ok(runs.StatusRunning, 30), fail(api.ReasonNotFound))
	h.api.set("never", fail(api.ReasonNotFound))
	h.cycle()
	h.clock.advance(time.Minute)
	h.cycle()
	if g := h.state(t, "gone"); g.FetchOK || g.Run == nil || g.FailReason != "not_found" {
		t.Errorf("gone after one 404 = %+v, want its data kept, fetch failed with not_found", g)
	}
	h.clock.advance(14 * time.Minute)
	h.cycle()
	if g := h.state(t, "gone"); g.Run == nil {
		t.Error("data dropped 14m after the first 404, within the 15m grace")
	}
	h.clock.advance(time.Minute) // 15 m since the first 404
	h.cycle()
	if g := h.state(t, "gone"); g.FetchOK || g.Run != nil {
		t.Errorf("gone after the grace = %+v, want no data", g)
	}
	if n := h.state(t, "never"); n.Run != nil || n.FetchOK || n.FailReason != "not_found" {
		t.Errorf("never fetched = %+v, want no data, fetch failed with not_found", n)
	}
	if got := h.fetchErrors(api.ReasonNotFound); got != 7 {
		t.Errorf("not_found errors = %v, want 7 (3 for gone, 4 for never)", got)
	}
}

func TestRepeatedFailuresWarnOnce(t *testing.T) {
	h := newHarness(t, false, "r")
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
	h := newHarness(t, false, ids...)
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
	h := newHarness(t, false, "limited", "b", "c", "d")
	h.s.Concurrency = 1
	h.apply()
	pause := 300 * time.Millisecond
	h.api.set("limited", answer{err: &api.Error{Reason: api.ReasonRateLimited, RetryAfter: pause}}, ok(runs.StatusRunning, 1))
	for _, id := range []string{"b", "c", "d"} {
		h.api.set(id, ok(runs.StatusRunning, 1))
	}
	before := time.Now()
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
	if !h.state(t, "limited").FetchOK {
		t.Error("rate-limited run was not fetched after the pause")
	}
	// The pause is logged once, with its length, and exported.
	if n := strings.Count(h.logs.String(), "API asked to pause all requests"); n != 1 || !strings.Contains(h.logs.String(), "for=300ms") {
		t.Errorf("pause logged %d times, want once with for=300ms:\n%s", n, h.logs.String())
	}
	until := h.metric(t, "workflow_runs_exporter_api_paused_until_timestamp_seconds")
	if want := float64(before.Add(pause).Unix()); until < want || until > want+5 {
		t.Errorf("paused_until = %v, want about %v", until, want)
	}
	if n := h.metric(t, "workflow_runs_exporter_api_pauses_total"); n != 1 {
		t.Errorf("pauses_total = %v, want 1", n)
	}
}

func TestConcurrencyAndRateLimits(t *testing.T) {
	var ids []string
	for i := range 40 {
		ids = append(ids, fmt.Sprint("run-", i))
	}
	h := newHarness(t, false, ids...)
	h.s.Concurrency = 3
	h.s.MaxRequestsPerSecond = 100
	h.apply()
	h.api.delay = 10 * time.Millisecond
	for _, id := range ids {
		h.api.set(id, ok(runs.StatusRunning, 1))
	}
	h.cycle()
	if h.api.maxIn > 3 {
		t.Errorf("%d requests in flight at once, want at most poll.concurrency 3", h.api.maxIn)
	}
	// The token bucket (burst 1) hands out the 40 tokens 1/100 s apart:
	// the last request cannot start before 390 ms after the first. A loaded
	// machine only makes starts later, never earlier, so this bound holds
	// without a margin; without the limit, three slots at 10 ms a request
	// finish 40 requests in about 140 ms.
	starts := h.api.starts
	if took := starts[len(starts)-1].Sub(starts[0]); took < 390*time.Millisecond {
		t.Errorf("40 requests started within %s; at 100 requests/s that takes at least 390ms", took)
	}
}

func TestApplyKeepsStateOfUnchangedRuns(t *testing.T) {
	h := newHarness(t, false, "done", "old")
	h.api.set("done", ok(runs.StatusCompleted, 100))
	h.api.set("old", ok(runs.StatusRunning, 1))
	h.api.set("new", ok(runs.StatusQueued, 0))
	h.cycle()
	h.s.IDs = []string{"done", "new"}
	h.apply()
	// The new run is published at once, before it is fetched, and the
	// removed one is gone.
	if st := h.state(t, "new"); st.FetchOK || st.Run != nil {
		t.Errorf("new run before its first fetch = %+v, want fetch_success 0 and no data", st)
	}
	if _, ok := h.out.state("old"); ok {
		t.Error("removed run still published")
	}
	h.cycle()
	if got := h.api.callsOf("done"); got != 1 {
		t.Errorf("finished run fetched %d times across a reload, want 1", got)
	}
	if r := h.state(t, "done").Run; r == nil || r.Status != runs.StatusCompleted {
		t.Errorf("done lost its state: %+v", r)
	}
	if got := testutil.ToFloat64(h.p.metrics.trackedRuns); got != 2 {
		t.Errorf("tracked_runs = %v, want 2", got)
	}
}

func TestProgressMaxChangeRendersEveryRunAgain(t *testing.T) {
	h := newHarness(t, false, "a", "b")
	h.api.set("a", ok(runs.StatusCompleted, 100))
	h.api.set("b", ok(runs.StatusRunning, 5))
	h.cycle()
	resets := h.out.resets
	h.s.ProgressMax = 1000
	h.apply()
	if h.out.max != 1000 || h.out.resets != resets+1 || len(h.out.states) != 2 {
		t.Errorf("after a progress_max change: max %v, %d resets with %d runs; want 1000 and one reset with both runs", h.out.max, h.out.resets-resets, len(h.out.states))
	}
	h.apply()
	if h.out.resets != resets+1 {
		t.Error("a reload without a progress_max change rendered every run again")
	}
}

func TestDriftIsLoggedWhenItChanges(t *testing.T) {
	h := newHarness(t, false, "r")
	h.api.set("r", ok(runs.StatusRunning, 150), ok(runs.StatusRunning, 160), ok("paused", 10))
	for range 3 {
		h.cycle()
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "above api.progress_max"); n != 2 {
		t.Errorf("progress above max logged %d times, want 2 (150 then 160):\n%s", n, logs)
	}
	if !strings.Contains(logs, `unknown status \"paused\"`) {
		t.Errorf("unknown status not logged:\n%s", logs)
	}
}

// TestPublishesAsItFetches: during a long cycle every run's data is handed
// on as soon as it is fetched, not when the cycle ends.
func TestPublishesAsItFetches(t *testing.T) {
	h := newHarness(t, false, "fast", "slow")
	h.api.set("fast", ok(runs.StatusRunning, 1))
	h.api.set("slow", ok(runs.StatusRunning, 1))
	slow := make(chan struct{})
	h.api.hold = map[string]chan struct{}{"slow": slow}
	done := make(chan struct{})
	go func() {
		h.cycle()
		close(done)
	}()
	waitFor(t, "the fast run published while the slow one is in flight", func() bool {
		st, ok := h.out.state("fast")
		return ok && st.FetchOK
	})
	select {
	case <-done:
		t.Fatal("the cycle ended although a request is held")
	default:
	}
	close(slow)
	<-done
	if st := h.state(t, "slow"); !st.FetchOK {
		t.Errorf("slow = %+v, want fetched", st)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRunStopsPromptlyWhenCancelled(t *testing.T) {
	h := newHarness(t, false, "slow", "b")
	h.api.delay = time.Hour
	h.api.set("slow", ok(runs.StatusRunning, 1))
	h.api.set("b", ok(runs.StatusRunning, 1))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.p.Run(ctx)
		close(done)
	}()
	waitFor(t, "both requests in flight", func() bool { return h.api.inFlightNow() == 2 })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancellation")
	}
	if h.p.Ready() {
		t.Error("ready although no run was attempted to the end")
	}
	if st := h.state(t, "slow"); st.FailReason != "" {
		t.Errorf("a request cut short by shutdown was recorded as a failure: %+v", st)
	}
}

func TestReadyOnceEveryRunWasAttempted(t *testing.T) {
	h := newHarness(t, false, "a", "b")
	h.api.set("a", ok(runs.StatusRunning, 1))
	h.api.set("b", fail(api.ReasonServerError))
	if h.p.Ready() {
		t.Fatal("ready before any fetch")
	}
	h.cycle()
	if !h.p.Ready() {
		t.Error("not ready after every run was attempted (one failed)")
	}
	// Runs added later do not make a ready exporter unready: that would
	// take it out of its Service on every reload.
	h.s.IDs = append(h.s.IDs, "c")
	h.apply()
	if !h.p.Ready() {
		t.Error("unready after a run was added")
	}
}

func TestNoRunsIsReadyAtOnce(t *testing.T) {
	h := newHarness(t, false)
	if !h.p.Ready() {
		t.Error("with no runs configured (probe-only), not ready")
	}
}

// TestRunLoopPollsOnTheInterval runs the real loop: cycles repeat on the
// interval, and Apply starts one at once.
func TestRunLoopPollsOnTheInterval(t *testing.T) {
	h := newHarness(t, false, "a")
	h.api.set("a", ok(runs.StatusRunning, 1))
	h.s.Interval = 20 * time.Millisecond
	h.apply()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.p.Run(ctx)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	waitFor(t, "three cycles", func() bool { return h.api.callsOf("a") >= 3 })
	if testutil.ToFloat64(h.p.metrics.lastCycle) == 0 {
		t.Error("last_poll_cycle_timestamp_seconds not set after cycles")
	}
	h.api.set("b", ok(runs.StatusRunning, 1))
	h.s.IDs, h.s.Interval = []string{"a", "b"}, time.Hour
	h.apply()
	waitFor(t, "the added run fetched without waiting for the interval", func() bool { return h.api.callsOf("b") == 1 })
}

// TestFinishedRunsAreCountedOnce: across cycles, reloads, and removing and
// re-adding the run ID, with and without a state store.
func TestFinishedRunsAreCountedOnce(t *testing.T) {
	for _, withJournal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%v", withJournal), func(t *testing.T) {
			h := newHarness(t, withJournal, "r", "other")
			h.api.set("r", ok(runs.StatusRunning, 50), ok(runs.StatusFailed, 60))
			h.api.set("other", ok(runs.StatusRunning, 1))
			h.cycle()
			if n := h.out.finished(); n != 0 {
				t.Fatalf("%d counted while running", n)
			}
			h.cycle()
			h.cycle()
			h.apply() // a reload with the same runs
			h.cycle()
			h.s.IDs = []string{"other"} // removed ...
			h.apply()
			h.cycle()
			h.s.IDs = []string{"other", "r"} // ... and added again
			h.apply()
			h.cycle()
			if n := h.out.finished(); n != 1 {
				t.Errorf("run counted %d times, want once", n)
			}
			if got := h.out.finishes[0]; got.Key.Status != runs.StatusFailed || !got.HasDuration || got.Duration != time.Minute {
				t.Errorf("finish = %+v, want failed with a 1m duration", got)
			}
			// With a journal a finished run put back on the list is answered
			// from what is known; without one only its ID is remembered, so
			// it is fetched once more (and not counted again).
			want := 2
			if !withJournal {
				want = 3
			}
			if got := h.api.callsOf("r"); got != want {
				t.Errorf("r fetched %d times, want %d", got, want)
			}
		})
	}
}

func TestJournalRestoresRunsWithoutFetching(t *testing.T) {
	h := newHarness(t, true, "done", "running")
	h.api.set("done", ok(runs.StatusCompleted, 100))
	h.api.set("running", ok(runs.StatusRunning, 10))
	h.cycle()

	// A new process over the same journal: the finished run is served and
	// ready without a request, the unfinished one is fetched again.
	again := h.restart(t)
	again.api.set("running", ok(runs.StatusRunning, 20))
	again.p.Apply(again.api, h.s)
	if st := again.state(t, "done"); st.Run == nil || st.Run.Status != runs.StatusCompleted || st.Verdict != runs.Counted {
		t.Errorf("restored finished run = %+v, want completed and counted", st)
	}
	if st := again.state(t, "running"); st.Run == nil || st.Run.Progress != 10 {
		t.Errorf("restored running run = %+v, want its last values before any fetch", st)
	}
	if again.p.Ready() {
		t.Error("ready before the unfinished run was attempted")
	}
	again.cycle()
	if !again.p.Ready() || again.api.callsOf("done") != 0 || again.api.callsOf("running") != 1 {
		t.Errorf("ready=%v, done fetched %d times (want 0), running %d (want 1)", again.p.Ready(), again.api.callsOf("done"), again.api.callsOf("running"))
	}
	if again.out.finished() != 0 {
		t.Error("a run counted before the restart was counted again")
	}
}

func TestFinishedRetentionDropsSeriesButKeepsTheCount(t *testing.T) {
	h := newHarness(t, true, "r")
	h.s.FinishedRetention = time.Hour
	h.apply()
	h.api.set("r", ok(runs.StatusCompleted, 100))
	h.cycle()
	h.clock.advance(59 * time.Minute)
	h.cycle()
	if _, ok := h.out.state("r"); !ok {
		t.Fatal("dropped before the retention passed")
	}
	h.clock.advance(time.Minute)
	h.cycle()
	if _, ok := h.out.state("r"); ok {
		t.Error("finished run still published after finished_retention")
	}
	h.apply() // a reload must not bring it back
	h.cycle()
	if _, ok := h.out.state("r"); ok {
		t.Error("retired run published again after a reload")
	}
	if stored, _ := h.j.get("r"); h.api.callsOf("r") != 1 || h.out.finished() != 1 || !stored.Retired {
		t.Errorf("fetched %d times (want 1), counted %d (want 1), retired in store %v", h.api.callsOf("r"), h.out.finished(), stored.Retired)
	}
	// Lifting the retention brings the run back, still without a request.
	h.s.FinishedRetention = 0
	h.apply()
	if st, ok := h.out.state("r"); !ok || st.Retired || func() bool { st, _ := h.j.get("r"); return st.Retired }() {
		t.Errorf("with finished_retention 0 the run is not exported again: %+v %v", st, ok)
	}
	if h.api.callsOf("r") != 1 {
		t.Errorf("fetched %d times, want 1", h.api.callsOf("r"))
	}
}

func TestStatusAndProgressTimestamps(t *testing.T) {
	h := newHarness(t, false, "r")
	h.api.set("r", ok(runs.StatusQueued, 0), ok(runs.StatusRunning, 0), ok(runs.StatusRunning, 0), ok(runs.StatusRunning, 5))
	t0 := h.clock.now()
	h.cycle()
	h.clock.advance(time.Minute)
	h.cycle() // running from now
	h.clock.advance(time.Minute)
	h.cycle() // nothing changed
	st := h.state(t, "r")
	if !st.StatusSince.Equal(t0.Add(time.Minute)) || !st.ProgressUpdated.Equal(t0) {
		t.Errorf("status since %s, progress updated %s; want %s and %s", st.StatusSince, st.ProgressUpdated, t0.Add(time.Minute), t0)
	}
	h.clock.advance(time.Minute)
	h.cycle() // progress moved
	if st := h.state(t, "r"); !st.ProgressUpdated.Equal(t0.Add(3 * time.Minute)) {
		t.Errorf("progress updated %s, want %s", st.ProgressUpdated, t0.Add(3*time.Minute))
	}
}

func TestProbeAnswersFinishedRunsFromMemory(t *testing.T) {
	h := newHarness(t, false)
	h.s.Interval = time.Minute
	h.apply()
	h.api.set("p", ok(runs.StatusRunning, 10), ok(runs.StatusCompleted, 100))
	ctx := context.Background()
	if st := h.probe(ctx, "p"); !st.FetchOK || st.Run.Status != runs.StatusRunning {
		t.Fatalf("first probe = %+v, want fetched, running", st)
	}
	h.probe(ctx, "p") // within the interval: from memory
	if n := h.api.callsOf("p"); n != 1 {
		t.Fatalf("unfinished run fetched %d times within one poll interval, want 1", n)
	}
	h.clock.advance(time.Minute)
	if st := h.probe(ctx, "p"); st.Run.Status != runs.StatusCompleted {
		t.Fatalf("probe after the interval = %+v, want completed", st)
	}
	for range 5 {
		h.clock.advance(time.Hour)
		h.probe(ctx, "p")
	}
	if n := h.api.callsOf("p"); n != 2 {
		t.Errorf("fetched %d times, want 2: a finished run is answered from memory", n)
	}
	if _, ok := h.out.state("p"); ok {
		t.Error("a probed run is published to /metrics")
	}
	if h.out.finished() != 1 {
		t.Errorf("probed run counted %d times, want 1", h.out.finished())
	}
}

// TestConcurrentProbesShareOneFetch: many probes of one run at once make
// one request, and probes share the request slots with the poll cycles.
func TestConcurrentProbesShareOneFetch(t *testing.T) {
	h := newHarness(t, false, "polled-1", "polled-2")
	h.s.Concurrency = 2
	h.apply()
	h.api.release = make(chan struct{})
	h.api.set("polled-1", ok(runs.StatusRunning, 1))
	h.api.set("polled-2", ok(runs.StatusRunning, 1))
	h.api.set("p", ok(runs.StatusRunning, 1))
	h.api.set("q", ok(runs.StatusRunning, 1))
	cycleDone := make(chan struct{})
	go func() { h.cycle(); close(cycleDone) }()
	waitFor(t, "the cycle holding both slots", func() bool { return h.api.inFlightNow() == 2 })

	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			id := []string{"p", "q"}[i%2]
			if st := h.probe(context.Background(), id); !st.FetchOK {
				t.Errorf("probe of %s = %+v, want fetched", id, st)
			}
		})
	}
	// One fetch for p and one for q wait for a slot; the eight other
	// probes wait for those fetches.
	waitFor(t, "two probe fetches waiting for a slot", func() bool { return h.p.gate.Waiting(fetch.Probe) == 2 })
	if n := h.api.totalCalls(); n != 2 {
		t.Errorf("%d requests while the cycle holds every slot, want 2", n)
	}
	close(h.api.release)
	wg.Wait()
	<-cycleDone
	if h.api.callsOf("p") != 1 || h.api.callsOf("q") != 1 {
		t.Errorf("p fetched %d times, q %d: want one request each for five probes each", h.api.callsOf("p"), h.api.callsOf("q"))
	}
	if h.api.maxIn > 2 {
		t.Errorf("%d requests in flight, want at most poll.concurrency 2 across cycles and probes", h.api.maxIn)
	}
}

func TestProbeGivesUpAtItsDeadline(t *testing.T) {
	h := newHarness(t, false)
	h.api.delay = time.Hour
	h.api.set("p", ok(runs.StatusRunning, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	st := h.probe(ctx, "p")
	if st.FetchOK || st.Run != nil || st.FailReason != "" {
		t.Errorf("probe past its deadline = %+v, want nothing known and no failure recorded", st)
	}
}

// closingAPI counts CloseIdleConnections calls.
type closingAPI struct {
	*fakeAPI
	closed atomic.Int32
}

func (c *closingAPI) CloseIdleConnections() { c.closed.Add(1) }

// TestReplacedClientIsClosedOnceIdle: a reload builds a new client; the old
// one's pooled connections are released, but only once no request uses it.
func TestReplacedClientIsClosedOnceIdle(t *testing.T) {
	h := newHarness(t, false, "r")
	old := &closingAPI{fakeAPI: h.api}
	h.api.set("r", ok(runs.StatusRunning, 1))
	hold := make(chan struct{})
	h.api.hold = map[string]chan struct{}{"r": hold}
	h.p.Apply(old, h.s)
	done := make(chan struct{})
	go func() { h.cycle(); close(done) }()
	waitFor(t, "a request in flight", func() bool { return h.api.inFlightNow() == 1 })

	next := &closingAPI{fakeAPI: newFakeAPI()}
	h.p.Apply(next, h.s)
	if n := old.closed.Load(); n != 0 {
		t.Fatalf("old client closed %d times while a request used it", n)
	}
	close(hold)
	<-done
	if n := old.closed.Load(); n != 1 {
		t.Errorf("old client closed %d times after its last request, want 1", n)
	}
	if n := next.closed.Load(); n != 0 {
		t.Errorf("the client in force was closed")
	}
}

// TestRateLimitHoldsWhenRequestsQueue: requests that waited for a slot must
// not start together when it frees: the rate limit spaces them still.
func TestRateLimitHoldsWhenRequestsQueue(t *testing.T) {
	h := newHarness(t, false, "slow")
	h.s.Concurrency, h.s.MaxRequestsPerSecond = 1, 20
	h.apply()
	h.api.set("slow", ok(runs.StatusRunning, 1))
	hold := make(chan struct{})
	h.api.hold = map[string]chan struct{}{"slow": hold}
	cycleDone := make(chan struct{})
	go func() { h.cycle(); close(cycleDone) }()
	waitFor(t, "the slow request in flight", func() bool { return h.api.inFlightNow() == 1 })
	var wg sync.WaitGroup
	for i := range 8 {
		id := fmt.Sprint("probe-", i)
		h.api.set(id, ok(runs.StatusRunning, 1))
		wg.Go(func() { h.probe(context.Background(), id) })
	}
	waitFor(t, "eight probes waiting for the slot", func() bool { return h.p.gate.Waiting(fetch.Probe) == 8 })
	time.Sleep(300 * time.Millisecond) // long enough to fill a token bucket that were filling
	close(hold)
	wg.Wait()
	<-cycleDone
	starts := h.api.starts[1:] // the queued requests
	if len(starts) != 8 {
		t.Fatalf("%d queued requests, want 8", len(starts))
	}
	// At 20 requests/s, 8 requests take at least 7 × 50 ms.
	if took := starts[7].Sub(starts[0]); took < 300*time.Millisecond {
		t.Errorf("8 queued requests started within %s; the rate limit (20/s) wants 350ms", took)
	}
}

// TestIdleProbedRunsAreForgotten: a run /probe stopped asking for leaves
// memory after an hour, and the state store too once the ledger no longer
// needs it (its finish is older than runs.count_window). Probed again, it
// is fetched again and not counted twice.
func TestIdleProbedRunsAreForgotten(t *testing.T) {
	for _, withJournal := range []bool{true, false} {
		t.Run(fmt.Sprintf("journal=%v", withJournal), func(t *testing.T) {
			h := newHarness(t, withJournal)
			h.api.set("p", ok(runs.StatusCompleted, 100))
			h.probe(context.Background(), "p")
			if h.out.finished() != 1 || h.metric(t, "workflow_runs_exporter_probe_runs") != 1 {
				t.Fatalf("first probe: %d counted, %v probe-only runs; want 1 and 1", h.out.finished(), h.metric(t, "workflow_runs_exporter_probe_runs"))
			}
			h.clock.advance(2 * time.Hour)
			h.cycle()
			if h.p.Known("p") || h.led.Kept() != 0 || (withJournal && h.j.len() != 0) {
				t.Fatalf("after 2h without a probe: in memory %v, kept by the ledger %d", h.p.Known("p"), h.led.Kept())
			}
			if got := h.metric(t, "workflow_runs_exporter_probe_runs"); got != 0 {
				t.Errorf("probe_runs = %v, want 0", got)
			}
			st := h.probe(context.Background(), "p")
			if !st.FetchOK || st.Verdict != runs.NotCounted || h.api.callsOf("p") != 2 {
				t.Errorf("probed again: %+v after %d requests, want fetched again (2) and not counted", st, h.api.callsOf("p"))
			}
			if h.out.finished() != 1 {
				t.Errorf("counted %d times, want 1", h.out.finished())
			}
		})
	}
}

func TestTheSameFailureAgainChangesNothing(t *testing.T) {
	h := newHarness(t, true, "r")
	h.api.set("r", ok(runs.StatusRunning, 1), fail(api.ReasonServerError))
	h.cycle()
	h.cycle()
	updates, puts := h.out.updates, h.j.puts
	for range 3 {
		h.cycle()
	}
	if h.out.updates != updates || h.j.puts != puts {
		t.Errorf("three more identical failures: %d renders, %d writes; want none", h.out.updates-updates, h.j.puts-puts)
	}
	if got := h.fetchErrors(api.ReasonServerError); got != 4 {
		t.Errorf("server_error errors = %v, want 4: each failure is still counted", got)
	}
}

// TestHangingRunHoldsUpNoOtherRun (DESIGN §7): one run whose answer never
// comes holds one request slot and nothing else. The other runs are
// fetched every interval, the hanging run is never in flight twice, and
// cycles end on the interval.
func TestHangingRunHoldsUpNoOtherRun(t *testing.T) {
	h := newHarness(t, false, "hang", "a", "b", "c")
	h.s.Interval = 50 * time.Millisecond
	h.apply()
	for _, id := range []string{"hang", "a", "b", "c"} {
		h.api.set(id, ok(runs.StatusRunning, 1))
	}
	h.api.hold = map[string]chan struct{}{"hang": make(chan struct{})} // never answers until the test ends
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		h.p.Run(ctx)
		close(done)
	}()
	waitFor(t, "ten cycles' worth of the other runs", func() bool { return h.api.callsOf("a") >= 10 })
	if n := h.api.callsOf("hang"); n != 1 {
		t.Errorf("the hanging run was requested %d times, want once: never in flight twice", n)
	}
	for _, id := range []string{"b", "c"} {
		if n := h.api.callsOf(id); n < 5 {
			t.Errorf("%s fetched %d times while a fetches 10: the hanging run held it up", id, n)
		}
	}
	// Each cycle ended by the next interval's start, the hanging run
	// carried past it.
	var m dto.Metric
	if err := h.p.metrics.cycleDuration.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetHistogram().GetSampleCount(); n < 8 {
		t.Errorf("%d cycles ended, want one per interval", n)
	}
	cancel()
	close(h.api.hold["hang"])
	<-done
}

// TestProbedAndTrackedRunIsFetchedOncePerInterval: a run both listed and
// probed is fetched once per interval, whoever asks first.
func TestProbedAndTrackedRunIsFetchedOncePerInterval(t *testing.T) {
	h := newHarness(t, false, "r")
	h.s.Interval = time.Minute
	h.apply()
	h.api.set("r", ok(runs.StatusRunning, 1))
	ctx := context.Background()
	h.probe(ctx, "r") // the probe fetches it first ...
	h.cycle()         // ... so the cycle within the interval does not
	if n := h.api.callsOf("r"); n != 1 {
		t.Fatalf("fetched %d times by a probe and a cycle within one interval, want 1", n)
	}
	// A probe while the cycle's request is in flight waits for it.
	h.clock.advance(time.Minute)
	hold := make(chan struct{})
	h.api.hold = map[string]chan struct{}{"r": hold}
	cycled := make(chan struct{})
	go func() { h.cycle(); close(cycled) }()
	waitFor(t, "the cycle's request in flight", func() bool { return h.api.inFlightNow() == 1 })
	probed := make(chan runs.State)
	go func() { probed <- h.probe(ctx, "r") }()
	time.Sleep(20 * time.Millisecond)
	close(hold)
	if st := <-probed; !st.FetchOK {
		t.Errorf("probe waiting for the cycle's fetch = %+v", st)
	}
	<-cycled
	if n := h.api.callsOf("r"); n != 2 {
		t.Errorf("fetched %d times, want 2 (one per interval)", n)
	}
}

// TestUnknownProbesLeaveNothing (DESIGN §8 "Bounded"): probes of IDs the
// API does not know, probes that time out and probes refused keep nothing
// in memory or in the state store.
func TestUnknownProbesLeaveNothing(t *testing.T) {
	h := newHarness(t, true)
	for i := range 500 {
		id := fmt.Sprintf("unknown-%d", i)
		h.api.set(id, fail(api.ReasonNotFound))
		if st := h.probe(context.Background(), id); st.FetchOK || st.FailReason != string(api.ReasonNotFound) {
			t.Fatalf("probe of an unknown run = %+v, want fetch_success 0 with reason not_found", st)
		}
	}
	// One that times out before its request is answered.
	h.api.set("slow", ok(runs.StatusRunning, 1))
	h.api.hold = map[string]chan struct{}{"slow": make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	h.probe(ctx, "slow")
	cancel()
	close(h.api.hold["slow"])
	h.p.mu.Lock()
	entries, calls, probeOnly := len(h.p.entries), len(h.p.calls), h.p.probeOnly.Len()
	h.p.mu.Unlock()
	if entries != 0 || calls != 0 || probeOnly != 0 || h.j.len() != 0 {
		t.Errorf("after 501 probes the API answered with no run: %d entries, %d calls, %d probe-only, %d stored; want none",
			entries, calls, probeOnly, h.j.len())
	}
	if got := h.metric(t, "workflow_runs_exporter_probe_runs"); got != 0 {
		t.Errorf("probe_runs = %v, want 0", got)
	}
}

// TestProbeOnlyRunsAreCapped: at most probe.max_runs probe-only runs stay in
// memory, the least recently probed let go first; a run let go is fetched
// again when probed, and not counted again.
func TestProbeOnlyRunsAreCapped(t *testing.T) {
	h := newHarness(t, true)
	h.s.ProbeMaxRuns = 10
	h.apply()
	ctx := context.Background()
	for i := range 20 {
		id := fmt.Sprintf("p-%02d", i)
		h.api.set(id, ok(runs.StatusCompleted, 100))
		h.probe(ctx, id)
		if i == 15 {
			h.probe(ctx, "p-00") // probed again: among the most recent now
		}
	}
	if got := h.metric(t, "workflow_runs_exporter_probe_runs"); got != 10 {
		t.Errorf("probe_runs = %v, want 10", got)
	}
	for _, id := range []string{"p-00", "p-19", "p-11"} {
		if !h.p.Known(id) {
			t.Errorf("%s let go, but it is among the 10 most recently probed", id)
		}
	}
	for _, id := range []string{"p-01", "p-10"} {
		if h.p.Known(id) {
			t.Errorf("%s still in memory, but 10 runs were probed after it", id)
		}
	}
	// Finished within the window and counted: the ledger keeps the
	// let-go runs' records, so probing one again counts nothing twice.
	h.probe(ctx, "p-01")
	if h.out.finished() != 20 {
		t.Errorf("%d counted, want each of the 20 once", h.out.finished())
	}
}

// TestProbeFloodIsBoundedAndPollingKeepsItsPace: a flood of probes for
// unknown runs, against an API that takes its time, waits in a bounded
// queue (what the rate can serve in 10 s, 500 here) and the rest is refused
// at once; and the poll cycles still get at least half of the requests.
func TestProbeFloodIsBoundedAndPollingKeepsItsPace(t *testing.T) {
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("polled-%02d", i))
	}
	h := newHarness(t, false, ids...)
	h.s.Concurrency, h.s.MaxRequestsPerSecond = 4, 100
	h.apply()
	for _, id := range ids {
		h.api.set(id, ok(runs.StatusRunning, 1))
	}
	h.api.delay = 5 * time.Millisecond
	var refused, answered, maxWaiting atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 800 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("flood-%d-%d", w, i)
				h.api.set(id, fail(api.ReasonNotFound))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := h.p.Probe(ctx, id)
				cancel()
				if errors.Is(err, fetch.ErrBusy) {
					refused.Add(1)
					time.Sleep(10 * time.Millisecond)
				} else {
					answered.Add(1)
				}
				if n := int32(h.p.gate.Waiting(fetch.Probe)); n > maxWaiting.Load() {
					maxWaiting.Store(n)
				}
			}
		})
	}
	waitFor(t, "probes refused", func() bool { return refused.Load() > 0 && answered.Load() > 20 })
	start := time.Now()
	for range 3 {
		h.cycle()
	}
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if n := maxWaiting.Load(); n > 500 {
		t.Errorf("%d probes waited at once, want at most 500", n)
	}
	// 60 poll requests at 100/s take 0.6 s alone; with at least half of
	// the rate they take at most 1.2 s, plus scheduling on a loaded
	// machine.
	if took > 3*time.Second {
		t.Errorf("3 cycles of 20 runs took %s during the flood; alone they take 0.6 s", took)
	}
	t.Logf("3 cycles of 20 runs during the flood: %s; probes answered %d, refused %d, at most %d waiting", took, answered.Load(), refused.Load(), maxWaiting.Load())
	for _, id := range ids {
		if n := h.api.callsOf(id); n != 3 {
			t.Errorf("%s fetched %d times in 3 cycles", id, n)
		}
	}
}

// TestOnlyTheOwnerCountsAProbedRun (DESIGN §9): any shard answers /probe for
// any run, but only the one that owns it counts it.
func TestOnlyTheOwnerCountsAProbedRun(t *testing.T) {
	for _, owns := range []bool{true, false} {
		h := newShardHarness(t, false, func(string) bool { return owns })
		h.api.set("p", ok(runs.StatusCompleted, 100))
		if st := h.probe(context.Background(), "p"); !st.FetchOK {
			t.Fatalf("probe = %+v", st)
		}
		want := 0
		if owns {
			want = 1
		}
		if h.out.finished() != want {
			t.Errorf("owns %v: counted %d, want %d", owns, h.out.finished(), want)
		}
	}
}
