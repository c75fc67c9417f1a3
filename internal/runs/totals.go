package runs

import "sort"

// DurationBuckets are the upper bounds, in seconds, of the finished-run
// duration histogram: from 1 s to 24 h, dense where workflow runs usually
// end (minutes) and coarse beyond.
var DurationBuckets = []float64{1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400}

// TotalKey is one series of the lifecycle totals.
type TotalKey struct {
	WorkflowName string
	WorkflowType string
	Status       Status
}

// Total is the lifecycle totals of one key: how many runs finished, and the
// distribution of the durations of those whose duration is known.
type Total struct {
	Count uint64 // runs counted
	// Observed, Sum and Buckets are the histogram: Buckets[i] counts the
	// durations in (DurationBuckets[i-1], DurationBuckets[i]], and the last
	// element those above the last bound. Not cumulative.
	Observed uint64
	Sum      float64
	Buckets  []uint64
}

// Totals are the lifecycle totals of every key.
type Totals map[TotalKey]*Total

// Add counts one finished run.
func (t Totals) Add(f Finish) {
	tot := t[f.Key]
	if tot == nil {
		tot = &Total{Buckets: make([]uint64, len(DurationBuckets)+1)}
		t[f.Key] = tot
	}
	tot.Count++
	if !f.HasDuration {
		return
	}
	secs := f.Duration.Seconds()
	tot.Observed++
	tot.Sum += secs
	tot.Buckets[bucketOf(secs)]++
}

// Clone returns a deep copy.
func (t Totals) Clone() Totals {
	out := make(Totals, len(t))
	for k, v := range t {
		c := *v
		c.Buckets = append([]uint64(nil), v.Buckets...)
		out[k] = &c
	}
	return out
}

func bucketOf(secs float64) int {
	return sort.SearchFloat64s(DurationBuckets, secs)
}
