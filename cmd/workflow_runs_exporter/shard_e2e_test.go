package main

// End-to-end tests of counting across shards: a reshard with the same
// stores, and /probe answered by every shard. Only the shard that owns a
// run counts it, and a run first seen already finished is counted only if
// it finished within runs.count_window (1h by default) of that first sight.

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/shard"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
)

// finishedTotals returns each process's sum of workflow_runs_finished_total.
func finishedTotals(procs []*process) []float64 {
	out := make([]float64, len(procs))
	for i, p := range procs {
		out[i] = sumOf(p.scrape(), "workflow_runs_finished_total")
	}
	return out
}

// waitForTotals waits until each process's finished total is its want,
// and fails naming what they showed last.
func waitForTotals(t *testing.T, what string, procs []*process, want []float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := finishedTotals(procs)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: workflow_runs_finished_total per shard = %v (sum %v), want %v (sum %v)", what, got, sumFloats(got), want, sumFloats(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sumFloats(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s
}

// ownedCounts returns how many of ids each of count shards owns.
func ownedCounts(ids []string, count int) []float64 {
	out := make([]float64, count)
	for _, id := range ids {
		out[shard.Of(id, count)]++
	}
	return out
}

// TestEndToEndReshardCountsEachRunOnce: 60 runs counted by 2 shards, then
// the same stores restarted as 3 shards. The runs that finished hours
// before the reshard are not counted again by their new owners (they are
// older than count_window), the ones still unfinished at the reshard are
// counted once when they finish, and the shards' counters sum to the 60
// runs.
func TestEndToEndReshardCountsEachRunOnce(t *testing.T) {
	// The simulated API lives 5 hours in the past, so that every finished_at
	// it reports is hours old on the exporters' clock: only a run seen
	// unfinished may count.
	now := time.Now().UTC()
	t0 := now.Add(-5 * time.Hour)
	list := simapi.SampleRuns(60, 7, t0)
	var early, late []string // finished before the reshard; after it
	for i := range list {
		r := &list[i]
		r.CreatedAt, r.Queued = t0.Add(-20*time.Minute), 10*time.Minute
		if i < 40 {
			r.Running = 70*time.Minute + time.Duration(i)*time.Second // ends about t0+1h
			early = append(early, r.ID)
		} else {
			r.Running = 190 * time.Minute // ends about t0+3h
			late = append(late, r.ID)
		}
	}
	env := newE2EEnvOf(t, list)
	env.clock.Store(t0.UnixNano())
	storeOf := func(i int) string {
		return "--storage.path=" + filepath.Join(env.dir, fmt.Sprintf("state-%d", i))
	}
	startShards := func(count int) []*process {
		procs := make([]*process, count)
		for i := range procs {
			procs[i] = startExporter(t, env.config(), storeOf(i), fmt.Sprintf("--shard.count=%d", count), fmt.Sprintf("--shard.index=%d", i))
		}
		for _, p := range procs {
			p.waitReady() // every run seen unfinished by its owner
			p.waitCycles(1)
		}
		return procs
	}

	// Two shards see every run running, then the first 40 finish: each is
	// counted by its owner.
	two := startShards(2)
	env.clock.Store(t0.Add(2 * time.Hour).UnixNano())
	waitForTotals(t, "2 shards, 40 runs finished", two, ownedCounts(early, 2))
	for _, p := range two {
		p.stop()
	}

	// Three shards on the same stores (shard 2's is new). Two thirds of the
	// finished runs move to another shard, which first sees them finished
	// about 4 hours ago: not counted again. The counters of shards 0 and 1
	// go on from their stores.
	three := startShards(3)
	carried := append(ownedCounts(early, 2), 0)
	waitForTotals(t, "3 shards on the 2 shards' stores, before more runs finish", three, carried)

	// The last 20, seen unfinished by their new owners, finish now.
	env.clock.Store(t0.Add(4 * time.Hour).UnixNano())
	want := ownedCounts(late, 3)
	for i := range want {
		want[i] += carried[i]
	}
	waitForTotals(t, "3 shards, all 60 runs finished", three, want)
	if got := sumFloats(finishedTotals(three)); got != float64(len(list)) {
		t.Errorf("the 3 shards' workflow_runs_finished_total sum to %v, want the %d runs", got, len(list))
	}
	for _, p := range three {
		p.waitCycles(2) // later cycles count nothing more
	}
	waitForTotals(t, "3 shards, a few cycles later", three, want)
}

// TestEndToEndProbesCountOnlyOnTheOwner: two shards are probed for the same
// runs. Both answer every probe, but only the owner of a run counts it:
// together they count each countable run once.
func TestEndToEndProbesCountOnlyOnTheOwner(t *testing.T) {
	// The simulated API lives 20 minutes in the past.
	now := time.Now().UTC()
	t0 := now.Add(-20 * time.Minute)
	list := simapi.SampleRuns(13, 4, t0)
	var finishedRecently, running, finishedLongAgo []string
	for i := range list {
		r := &list[i]
		switch {
		case i < 6: // finished 30 minutes before the first probe: within count_window
			r.CreatedAt, r.Queued, r.Running = t0.Add(-time.Hour), time.Minute, 49*time.Minute
			finishedRecently = append(finishedRecently, r.ID)
		case i < 11: // running at the first probe, finished at the second
			r.CreatedAt, r.Queued, r.Running = t0.Add(-time.Minute), 0, 10*time.Minute
			running = append(running, r.ID)
		default: // finished 5 hours before the first probe: counted by no one
			r.CreatedAt, r.Queued, r.Running = t0.Add(-6*time.Hour), time.Minute, 59*time.Minute
			finishedLongAgo = append(finishedLongAgo, r.ID)
		}
	}
	countable := append(append([]string(nil), finishedRecently...), running...)
	for _, ids := range [][]string{finishedRecently, running, finishedLongAgo} {
		if n := ownedCounts(ids, 2); n[0] == 0 || n[1] == 0 {
			t.Fatalf("the sample gives a shard none of %v; pick another seed", ids)
		}
	}
	want := ownedCounts(countable, 2)
	env := newE2EEnvOf(t, list)
	env.clock.Store(t0.UnixNano())
	env.write("config.yml", fmt.Sprintf("api: {url: %s, authorization: {credentials_file: token}}\npoll: {interval: 300ms, max_requests_per_second: 5000}\n", env.api.URL))
	shards := []*process{
		startExporter(t, env.config(), "--shard.count=2", "--shard.index=0"),
		startExporter(t, env.config(), "--shard.count=2", "--shard.index=1"),
	}
	for _, p := range shards {
		p.waitReady()
	}

	// probeStatus probes run id on p until it answers with status, or
	// fails; an unfinished run is fetched again once per poll.interval.
	probeStatus := func(p *process, id, status string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get(p.url("/probe?run_id=" + id))
			if err != nil {
				t.Fatal(err)
			}
			parser := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := parser.TextToMetricFamilies(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("probe of %s on %s: %v", id, p.addr, err)
			}
			if gaugeValue(mfs, "workflow_run_fetch_success", map[string]string{"run_id": id}) == 1 &&
				gaugeValue(mfs, "workflow_run_status", map[string]string{"run_id": id, "status": status}) == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("probe of %s on %s: not %s with fetch_success 1 within 30s", id, p.addr, status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	statusAt := func(id string) string {
		r, _ := env.sim.Run(id)
		return string(r.At(env.sim.Now()).Status)
	}

	// Every shard is probed for every run and answers it.
	for _, p := range shards {
		for _, r := range list {
			probeStatus(p, r.ID, statusAt(r.ID))
		}
	}
	waitForTotals(t, "the runs finished before the first probes", shards, ownedCounts(finishedRecently, 2))

	env.clock.Store(now.Add(-5 * time.Minute).UnixNano())
	for _, p := range shards {
		for _, id := range running {
			if statusAt(id) == "running" {
				t.Fatalf("run %s still running; the test's clock is wrong", id)
			}
			probeStatus(p, id, statusAt(id))
		}
	}
	waitForTotals(t, "every countable run, once, by its owner", shards, want)

	// More probes of every run on both shards count nothing more.
	for _, p := range shards {
		for _, r := range list {
			probeStatus(p, r.ID, statusAt(r.ID))
		}
	}
	waitForTotals(t, "after probing everything again", shards, want)
	if got := sumFloats(finishedTotals(shards)); got != float64(len(countable)) {
		t.Errorf("the two shards count %v runs, want %d: %d finished recently, %d seen running, not the %d finished long ago",
			got, len(countable), len(finishedRecently), len(running), len(finishedLongAgo))
	}
}
