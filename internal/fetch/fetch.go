// Package fetch decides when a request to the API may go: a request slot
// (poll.concurrency), a token of the rate limiter
// (poll.max_requests_per_second), no Retry-After pause in force, and a fair
// share between the poll cycles and /probe. It also says how long a
// failed request waits before its retry. What to fetch, and what a result
// means, is the poller's business.
package fetch

import (
	"context"
	"errors"
	"math/rand/v2"
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

// Class is who asks for a request.
type Class int

const (
	// Poll: the poll cycles.
	Poll Class = iota
	// Probe: GET /probe.
	Probe
)

// ErrBusy refuses a probe when as many probes wait for a turn as the rate
// limit can serve within a probe's usual deadline: waiting longer would
// only time out, and an unbounded queue is memory a flood of probes takes.
var ErrBusy = errors.New("too many probes are waiting for a request to the API")

// Backoff paces the retries of a failed request.
type Backoff struct {
	Initial  time.Duration // wait before the second attempt; doubles after each
	Max      time.Duration // cap for one wait
	Attempts int           // attempts per run and cycle, the first included
}

// DefaultBackoff retries a transient failure twice, after about 1s and 2s.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 30 * time.Second, Attempts: 3}

// Delay returns the wait before attempt+1, with jitter.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Initial << (attempt - 1)
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	// Full jitter over the upper half: retries of many runs spread out
	// instead of arriving at the API together.
	return d/2 + rand.N(d/2+1)
}

// Result is the outcome of one attempt.
type Result struct {
	Run      *runs.Run
	Warnings []string
	Err      error
	// Sent reports that the request went to the API (it may still have
	// been cut short): false when the turn ended waiting for a token or
	// the end of a pause.
	Sent bool
}

// Gate hands out turns to make one request each. Safe for concurrent use.
//
// A request goes when it has a free slot (Wait), then a token of the rate
// limiter, then no Retry-After pause in force (Turn.Do). The slot comes
// first so that a request waiting for one holds no token: otherwise the
// requests that waited would all start at once when slots free up, beyond
// max_requests_per_second. While poll requests wait, probes get every
// other slot that frees up and hold at most half of the slots, so a flood
// of probes takes at most half of the requests and never starves polling;
// with no poll request waiting, probes may use them all.
type Gate struct {
	logger log.Logger

	// Burst 1: requests are spaced evenly, so no one-second window ever
	// holds more than max_requests_per_second of them.
	limiter    *rate.Limiter
	pauseUntil atomic.Int64 // Unix nanoseconds; no request starts before
	pausedTo   prometheus.Gauge
	pauses     prometheus.Counter

	mu        sync.Mutex
	slots     int // poll.concurrency
	inUse     [2]int
	queue     [2][]*waiter
	maxQueue  int  // probes waiting at most
	probeNext bool // the next slot goes to a probe if one waits
	fetcher   Fetcher
	users     map[Fetcher]int // requests under way per client, to close a replaced one when idle
}

type waiter struct {
	granted chan struct{}
	done    bool // granted, or given up; guarded by Gate.mu
}

// New returns a gate; call Configure before the first turn.
func New(logger log.Logger, reg prometheus.Registerer) *Gate {
	g := &Gate{
		logger:  logger,
		limiter: rate.NewLimiter(rate.Inf, 1),
		users:   map[Fetcher]int{},
		pausedTo: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_api_paused_until_timestamp_seconds",
			Help: "When the last pause of all requests the API asked for (Retry-After) ends or ended, as Unix time; 0 if it never asked.",
		}),
		pauses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "workflow_runs_exporter_api_pauses_total",
			Help: "Pauses of all requests the API asked for with Retry-After.",
		}),
	}
	reg.MustRegister(g.pausedTo, g.pauses)
	return g
}

// Configure switches to a new client and pace; requests under way finish
// on the client they started with. A replaced client's idle connections
// are closed once its last request is over.
func (g *Gate) Configure(f Fetcher, concurrency int, perSecond float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old := g.fetcher; old != nil && old != f && g.users[old] == 0 {
		closeIdle(old)
	}
	g.fetcher, g.slots = f, concurrency
	g.limiter.SetLimit(rate.Limit(perSecond))
	// Probes that wait longer than a probe's default deadline (10 s)
	// would time out anyway; with the rate shared, half the rate serves
	// them.
	g.maxQueue = max(2*concurrency, int(perSecond*10/2))
	g.dispatch()
}

// Turn is one request's right to go; Do makes the request and gives the
// turn back.
type Turn struct {
	g     *Gate
	class Class
}

// Wait blocks until class holds a request slot, or ctx ends. A probe is
// refused with ErrBusy when too many probes wait already.
func (g *Gate) Wait(ctx context.Context, class Class) (*Turn, error) {
	w := &waiter{granted: make(chan struct{})}
	g.mu.Lock()
	if class == Probe && len(g.queue[Probe]) >= g.maxQueue {
		g.mu.Unlock()
		return nil, ErrBusy
	}
	g.queue[class] = append(g.queue[class], w)
	g.dispatch()
	g.mu.Unlock()

	select {
	case <-w.granted:
	case <-ctx.Done():
		g.mu.Lock()
		granted := w.done
		w.done = true
		g.remove(class, w)
		g.mu.Unlock()
		if granted {
			g.release(class)
		}
		return nil, ctx.Err()
	}
	return &Turn{g: g, class: class}, nil
}

// Do waits for a token of the rate limiter and the end of any Retry-After
// pause, then makes one request with the turn, which it gives back. A
// Retry-After in the answer pauses every request, not only this run's.
//
// The token is waited for here, by the holder of a slot, rather than by
// Wait: the slots, of which probes hold at most half while poll requests
// wait, then share the rate limiter's tokens in the order they ask, so
// the share of the rate follows the share of the slots.
func (t *Turn) Do(ctx context.Context, id string) Result {
	g := t.g
	defer g.release(t.class)
	if err := g.limiter.Wait(ctx); err != nil {
		// ctx ends, or would end before the token comes (its error is
		// then still nil): the request is given up, which is no result.
		return Result{Err: err}
	}
	// The pause is checked last, so a pause that began while this request
	// waited holds it too.
	for {
		wait := time.Duration(g.pauseUntil.Load() - time.Now().UnixNano())
		if wait <= 0 {
			break
		}
		if err := sleep(ctx, wait); err != nil {
			return Result{Err: err}
		}
	}
	g.mu.Lock()
	f := g.fetcher
	g.users[f]++
	g.mu.Unlock()
	run, warnings, err := f.GetRun(ctx, id)
	g.mu.Lock()
	if g.users[f]--; g.users[f] == 0 {
		delete(g.users, f)
		if f != g.fetcher {
			closeIdle(f)
		}
	}
	g.mu.Unlock()
	var apiErr *api.Error
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		g.pause(apiErr.RetryAfter, apiErr.Reason)
	}
	return Result{Run: run, Warnings: warnings, Err: err, Sent: true}
}

// Waiting reports how many requests of class wait for a slot (for tests
// and the poller's pacing).
func (g *Gate) Waiting(class Class) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue[class])
}

// InUse reports how many slots class holds.
func (g *Gate) InUse(class Class) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inUse[class]
}

func (g *Gate) release(class Class) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inUse[class]--
	g.dispatch()
}

// dispatch grants free slots to waiting requests. Called with g.mu held.
func (g *Gate) dispatch() {
	for g.inUse[Poll]+g.inUse[Probe] < g.slots {
		class, ok := g.next()
		if !ok {
			return
		}
		w := g.queue[class][0]
		g.queue[class] = g.queue[class][1:]
		w.done = true
		g.inUse[class]++
		close(w.granted)
	}
}

// next picks the class the next free slot goes to. Called with g.mu held.
func (g *Gate) next() (Class, bool) {
	polls, probes := len(g.queue[Poll]) > 0, len(g.queue[Probe]) > 0
	switch {
	case polls && probes:
		// Both wait: alternate, and probes never hold more than half.
		if g.probeNext && 2*(g.inUse[Probe]+1) <= max(g.slots, 2) {
			g.probeNext = false
			return Probe, true
		}
		g.probeNext = true
		return Poll, true
	case polls:
		return Poll, true
	case probes:
		return Probe, true
	}
	return 0, false
}

func (g *Gate) remove(class Class, w *waiter) {
	q := g.queue[class]
	for i, x := range q {
		if x == w {
			g.queue[class] = append(q[:i:i], q[i+1:]...)
			return
		}
	}
}

// pause holds back every request for d. A pause that starts (rather than
// extends one in force) is logged once, with how long and why, so that a
// long silence in the data has an explanation in the log and in
// workflow_runs_exporter_api_paused_until_timestamp_seconds.
func (g *Gate) pause(d time.Duration, reason api.Reason) {
	now := time.Now()
	until := now.Add(d).UnixNano()
	for {
		cur := g.pauseUntil.Load()
		if cur >= until {
			return
		}
		if g.pauseUntil.CompareAndSwap(cur, until) {
			g.pausedTo.Set(float64(until) / 1e9)
			if cur < now.UnixNano() {
				g.pauses.Inc()
				level.Warn(g.logger).Log("msg", "API asked to pause all requests", "reason", reason, "for", d, "until", time.Unix(0, until).UTC().Format(time.RFC3339))
			}
			return
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
