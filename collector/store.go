package collector

import (
	"maps"
	"sort"
	"sync"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// MetricsStore is the run metrics store. The poller updates it as runs change; a
// scrape takes a consistent view under a short lock and writes it without
// holding any.
type MetricsStore struct {
	mu          sync.Mutex
	progressMax float64
	// Runs that may still change and runs that never will are kept apart,
	// so that the compressed parts of the settled majority stay valid.
	active  activeChunks
	settled settledChunks
	// series counts, per family, the runs with lines in it, so that an
	// empty family gets no header.
	series [numRunFamilies]int
	// sizeHint is the size of the last rendered run, to allocate once.
	sizeHint int

	// Aggregates: kept up to date as runs change, rendered when a scrape
	// finds them changed.
	workflows map[aggregateKey]map[string]int
	totals    runs.Totals
	version   uint64 // bumped on every change of the two above
	rendered  aggregatePieces
}

// aggregatePieces are the aggregate families rendered for one version.
type aggregatePieces struct {
	version uint64
	pieces  [numAggregateFamilies]*piece
}

// NewStore returns an empty store. progressMax is api.progress_max.
func NewMetricsStore(progressMax float64) *MetricsStore {
	return &MetricsStore{
		progressMax: progressMax,
		active:      newActiveChunks(),
		settled:     settledChunks{where: map[string]int{}},
		workflows:   map[aggregateKey]map[string]int{},
		totals:      runs.NewTotals(),
		sizeHint:    2048,
		version:     1,
	}
}

// Reset replaces every run the store holds with states, rendered with
// progressMax (api.progress_max): what a change of progress_max needs. The
// new contents are built aside and put in place at once, so no scrape
// sees the runs missing; finished runs go straight into sealed chunks
// rather than being taken out of them one by one.
func (s *MetricsStore) Reset(progressMax float64, states []*runs.State) {
	next := &MetricsStore{progressMax: progressMax, active: newActiveChunks(), settled: settledChunks{where: map[string]int{}},
		workflows: map[aggregateKey]map[string]int{}, sizeHint: 2048}
	for _, st := range states {
		rr := renderRun(st, progressMax, make([]byte, 0, next.sizeHint))
		if rr.settled {
			next.settled.add(rr)
		} else {
			next.active.put(rr)
		}
		next.account(nil, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progressMax, s.active, s.settled, s.series, s.workflows = progressMax, next.active, next.settled, next.series, next.workflows
	s.version++
}

// Update renders st and replaces what the store holds for its run. The
// rendering happens outside the lock: a scrape is never held up by it.
func (s *MetricsStore) Update(st *runs.State) {
	s.mu.Lock()
	progressMax, hint := s.progressMax, s.sizeHint
	s.mu.Unlock()
	rr := renderRun(st, progressMax, make([]byte, 0, hint))

	s.mu.Lock()
	defer s.mu.Unlock()
	s.sizeHint = max(len(rr.buf)+len(rr.buf)/8, 256)
	var old *renderedRun
	if rr.settled {
		old = s.remove(rr.id)
		s.settled.add(rr)
	} else if old = s.settled.remove(rr.id); old == nil {
		old = s.active.put(rr) // the common case: an unfinished run refreshed
	} else {
		s.active.put(rr)
	}
	s.account(old, rr)
}

// remove takes the run id out of whichever set holds it.
func (s *MetricsStore) remove(id string) *renderedRun {
	if old := s.settled.remove(id); old != nil {
		return old
	}
	return s.active.remove(id)
}

// Delete removes runs' series. Finished runs in a sealed chunk are taken
// out together, so that each chunk is decoded and sealed again once, not
// once per run.
func (s *MetricsStore) Delete(ids ...string) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.settled.removeMany(ids) {
		s.account(old, nil)
	}
	for _, id := range ids {
		if old := s.active.remove(id); old != nil {
			s.account(old, nil)
		}
	}
}

// Len returns the number of runs held.
func (s *MetricsStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active.count + len(s.settled.where)
}

// SetTotals replaces the lifecycle totals, e.g. with those a state store
// kept across a restart.
func (s *MetricsStore) SetTotals(t runs.Totals) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.totals = t.Clone()
	s.version++
}

// AddCounts adds what the ledger counted to the lifecycle totals.
func (s *MetricsStore) AddCounts(c runs.Counts) {
	if c.Empty() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.totals.Add(c)
	s.version++
}

// account moves a run's share of the series counts and of workflow_runs
// from old to next (either may be nil).
func (s *MetricsStore) account(old, next *renderedRun) {
	s.countSeries(old, -1)
	s.countSeries(next, +1)
	if old != nil && next != nil && old.hasAgg == next.hasAgg && old.agg == next.agg && old.status == next.status {
		return // a progress update: the aggregates stay as they are
	}
	s.countWorkflow(old, -1)
	s.countWorkflow(next, +1)
	s.version++
}

func (s *MetricsStore) countSeries(rr *renderedRun, sign int) {
	if rr == nil {
		return
	}
	for f := range numRunFamilies {
		if rr.off[f] != rr.off[f+1] {
			s.series[f] += sign
		}
	}
}

func (s *MetricsStore) countWorkflow(rr *renderedRun, sign int) {
	if rr == nil || !rr.hasAgg {
		return
	}
	byStatus := s.workflows[rr.agg]
	if byStatus == nil {
		byStatus = map[string]int{}
		s.workflows[rr.agg] = byStatus
	}
	byStatus[rr.status] += sign
	if byStatus[rr.status] == 0 {
		delete(byStatus, rr.status)
	}
	if len(byStatus) == 0 {
		delete(s.workflows, rr.agg)
	}
}

// view is what one scrape writes: taken under the lock, written without it.
type view struct {
	chunks     []*chunk
	series     [numRunFamilies]int
	aggregates [numAggregateFamilies]*piece
}

func (s *MetricsStore) view() view {
	s.mu.Lock()
	chunks := make([]*chunk, 0, len(s.settled.chunks)+len(s.active.chunks))
	chunks = append(chunks, s.settled.chunks...)
	chunks = append(chunks, s.active.chunks...)
	v := view{chunks: chunks, series: s.series, aggregates: s.rendered.pieces}
	if s.rendered.version == s.version {
		s.mu.Unlock()
		return v
	}
	// The aggregates changed: copy what they are made of, and render them
	// without holding up the poller.
	version, totals := s.version, s.totals.Clone()
	workflows := make(map[aggregateKey]map[string]int, len(s.workflows))
	for k, byStatus := range s.workflows {
		workflows[k] = maps.Clone(byStatus)
	}
	s.mu.Unlock()

	v.aggregates = renderAggregates(workflows, totals)
	s.mu.Lock()
	if s.rendered.version < version {
		s.rendered = aggregatePieces{version: version, pieces: v.aggregates}
	}
	s.mu.Unlock()
	return v
}

// renderAggregates renders workflow_runs and the lifecycle totals. They
// have one series per workflow and status, not per run, so this is cheap.
func renderAggregates(workflows map[aggregateKey]map[string]int, totals runs.Totals) [numAggregateFamilies]*piece {
	var out [numAggregateFamilies]*piece
	keys := make([]aggregateKey, 0, len(workflows))
	for k := range workflows {
		keys = append(keys, k)
	}
	sortKeys(keys)

	var b []byte
	if len(keys) > 0 {
		b = append(b, aggregateFamilies[famRuns].header...)
		for _, k := range keys {
			byStatus := workflows[k]
			// Every known status is present, zero or not, so that a panel
			// or alert on status="failed" sees 0 rather than no data.
			line := func(status string) {
				b = append(b, "workflow_runs{"...)
				b = appendLabel(b, "status", status)
				b = append(b, ',')
				b = appendWorkflow(b, k)
				b = append(b, '}', ' ')
				b = appendValue(b, float64(byStatus[status]))
				b = append(b, '\n')
			}
			for _, st := range runs.KnownStatuses {
				line(string(st))
			}
			var unknown []string
			for st := range byStatus {
				if !runs.Status(st).Known() {
					unknown = append(unknown, st)
				}
			}
			sort.Strings(unknown)
			for _, st := range unknown {
				line(st)
			}
		}
	}
	out[famRuns] = newPiece(b)

	hist, counter := renderTotals(exportedTotals(totals, keys))
	out[famFinishedDuration] = newPiece(hist)
	out[famFinishedTotal] = newPiece(counter)
	return out
}

type totalSeries struct {
	key   aggregateKey
	state string
}

// exportedTotals merges the totals by their exported label values (two
// names cut to the same 256 characters must not make duplicate series) and
// adds zero series for the terminal statuses of every workflow now tracked,
// so that increase() counts a workflow's first finished run too.
func exportedTotals(totals runs.Totals, tracked []aggregateKey) map[totalSeries]*runs.Total {
	out := map[totalSeries]*runs.Total{}
	get := func(k totalSeries) *runs.Total {
		t := out[k]
		if t == nil {
			t = &runs.Total{Duration: runs.NewHistogram()}
			out[k] = t
		}
		return t
	}
	for k, v := range totals.Finished {
		t := get(totalSeries{aggregateKey{LabelValue(k.WorkflowName), LabelValue(k.WorkflowType)}, LabelValue(string(k.Status))})
		t.Runs += v.Runs
		t.Duration.Merge(v.Duration)
	}
	for _, k := range tracked {
		for _, st := range runs.KnownStatuses {
			if st.Terminal() {
				get(totalSeries{k, string(st)})
			}
		}
	}
	return out
}

func renderTotals(totals map[totalSeries]*runs.Total) (hist, counter []byte) {
	if len(totals) == 0 {
		return nil, nil
	}
	keys := make([]totalSeries, 0, len(totals))
	for k := range totals {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.state != b.state {
			return a.state < b.state
		}
		return lessKey(a.key, b.key)
	})
	labels := func(b []byte, k totalSeries) []byte {
		b = appendLabel(b, "status", k.state)
		b = append(b, ',')
		return appendWorkflow(b, k.key)
	}
	hist = append(hist, aggregateFamilies[famFinishedDuration].header...)
	counter = append(counter, aggregateFamilies[famFinishedTotal].header...)
	const name = "workflow_runs_finished_duration_seconds"
	for _, k := range keys {
		t := totals[k]
		var cumulative uint64
		for i, le := range runs.DurationBuckets {
			cumulative += t.Duration.Buckets[i]
			hist = append(hist, name+"_bucket{"...)
			hist = labels(hist, k)
			hist = append(hist, `,le="`...)
			hist = appendValue(hist, le)
			hist = append(hist, '"', '}', ' ')
			hist = appendValue(hist, float64(cumulative))
			hist = append(hist, '\n')
		}
		hist = append(hist, name+"_bucket{"...)
		hist = labels(hist, k)
		hist = append(hist, `,le="+Inf"} `...)
		hist = appendValue(hist, float64(t.Duration.Count))
		hist = append(hist, '\n')
		hist = append(hist, name+"_sum{"...)
		hist = labels(hist, k)
		hist = append(hist, '}', ' ')
		hist = appendValue(hist, t.Duration.Sum)
		hist = append(hist, '\n')
		hist = append(hist, name+"_count{"...)
		hist = labels(hist, k)
		hist = append(hist, '}', ' ')
		hist = appendValue(hist, float64(t.Duration.Count))
		hist = append(hist, '\n')

		counter = append(counter, "workflow_runs_finished_total{"...)
		counter = labels(counter, k)
		counter = append(counter, '}', ' ')
		counter = appendValue(counter, float64(t.Runs))
		counter = append(counter, '\n')
	}
	return hist, counter
}

// appendWorkflow appends the workflow labels; the values are already safe.
func appendWorkflow(b []byte, k aggregateKey) []byte {
	b = append(b, `workflow_name="`...)
	b = appendEscaped(b, k.name)
	b = append(b, `",workflow_type="`...)
	b = appendEscaped(b, k.typ)
	return append(b, '"')
}

func sortKeys(keys []aggregateKey) {
	sort.Slice(keys, func(i, j int) bool { return lessKey(keys[i], keys[j]) })
}

func lessKey(a, b aggregateKey) bool {
	if a.name != b.name {
		return a.name < b.name
	}
	return a.typ < b.typ
}

// AppendRun appends one run's series, each family with its header, and
// nothing else: the body of a /probe answer. The run need not be in the
// store.
func (s *MetricsStore) AppendRun(dst []byte, st *runs.State) []byte {
	s.mu.Lock()
	progressMax := s.progressMax
	s.mu.Unlock()
	scratch := renderBuffers.Get().(*[]byte)
	defer renderBuffers.Put(scratch)
	rr := renderRun(st, progressMax, *scratch)
	*scratch = rr.buf[:0]
	for f := range numRunFamilies {
		if seg := rr.family(f); len(seg) > 0 {
			dst = append(dst, runFamilies[f].header...)
			dst = append(dst, seg...)
		}
	}
	return dst
}

// renderBuffers hold runs rendered only to be written out once.
var renderBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
