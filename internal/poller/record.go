package poller

import (
	"strings"

	"github.com/go-kit/log/level"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/fetch"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// maxQueueGapIntervals bounds the time between the last sight of a run
// queued and the first sight of it not queued for which the moment it
// left the queue is estimated: the estimate is the midpoint, so its error
// is at most half of that, 1.5 poll intervals, and usually half of one.
// A run seen again only after longer (an outage, a restart) gets no queue
// wait rather than a wrong one.
const maxQueueGapIntervals = 3

// record applies a fetch result to the run's state and hands the change
// on: to the ledger (what it counts, what the state store keeps) and, for
// a tracked run, to the run metrics store. A fetch cut short by shutdown
// or by a probe's deadline is no result. It returns the run's state; for a
// probe of a run not in memory that the API did not answer with a run,
// that state is the failure alone, kept nowhere.
func (p *Poller) record(id string, res fetch.Result, probe bool) runs.State {
	reason := api.ReasonOf(res.Err)
	if res.Err != nil && reason == "" {
		return runs.State{ID: id}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if res.Err != nil {
		p.metrics.fetchErrors.WithLabelValues(string(reason)).Inc()
	}
	e := p.entries[id]
	switch {
	case e == nil && res.Err != nil:
		// Unknown IDs, refused requests: nothing lasting for what the API
		// did not answer with a run.
		st := runs.State{ID: id}
		st.Failed(string(reason), reason == api.ReasonNotFound, now, p.settings.NotFoundGrace)
		level.Debug(p.logger).Log("msg", "fetching run failed", "run_id", id, "reason", reason, "err", res.Err)
		return st
	case e == nil && !probe:
		return runs.State{ID: id} // taken off the list while it was fetched
	case e == nil:
		// What the ledger keeps of it (counted, and finished within the
		// window, say: let go from memory while this probe fetched it).
		e = p.newEntry(id, p.ledger.Load([]string{id}, now)[id])
		e.probed, e.lastFetch, e.byProbe = stampOf(now), stampOf(now), true
		e.inProbeOnly = p.probeOnly.PushBack(id)
		defer p.evictProbed()
	}
	if !e.attempted {
		e.attempted = true
		if e.tracked {
			p.pending--
			if p.pending == 0 {
				p.ready.Store(true)
			}
		}
	}
	var sight runs.Sight
	if res.Err == nil {
		sight = e.state.Succeeded(res.Run, now, maxQueueGapIntervals*p.settings.Interval)
		p.logRecovery(e)
		p.logDrift(e, res.Warnings)
	} else {
		before := e.state
		e.state.Failed(string(reason), reason == api.ReasonNotFound, now, p.settings.NotFoundGrace)
		p.logFailure(e, reason, res.Err, probe)
		if e.state == before {
			return e.state // the same failure again: nothing to render or store
		}
	}
	p.ledger.Save(&e.state, sight, now)
	if e.tracked && !e.state.Retired {
		p.out.Update(&e.state)
	}
	return e.state
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
// summed up in one line by the cycle.
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
