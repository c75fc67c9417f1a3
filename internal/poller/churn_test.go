package poller

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/ledger"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/statestore"
)

// Months of run IDs coming and going, simulated on a fake clock with the
// real ledger, state store and run metrics store (DESIGN §8 "Bounded"):
// every day a batch of new run IDs replaces as many old ones in the list;
// each new run runs for three hours, then completes; /probe is asked for
// IDs the API does not know. Memory and the store must follow the runs
// listed, not the history.

// churnAPI answers for the runs it was told about: running for three
// hours after their birth, completed after; 404 for any other ID.
type churnAPI struct {
	clock *clock
	mu    sync.Mutex
	born  map[string]time.Time
}

// list makes ids the runs it knows (runs taken off the list are never
// asked for again here), born at when new; the harness so holds no more
// than the exporter should.
func (a *churnAPI) list(ids []string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	born := make(map[string]time.Time, len(ids))
	for _, id := range ids {
		b, ok := a.born[id]
		if !ok {
			b = at
		}
		born[id] = b
	}
	a.born = born
}

func (a *churnAPI) GetRun(_ context.Context, id string) (*runs.Run, []string, error) {
	a.mu.Lock()
	born, ok := a.born[id]
	a.mu.Unlock()
	if !ok {
		return nil, nil, &api.Error{Reason: api.ReasonNotFound}
	}
	r := &runs.Run{ID: id, Status: runs.StatusRunning, WorkflowName: "nightly etl " + strconv.Itoa(len(id)%7), WorkflowType: "flow",
		CreatedAt: born, Progress: 10, HasProgress: true}
	if end := born.Add(3 * time.Hour); !a.clock.now().Before(end) {
		r.Status, r.FinishedAt, r.Progress = runs.StatusCompleted, end, 100
	}
	return r, nil, nil
}

// churn is the simulated exporter: poller, ledger and state store over a
// churnAPI, restartable.
type churn struct {
	tb      testing.TB
	dir     string
	clock   *clock
	api     *churnAPI
	store   *statestore.Store
	led     *ledger.Ledger
	p       *Poller
	metrics *collector.MetricsStore
	s       Settings
	day     int
	probes  int
}

func newChurn(tb testing.TB, listed int) *churn {
	c := &churn{tb: tb, dir: tb.TempDir(), clock: newClock()}
	c.api = &churnAPI{clock: c.clock, born: map[string]time.Time{}}
	c.s = Settings{Interval: time.Minute, Concurrency: 8, MaxRequestsPerSecond: 1e9, ProgressMax: 100,
		NotFoundGrace: 15 * time.Minute, CountWindow: time.Hour, ProbeMaxRuns: 50000}
	c.start()
	return c
}

// start opens the store and builds the exporter's parts on it, as a
// process start does, and returns how long that took until ready.
func (c *churn) start() time.Duration {
	begin := time.Now()
	c.metrics = collector.NewMetricsStore(100)
	store, err := statestore.Open(c.dir, statestore.Options{OnCommit: c.metrics.AddCounts})
	if err != nil {
		c.tb.Fatal(err)
	}
	c.store = store
	totals, err := store.Totals()
	if err != nil {
		c.tb.Fatal(err)
	}
	c.metrics.SetTotals(totals)
	c.led = ledger.New(ledger.Options{Store: store, Window: c.s.CountWindow})
	c.p = New(Options{Logger: log.NewNopLogger(), Registerer: prometheus.NewRegistry(), MetricsStore: c.metrics, Ledger: c.led, Now: c.clock.now})
	if c.s.IDs != nil {
		c.p.Apply(c.api, c.s)
		if _, err := c.led.Sweep(c.clock.now(), c.p.ProbeIdle(), c.p.Known, c.p.KnownIDs()); err != nil {
			c.tb.Fatal(err)
		}
	}
	took := time.Since(begin)
	if c.s.IDs != nil && !c.p.Ready() {
		c.tb.Fatal("not ready after a start with every listed run finished")
	}
	return took
}

func (c *churn) stop() {
	if err := c.store.Close(); err != nil {
		c.tb.Fatal(err)
	}
}

func (c *churn) cycle() {
	<-c.p.startCycle(context.Background()).done
	if err := c.store.Flush(); err != nil {
		c.tb.Fatal(err)
	}
}

// runDay lists the day's runs (listed at once, perDay of them new), lets
// the new ones run and finish, and probes unknown IDs.
func (c *churn) runDay(listed, perDay, probes int) {
	first := c.day * perDay
	ids := make([]string, listed)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-0000-4000-8000-000000000000", first+i)
	}
	c.api.list(ids, c.clock.now())
	c.s.IDs = ids
	c.p.Apply(c.api, c.s)
	c.cycle() // the new runs: running
	c.clock.advance(3 * time.Hour)
	c.cycle() // the new runs: completed, counted
	for range probes {
		id := fmt.Sprintf("%08x-ffff-4000-8000-000000000000", c.probes)
		c.probes++
		if st, err := c.p.Probe(context.Background(), id); err != nil || st.FetchOK {
			c.tb.Fatalf("probe of an unknown ID: %+v, %v", st, err)
		}
	}
	c.clock.advance(21 * time.Hour)
	c.day++
}

func (c *churn) records() int {
	n := 0
	if err := c.store.Each(func(runs.State) bool { n++; return true }); err != nil {
		c.tb.Fatal(err)
	}
	return n
}

func (c *churn) counted() uint64 {
	tot, err := c.store.Totals()
	if err != nil {
		c.tb.Fatal(err)
	}
	var n uint64
	for _, t := range tot.Finished {
		n += t.Runs
	}
	return n
}

// TestStoreFollowsTheTrackedSet: through 40 days of churn and a restart
// every 10 days, the state store holds the runs listed and nothing else
// (every run dropped finished long before, so re-adding it could not
// count it again), every run is counted once, and probes of unknown IDs
// leave nothing.
func TestStoreFollowsTheTrackedSet(t *testing.T) {
	const listed, perDay = 300, 100
	c := newChurn(t, listed)
	for day := range 40 {
		c.runDay(listed, perDay, 20)
		if n := c.records(); n != listed {
			t.Fatalf("day %d: %d records in the store, want the %d runs listed", day, n, listed)
		}
		if day%10 == 9 {
			c.stop()
			c.start()
			if n := c.records(); n != listed {
				t.Fatalf("day %d, after a restart: %d records, want %d", day, n, listed)
			}
		}
	}
	// Every run listed on some day finished and was counted once: those
	// of the first 39 days, and today's.
	if got, want := c.counted(), uint64(39*perDay+listed); got != want {
		t.Errorf("%d runs counted, want %d", got, want)
	}
	if c.led.Kept() != 0 || c.metrics.Len() != listed {
		t.Errorf("ledger keeps %d dropped runs, the run metrics store %d runs; want 0 and %d", c.led.Kept(), c.metrics.Len(), listed)
	}
	c.stop()
}

// BenchmarkYearOfChurn streams a year through the exporter's state:
// 1,000,000 distinct run IDs (10,000 listed at any time, 2,740 new ones a
// day) and 100,000 probes of unknown IDs, with a restart at the end of
// every simulated month. It reports, month by month, the process's RSS and
// Go heap, the store's file size and record count, and the restart's time
// to ready (the least of three). Run with:
//
//	go test -run '^$' -bench YearOfChurn -benchtime 1x -v ./internal/poller
func BenchmarkYearOfChurn(b *testing.B) {
	const listed, perDay, probesPerDay, days = 10000, 2740, 274, 365
	for b.Loop() {
		c := newChurn(b, listed)
		b.Logf("%5s %10s %10s %12s %9s %12s", "month", "RSS MiB", "heap MiB", "store MiB", "records", "start ms")
		for day := 1; day <= days; day++ {
			c.runDay(listed, perDay, probesPerDay)
			if day%30 != 0 && day != days {
				continue
			}
			// The least of three restarts: the machine's noise only adds.
			took := time.Duration(1 << 62)
			for range 3 {
				c.stop()
				took = min(took, c.start())
			}
			size, err := c.store.SizeBytes()
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.Logf("%5d %10.1f %10.1f %12.2f %9d %12.1f", (day+29)/30, float64(rss(b))/(1<<20), float64(ms.HeapInuse)/(1<<20),
				float64(size)/(1<<20), c.records(), float64(took.Microseconds())/1000)
		}
		b.ReportMetric(float64(c.counted()), "runs-counted")
		c.stop()
	}
}

// rss returns the process's resident set size.
func rss(tb testing.TB) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
