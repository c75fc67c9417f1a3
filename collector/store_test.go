package collector

import (
	"bytes"
	"hash/crc32"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

func TestCRC32Combine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 64, 1000, 70000} {
		a := make([]byte, rng.IntN(5000))
		b := make([]byte, n)
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.ChecksumIEEE(append(append([]byte(nil), a...), b...))
		if got := crc32Combine(crc32.ChecksumIEEE(a), crc32.ChecksumIEEE(b), uint64(len(b))); got != want {
			t.Errorf("len(a)=%d len(b)=%d: combined %08x, want %08x", len(a), n, got, want)
		}
	}
}

// manyStates returns n fetched runs over a few workflows.
func manyStates(n int) []*runs.State {
	out := make([]*runs.State, n)
	for i := range n {
		st := runs.KnownStatuses[i%len(runs.KnownStatuses)]
		r := baseRun(id(i), st)
		if st.Terminal() {
			r = finishedRun(id(i), st)
		}
		r.WorkflowName = []string{"Invoice extraction", "Résumé parser", "Nightly docs crawl"}[i%3]
		out[i] = fetchedState(r)
	}
	return out
}

// TestScrapesFollowUpdates: plain and gzip scrapes agree with a store
// rebuilt from scratch after every kind of change, also once chunks split
// and cached compressed parts have to be replaced.
func TestScrapesFollowUpdates(t *testing.T) {
	states := manyStates(1000) // several active and settled chunks
	s := NewMetricsStore(100)
	current := map[string]*runs.State{}
	check := func(step string) {
		t.Helper()
		var all []*runs.State
		for _, st := range current {
			all = append(all, st)
		}
		want := sortedLines(scrape(t, storeOf(all, runs.Totals{}), false))
		for _, gz := range []bool{false, true} {
			if d := scrapetest.DiffLines(want, sortedLines(scrape(t, s, gz))); d != "" {
				t.Fatalf("%s, gzip=%v: scrape differs from a fresh store:\n%s", step, gz, d)
			}
		}
	}
	for i, st := range states {
		s.Update(st)
		current[st.ID] = st
		if i == 10 || i == 500 {
			check("adding runs")
		}
	}
	check("all added")
	sealed := 0
	for _, c := range s.settled.chunks {
		if c.sealed {
			sealed++
			for _, rr := range c.runs {
				if rr.buf != nil {
					t.Fatal("a sealed chunk's run keeps its lines uncompressed")
				}
			}
		}
	}
	if sealed < 2 {
		t.Fatalf("%d sealed chunks of %d finished runs; the test must cover sealing", sealed, len(s.settled.where))
	}
	// After the gzip scrapes, sealed chunks keep their lines once, in
	// their gzip parts: the plain scrapes above read them from there.
	for _, c := range s.settled.chunks {
		if c.sealed && c.blocks.Load() != nil {
			t.Fatal("a sealed chunk keeps its S2 blocks beside its gzip parts")
		}
	}
	if s.Len() != len(states) || s.active.bits == 0 || len(s.settled.chunks) < 2 {
		t.Fatalf("len %d, %d+%d chunks: want %d runs over several chunks", s.Len(), len(s.active.chunks), len(s.settled.chunks), len(states))
	}
	for _, st := range states[:50] {
		next := *st
		next.Failed("server_error", false, fetched.Add(time.Minute), 0)
		s.Update(&next)
		current[st.ID] = &next
	}
	check("failing runs")
	for _, st := range states[50:100] {
		s.Delete(st.ID)
		delete(current, st.ID)
	}
	s.Delete("not-there")
	check("removed runs")
	for _, st := range states[100:150] {
		next := *st
		r := *st.Run
		r.Status, r.WorkflowName = "archived", "Moved"
		next.Run = &r
		s.Update(&next)
		current[st.ID] = &next
	}
	check("status and workflow changes")
	settled := len(s.settled.chunks)
	var gone []string
	for _, st := range states[150:950] {
		gone = append(gone, st.ID)
		delete(current, st.ID)
	}
	s.Delete(gone...) // at once, as retention and a pruned run list do
	check("most runs removed")
	if len(s.settled.chunks) >= settled {
		t.Errorf("settled chunks: %d before removing most runs, %d after; emptied chunks should be dropped", settled, len(s.settled.chunks))
	}
	for _, st := range states[150:950] {
		s.Update(st)
		current[st.ID] = st
	}
	check("runs added again")
}

// TestAggregatesFollowRuns: workflow_runs counts what the store holds, and
// a workflow whose last run goes disappears.
func TestAggregatesFollowRuns(t *testing.T) {
	s := NewMetricsStore(100)
	a := fetchedState(baseRun(id(1), runs.StatusRunning))
	s.Update(a)
	if got := scrape(t, s, false); !strings.Contains(got, `workflow_runs{status="running",workflow_name="Invoice extraction",workflow_type="flow"} 1`) {
		t.Fatalf("running run not counted:\n%s", got)
	}
	done := *a
	done.Succeeded(finishedRun(id(1), runs.StatusFailed), fetched.Add(time.Minute), time.Minute)
	s.Update(&done)
	got := scrape(t, s, false)
	for _, want := range []string{
		`workflow_runs{status="running",workflow_name="Invoice extraction",workflow_type="flow"} 0`,
		`workflow_runs{status="failed",workflow_name="Invoice extraction",workflow_type="flow"} 1`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
	s.Delete(id(1))
	if got := scrape(t, s, false); strings.Contains(got, "workflow_runs{") || strings.Contains(got, "workflow_run_status{") {
		t.Errorf("series left after the last run was removed:\n%s", got)
	}
}

func TestFinishedTotalsCount(t *testing.T) {
	s := NewMetricsStore(100)
	key := runs.TotalKey{WorkflowName: "Invoice extraction", WorkflowType: "flow", Status: runs.StatusFailed}
	s.AddCounts(runs.Counts{Finishes: []runs.Finish{{Key: key, Duration: 90 * time.Second, HasDuration: true}, {Key: key}}})
	got := scrape(t, s, false)
	for _, want := range []string{
		`workflow_runs_finished_total{status="failed",workflow_name="Invoice extraction",workflow_type="flow"} 2`,
		`workflow_runs_finished_duration_seconds_bucket{status="failed",workflow_name="Invoice extraction",workflow_type="flow",le="60"} 0`,
		`workflow_runs_finished_duration_seconds_bucket{status="failed",workflow_name="Invoice extraction",workflow_type="flow",le="120"} 1`,
		`workflow_runs_finished_duration_seconds_count{status="failed",workflow_name="Invoice extraction",workflow_type="flow"} 1`,
		`workflow_runs_finished_duration_seconds_sum{status="failed",workflow_name="Invoice extraction",workflow_type="flow"} 90`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
}

// TestScrapeSeesWholeUpdates: while a run flips between two states as fast
// as it can, every scrape shows it entirely in one of them. The scrapes go
// on until each state has been seen several times (the flips really
// interleaved with them): on a loaded machine the flipping goroutine may
// barely run, and a test that saw no flip would prove nothing.
func TestScrapeSeesWholeUpdates(t *testing.T) {
	s := storeOf(manyStates(100), runs.Totals{})
	running := fetchedState(baseRun(id(7), runs.StatusRunning))
	failed := fetchedState(finishedRun(id(7), runs.StatusFailed))
	stop := make(chan struct{})
	var flips atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				s.Update(running)
			} else {
				s.Update(failed)
			}
			flips.Add(1)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	const each = 5
	seen := map[bool]int{} // by failed
	deadline := time.Now().Add(time.Minute)
	for i := 0; seen[true] < each || seen[false] < each; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d scrapes and %d flips in a minute, each state seen %v times; want %d of each", i, flips.Load(), seen, each)
		}
		text := scrape(t, s, i%2 == 1)
		var isRunning, isFailed, hasDuration bool
		for _, l := range strings.Split(text, "\n") {
			if !strings.Contains(l, id(7)) {
				continue
			}
			isRunning = isRunning || strings.HasPrefix(l, "workflow_run_status{") && strings.Contains(l, `status="running"`) && strings.HasSuffix(l, " 1")
			isFailed = isFailed || strings.HasPrefix(l, "workflow_run_status{") && strings.Contains(l, `status="failed"`) && strings.HasSuffix(l, " 1")
			hasDuration = hasDuration || strings.HasPrefix(l, "workflow_run_duration_seconds{")
		}
		if isRunning == isFailed || hasDuration != isFailed {
			t.Fatalf("scrape %d saw half an update: running=%v failed=%v duration=%v", i, isRunning, isFailed, hasDuration)
		}
		seen[isFailed]++
		runtime.Gosched() // let the flipper run between scrapes
	}
}

func TestAppendRunIsOneRunWithHeaders(t *testing.T) {
	s := NewMetricsStore(100)
	st := fetchedState(finishedRun(id(3), runs.StatusFailed))
	buf := bytes.NewBuffer(s.AppendRun(nil, st))
	want := sortedLines(scrape(t, storeOf([]*runs.State{st}, runs.Totals{}), false))
	var perRun []string
	for _, l := range want {
		if !strings.Contains(l, "workflow_runs") {
			perRun = append(perRun, l)
		}
	}
	if d := scrapetest.DiffLines(perRun, sortedLines(buf.String())); d != "" {
		t.Errorf("AppendRun differs from the run's lines in a scrape:\n%s", d)
	}
}

// TestResetRendersEveryRunAgain: a new api.progress_max changes every ratio,
// sealed runs included, and the store then reads as one built afresh.
func TestResetRendersEveryRunAgain(t *testing.T) {
	states := manyStates(500)
	s := storeOf(states, runs.Totals{})
	s.AddCounts(runs.Counts{Finishes: []runs.Finish{{Key: runs.TotalKey{WorkflowName: "x", WorkflowType: "flow", Status: runs.StatusFailed}}}})
	s.Reset(1000, states[:400])
	want := NewMetricsStore(1000)
	for _, st := range states[:400] {
		want.Update(st)
	}
	want.AddCounts(runs.Counts{Finishes: []runs.Finish{{Key: runs.TotalKey{WorkflowName: "x", WorkflowType: "flow", Status: runs.StatusFailed}}}})
	if d := scrapetest.DiffLines(sortedLines(scrape(t, want, false)), sortedLines(scrape(t, s, true))); d != "" {
		t.Errorf("after Reset (- built afresh, + reset):\n%s", d)
	}
	if got := scrape(t, s, false); !strings.Contains(got, "workflow_run_progress_ratio{run_id=\""+states[0].ID+"\"") || !strings.Contains(got, "} 0.1\n") {
		t.Error("progress ratios not rendered with the new progress_max")
	}
}
