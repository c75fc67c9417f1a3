package poller

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-kit/log/level"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/fetch"
)

// Poll cycles (DESIGN §7). Every poll.interval a cycle takes the tracked
// runs that are due: not finished, not in flight, not waiting for a retry
// (and not fetched by a probe within the interval). It sends their
// requests as turns come (fetch.Gate: slots, rate limit, pauses), each in
// a goroutine of its own, so a slow or hanging run holds one request slot
// and nothing else: an attempt still in flight when the next interval
// comes goes on, and its run is simply not due then. Retries wait in the
// background (a timer heap, not a goroutine each), and take a turn like
// any request. Only a cycle that cannot send all its requests within the
// interval delays the next one.
//
// A cycle ends when each of its runs has been answered or carried past
// the next interval's start; poll_cycle_duration_seconds measures that,
// and last_poll_cycle_timestamp_seconds is when the last one ended.

// cycle is one poll cycle's bookkeeping.
type cycle struct {
	start time.Time

	mu           sync.Mutex
	open         int // runs of the cycle not answered yet
	fed          bool
	ended        bool
	unauthorized int
	done         chan struct{} // closed when the cycle ends
}

// Run polls until ctx is cancelled, and returns once every request and
// retry under way is over.
func (p *Poller) Run(ctx context.Context) {
	select { // wait for the first Apply
	case <-p.wake:
	case <-ctx.Done():
		return
	}
	defer p.attempts.Wait()
	p.attempts.Add(1)
	go func() {
		defer p.attempts.Done()
		p.runRetries(ctx)
	}()
	var prev *cycle
	for {
		start := time.Now()
		if prev != nil {
			// Runs of the last cycle still under way are carried past
			// this interval's start: that cycle ends now.
			p.endCycle(prev, start)
		}
		prev = p.startCycle(ctx)
		if ctx.Err() != nil {
			return
		}
		if !p.waitInterval(ctx, start) {
			return
		}
	}
}

// waitInterval waits until the next interval starts, fetching runs added
// to the list meanwhile at once rather than an interval later; a reload
// that replaced the client starts the next cycle at once. It returns false
// when ctx ends.
func (p *Poller) waitInterval(ctx context.Context, start time.Time) bool {
	for {
		p.mu.Lock()
		interval := p.settings.Interval
		p.mu.Unlock()
		timer := time.NewTimer(time.Until(start.Add(interval)))
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-timer.C:
			return true
		case <-p.wake:
			timer.Stop()
			p.mu.Lock()
			reloaded := p.reloaded
			p.mu.Unlock()
			if reloaded {
				return true
			}
			// The runs added are fed beside the schedule, not in its way:
			// a large ids_file change at a low rate must not hold up the
			// next cycles.
			ids := p.takeDue(true)
			p.attempts.Add(1)
			go func() {
				defer p.attempts.Done()
				p.feed(ctx, nil, ids)
			}()
		}
	}
}

// startCycle starts a cycle: retires runs past finished_retention, lets
// idle probe-only runs go, and sends the requests of the due runs. It
// returns once every request has had its turn.
func (p *Poller) startCycle(ctx context.Context) *cycle {
	c := &cycle{start: p.now(), done: make(chan struct{})}
	p.mu.Lock()
	p.reloaded = false
	p.retireFinished(c.start)
	p.evictProbed()
	p.mu.Unlock()
	p.ledger.Prune(c.start)
	ids := p.takeDue(false)
	c.mu.Lock()
	c.open = len(ids)
	c.mu.Unlock()
	p.feed(ctx, c, ids)
	c.mu.Lock()
	c.fed = true
	end := c.open == 0
	c.mu.Unlock()
	if end {
		p.endCycle(c, p.now())
	}
	return c
}

// retireFinished drops the series of finished runs whose
// finished_retention has passed. Called with p.mu held.
func (p *Poller) retireFinished(now time.Time) {
	if p.settings.FinishedRetention <= 0 {
		return
	}
	var retired []string
	for _, id := range p.settings.IDs {
		e := p.entries[id]
		if e != nil && e.tracked && e.state.Finished() && !e.state.Retired && e.state.RetentionOver(now, p.settings.FinishedRetention) {
			p.retire(e, now)
			retired = append(retired, id)
		}
	}
	p.out.Delete(retired...)
}

// takeDue returns the tracked runs due for a fetch, marking each in
// flight; onlyNew takes only those never attempted (added to the list).
func (p *Poller) takeDue(onlyNew bool) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if len(p.calls) == 0 {
		// A map keeps the room it once needed: the first cycle's calls for
		// every run would otherwise stay allocated for good.
		p.calls = map[string]*call{}
	}
	var ids []string
	for _, id := range p.settings.IDs {
		e := p.entries[id]
		if e == nil || !e.tracked || e.state.Retired || e.state.Finished() || p.calls[id] != nil {
			continue
		}
		if onlyNew && e.attempted {
			continue
		}
		if e.byProbe && e.lastFetch.within(now, p.settings.Interval) {
			continue // a probe fetched it within the interval
		}
		p.calls[id] = &call{done: make(chan struct{})}
		ids = append(ids, id)
	}
	return ids
}

// feed sends the requests of ids as turns come. It returns once each has
// had its turn, or when ctx ends (the rest are given up).
func (p *Poller) feed(ctx context.Context, c *cycle, ids []string) {
	for i, id := range ids {
		turn, err := p.gate.Wait(ctx, fetch.Poll)
		if err != nil {
			for _, id := range ids[i:] {
				p.conclude(id, c, nil)
			}
			return
		}
		p.attempts.Add(1)
		go p.attempt(ctx, turn, id, 1, c)
	}
}

// attempt makes one request for a run. A transient failure with attempts
// left waits for its retry in the background; anything else is the run's
// result.
func (p *Poller) attempt(ctx context.Context, turn *fetch.Turn, id string, n int, c *cycle) {
	defer p.attempts.Done()
	p.mu.Lock()
	if e := p.entries[id]; e != nil {
		e.lastFetch, e.byProbe = stampOf(p.now()), false
	}
	p.mu.Unlock()
	res := turn.Do(ctx, id)
	var apiErr *api.Error
	if errors.As(res.Err, &apiErr) && apiErr.Retryable() && n < p.backoff.Attempts && ctx.Err() == nil {
		level.Debug(p.logger).Log("msg", "retrying run", "run_id", id, "attempt", n, "reason", apiErr.Reason, "err", res.Err)
		delay := p.backoff.Delay(n)
		if apiErr.RetryAfter > 0 {
			delay = 0 // the gate holds it until the pause is over
		}
		p.queueRetry(retry{at: time.Now().Add(delay), id: id, attempt: n + 1, cycle: c})
		return
	}
	p.conclude(id, c, &res)
}

// conclude records a run's result (nil: given up at shutdown) and ends its
// fetch, waking whoever waits for it.
func (p *Poller) conclude(id string, c *cycle, res *fetch.Result) {
	if res != nil {
		p.record(id, *res, false)
	}
	p.mu.Lock()
	done := p.calls[id]
	delete(p.calls, id)
	p.mu.Unlock()
	if done != nil {
		close(done.done)
	}
	if c == nil {
		return
	}
	c.mu.Lock()
	c.open--
	if res != nil && api.ReasonOf(res.Err) == api.ReasonUnauthorized {
		c.unauthorized++
	}
	end := c.open == 0 && c.fed
	c.mu.Unlock()
	if end {
		p.endCycle(c, p.now())
	}
}

// endCycle ends c at t, once.
func (p *Poller) endCycle(c *cycle, t time.Time) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	unauthorized := c.unauthorized
	c.mu.Unlock()
	if unauthorized > 0 {
		// One line per cycle, not per run: a revoked token must not flood
		// the logs. Per-run details are at debug level.
		level.Warn(p.logger).Log("msg", "API rejected the credentials", "reason", api.ReasonUnauthorized, "runs", unauthorized)
	}
	p.metrics.cycleDuration.Observe(t.Sub(c.start).Seconds())
	p.metrics.lastCycle.Set(float64(t.UnixNano()) / 1e9)
	close(c.done)
}

// retry is a run's next attempt, due at at.
type retry struct {
	at      time.Time
	id      string
	attempt int
	cycle   *cycle
}

// retryHeap orders the waiting retries by when they are due.
type retryHeap []retry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retry)) }
func (h *retryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (p *Poller) queueRetry(r retry) {
	p.mu.Lock()
	if p.retriesStopped {
		// Shutdown: nobody sends it any more. Ended here, so whoever
		// waits for the run is not left waiting.
		p.mu.Unlock()
		p.conclude(r.id, r.cycle, nil)
		return
	}
	heap.Push((*retryHeap)(&p.retries), r)
	p.mu.Unlock()
	select {
	case p.retryAt <- struct{}{}:
	default:
	}
}

// runRetries sends each retry when it is due, as turns come, until ctx
// ends; the retries left then are given up.
func (p *Poller) runRetries(ctx context.Context) {
	for {
		p.mu.Lock()
		var r retry
		due, wait := false, time.Duration(-1)
		if len(p.retries) > 0 {
			if w := time.Until(p.retries[0].at); w <= 0 {
				r, due = heap.Pop((*retryHeap)(&p.retries)).(retry), true
			} else {
				wait = w
			}
		}
		p.mu.Unlock()
		if due {
			turn, err := p.gate.Wait(ctx, fetch.Poll)
			if err != nil {
				p.conclude(r.id, r.cycle, nil)
				continue
			}
			p.attempts.Add(1)
			go p.attempt(ctx, turn, r.id, r.attempt, r.cycle)
			continue
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if wait >= 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			p.mu.Lock()
			left := p.retries
			p.retries, p.retriesStopped = nil, true
			p.mu.Unlock()
			for _, r := range left {
				p.conclude(r.id, r.cycle, nil)
			}
			return
		case <-p.retryAt:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}
