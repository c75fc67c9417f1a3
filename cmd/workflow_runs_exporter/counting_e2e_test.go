package main

// End-to-end tests of what the finished-run counters count (DESIGN §8 "What
// counts"), through the real binary: backfills and restarts without a
// store, a run that finishes while the exporter is down, and a disk that
// fills up under the state store. What they must show is what
// increase(workflow_runs_finished_total[...]) reads: runs counted when they
// really finished, and a counter that never goes down within a process.

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
)

// setCountWindow sets runs.count_window in the environment's config.
func (e *e2eEnv) setCountWindow(w string) {
	b, err := os.ReadFile(filepath.Join(e.dir, "config.yml"))
	if err != nil {
		panic(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "  count_window:") {
			lines = append(lines, l)
		}
	}
	e.write("config.yml", strings.Replace(strings.Join(lines, "\n"), "runs:\n", "runs:\n  count_window: "+w+"\n", 1))
}

// finishedRuns returns n runs that ended at end (failed), created an hour
// before.
func finishedRuns(n int, seed uint64, end time.Time) []simapi.Run {
	list := simapi.SampleRuns(n, seed, end)
	for i := range list {
		r := &list[i]
		r.CreatedAt, r.Queued, r.Running, r.Outcome = end.Add(-time.Hour), time.Minute, 59*time.Minute, runs.StatusFailed
	}
	return list
}

// TestEndToEndBackfillIsNotCounted: 60 runs that failed in January are
// loaded, with 5 that failed a minute ago: only the 5 are counted. A
// restart without a store, once those 5 are older than the window, counts
// nothing again (the counter starts from 0 and stays there), where it used
// to count all 65 again.
func TestEndToEndBackfillIsNotCounted(t *testing.T) {
	now := time.Now().UTC()
	list := append(finishedRuns(60, 11, now.AddDate(0, -10, 0)), finishedRuns(5, 12, now.Add(-time.Minute))...)
	env := newE2EEnvOf(t, list)
	env.clock.Store(now.UnixNano())
	env.setCountWindow("5m")
	p := startExporter(t, env.config())
	p.waitReady()
	p.waitCycles(2)
	if got := sumOf(p.scrape(), "workflow_runs_finished_total"); got != 5 {
		t.Errorf("after loading 60 runs finished 10 months ago and 5 a minute ago: %v counted, want 5", got)
	}
	if got := sumOf(p.scrape(), "workflow_run_status"); got != 65 {
		t.Errorf("%v runs exported, want every one of the 65 (per run, counted or not)", got)
	}
	p.stop()

	// The same runs, with a window that the recent ones have passed since:
	// a restart without a store counts none of them again.
	env.setCountWindow("30s")
	again := startExporter(t, env.config())
	again.waitReady()
	again.waitCycles(2)
	if got := sumOf(again.scrape(), "workflow_runs_finished_total"); got != 0 {
		t.Errorf("a restart without a store counted %v runs again, want 0", got)
	}
}

// TestEndToEndDowntimeFinishCountedOnce: with a store, runs seen running
// that finish while the exporter is down are counted at the restart, once
// (they really finished; the moment is the restart's), and not again at
// the next restart. The simulated API lives hours in the past, so every
// finished_at is far outside the window: only having been seen unfinished
// can count them.
func TestEndToEndDowntimeFinishCountedOnce(t *testing.T) {
	t0 := time.Now().UTC().Add(-6 * time.Hour)
	list := simapi.SampleRuns(30, 13, t0)
	for i := range list {
		r := &list[i]
		r.CreatedAt, r.Queued, r.Running = t0.Add(-time.Minute), 0, time.Hour+time.Duration(i)*time.Second
	}
	env := newE2EEnvOf(t, list)
	env.clock.Store(t0.UnixNano())
	store := "--storage.path=" + filepath.Join(env.dir, "state")
	p := startExporter(t, env.config(), store)
	p.waitReady()
	p.waitCycles(2)
	if got := sumOf(p.scrape(), "workflow_runs_finished_total"); got != 0 {
		t.Fatalf("%v counted while every run is running", got)
	}
	p.stop()

	env.clock.Store(t0.Add(2 * time.Hour).UnixNano()) // all 30 finish meanwhile
	again := startExporter(t, env.config(), store)
	again.waitReady()
	waitFor(t, "the 30 runs that finished during the downtime counted", func() bool {
		return sumOf(again.scrape(), "workflow_runs_finished_total") == 30
	})
	again.waitCycles(2)
	again.stop()

	third := startExporter(t, env.config(), store)
	third.waitReady()
	third.waitCycles(2)
	if got := sumOf(third.scrape(), "workflow_runs_finished_total"); got != 30 {
		t.Errorf("after another restart: %v, want the same 30", got)
	}
}

// TestEndToEndFullDiskNeverLowersTheCounters: the state store's filesystem
// is full while runs run and finish, the exporter is killed (-9), space is
// freed, and it starts again. Sampled all along, workflow_runs_finished_total
// never goes down (Prometheus would read that as a reset, and increase()
// would jump by the whole counter), and it ends equal to the runs that
// finished. While commits fail, storage_errors_total says why and the
// counters hold: they show only what is on disk.
//
// The runs finish minutes before the restart, within runs.count_window: a
// run whose "seen unfinished" could not be written is then counted as a
// run first seen finished. The disk is a 4 MiB tmpfs, which needs root (CI
// runs as root).
func TestEndToEndFullDiskNeverLowersTheCounters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs to fill a disk and needs root; run it as root (CI does)")
	}
	mnt := filepath.Join(t.TempDir(), "disk")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })

	now := time.Now().UTC()
	t0 := now.Add(-30 * time.Minute)
	list := simapi.SampleRuns(200, 17, t0)
	for i := range list {
		r := &list[i]
		r.CreatedAt, r.Queued, r.Running = t0.Add(-time.Minute), 0, 10*time.Minute+time.Duration(i)*time.Second
		// Large records: 200 runs need far more than the room left.
		r.WorkflowName = fmt.Sprintf("%s %s", r.WorkflowName, strings.Repeat("x", 1000))
	}
	env := newE2EEnvOf(t, list)
	env.clock.Store(t0.UnixNano())

	// Fill the disk but for 96 KiB: the store opens, and soon commits fail.
	filler := filepath.Join(mnt, "filler")
	fillUpTo(t, filler, 4<<20-96<<10)
	store := "--storage.path=" + filepath.Join(mnt, "state")
	p := startExporter(t, env.config(), store)
	p.waitReady()

	// Sample the counter all along, across the kill and the restart.
	var mu sync.Mutex
	var samples []float64
	current := p
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
			mu.Lock()
			proc := current
			mu.Unlock()
			if proc == nil {
				continue
			}
			if v, ok := counterOf(proc); ok {
				mu.Lock()
				samples = append(samples, v)
				mu.Unlock()
			}
		}
	}()

	waitFor(t, "commits failing", func() bool {
		return sumOf(p.scrape(), "workflow_runs_exporter_storage_errors_total") > 0
	})
	env.clock.Store(now.UnixNano()) // every run has finished, 1 to 20 minutes ago
	p.waitCycles(3)
	held := sumOf(p.scrape(), "workflow_runs_finished_total")
	if held == 200 {
		t.Error("all 200 runs counted while commits failed: the counters ran ahead of the disk")
	}

	// kill -9, free the space, start again.
	mu.Lock()
	current = nil
	beforeKill := len(samples)
	mu.Unlock()
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	again := startExporter(t, env.config(), store)
	mu.Lock()
	current = again
	mu.Unlock()
	again.waitReady()
	waitFor(t, "every finished run counted", func() bool {
		return sumOf(again.scrape(), "workflow_runs_finished_total") == 200
	})
	again.waitCycles(2)
	close(stopSampling)
	<-sampled

	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(samples); i++ {
		if samples[i] < samples[i-1] {
			t.Fatalf("workflow_runs_finished_total went down from %v to %v (sample %d of %d)", samples[i-1], samples[i], i, len(samples))
		}
	}
	if beforeKill < 2 || len(samples)-beforeKill < 2 || samples[len(samples)-1] != 200 {
		t.Errorf("%d samples before the kill and %d after, the last %v; want some on each side, ending at 200", beforeKill, len(samples)-beforeKill, samples[len(samples)-1])
	}
	t.Logf("counter while commits failed: %v of 200 (what was on disk); %d samples, none lower than the one before", held, len(samples))
}

// counterOf returns the process's sum of workflow_runs_finished_total, if
// it answers (it may be being killed). Safe outside the test's goroutine.
func counterOf(p *process) (float64, bool) {
	resp, err := http.Get(p.url("/metrics"))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bufio.NewReader(resp.Body))
	if err != nil {
		return 0, false
	}
	return sumOf(mfs, "workflow_runs_finished_total"), true
}

// fillUpTo makes path size bytes long, written (a tmpfs allocates written
// pages only).
func fillUpTo(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	for written := int64(0); written < size; {
		n := min(int64(len(block)), size-written)
		if _, err := f.Write(block[:n]); err != nil {
			t.Fatal(err)
		}
		written += n
	}
}

// TestEndToEndLateIDsFileKeepsTheStore: at a restart whose runs.ids_file is
// not there yet (a sidecar writes it later), the state store keeps the
// records of the runs it listed: once the file appears, runs seen
// unfinished before the restart that finished meanwhile are counted, once.
// Sweeping the store before the file was read would have forgotten them.
func TestEndToEndLateIDsFileKeepsTheStore(t *testing.T) {
	t0 := time.Now().UTC().Add(-6 * time.Hour)
	list := simapi.SampleRuns(20, 19, t0)
	for i := range list {
		r := &list[i]
		r.CreatedAt, r.Queued, r.Running = t0.Add(-time.Minute), 0, time.Hour
	}
	env := newE2EEnvOf(t, list)
	env.clock.Store(t0.UnixNano())
	store := "--storage.path=" + filepath.Join(env.dir, "state")
	p := startExporter(t, env.config(), store)
	p.waitReady()
	p.waitCycles(2)
	p.stop()

	ids, err := os.ReadFile(filepath.Join(env.dir, "ids.txt"))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(env.dir, "ids.txt"))
	env.clock.Store(t0.Add(2 * time.Hour).UnixNano()) // every run finished meanwhile
	again := startExporter(t, env.config(), store)
	again.waitReady()
	time.Sleep(2 * time.Second) // a sweep, were it not waiting for the file, would be done by now
	env.write("ids.txt", string(ids))
	waitFor(t, "the 20 runs that finished while the exporter was down counted", func() bool {
		return sumOf(again.scrape(), "workflow_runs_finished_total") == 20
	})
	again.waitCycles(2)
	if got := sumOf(again.scrape(), "workflow_runs_finished_total"); got != 20 {
		t.Errorf("%v counted, want 20", got)
	}
}
