package collector

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Gatherer serves the run metrics, rendering each snapshot once. A snapshot
// changes once per poll cycle while it may be scraped many times (HA
// Prometheus pairs, dashboards, ad-hoc curls); with tens of thousands of runs
// building the const metrics costs several times more than encoding them, so
// that work is done once and every later scrape of the same snapshot only
// encodes. Rendered families are never modified, so concurrent scrapes share
// them safely.
type Gatherer struct {
	load func() *runs.Snapshot

	mu       sync.Mutex
	reg      *prometheus.Registry
	rendered *runs.Snapshot // snapshot the cache holds, read by the collector
	mfs      []*dto.MetricFamily
	err      error
}

// NewGatherer returns a Gatherer over the snapshots load returns.
func NewGatherer(load func() *runs.Snapshot) *Gatherer {
	g := &Gatherer{load: load, reg: prometheus.NewRegistry()}
	// The collector reads g.rendered, which only changes under g.mu while
	// the registry gathers: the cache always matches its key.
	g.reg.MustRegister(New(func() *runs.Snapshot { return g.rendered }))
	return g
}

// Gather implements prometheus.Gatherer.
func (g *Gatherer) Gather() ([]*dto.MetricFamily, error) {
	snap := g.load()
	g.mu.Lock()
	defer g.mu.Unlock()
	if snap != g.rendered || g.mfs == nil {
		g.rendered = snap
		g.mfs, g.err = g.reg.Gather()
	}
	return g.mfs, g.err
}

// Concat serves the families of several gatherers whose metric names are
// disjoint, without prometheus.Gatherers' merge: that merge re-hashes and
// re-sorts every series, which would undo the cache above.
func Concat(gatherers ...prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		var all []*dto.MetricFamily
		var errs []error
		for _, g := range gatherers {
			mfs, err := g.Gather()
			all = append(all, mfs...)
			if err != nil {
				errs = append(errs, err)
			}
		}
		return all, errors.Join(errs...)
	})
}
