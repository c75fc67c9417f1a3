package collector

import (
	"maps"
	"runtime"
	"sync"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// MetricsStore is the run metrics store. The poller updates it as runs change; a
// scrape takes a consistent view under a short lock and writes it without
// holding any.
type MetricsStore struct {
	mu          sync.Mutex
	progressMax float64
	// runEnabled and aggEnabled are the families rendered at all
	// (--metric-allowlist, --metric-denylist).
	runEnabled [numRunFamilies]bool
	aggEnabled [numAggregateFamilies]bool
	// Runs that may still change and runs that never will are kept apart,
	// so that the compressed parts of the settled majority stay valid.
	active  activeChunks
	settled settledChunks
	// series counts, per family, the runs with lines in it, so that an
	// empty family gets no header.
	series [numRunFamilies]int
	// sizeHint is the size of the last rendered run, to allocate once.
	sizeHint int

	// Aggregates: kept up to date as runs change, built when a scrape
	// finds them changed.
	workflows map[aggregateKey]*workflowRuns
	totals    runs.Totals
	meta      map[seriesKey]*seriesMeta
	version   uint64 // bumped on every change of the three above
	built     *aggregates
	now       func() time.Time
}

// Option configures a MetricsStore.
type Option func(*MetricsStore)

// WithFamilies renders only the families f allows; the others cost
// nothing.
func WithFamilies(f *FamilyFilter) Option {
	return func(s *MetricsStore) {
		for i := range numRunFamilies {
			s.runEnabled[i] = f.Allows(runFamilies[i].name)
		}
		for i := range numAggregateFamilies {
			s.aggEnabled[i] = f.Allows(aggregateFamilies[i].name)
		}
	}
}

// NewMetricsStore returns an empty store. progressMax is api.progress_max.
func NewMetricsStore(progressMax float64, opts ...Option) *MetricsStore {
	s := &MetricsStore{
		progressMax: progressMax,
		active:      newActiveChunks(),
		settled:     settledChunks{where: map[string]int{}},
		workflows:   map[aggregateKey]*workflowRuns{},
		totals:      runs.NewTotals(),
		meta:        map[seriesKey]*seriesMeta{},
		sizeHint:    2048,
		version:     1,
		now:         time.Now,
	}
	for i := range s.runEnabled {
		s.runEnabled[i] = true
	}
	for i := range s.aggEnabled {
		s.aggEnabled[i] = true
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Reset replaces every run the store holds with states, rendered with
// progressMax (api.progress_max): what a change of progress_max needs. The
// new contents are built aside and put in place at once, so no scrape
// sees the runs missing; finished runs go straight into sealed chunks
// rather than being taken out of them one by one.
func (s *MetricsStore) Reset(progressMax float64, states []*runs.State) {
	s.mu.Lock()
	enabled, now, hint := s.runEnabled, s.now, s.sizeHint
	s.mu.Unlock()
	next := &MetricsStore{progressMax: progressMax, active: newActiveChunks(), settled: settledChunks{where: map[string]int{}},
		workflows: map[aggregateKey]*workflowRuns{}, sizeHint: hint, now: now}
	var finished []*runs.State
	for _, st := range states {
		if st.Finished() {
			finished = append(finished, st)
			continue
		}
		rr := renderRun(st, progressMax, &enabled, make([]byte, 0, next.sizeHint))
		next.active.put(rr)
		next.account(nil, rr)
	}
	full := len(finished) / settledRunsPerChunk * settledRunsPerChunk
	for _, c := range sealAll(finished[:full], progressMax, &enabled) {
		for _, rr := range c.runs {
			next.account(nil, rr)
			next.settled.where[rr.id] = len(next.settled.chunks)
		}
		next.settled.chunks = append(next.settled.chunks, c)
	}
	for _, st := range finished[full:] {
		rr := renderRun(st, progressMax, &enabled, make([]byte, 0, next.sizeHint))
		next.settled.add(rr)
		next.account(nil, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, w := range next.workflows {
		if old := s.workflows[k]; old != nil {
			w.since = old.since // the workflow's zero series go on
		}
	}
	s.progressMax, s.active, s.settled, s.series, s.workflows = progressMax, next.active, next.settled, next.series, next.workflows
	s.version++
}

// sealAll renders finished runs and seals them in chunks of
// settledRunsPerChunk, in order, on every CPU: at a start with a state
// store of 100,000 finished runs this is most of the work before the
// exporter is ready (on 2 CPUs, 1.1 s to ready instead of 1.3 s with one
// worker). Each worker renders a chunk's runs into one arena and reuses it
// once the chunk is sealed (seal copies the lines), which saves the start
// some 200 MB of garbage to collect.
func sealAll(states []*runs.State, progressMax float64, enabled *[numRunFamilies]bool) []*chunk {
	out := make([]*chunk, len(states)/settledRunsPerChunk)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(out)) {
		wg.Go(func() {
			var arena, scratch []byte
			group := make([]*renderedRun, 0, settledRunsPerChunk)
			for i := range next {
				group, arena = group[:0], arena[:0]
				for _, st := range states[i*settledRunsPerChunk : (i+1)*settledRunsPerChunk] {
					rr := renderRun(st, progressMax, enabled, scratch)
					scratch = rr.buf[:0]
					start := len(arena)
					arena = append(arena, rr.buf...)
					rr.buf = arena[start:len(arena):len(arena)]
					group = append(group, rr)
				}
				out[i] = seal(group)
			}
		})
	}
	for i := range out {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// Update renders st and replaces what the store holds for its run. The
// rendering happens outside the lock: a scrape is never held up by it.
func (s *MetricsStore) Update(st *runs.State) {
	s.mu.Lock()
	progressMax, hint, enabled := s.progressMax, s.sizeHint, s.runEnabled
	s.mu.Unlock()
	rr := renderRun(st, progressMax, &enabled, make([]byte, 0, hint))

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
// kept across a restart. Their series have no exemplars, and no created
// timestamp: they counted before this process.
func (s *MetricsStore) SetTotals(t runs.Totals) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.totals = t.Clone()
	s.meta = map[seriesKey]*seriesMeta{}
	for k := range s.totals.Finished {
		s.meta[finishedKey(k)] = newSeriesMeta(time.Time{})
	}
	for k := range s.totals.QueueWait {
		s.meta[queueKey(k)] = newSeriesMeta(time.Time{})
	}
	s.version++
}

// AddCounts adds what the ledger counted to the lifecycle totals, each run
// becoming the exemplar of its series and bucket.
func (s *MetricsStore) AddCounts(c runs.Counts) {
	if c.Empty() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.totals.Add(c)
	now := s.now()
	for _, f := range c.Finishes {
		m := s.metaOf(finishedKey(f.Key), now)
		// A run the API gave no finished_at counts when it is first seen
		// finished, which is now.
		at := f.FinishedAt
		if at.IsZero() {
			at = now
		}
		m.counter.set(exemplarOf(f.RunID, 1, at))
		if f.HasDuration {
			v := f.Duration.Seconds()
			m.buckets[runs.ClassicBucket(v)].set(exemplarOf(f.RunID, v, at))
		}
	}
	for _, q := range c.QueueWaits {
		m := s.metaOf(queueKey(q.Key), now)
		at := q.LeftQueue
		if at.IsZero() {
			at = now
		}
		v := q.Wait.Seconds()
		m.buckets[runs.ClassicBucket(v)].set(exemplarOf(q.RunID, v, at))
	}
	s.version++
}

// metaOf returns the metadata of a series that counts a run, created now
// unless it existed already as a zero series of a tracked workflow.
func (s *MetricsStore) metaOf(k seriesKey, now time.Time) *seriesMeta {
	if m := s.meta[k]; m != nil {
		return m
	}
	created := now
	if w := s.workflows[k.wf]; w != nil {
		created = w.since
	}
	m := newSeriesMeta(created)
	s.meta[k] = m
	return m
}

func newSeriesMeta(created time.Time) *seriesMeta {
	return &seriesMeta{created: created, buckets: make([]exemplar, len(runs.DurationBuckets)+1)}
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
	w := s.workflows[rr.agg]
	if w == nil {
		w = &workflowRuns{byStatus: map[string]int{}, since: s.now()}
		s.workflows[rr.agg] = w
	}
	w.byStatus[rr.status] += sign
	if w.byStatus[rr.status] == 0 {
		delete(w.byStatus, rr.status)
	}
	if len(w.byStatus) == 0 {
		delete(s.workflows, rr.agg)
	}
}

// view is what one scrape writes of the runs: taken under the lock,
// written without it.
type view struct {
	chunks []*chunk
	series [numRunFamilies]int
}

func (s *MetricsStore) view() view {
	s.mu.Lock()
	defer s.mu.Unlock()
	chunks := make([]*chunk, 0, len(s.settled.chunks)+len(s.active.chunks))
	chunks = append(chunks, s.settled.chunks...)
	chunks = append(chunks, s.active.chunks...)
	return view{chunks: chunks, series: s.series}
}

// aggregates returns the aggregate families written as o asks, built and
// encoded when they changed since a scrape last asked for them so. What
// they are made of is copied under the lock, and they are built without
// it: the poller is not held up.
func (s *MetricsStore) aggregates(o WriteOptions) *piece {
	v := variantOf(o)
	s.mu.Lock()
	a := s.built
	if a == nil || a.version != s.version {
		a = &aggregates{version: s.version}
		s.built = a
	}
	if p := a.encoded[v].Load(); p != nil {
		s.mu.Unlock()
		return p
	}
	in := aggregateInput{workflows: make(map[aggregateKey]workflowRuns, len(s.workflows)), totals: s.totals.Clone(),
		meta: make(map[seriesKey]*seriesMeta, len(s.meta)), enabled: s.aggEnabled}
	for k, w := range s.workflows {
		in.workflows[k] = workflowRuns{byStatus: maps.Clone(w.byStatus), since: w.since}
	}
	for k, m := range s.meta {
		in.meta[k] = m.clone()
	}
	s.mu.Unlock()

	// Two scrapes may race to encode; both results are equal.
	a.encoded[v].CompareAndSwap(nil, encodeAggregates(buildAggregates(in), o))
	return a.encoded[v].Load()
}

// AppendRun appends one run's series, each family with its header, and
// nothing else: the body of a /probe answer. The run need not be in the
// store.
func (s *MetricsStore) AppendRun(dst []byte, st *runs.State) []byte {
	s.mu.Lock()
	progressMax, enabled := s.progressMax, s.runEnabled
	s.mu.Unlock()
	scratch := renderBuffers.Get().(*[]byte)
	defer renderBuffers.Put(scratch)
	rr := renderRun(st, progressMax, &enabled, *scratch)
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
