// Package poller fetches the runs the exporter tracks, on a fixed interval
// and for /probe, and hands every change of a run's state on as it happens:
// to the run metrics store, and to the state store that keeps it across
// restarts.
package poller

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Fetcher gets one run; *api.Client implements it.
type Fetcher interface {
	GetRun(ctx context.Context, id string) (*runs.Run, []string, error)
}

// Publisher receives the state of every tracked run each time it changes,
// in order; the run metrics store implements it. It must not keep st.
type Publisher interface {
	Update(st *runs.State)
	// Delete removes runs; many at once cost much less than one by one.
	Delete(ids ...string)
	// Reset replaces every run with states, rendered with a new
	// api.progress_max.
	Reset(progressMax float64, states []*runs.State)
	AddCounts(c runs.Counts)
}

// Journal keeps run states across restarts; the state store implements it.
// Put must not block on disk. Finishes put in the journal are counted by
// the journal once they are durable, not by the poller.
type Journal interface {
	Get(id string) (runs.State, bool, error)
	Put(st runs.State, fin *runs.Finish)
}

// Settings are what a configuration decides. They take effect at once for
// the run list, and at the next request for the pace.
type Settings struct {
	IDs                  []string // the run IDs to track, lower case
	Interval             time.Duration
	Concurrency          int
	MaxRequestsPerSecond float64
	ProgressMax          float64
	FinishedRetention    time.Duration
	NotFoundGrace        time.Duration
}

// Backoff paces retries of one run within a cycle.
type Backoff struct {
	Initial  time.Duration // wait before the second attempt; doubles after each
	Max      time.Duration // cap for one wait
	Attempts int           // attempts per run per cycle, the first included
}

// DefaultBackoff retries a transient failure twice, after about 1s and 2s.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 30 * time.Second, Attempts: 3}

// Options configure a Poller.
type Options struct {
	Logger     log.Logger
	Registerer prometheus.Registerer
	Publisher  Publisher
	// Journal is the state store; nil keeps everything in memory.
	Journal Journal
	// Backoff paces retries; DefaultBackoff when zero.
	Backoff Backoff
	// Now is the clock the run states are stamped with; time.Now when nil.
	Now func() time.Time
	// ProbeIdle is how long a run that only /probe asks for stays in
	// memory after the last probe; 1h when zero. With a journal it is
	// restored from there when asked for again.
	ProbeIdle time.Duration
}

// entry is the poller's record of one run: its state and what only this
// process needs to know about it.
type entry struct {
	state     runs.State
	tracked   bool      // configured, in this shard
	probed    time.Time // last /probe that asked for it; zero if none
	attempted bool      // fetched at least once by this process, or restored finished
	// lastAttempt is when a fetch of it last ended, so /probe fetches an
	// unfinished run at most once per poll interval.
	lastAttempt time.Time
	// failReason is the reason of the current run of failed fetches, to
	// warn once when it starts or changes rather than on every cycle.
	failReason api.Reason
	problems   string // drift last logged, to log it when it changes
	probe      *probeCall
}

func (e *entry) due() bool { return !e.state.Retired && !e.state.Finished() }

// probeCall is a fetch made for /probe that other probes of the same run
// wait for instead of fetching again.
type probeCall struct{ done chan struct{} }

// Poller owns the fetch loop and the state of every run it knows.
type Poller struct {
	logger    log.Logger
	metrics   *metrics
	out       Publisher
	journal   Journal
	backoff   Backoff
	now       func() time.Time
	probeIdle time.Duration

	// Burst 1: requests are spaced evenly, so no one-second window ever
	// holds more than max_requests_per_second of them.
	limiter    *rate.Limiter
	pauseUntil atomic.Int64 // Unix nanoseconds; no request starts before
	ready      atomic.Bool
	wake       chan struct{}

	// waiting counts requests waiting for a slot, for the tests.
	waiting atomic.Int32

	mu       sync.Mutex // guards everything below
	fetcher  Fetcher
	users    map[Fetcher]int // requests under way per client, to close a replaced one when idle
	settings Settings
	applied  bool
	slots    chan struct{} // one per request in flight, shared by cycles and probes
	entries  map[string]*entry
	pending  int // tracked runs not attempted yet
	// counted holds, without a journal, the IDs of counted runs dropped
	// from memory: a few dozen bytes each instead of a whole entry, so that
	// a run listed or probed again is not counted twice.
	counted map[string]struct{}
}

// New returns a poller; call Apply before Run.
func New(o Options) *Poller {
	if o.Backoff.Attempts == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ProbeIdle == 0 {
		o.ProbeIdle = time.Hour
	}
	return &Poller{
		logger:    o.Logger,
		metrics:   newMetrics(o.Registerer),
		out:       o.Publisher,
		journal:   o.Journal,
		backoff:   o.Backoff,
		now:       o.Now,
		probeIdle: o.ProbeIdle,
		limiter:   rate.NewLimiter(rate.Inf, 1),
		wake:      make(chan struct{}, 1),
		slots:     make(chan struct{}, 1),
		entries:   map[string]*entry{},
		users:     map[Fetcher]int{},
		counted:   map[string]struct{}{},
	}
}

// Apply switches to a new client and settings. Runs added to the list are
// published at once (with fetch_success 0 until fetched, or with their
// last state from the journal) and fetched soon, without waiting for the
// interval; runs taken off the list stop being exported. State of runs that
// stay is kept: a finished run is not fetched again after a reload.
func (p *Poller) Apply(f Fetcher, s Settings) {
	p.mu.Lock()
	if !p.applied || s.ProgressMax != p.settings.ProgressMax {
		// The ratio of every run changes with api.progress_max.
		var states []*runs.State
		for _, e := range p.entries {
			if e.tracked && !e.state.Retired {
				states = append(states, &e.state)
			}
		}
		p.out.Reset(s.ProgressMax, states)
	}
	if !p.applied || s.Concurrency != p.settings.Concurrency {
		// Requests in flight give their slot back to the channel they
		// took it from, so the old one simply drains.
		p.slots = make(chan struct{}, s.Concurrency)
	}
	if old := p.fetcher; old != nil && old != f && p.users[old] == 0 {
		closeIdle(old)
	}
	p.fetcher, p.settings, p.applied = f, s, true
	p.limiter.SetLimit(rate.Limit(s.MaxRequestsPerSecond))
	p.track(s.IDs)
	p.metrics.trackedRuns.Set(float64(len(s.IDs)))
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// useFetcher returns the client in force for one request; done must be
// called when the request is over. A client replaced by a reload is closed
// once its last request is over, not while one still uses it.
func (p *Poller) useFetcher() (f Fetcher, done func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f = p.fetcher
	p.users[f]++
	return f, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.users[f]--; p.users[f] == 0 {
			delete(p.users, f)
			if f != p.fetcher {
				closeIdle(f)
			}
		}
	}
}

// closeIdle releases the pooled connections of a client nobody uses any
// more, so they do not linger with their goroutines.
func closeIdle(f Fetcher) {
	if c, ok := f.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// track makes ids the tracked runs. Called with p.mu held.
func (p *Poller) track(ids []string) {
	now := p.now()
	keep := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		keep[id] = struct{}{}
		e := p.entry(id)
		if e.tracked {
			p.unretire(e, now)
			continue
		}
		e.tracked = true
		p.unretire(e, now)
		if e.state.Retired {
			continue
		}
		if !e.attempted {
			p.pending++
		}
		p.out.Update(&e.state)
	}
	var gone []string
	for id, e := range p.entries {
		if _, ok := keep[id]; ok || !e.tracked {
			continue
		}
		e.tracked = false
		if !e.attempted {
			p.pending--
		}
		gone = append(gone, id)
		p.forget(id, e)
	}
	p.out.Delete(gone...)
	if p.pending == 0 {
		p.ready.Store(true)
	}
}

// unretire exports a retired run again when runs.finished_retention no
// longer drops it (set to 0, or made longer). Called with p.mu held.
func (p *Poller) unretire(e *entry, now time.Time) {
	if !e.state.Retired || e.state.RetentionOver(now, p.settings.FinishedRetention) {
		return
	}
	e.state.Retired = false
	if e.tracked {
		p.out.Update(&e.state)
	}
	if p.journal != nil {
		p.journal.Put(e.state, nil)
	}
}

// entry returns the record of run id, from memory, else from the journal,
// else new. Called with p.mu held.
func (p *Poller) entry(id string) *entry {
	if e := p.entries[id]; e != nil {
		return e
	}
	e := &entry{state: runs.State{ID: id}}
	if _, ok := p.counted[id]; ok {
		e.state.Verdict = runs.Counted
		delete(p.counted, id)
	}
	if p.journal != nil {
		st, ok, err := p.journal.Get(id)
		if err != nil {
			level.Warn(p.logger).Log("msg", "reading a run's state from the state store failed; fetching it again", "run_id", id, "err", err)
		} else if ok {
			e.state = st
			// A finished run restored from the store needs no fetch: the
			// restart costs no request for it.
			e.attempted = st.Finished() || st.Retired
		}
	}
	p.entries[id] = e
	return e
}

// forget drops a run from memory once nothing needs it there: neither the
// configuration nor a recent probe. Without a journal a counted run leaves
// its ID in p.counted, so that it is not counted again if it comes back
// (it is fetched again then: its data is gone).
func (p *Poller) forget(id string, e *entry) {
	if e.tracked || e.probe != nil {
		return
	}
	if !e.probed.IsZero() && p.now().Sub(e.probed) < p.probeIdle {
		return
	}
	if p.journal == nil && e.state.Verdict == runs.Counted {
		p.counted[id] = struct{}{}
	}
	delete(p.entries, id)
}

// Ready reports whether every tracked run has been attempted once (or was
// restored finished from the state store).
func (p *Poller) Ready() bool { return p.ready.Load() }

// Run polls until ctx is cancelled. Cycles never overlap: one that overruns
// the interval delays the next.
func (p *Poller) Run(ctx context.Context) {
	select { // wait for the first Apply
	case <-p.wake:
	case <-ctx.Done():
		return
	}
	for {
		start := time.Now()
		interval := p.cycle(ctx)
		if ctx.Err() != nil {
			return
		}
		timer := time.NewTimer(interval - time.Since(start))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-p.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

type result struct {
	run      *runs.Run
	warnings []string
	err      error
}

// cycle fetches every tracked run that is not finished, publishing each
// result as it arrives. It returns the interval to wait.
func (p *Poller) cycle(ctx context.Context) time.Duration {
	start := p.now()
	p.mu.Lock()
	s := p.settings
	var todo []string
	var retired []string
	for _, id := range s.IDs {
		e := p.entries[id]
		if e == nil || !e.tracked {
			continue
		}
		if e.state.Finished() && !e.state.Retired && e.state.RetentionOver(start, s.FinishedRetention) {
			p.retire(e)
			retired = append(retired, id)
		}
		if e.due() {
			todo = append(todo, id)
		}
	}
	p.out.Delete(retired...)
	// Every tracked run has an entry: only more entries than tracked runs
	// (probed runs, runs taken off the list) make a sweep worth its cost.
	if len(p.entries) > len(s.IDs) {
		for id, e := range p.entries {
			if !e.tracked {
				p.forget(id, e)
			}
		}
	}
	p.mu.Unlock()

	var unauthorized atomic.Int64
	jobs := make(chan string)
	var wg sync.WaitGroup
	for range min(s.Concurrency, len(todo)) {
		wg.Go(func() {
			for id := range jobs {
				res := p.fetch(ctx, id, p.backoff.Attempts)
				if api.ReasonOf(res.err) == api.ReasonUnauthorized {
					unauthorized.Add(1)
				}
				p.record(id, res, false)
			}
		})
	}
feed:
	for _, id := range todo {
		select {
		case jobs <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if ctx.Err() != nil {
		return s.Interval
	}
	if n := unauthorized.Load(); n > 0 {
		// One line per cycle, not per run: a revoked token must not flood
		// the logs. Per-run details are at debug level.
		level.Warn(p.logger).Log("msg", "API rejected the credentials", "reason", api.ReasonUnauthorized, "runs", n)
	}
	end := p.now()
	p.metrics.cycleDuration.Observe(end.Sub(start).Seconds())
	p.metrics.lastCycle.Set(float64(end.UnixNano()) / 1e9)
	return s.Interval
}

// retire marks a finished run whose runs.finished_retention has passed: the
// caller drops its series. It stays known, counted and never fetched
// again. Called with p.mu held.
func (p *Poller) retire(e *entry) {
	e.state.Retired = true
	if p.journal != nil {
		p.journal.Put(e.state, nil)
	}
}

// fetch gets one run, making up to attempts attempts: transient failures
// are retried with exponential backoff and jitter. A server-requested pause
// (Retry-After) holds back every request, not only this one.
func (p *Poller) fetch(ctx context.Context, id string, attempts int) result {
	for attempt := 1; ; attempt++ {
		release, err := p.waitTurn(ctx)
		if err != nil {
			return result{err: err}
		}
		f, done := p.useFetcher()
		run, warnings, err := f.GetRun(ctx, id)
		done()
		release()
		if err == nil {
			return result{run: run, warnings: warnings}
		}
		var apiErr *api.Error
		if !errors.As(err, &apiErr) {
			return result{err: err}
		}
		if apiErr.RetryAfter > 0 {
			p.pause(apiErr.RetryAfter, apiErr.Reason)
		}
		if !apiErr.Retryable() || attempt >= attempts {
			return result{err: err}
		}
		level.Debug(p.logger).Log("msg", "retrying run", "run_id", id, "attempt", attempt, "reason", apiErr.Reason, "err", err)
		if apiErr.RetryAfter > 0 {
			continue // waitTurn waits for the pause
		}
		if err := sleep(ctx, p.backoffDelay(attempt)); err != nil {
			return result{err: err}
		}
	}
}

func (p *Poller) backoffDelay(attempt int) time.Duration {
	d := p.backoff.Initial << (attempt - 1)
	if d <= 0 || d > p.backoff.Max {
		d = p.backoff.Max
	}
	// Full jitter over the upper half: retries of many runs spread out
	// instead of arriving at the API together.
	return d/2 + rand.N(d/2+1)
}

// pause holds back every request for d. A pause that starts (rather than
// extends one in force) is logged once, with how long and why, so that a
// long silence in the data has an explanation in the log and in
// workflow_runs_exporter_api_paused_until_timestamp_seconds.
func (p *Poller) pause(d time.Duration, reason api.Reason) {
	now := time.Now()
	until := now.Add(d).UnixNano()
	for {
		cur := p.pauseUntil.Load()
		if cur >= until {
			return
		}
		if p.pauseUntil.CompareAndSwap(cur, until) {
			p.metrics.pausedUntil.Set(float64(until) / 1e9)
			if cur < now.UnixNano() {
				p.metrics.pauses.Inc()
				level.Warn(p.logger).Log("msg", "API asked to pause all requests", "reason", reason, "for", d, "until", time.Unix(0, until).UTC().Format(time.RFC3339))
			}
			return
		}
	}
}

// waitTurn blocks until no pause is in force, the rate limiter allows a
// request and a slot is free. release gives the slot back.
// The slot comes first: a request waiting for one must not hold a token of
// the rate limiter, or the requests that waited would all start at once
// when slots free up, beyond max_requests_per_second. The pause is checked
// last, so a pause that began while a request waited holds it too.
func (p *Poller) waitTurn(ctx context.Context) (release func(), err error) {
	p.mu.Lock()
	slots := p.slots
	p.mu.Unlock()
	p.waiting.Add(1)
	select {
	case slots <- struct{}{}:
		p.waiting.Add(-1)
	case <-ctx.Done():
		p.waiting.Add(-1)
		return nil, ctx.Err()
	}
	release = func() { <-slots }
	if err := p.limiter.Wait(ctx); err != nil {
		release()
		return nil, err
	}
	for {
		wait := time.Duration(p.pauseUntil.Load() - time.Now().UnixNano())
		if wait <= 0 {
			return release, nil
		}
		if err := sleep(ctx, wait); err != nil {
			release()
			return nil, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// record applies a fetch result to the run's state and hands the change
// on. A fetch cut short by shutdown or by a probe's deadline is no result.
func (p *Poller) record(id string, res result, probe bool) {
	if res.err != nil && api.ReasonOf(res.err) == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[id]
	if e == nil {
		return // forgotten while it was fetched
	}
	now := p.now()
	e.lastAttempt = now
	if !e.attempted {
		e.attempted = true
		if e.tracked {
			p.pending--
			if p.pending == 0 {
				p.ready.Store(true)
			}
		}
	}
	var fin *runs.Finish
	if res.err == nil {
		sight := e.state.Succeeded(res.run, now, 3*p.settings.Interval)
		if sight.Finished && e.state.Verdict == runs.Undecided {
			e.state.Verdict = runs.Counted
			r := res.run
			fin = &runs.Finish{RunID: id, Key: runs.TotalKey{WorkflowName: r.WorkflowName, WorkflowType: r.WorkflowType, Status: r.Status}, FinishedAt: r.FinishedAt}
			fin.Duration, fin.HasDuration = r.Duration()
		}
		p.logRecovery(e)
		p.logDrift(e, res.warnings)
	} else {
		reason := api.ReasonOf(res.err)
		p.metrics.fetchErrors.WithLabelValues(string(reason)).Inc()
		before := e.state
		e.state.Failed(string(reason), reason == api.ReasonNotFound, now, p.settings.NotFoundGrace)
		p.logFailure(e, reason, res.err, probe)
		if e.state == before {
			return // the same failure again: nothing to render or store
		}
	}
	if e.tracked && !e.state.Retired {
		p.out.Update(&e.state)
	}
	switch {
	case p.journal != nil:
		p.journal.Put(e.state, fin)
	case fin != nil:
		p.out.AddCounts(runs.Counts{Finishes: []runs.Finish{*fin}})
	}
}

func (p *Poller) logRecovery(e *entry) {
	if e.failReason != "" {
		level.Info(p.logger).Log("msg", "fetching run works again", "run_id", e.state.ID, "after", e.failReason)
		e.failReason = ""
	}
}

// logDrift warns when the set of things the API sent differently from its
// documentation changes, not on every cycle of a long run.
func (p *Poller) logDrift(e *entry, warnings []string) {
	problems := append(warnings, e.state.Run.Problems(p.settings.ProgressMax)...)
	if w := strings.Join(problems, "; "); w != e.problems {
		e.problems = w
		if w != "" {
			level.Warn(p.logger).Log("msg", "run data drifted from the API documentation", "run_id", e.state.ID, "problems", w)
		}
	}
}

// logFailure warns when a run starts failing or fails differently; the
// same failure again is at debug level, so an outage of an API with
// thousands of runs does not write thousands of lines every cycle. The
// counters and fetch_success show that it goes on. 401/403 in a cycle are
// summed up in one line by cycle.
func (p *Poller) logFailure(e *entry, reason api.Reason, err error, probe bool) {
	if probe {
		// Probes of thousands of targets would flood the log; and a
		// tracked run's first failure is for its poll cycle to report.
		level.Debug(p.logger).Log("msg", "fetching run failed", "run_id", e.state.ID, "reason", reason, "err", err)
		return
	}
	logAt := level.Debug
	if reason != e.failReason && reason != api.ReasonUnauthorized {
		logAt = level.Warn
	}
	e.failReason = reason
	logAt(p.logger).Log("msg", "fetching run failed", "run_id", e.state.ID, "reason", reason, "err", err)
}
