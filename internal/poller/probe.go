package poller

import (
	"context"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Probe returns what is known of run id for GET /probe. A finished run, or
// one fetched less than poll.interval ago, is answered from memory; any
// other is fetched first, once however many probes ask at the same time,
// through the same rate limit and request slots as the poll cycles, so
// that many probe targets cannot make the exporter flood the API. The
// fetch is one attempt within ctx: a probe has a scrape's deadline, and a
// failed attempt shows as fetch_success 0 until the next one.
func (p *Poller) Probe(ctx context.Context, id string) runs.State {
	p.mu.Lock()
	e := p.entry(id)
	now := p.now()
	e.probed = now
	call := e.probe
	fresh := !e.lastAttempt.IsZero() && now.Sub(e.lastAttempt) < p.settings.Interval
	if call == nil && (e.state.Finished() || fresh || !p.applied) {
		st := e.state
		p.mu.Unlock()
		return st
	}
	if call == nil {
		call = &probeCall{done: make(chan struct{})}
		e.probe = call
		// Counted from the start: a fetch cut short by the probe's deadline
		// still waits an interval before the next, so an API slower than
		// the scrape timeout is not asked on every scrape.
		e.lastAttempt = now
		p.mu.Unlock()
		res := p.fetch(ctx, id, 1)
		p.record(id, res, true)
		p.mu.Lock()
		e.probe = nil
		p.mu.Unlock()
		close(call.done)
	} else {
		p.mu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return e.state
}
