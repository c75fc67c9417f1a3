package collector

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// benchSnapshot holds n runs spread over a realistic mix of workflows and
// statuses.
func benchSnapshot(n int) *runs.Snapshot {
	snap := &runs.Snapshot{ProgressMax: 100, CycleEnd: fetched}
	for i := range n {
		r := finishedRun(runs.KnownStatuses[i%len(runs.KnownStatuses)])
		r.ID = fmt.Sprintf("%08d-0d44-4b50-8888-8dd25736052a", i)
		r.WorkflowName = fmt.Sprintf("Workflow %d", i%50)
		r.WorkflowType = []string{"flow", "handler", "ingestion"}[i%3]
		if !r.Status.Terminal() {
			r.FinishedAt = time.Time{}
		}
		snap.Runs = append(snap.Runs, fetchedRun(r))
	}
	return snap
}

func encode(b *testing.B, mfs []*dto.MetricFamily) {
	enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScrapeFirst is the first /metrics request after a poll cycle
// published a new snapshot: rendering the const metrics, then encoding.
func BenchmarkScrapeFirst(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		snaps := [2]*runs.Snapshot{benchSnapshot(n), benchSnapshot(n)}
		var i int
		g := NewGatherer(func() *runs.Snapshot { return snaps[i%2] })
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				i++ // a new snapshot every time
				mfs, err := g.Gather()
				if err != nil {
					b.Fatal(err)
				}
				encode(b, mfs)
			}
		})
	}
}

// BenchmarkScrapeCached is every further /metrics request of the same
// snapshot.
func BenchmarkScrapeCached(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		snap := benchSnapshot(n)
		g := NewGatherer(func() *runs.Snapshot { return snap })
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				mfs, err := g.Gather()
				if err != nil {
					b.Fatal(err)
				}
				encode(b, mfs)
			}
		})
	}
}

// BenchmarkEncodeFloor encodes the same, already gathered, metric families:
// the least any exporter serving these series could spend per scrape.
func BenchmarkEncodeFloor(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		reg := prometheus.NewRegistry()
		snap := benchSnapshot(n)
		reg.MustRegister(New(func() *runs.Snapshot { return snap }))
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				encode(b, mfs)
			}
		})
	}
}
