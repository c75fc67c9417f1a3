package collector

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Run with:
//   go test -run '^$' -bench . -benchmem ./collector
// (WRE_BENCH_SIZES=10000 picks the sizes.) Scrape* is what one /metrics
// request costs the store, in each format; EncodeFloor* is client_golang's
// encoder writing the same, already gathered, content: the least an
// exporter serving it through the registry could spend.

var sizes = func() []int {
	s := os.Getenv("WRE_BENCH_SIZES")
	if s == "" {
		return []int{1000, 10000, 100000}
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}()

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

// benchCounts are lifecycle counts of every finished run of states, with
// exemplars.
func benchCounts(states []*runs.State) runs.Counts {
	var c runs.Counts
	for _, st := range states {
		if d, ok := st.Run.Duration(); ok {
			c.Finishes = append(c.Finishes, runs.Finish{RunID: st.ID, Key: runs.TotalKey{WorkflowName: st.Run.WorkflowName, WorkflowType: st.Run.WorkflowType, Status: st.Run.Status},
				FinishedAt: st.Run.FinishedAt, Duration: d, HasDuration: true})
		}
	}
	return c
}

func benchScrape(b *testing.B, o WriteOptions) {
	for _, n := range sizes {
		states := benchStates(n)
		s := storeOf(states, runs.Totals{})
		s.AddCounts(benchCounts(states))
		scrapeAs(b, s, o) // encode every chunk once, as the first scrape does
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var size int64
			for b.Loop() {
				cw := &countingWriter{}
				e := NewExposition(cw, o)
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

// BenchmarkScrapePlain is a /metrics request in the text format without
// compression.
func BenchmarkScrapePlain(b *testing.B) { benchScrape(b, WriteOptions{}) }

// BenchmarkScrapeGzip is a /metrics request in the text format with gzip.
func BenchmarkScrapeGzip(b *testing.B) { benchScrape(b, WriteOptions{Gzip: true}) }

// BenchmarkScrapeOpenMetricsPlain is an OpenMetrics request, with
// exemplars, without compression.
func BenchmarkScrapeOpenMetricsPlain(b *testing.B) {
	benchScrape(b, WriteOptions{Format: FormatOpenMetrics})
}

// BenchmarkScrapeOpenMetricsGzip is an OpenMetrics request with gzip, as
// Prometheus 2 and 3 ask by default.
func BenchmarkScrapeOpenMetricsGzip(b *testing.B) {
	benchScrape(b, WriteOptions{Format: FormatOpenMetrics, Gzip: true})
}

// BenchmarkScrapeProtobufPlain is a protobuf request without compression.
func BenchmarkScrapeProtobufPlain(b *testing.B) { benchScrape(b, WriteOptions{Format: FormatProtobuf}) }

// BenchmarkScrapeProtobufGzip is a protobuf request with gzip, as a
// Prometheus with native histograms asks.
func BenchmarkScrapeProtobufGzip(b *testing.B) {
	benchScrape(b, WriteOptions{Format: FormatProtobuf, Gzip: true})
}

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

// BenchmarkFirstScrape is the first gzip scrape of a store in each format,
// which encodes every chunk: what a restart, or the first scrape in a
// format no scrape asked for before, costs once.
func BenchmarkFirstScrape(b *testing.B) {
	for _, f := range []Format{FormatText, FormatProtobuf} {
		for _, n := range sizes {
			states := benchStates(n)
			b.Run(fmt.Sprintf("format=%v/runs=%d", f, n), func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					s := storeOf(states, runs.Totals{})
					b.StartTimer()
					e := NewExposition(io.Discard, WriteOptions{Format: f, Gzip: true})
					e.WriteRuns(s)
					e.Close()
				}
			})
		}
	}
}

// BenchmarkScrapeAfterChanges is a gzip scrape after a poll cycle that
// changed 1% of the runs, unfinished ones: their chunks are compressed
// again, nothing else. In the text format.
func BenchmarkScrapeAfterChanges(b *testing.B) { benchAfterChanges(b, WriteOptions{Gzip: true}) }

// BenchmarkScrapeProtobufAfterChanges is the same in protobuf: the
// changed chunks are transcoded and compressed again.
func BenchmarkScrapeProtobufAfterChanges(b *testing.B) {
	benchAfterChanges(b, WriteOptions{Format: FormatProtobuf, Gzip: true})
}

func benchAfterChanges(b *testing.B, o WriteOptions) {
	for _, n := range sizes {
		states := benchStates(n)
		s := storeOf(states, runs.Totals{})
		scrapeAs(b, s, o)
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
				e := NewExposition(io.Discard, o)
				e.WriteRuns(s)
				e.Close()
			}
		})
	}
}

// BenchmarkStoreMemory is the heap the store holds per run: its runs
// rendered (text), then with what a gzip text scrape keeps (the compressed
// parts), then with what protobuf scrapes keep as well.
func BenchmarkStoreMemory(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			for b.Loop() {
				before := heapInUse()
				s := NewMetricsStore(100)
				for i, st := range benchStates(n) {
					s.Update(st)
					if i == n-1 {
						s.AddCounts(benchCounts([]*runs.State{st}))
					}
				}
				perRun := func() float64 { return float64(heapInUse()-before) / float64(n) }
				b.ReportMetric(perRun(), "B/run-text")
				scrapeAs(b, s, WriteOptions{Gzip: true})
				b.ReportMetric(perRun(), "B/run+gzip")
				scrapeAs(b, s, WriteOptions{Format: FormatProtobuf, Gzip: true})
				b.ReportMetric(perRun(), "B/run+protobuf-gzip")
				scrapeAs(b, s, WriteOptions{Format: FormatProtobuf})
				b.ReportMetric(perRun(), "B/run+protobuf-plain")
				runtime.KeepAlive(s)
			}
		})
	}
}

// heapInUse is the live heap; the second GC empties sync.Pool's caches.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
