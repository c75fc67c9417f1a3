package poller

import (
	"container/list"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// table is the runs in memory: the tracked ones (listed, in this shard)
// and the probe-only ones (probed, not listed, answered by the API with a
// run). Nothing else: a run the API did not answer for leaves no entry,
// and runs leaving memory go through the ledger, which keeps only what
// counting still needs.
type table struct {
	entries map[string]*entry
	// probeOnly holds the IDs of the probe-only runs, the least recently
	// probed first: the ones to let go when probe.max_runs is reached, or
	// when they were not probed for ProbeIdle.
	probeOnly *list.List
	// calls are the fetches under way, by run: one at most per run,
	// whoever asked for it (a poll cycle, a retry, a probe), so a run is
	// never in flight twice.
	calls map[string]*call
	// pending counts the tracked runs not attempted yet, for /-/ready.
	pending int
}

func newTable() table {
	return table{entries: map[string]*entry{}, probeOnly: list.New(), calls: map[string]*call{}}
}

// entry is the poller's record of one run: its state and what only this
// process needs to know about it.
type entry struct {
	state   runs.State
	tracked bool // listed, in this shard
	// probed is when /probe last asked for the run; inProbeOnly its place
	// in table.probeOnly while it is not tracked.
	probed      stamp
	inProbeOnly *list.Element
	// lastFetch is when the last attempt started, and byProbe whether a
	// probe made it: a run fetched by a probe is not due for a poll cycle
	// (nor for another probe) within the poll interval.
	lastFetch stamp
	attempted bool // fetched at least once by this process, or restored finished
	byProbe   bool
	// failReason is the reason of the current run of failed fetches, to
	// warn once when it starts or changes rather than on every cycle.
	failReason api.Reason
	problems   string // drift last logged, to log it when it changes
}

// stamp is a moment as Unix nanoseconds, 0 for never: a third of a
// time.Time, in an entry kept for every run.
type stamp int64

func stampOf(t time.Time) stamp { return stamp(t.UnixNano()) }

// within reports whether the stamp is set and less than d before now.
func (s stamp) within(now time.Time, d time.Duration) bool {
	return s != 0 && now.UnixNano()-int64(s) < int64(d)
}

// call is a fetch under way: its attempts, retries included. Whoever wants
// the same run meanwhile waits for done instead of fetching again.
type call struct {
	done chan struct{}
	// state and err are a probe's answer for a run not in memory, for the
	// probes that waited for it; set before done is closed.
	state runs.State
	err   error
}

// track makes ids the tracked runs; publish hands the runs coming in to
// the run metrics store one by one (the caller renders them all at once
// otherwise). Called with p.mu held.
func (p *Poller) track(ids []string, publish bool) {
	now := p.now()
	keep := make(map[string]struct{}, len(ids))
	var fresh []string
	for _, id := range ids {
		keep[id] = struct{}{}
		if p.entries[id] == nil {
			fresh = append(fresh, id)
		}
	}
	// One read of the state store for all the runs coming in, not one per
	// run: a start or a large ids_file change reads them in one go.
	restored := p.ledger.Load(fresh, now)
	for _, id := range ids {
		e := p.entries[id]
		if e == nil {
			e = p.newEntry(id, restored[id])
		}
		if e.tracked {
			p.unretire(e, now)
			continue
		}
		if e.inProbeOnly != nil {
			p.probeOnly.Remove(e.inProbeOnly)
			e.inProbeOnly = nil
		}
		e.tracked = true
		p.unretire(e, now)
		if e.state.Retired {
			continue
		}
		if !e.attempted {
			p.pending++
		}
		if publish {
			p.out.Update(&e.state)
		}
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
		if e.probed.within(now, p.probeIdle) {
			e.inProbeOnly = p.probeOnly.PushBack(id) // probed lately: stays as probe-only
			continue
		}
		p.drop(id, e, now)
	}
	p.out.Delete(gone...)
	p.metrics.probeRuns.Set(float64(p.probeOnly.Len()))
	if p.pending == 0 {
		p.ready.Store(true)
	}
}

// newEntry puts run id in memory with what the ledger restored of it.
// Called with p.mu held.
func (p *Poller) newEntry(id string, restored runs.State) *entry {
	e := &entry{state: restored}
	e.state.ID = id
	// A finished run restored from the store needs no fetch: the restart
	// costs no request for it.
	e.attempted = restored.Finished() || restored.Retired
	p.entries[id] = e
	return e
}

// drop takes a run out of memory; the ledger keeps what counting needs.
// Called with p.mu held.
func (p *Poller) drop(id string, e *entry, now time.Time) {
	if e.inProbeOnly != nil {
		p.probeOnly.Remove(e.inProbeOnly)
		e.inProbeOnly = nil
	}
	delete(p.entries, id)
	p.ledger.Drop(e.state, now)
}

// evictProbed lets go of the probe-only runs beyond probe.max_runs, and of
// those not probed for ProbeIdle, the least recently probed first. Called
// with p.mu held.
func (p *Poller) evictProbed() {
	now := p.now()
	for el := p.probeOnly.Front(); el != nil; {
		next := el.Next()
		id := el.Value.(string)
		e := p.entries[id]
		if p.probeOnly.Len() <= p.settings.ProbeMaxRuns && e.probed.within(now, p.probeIdle) {
			break
		}
		// A run being fetched stays until its answer is recorded: let go
		// now, the answer would make it anew without what the ledger
		// keeps.
		if p.calls[id] == nil {
			p.drop(id, e, now)
		}
		el = next
	}
	p.metrics.probeRuns.Set(float64(p.probeOnly.Len()))
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
	p.ledger.Save(&e.state, runs.Sight{}, now)
}

// retire marks a finished run whose runs.finished_retention has passed: the
// caller drops its series. It stays known, counted and never fetched
// again. Called with p.mu held.
func (p *Poller) retire(e *entry, now time.Time) {
	e.state.Retired = true
	p.ledger.Save(&e.state, runs.Sight{}, now)
}
