package runs

import (
	"maps"
	"math"
	"sort"
	"time"
)

// DurationBuckets are the upper bounds, in seconds, of the classic buckets
// of the finished-run duration and queue-wait histograms: from 1 s to 24 h,
// dense where workflow runs usually end (minutes) and coarse beyond.
var DurationBuckets = []float64{1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400}

// NativeSchema is the schema of the native-histogram form of the same
// histograms: buckets 2^(2^-3) ≈ 9% wide, as DESIGN §6 asks.
const NativeSchema = 3

// NativeZeroThreshold is the width of the native histograms' zero bucket,
// client_golang's default: observations at most this far from 0 (a run
// that finished in the second it was created) go there.
const NativeZeroThreshold = 2.938735877055719e-39 // 2^-128

// nativeBounds are the schema-3 bucket bounds of the fraction math.Frexp
// returns, as client_golang computes the bucket of an observation.
var nativeBounds = func() []float64 {
	n := 1 << NativeSchema
	b := make([]float64, n)
	for i := range b {
		b[i] = math.Exp2(float64(i)/float64(n) - 1)
	}
	return b
}()

// Histogram is a distribution observed once per run, in both forms
// Prometheus reads: classic buckets of fixed bounds (DurationBuckets) and
// native buckets of schema NativeSchema.
type Histogram struct {
	Count uint64
	Sum   float64
	// Buckets counts the observations in (DurationBuckets[i-1],
	// DurationBuckets[i]], the last element those above the last bound.
	// Not cumulative.
	Buckets []uint64
	// ZeroCount and Native are the native form: the zero bucket, and the
	// count of each schema-NativeSchema bucket index that holds any.
	ZeroCount uint64
	Native    map[int]uint64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{Buckets: make([]uint64, len(DurationBuckets)+1), Native: map[int]uint64{}}
}

// Observe adds one observation of v seconds (v ≥ 0).
func (h *Histogram) Observe(v float64) {
	h.Count++
	h.Sum += v
	h.Buckets[ClassicBucket(v)]++
	if v <= NativeZeroThreshold {
		h.ZeroCount++
		return
	}
	h.Native[NativeBucket(v)]++
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	h.Count += o.Count
	h.Sum += o.Sum
	for i := range min(len(h.Buckets), len(o.Buckets)) {
		h.Buckets[i] += o.Buckets[i]
	}
	h.ZeroCount += o.ZeroCount
	for k, n := range o.Native {
		h.Native[k] += n
	}
}

// Clone returns a deep copy.
func (h *Histogram) Clone() *Histogram {
	c := *h
	c.Buckets = append([]uint64(nil), h.Buckets...)
	c.Native = maps.Clone(h.Native)
	if c.Native == nil {
		c.Native = map[int]uint64{}
	}
	return &c
}

// ClassicBucket returns the index in Histogram.Buckets that v falls in.
func ClassicBucket(v float64) int { return sort.SearchFloat64s(DurationBuckets, v) }

// NativeBucket returns the schema-NativeSchema bucket index of v > 0: the
// bucket (2^((i-1)/8), 2^(i/8)] holds v.
func NativeBucket(v float64) int {
	frac, exp := math.Frexp(v)
	return sort.SearchFloat64s(nativeBounds, frac) + (exp-1)*len(nativeBounds)
}

// TotalKey is one series of the finished-run totals.
type TotalKey struct {
	WorkflowName string
	WorkflowType string
	Status       Status
}

// WorkflowKey is one series of the queue-wait histogram.
type WorkflowKey struct {
	WorkflowName string
	WorkflowType string
}

// Total is the finished-run totals of one key: how many runs finished, and
// the distribution of the durations of those whose duration is known.
type Total struct {
	Runs     uint64
	Duration *Histogram
}

// Finish is a run the ledger counted as finished.
type Finish struct {
	RunID string
	Key   TotalKey
	// FinishedAt is finished_at, the time of its exemplar; zero when the
	// API gave none.
	FinishedAt time.Time
	Duration   time.Duration
	// HasDuration is false when the run's duration is unknown (a timestamp
	// missing or backwards); the run is counted, but not observed in the
	// duration histogram.
	HasDuration bool
}

// QueueWait is a run the ledger counted as having left the queue.
type QueueWait struct {
	RunID string
	Key   WorkflowKey
	// LeftQueue is the estimated moment the run left queued, the time of
	// its exemplar.
	LeftQueue time.Time
	Wait      time.Duration
}

// Counts are what the ledger counted at once: runs seen finished and runs
// seen leaving the queue, each of them once, ever.
type Counts struct {
	Finishes   []Finish
	QueueWaits []QueueWait
}

// Empty reports whether nothing was counted.
func (c Counts) Empty() bool { return len(c.Finishes) == 0 && len(c.QueueWaits) == 0 }

// Totals are the lifecycle totals: finished runs per workflow and status,
// and queue waits per workflow.
type Totals struct {
	Finished  map[TotalKey]*Total
	QueueWait map[WorkflowKey]*Histogram
}

// NewTotals returns empty totals.
func NewTotals() Totals {
	return Totals{Finished: map[TotalKey]*Total{}, QueueWait: map[WorkflowKey]*Histogram{}}
}

// Add counts c.
func (t Totals) Add(c Counts) {
	for _, f := range c.Finishes {
		t.AddFinish(f)
	}
	for _, q := range c.QueueWaits {
		t.AddQueueWait(q)
	}
}

// AddFinish counts one finished run.
func (t Totals) AddFinish(f Finish) {
	tot := t.Finished[f.Key]
	if tot == nil {
		tot = &Total{Duration: NewHistogram()}
		t.Finished[f.Key] = tot
	}
	tot.Runs++
	if f.HasDuration {
		tot.Duration.Observe(f.Duration.Seconds())
	}
}

// AddQueueWait counts one run's queue wait.
func (t Totals) AddQueueWait(q QueueWait) {
	h := t.QueueWait[q.Key]
	if h == nil {
		h = NewHistogram()
		t.QueueWait[q.Key] = h
	}
	h.Observe(q.Wait.Seconds())
}

// Clone returns a deep copy.
func (t Totals) Clone() Totals {
	out := NewTotals()
	for k, v := range t.Finished {
		out.Finished[k] = &Total{Runs: v.Runs, Duration: v.Duration.Clone()}
	}
	for k, v := range t.QueueWait {
		out.QueueWait[k] = v.Clone()
	}
	return out
}
