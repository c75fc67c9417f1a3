// Package poller keeps the state of the runs the exporter knows: it fetches
// the tracked runs once per poll interval (schedule.go) and the runs /probe
// asks for (probe.go), and hands every change of a run's state on as it
// happens (record.go): to the ledger, which decides what is counted and
// keeps what must survive a restart, and to the run metrics store. The run
// table (table.go) says which runs are in memory and why.
//
// When a request may go is the fetch package's business; whether a run is
// counted is the ledger's.
package poller

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/fetch"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/ledger"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// MetricsStore receives the state of every tracked run each time it
// changes, in order; collector.MetricsStore implements it. It must not keep
// st.
type MetricsStore interface {
	Update(st *runs.State)
	// Delete removes runs; many at once cost much less than one by one.
	Delete(ids ...string)
	// Reset replaces every run with states, rendered with a new
	// api.progress_max.
	Reset(progressMax float64, states []*runs.State)
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
	CountWindow          time.Duration
	// ProbeMaxRuns caps the probe-only runs kept in memory.
	ProbeMaxRuns int
}

// Options configure a Poller.
type Options struct {
	Logger       log.Logger
	Registerer   prometheus.Registerer
	MetricsStore MetricsStore
	// Ledger decides what is counted and keeps run states across
	// restarts; a memory-backed one when there is no state store.
	Ledger *ledger.Ledger
	// Backoff paces retries; fetch.DefaultBackoff when zero.
	Backoff fetch.Backoff
	// Now is the clock the run states are stamped with; time.Now when nil.
	Now func() time.Time
	// ProbeIdle is how long a run that only /probe asks for stays in
	// memory after the last probe; 1h when zero.
	ProbeIdle time.Duration
}

// Poller owns the state of every run in memory and the loop that fetches
// the tracked ones.
type Poller struct {
	logger    log.Logger
	metrics   *metrics
	out       MetricsStore
	ledger    *ledger.Ledger
	gate      *fetch.Gate
	backoff   fetch.Backoff
	now       func() time.Time
	probeIdle time.Duration

	ready atomic.Bool
	wake  chan struct{}
	// attempts counts the requests and retry timers under way, so Run
	// returns only once they are over.
	attempts sync.WaitGroup

	mu       sync.Mutex // guards the table and everything below
	settings Settings
	applied  bool
	client   fetch.Fetcher
	// reloaded: the client changed since the last cycle started (a
	// reload), so the next cycle starts at once rather than an interval
	// after the last, to show the new configuration's effect.
	reloaded bool
	table
	// retries are the runs whose next attempt waits for a turn;
	// retriesStopped once runRetries has returned.
	retries        []retry
	retriesStopped bool
	retryAt        chan struct{} // capacity 1: a retry was queued
}

// New returns a poller; call Apply before Run.
func New(o Options) *Poller {
	if o.Backoff.Attempts == 0 {
		o.Backoff = fetch.DefaultBackoff
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ProbeIdle == 0 {
		o.ProbeIdle = time.Hour
	}
	if o.Ledger == nil {
		o.Ledger = ledger.New(ledger.Options{Logger: o.Logger})
	}
	return &Poller{
		logger:    o.Logger,
		metrics:   newMetrics(o.Registerer),
		out:       o.MetricsStore,
		ledger:    o.Ledger,
		gate:      fetch.New(o.Logger, o.Registerer),
		backoff:   o.Backoff,
		now:       o.Now,
		probeIdle: o.ProbeIdle,
		wake:      make(chan struct{}, 1),
		retryAt:   make(chan struct{}, 1),
		table:     newTable(),
	}
}

// Apply switches to a new client and settings. Runs added to the list are
// published at once (with fetch_success 0 until fetched, or with their last
// state from the state store) and fetched soon, without waiting for the
// interval; runs taken off the list stop being exported. State of runs that
// stay is kept: a finished run is not fetched again after a reload.
func (p *Poller) Apply(f fetch.Fetcher, s Settings) {
	p.mu.Lock()
	// At the start, or when api.progress_max changes (the ratio of every
	// run changes with it), every run is rendered anew in one go: the run
	// metrics store builds its chunks aside, finished runs straight into
	// sealed ones, instead of taking them one by one.
	renderAll := !p.applied || s.ProgressMax != p.settings.ProgressMax
	if p.applied && f != p.client {
		p.reloaded = true
	}
	p.settings, p.applied, p.client = s, true, f
	p.ledger.SetWindow(s.CountWindow)
	p.gate.Configure(f, s.Concurrency, s.MaxRequestsPerSecond)
	p.track(s.IDs, !renderAll)
	if renderAll {
		states := make([]*runs.State, 0, len(s.IDs))
		for _, id := range s.IDs {
			if e := p.entries[id]; e != nil && !e.state.Retired {
				states = append(states, &e.state)
			}
		}
		p.out.Reset(s.ProgressMax, states)
	}
	p.evictProbed()
	p.metrics.trackedRuns.Set(float64(len(s.IDs)))
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Known reports whether run id is in memory (tracked, or probed); the
// ledger's start-up sweep keeps the records of those.
func (p *Poller) Known(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.entries[id]
	return ok
}

// KnownIDs returns a copy of the IDs of the runs in memory.
func (p *Poller) KnownIDs() map[string]struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]struct{}, len(p.entries))
	for id := range p.entries {
		out[id] = struct{}{}
	}
	return out
}

// ProbeIdle is how long a probe-only run stays in memory after its last
// probe.
func (p *Poller) ProbeIdle() time.Duration { return p.probeIdle }

// Ready reports whether every tracked run has been attempted once (or was
// restored finished from the state store).
func (p *Poller) Ready() bool { return p.ready.Load() }
