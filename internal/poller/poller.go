// Package poller fetches the tracked runs from the API on a fixed interval
// and publishes an immutable snapshot of their state after every cycle.
package poller

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
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

// Settings are what a config (re)load decides. They take effect at the start
// of the next cycle.
type Settings struct {
	Fetcher              Fetcher
	IDs                  []string
	Interval             time.Duration
	Concurrency          int
	MaxRequestsPerSecond float64
	ProgressMax          float64
}

// Backoff paces retries of one run within a cycle.
type Backoff struct {
	Initial  time.Duration // wait before the second attempt; doubles after each
	Max      time.Duration // cap for one wait
	Attempts int           // attempts per run per cycle, the first included
}

// DefaultBackoff retries a transient failure twice, after about 1s and 2s.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 30 * time.Second, Attempts: 3}

// Metrics are the poller's own self-metrics.
type Metrics struct {
	fetchErrors   *prometheus.CounterVec
	cycleDuration prometheus.Histogram
}

// NewMetrics registers the poller's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		fetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workflow_runs_exporter_fetch_errors_total",
			Help: "Fetches of a run that failed after all retries, by reason.",
		}, []string{"reason"}),
		cycleDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "workflow_runs_exporter_poll_cycle_duration_seconds",
			Help:    "Time a poll cycle took to fetch every unfinished run, retries included.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
	}
	for _, r := range api.Reasons {
		m.fetchErrors.WithLabelValues(string(r))
	}
	reg.MustRegister(m.fetchErrors, m.cycleDuration)
	return m
}

// entry is the poller's private, mutable record of one run. Only the Run
// goroutine touches entries; readers get copies in a snapshot.
type entry struct {
	run         *runs.Run
	fetchOK     bool
	lastSuccess time.Time
	warnings    string     // last decode warnings, to log only when they change
	failing     api.Reason // reason of the current run of failures; "" while fetches succeed
}

func (e *entry) done() bool { return e.run != nil && e.run.Status.Terminal() }

// Poller owns the fetch loop.
type Poller struct {
	logger  log.Logger
	store   *runs.Store
	metrics *Metrics
	backoff Backoff
	now     func() time.Time

	mu       sync.Mutex
	settings Settings
	wake     chan struct{}

	afterPublish func() // optional; runs in the poll loop after each publish

	ready      atomic.Bool
	pauseUntil atomic.Int64 // unix nanoseconds; all requests wait until then

	// Burst 1: requests are spaced evenly, so no one-second window ever
	// holds more than max_requests_per_second of them.
	limiter *rate.Limiter

	state map[string]*entry // owned by the Run goroutine
}

// New returns a poller that publishes to store. Call Apply before Run.
func New(logger log.Logger, store *runs.Store, metrics *Metrics, backoff Backoff) *Poller {
	return &Poller{
		logger:  logger,
		store:   store,
		metrics: metrics,
		backoff: backoff,
		now:     time.Now,
		wake:    make(chan struct{}, 1),
		limiter: rate.NewLimiter(rate.Inf, 1),
		state:   map[string]*entry{},
	}
}

// Apply replaces the settings and starts a cycle soon, so new run IDs do not
// wait a whole interval. State of runs that stay tracked is kept: a finished
// run is not fetched again after a reload.
func (p *Poller) Apply(s Settings) {
	p.mu.Lock()
	p.settings = s
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// AfterPublish sets f to run in the poll loop after every published
// snapshot, e.g. to render its metrics before the next scrape asks. Call it
// before Run.
func (p *Poller) AfterPublish(f func()) { p.afterPublish = f }

// Ready reports whether a full poll cycle has finished.
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
		p.mu.Lock()
		s := p.settings
		p.mu.Unlock()

		start := p.now()
		p.cycle(ctx, s)
		if ctx.Err() != nil {
			return
		}
		p.ready.Store(true)

		timer := time.NewTimer(s.Interval - p.now().Sub(start))
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
	id       string
	run      *runs.Run
	warnings []string
	err      error
}

func (p *Poller) cycle(ctx context.Context, s Settings) {
	start := p.now()
	p.track(s.IDs)
	p.limiter.SetLimit(rate.Limit(s.MaxRequestsPerSecond))

	var todo []string
	for _, id := range s.IDs {
		if !p.state[id].done() {
			todo = append(todo, id)
		}
	}

	results := p.fetchAll(ctx, s, todo)
	if ctx.Err() != nil {
		return
	}
	unauthorized := 0
	for _, res := range results {
		if api.ReasonOf(res.err) == api.ReasonUnauthorized {
			unauthorized++
		}
		p.record(res, s.ProgressMax)
	}
	if unauthorized > 0 {
		// One line per cycle, not per run: a revoked token must not flood
		// the logs. Per-run details are at debug level.
		level.Warn(p.logger).Log("msg", "API rejected the credentials", "reason", api.ReasonUnauthorized, "runs", unauthorized)
	}
	end := p.now()
	p.metrics.cycleDuration.Observe(end.Sub(start).Seconds())
	p.publish(s, end)
}

// track adds entries for new IDs and forgets IDs no longer configured.
func (p *Poller) track(ids []string) {
	keep := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		keep[id] = struct{}{}
		if p.state[id] == nil {
			p.state[id] = &entry{}
		}
	}
	for id := range p.state {
		if _, ok := keep[id]; !ok {
			delete(p.state, id)
		}
	}
}

func (p *Poller) fetchAll(ctx context.Context, s Settings, ids []string) []result {
	results := make([]result, len(ids))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(s.Concurrency, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] = p.fetch(ctx, s.Fetcher, ids[i])
			}
		}()
	}
	for i := range ids {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	return results
}

// fetch gets one run, retrying transient failures with exponential backoff
// and jitter. A server-requested pause (Retry-After) holds back every
// worker, not only this one.
func (p *Poller) fetch(ctx context.Context, f Fetcher, id string) result {
	for attempt := 1; ; attempt++ {
		if err := p.waitTurn(ctx); err != nil {
			return result{id: id, err: err}
		}
		run, warnings, err := f.GetRun(ctx, id)
		if err == nil {
			return result{id: id, run: run, warnings: warnings}
		}
		var apiErr *api.Error
		if !errors.As(err, &apiErr) || !apiErr.Retryable() || attempt >= p.backoff.Attempts {
			return result{id: id, err: err}
		}
		level.Debug(p.logger).Log("msg", "retrying run", "run_id", id, "attempt", attempt, "reason", apiErr.Reason, "err", err)
		if apiErr.RetryAfter > 0 {
			p.pause(apiErr.RetryAfter)
			continue
		}
		if err := sleep(ctx, p.backoffDelay(attempt)); err != nil {
			return result{id: id, err: err}
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

func (p *Poller) pause(d time.Duration) {
	until := p.now().Add(d).UnixNano()
	for {
		cur := p.pauseUntil.Load()
		if cur >= until || p.pauseUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// waitTurn blocks until no pause is in force and the rate limiter allows a
// request.
func (p *Poller) waitTurn(ctx context.Context) error {
	for {
		wait := time.Duration(p.pauseUntil.Load() - p.now().UnixNano())
		if wait <= 0 {
			break
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	return p.limiter.Wait(ctx)
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

func (p *Poller) record(res result, progressMax float64) {
	e := p.state[res.id]
	if res.err == nil {
		problems := res.warnings
		if res.run.HasProgress && res.run.Progress > progressMax {
			// A ratio above 1 is meaningless; most likely api.progress_max
			// does not match the API's scale. Leave it out and say so.
			res.run.HasProgress = false
			problems = append(problems, "progress "+strconv.FormatFloat(res.run.Progress, 'g', -1, 64)+" is above api.progress_max")
		}
		e.run, e.fetchOK, e.lastSuccess = res.run, true, p.now()
		if e.failing != "" {
			level.Info(p.logger).Log("msg", "fetching run works again", "run_id", res.id, "after", e.failing)
			e.failing = ""
		}
		if !res.run.Status.Known() {
			problems = append(problems, "unknown status "+strconv.Quote(string(res.run.Status)))
		}
		// Logged when they change, not on every cycle of a long run.
		if w := strings.Join(problems, "; "); w != e.warnings {
			e.warnings = w
			if w != "" {
				level.Warn(p.logger).Log("msg", "run data drifted from the API documentation", "run_id", res.id, "problems", w)
			}
		}
		return
	}
	reason := api.ReasonOf(res.err)
	p.metrics.fetchErrors.WithLabelValues(string(reason)).Inc()
	e.fetchOK = false
	if reason == api.ReasonNotFound {
		// The run does not exist (any more): its data must not linger.
		e.run = nil
	}
	// A warning when a run starts failing or fails differently; the same
	// failure again is at debug level, so an outage of an API with thousands
	// of runs does not write thousands of lines every cycle. The counters
	// and fetch_success show that it goes on. 401/403 are summed up per
	// cycle in cycle().
	logAt := level.Debug
	if reason != e.failing && reason != api.ReasonUnauthorized {
		logAt = level.Warn
	}
	e.failing = reason
	logAt(p.logger).Log("msg", "fetching run failed", "run_id", res.id, "reason", reason, "err", res.err)
}

func (p *Poller) publish(s Settings, end time.Time) {
	ids := slices.Clone(s.IDs)
	slices.Sort(ids)
	snap := &runs.Snapshot{Runs: make([]runs.Tracked, 0, len(ids)), ProgressMax: s.ProgressMax, CycleEnd: end}
	for _, id := range ids {
		e := p.state[id]
		snap.Runs = append(snap.Runs, runs.Tracked{ID: id, Run: e.run, FetchOK: e.fetchOK, LastSuccess: e.lastSuccess})
	}
	p.store.Publish(snap)
	if p.afterPublish != nil {
		p.afterPublish()
	}
}
