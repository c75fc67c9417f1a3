package collector

import (
	"compress/gzip"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Run with:
//   go test -run '^$' -bench . -benchmem ./collector
// Scrape* is what one /metrics request costs the store; EncodeFloor* is
// client_golang's encoder writing the same, already gathered, content: the
// least an exporter serving it through the registry could spend.

var sizes = []int{1000, 10000, 100000}

// benchStates returns n runs with UUID-shaped IDs, a realistic mix of
// workflows and statuses, every series a real run has.
func benchStates(n int) []*runs.State {
	out := make([]*runs.State, n)
	for i := range n {
		st := runs.KnownStatuses[i%len(runs.KnownStatuses)]
		rid := fmt.Sprintf("%08x-%04x-4b50-8888-%012x", i*2654435761, i%65536, i)
		r := baseRun(rid, st)
		if st.Terminal() {
			r = finishedRun(rid, st)
		}
		r.WorkflowID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i%50)
		r.WorkflowName = fmt.Sprintf("Workflow %d", i%50)
		r.WorkflowType = []string{"flow", "handler", "ingestion"}[i%3]
		r.GroupID = "6f0c3c90-0d44-4b50-8888-8dd25736052a"
		out[i] = fetchedState(r)
	}
	return out
}

func benchScrape(b *testing.B, gz bool) {
	for _, n := range sizes {
		s := storeOf(benchStates(n), runs.Totals{})
		scrape(b, s, gz) // compress every chunk once, as the first scrape does
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var size int64
			for b.Loop() {
				cw := &countingWriter{}
				e := NewExposition(cw, gz)
				e.WriteRuns(s)
				if err := e.Close(); err != nil {
					b.Fatal(err)
				}
				size = cw.n
			}
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}

// BenchmarkScrapePlain is a /metrics request without compression.
func BenchmarkScrapePlain(b *testing.B) { benchScrape(b, false) }

// BenchmarkScrapeGzip is a /metrics request with gzip, as Prometheus asks.
func BenchmarkScrapeGzip(b *testing.B) { benchScrape(b, true) }

func benchFloor(b *testing.B, gz bool) {
	for _, n := range sizes {
		reg := prometheus.NewRegistry()
		reg.MustRegister(reference{benchStates(n), runs.Totals{}, 100})
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var w io.Writer = io.Discard
				var zw *gzip.Writer
				if gz {
					zw = gzip.NewWriter(io.Discard)
					w = zw
				}
				enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
				for _, mf := range mfs {
					if err := enc.Encode(mf); err != nil {
						b.Fatal(err)
					}
				}
				if zw != nil {
					zw.Close()
				}
			}
		})
	}
}

// BenchmarkEncodeFloorPlain is client_golang's encoder on the same content.
func BenchmarkEncodeFloorPlain(b *testing.B) { benchFloor(b, false) }

// BenchmarkEncodeFloorGzip is the same through promhttp's gzip writer.
func BenchmarkEncodeFloorGzip(b *testing.B) { benchFloor(b, true) }

// BenchmarkUpdate is the store's share of one run refresh: render the run
// and swap it in.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range sizes {
		states := benchStates(n)
		s := storeOf(states, runs.Totals{})
		var active []*runs.State // only unfinished runs are fetched again
		for _, st := range states {
			if !st.Finished() {
				active = append(active, st)
			}
		}
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				st := *active[i%len(active)]
				st.LastSuccess = st.LastSuccess.Add(time.Second)
				s.Update(&st)
				i++
			}
		})
	}
}

// BenchmarkScrapeAfterChanges is a gzip scrape after a poll cycle that
// changed 1% of the runs, unfinished ones: their chunks are compressed
// again, nothing else.
func BenchmarkScrapeAfterChanges(b *testing.B) {
	for _, n := range sizes {
		states := benchStates(n)
		s := storeOf(states, runs.Totals{})
		scrape(b, s, true)
		var active []*runs.State // only unfinished runs are fetched again
		for _, st := range states {
			if !st.Finished() {
				active = append(active, st)
			}
		}
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			k := 0
			for b.Loop() {
				b.StopTimer()
				for range n / 100 {
					st := *active[k%len(active)]
					st.LastSuccess = st.LastSuccess.Add(time.Second)
					s.Update(&st)
					k += 97
				}
				b.StartTimer()
				e := NewExposition(io.Discard, true)
				e.WriteRuns(s)
				e.Close()
			}
		})
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
