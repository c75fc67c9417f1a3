package poller

import (
	"context"
	"errors"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/fetch"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Probe returns what is known of run id for GET /probe (DESIGN §9).
//
// A finished run, or one fetched less than poll.interval ago, is answered
// from memory; any other is fetched first: once however many probes ask
// at the same time, and not again if a poll cycle is fetching it already
// (the probe waits for that answer). The fetch is one attempt within ctx,
// a probe having a scrape's deadline, through the same client, rate limit
// and slots as the poll cycles, but with at most half of them while poll
// requests wait (fetch.Gate).
//
// Only a run the API answered with a run stays in memory (probe-only, at
// most probe.max_runs of them, the least recently probed let go first);
// an unknown ID, a timeout or a refused probe leaves nothing behind. When
// too many probes wait for a request already, a run in memory is answered
// from memory and any other is refused with fetch.ErrBusy.
func (p *Poller) Probe(ctx context.Context, id string) (runs.State, error) {
	p.mu.Lock()
	now := p.now()
	e := p.entries[id]
	if e == nil && p.applied {
		// Remembered by the state store (a run counted within the
		// window, say): in memory again, probe-only.
		if st, ok := p.ledger.Load([]string{id}, now)[id]; ok {
			e = p.newEntry(id, st)
			e.probed = stampOf(now)
			e.inProbeOnly = p.probeOnly.PushBack(id)
			p.evictProbed()
		}
	}
	if e != nil {
		e.probed = stampOf(now)
		if e.inProbeOnly != nil {
			p.probeOnly.MoveToBack(e.inProbeOnly)
		}
	}
	c := p.calls[id]
	if c == nil {
		fresh := e != nil && e.lastFetch.within(now, p.settings.Interval)
		if !p.applied || e != nil && (e.state.Finished() || e.state.Retired || fresh) {
			st := runs.State{ID: id}
			if e != nil {
				st = e.state
			}
			p.mu.Unlock()
			return st, nil
		}
		c = &call{done: make(chan struct{})}
		p.calls[id] = c
		p.mu.Unlock()
		c.state, c.err = p.probeFetch(ctx, id)
		p.mu.Lock()
		delete(p.calls, id)
		p.mu.Unlock()
		close(c.done)
	} else {
		p.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.entries[id]; e != nil {
		return e.state, nil
	}
	select {
	case <-c.done:
		if c.state.ID == "" {
			// A poll cycle's fetch, of a run taken off the list meanwhile.
			return runs.State{ID: id}, nil
		}
		return c.state, c.err
	default:
		return runs.State{ID: id}, nil // gave up waiting at its deadline
	}
}

// probeFetch makes one attempt for a probe and records it.
func (p *Poller) probeFetch(ctx context.Context, id string) (runs.State, error) {
	turn, err := p.gate.Wait(ctx, fetch.Probe)
	if err != nil {
		if errors.Is(err, fetch.ErrBusy) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if e := p.entries[id]; e != nil {
				return e.state, nil
			}
			return runs.State{ID: id}, err
		}
		return runs.State{ID: id}, nil // its deadline: fetch_success 0
	}
	res := turn.Do(ctx, id)
	if res.Sent {
		// Counted once the request went, answered or not: a fetch cut
		// short by the probe's deadline still waits an interval before
		// the next, so an API slower than the scrape timeout is not asked
		// on every scrape. A probe whose request never went leaves the
		// run due for the poll cycle.
		p.mu.Lock()
		if e := p.entries[id]; e != nil {
			e.lastFetch, e.byProbe = stampOf(p.now()), true
		}
		p.mu.Unlock()
	}
	return p.record(id, res, true), nil
}
