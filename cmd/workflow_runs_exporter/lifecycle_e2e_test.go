package main

// End-to-end tests of what happens over time and across processes: restarts
// with the state store, its failure modes, shards, /probe, a stalled scrape,
// and the log format.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

// stop sends SIGTERM and waits for exit 0.
func (p *process) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			p.t.Fatalf("exit after SIGTERM: %v; log:\n%s", err, p.logs.String())
		}
	case <-time.After(20 * time.Second):
		p.t.Fatal("no exit within 20s of SIGTERM")
	}
}

// exitOf runs the binary to its end and returns its exit code and output.
func exitOf(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), append([]string{"--web.listen-address=" + freePort(t)}, args...)...)
	done := make(chan struct{})
	var out []byte
	go func() {
		out, _ = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit within 20s:\n%s", args, out)
	}
	return cmd.ProcessState.ExitCode(), strings.ReplaceAll(string(out), `\"`, `"`)
}

func sumOf(mfs map[string]*dto.MetricFamily, name string) float64 {
	var sum float64
	for _, m := range mfs[name].GetMetric() {
		if c := m.GetCounter(); c != nil {
			sum += c.GetValue()
		} else {
			sum += m.GetGauge().GetValue()
		}
	}
	return sum
}

// runIDsOf returns the run_id of every workflow_run_fetch_success series.
func runIDsOf(mfs map[string]*dto.MetricFamily) []string {
	var ids []string
	for _, m := range mfs["workflow_run_fetch_success"].GetMetric() {
		ids = append(ids, labelsOf(m)["run_id"])
	}
	slices.Sort(ids)
	return ids
}

func (e *e2eEnv) terminal() []string {
	var out []string
	for _, id := range e.sim.IDs() {
		r, _ := e.sim.Run(id)
		if r.At(e.sim.Now()).Status.Terminal() {
			out = append(out, id)
		}
	}
	return out
}

// TestEndToEndRestartWithStore: with --storage.path, a restart makes no
// request for finished runs, serves every run's last values from the first
// scrape, becomes ready once the unfinished runs were attempted, and counts
// no run twice.
func TestEndToEndRestartWithStore(t *testing.T) {
	env := newE2EEnv(t, 60)
	store := "--storage.path=" + filepath.Join(env.dir, "state")
	p := startExporter(t, env.config(), store)
	p.waitReady()
	p.waitCycles(2)
	finished := env.terminal()
	if len(finished) == 0 {
		t.Fatal("the sample has no finished run")
	}
	before := p.scrape()
	waitFor(t, "every finished run counted", func() bool {
		return sumOf(p.scrape(), "workflow_runs_finished_total") == float64(len(finished))
	})
	p.stop()
	requests := map[string]int{}
	for _, id := range env.sim.IDs() {
		requests[id] = env.sim.Requests(id)
	}

	// Hold every request of the new process until its first scrape is
	// done, so that scrape can only show what the store restored.
	env.hold.Store(true)
	again := startExporter(t, env.config(), store)
	again.waitListening()
	first := again.scrape()
	if got, want := runIDsOf(first), runIDsOf(before); !slices.Equal(got, want) {
		t.Errorf("first scrape after the restart has %d runs, want all %d", len(got), len(want))
	}
	for _, id := range env.sim.IDs() {
		r, _ := env.sim.Run(id)
		labels := map[string]string{"run_id": id, "status": string(r.At(env.sim.Now()).Status)}
		if gaugeValue(first, "workflow_run_status", labels) != 1 {
			t.Errorf("run %s: its last status is not served on the first scrape after the restart", id)
		}
	}
	if got := sumOf(first, "workflow_runs_finished_total"); got != float64(len(finished)) {
		t.Errorf("finished_total after the restart = %v, want %d (the counter does not reset)", got, len(finished))
	}
	env.hold.Store(false)
	again.waitReady()
	again.waitCycles(2)
	for _, id := range finished {
		if n := env.sim.Requests(id) - requests[id]; n != 0 {
			t.Errorf("finished run %s requested %d times after the restart, want 0", id, n)
		}
	}

	// Runs that finish now are counted once more each.
	env.clock.Add(int64(2 * time.Hour))
	now := env.terminal()
	again.waitCycles(2)
	waitFor(t, "the newly finished runs counted", func() bool {
		return sumOf(again.scrape(), "workflow_runs_finished_total") == float64(len(now))
	})
	if len(now) == len(finished) {
		t.Error("no run finished during the test")
	}
}

func TestEndToEndStoreFailures(t *testing.T) {
	env := newE2EEnv(t, 3)
	dir := filepath.Join(env.dir, "state")

	// Locked by another running exporter: exit 1 at once, naming the path.
	p := startExporter(t, env.config(), "--storage.path="+dir)
	p.waitReady()
	start := time.Now()
	code, out := exitOf(t, env.config(), "--storage.path="+dir)
	if code != 1 || !strings.Contains(out, dir) || !strings.Contains(out, "locked") || time.Since(start) > 10*time.Second {
		t.Errorf("second exporter on the same store: exit %d after %s:\n%s", code, time.Since(start), out)
	}
	p.stop()

	// Corrupt: exit 1 naming the file and what to do.
	bad := filepath.Join(env.dir, "corrupt")
	os.MkdirAll(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "state.db"), []byte(strings.Repeat("not a database ", 1000)), 0o600)
	code, out = exitOf(t, env.config(), "--storage.path="+bad)
	if code != 1 || !strings.Contains(out, filepath.Join(bad, "state.db")) || !strings.Contains(out, "move it away") {
		t.Errorf("corrupt store: exit %d:\n%s", code, out)
	}

	// Not a directory it can write: exit 1 naming the path.
	file := filepath.Join(env.dir, "token")
	code, out = exitOf(t, env.config(), "--storage.path="+filepath.Join(file, "state"))
	if code != 1 || !strings.Contains(out, file) {
		t.Errorf("store under a regular file: exit %d:\n%s", code, out)
	}
}

// TestEndToEndKillDuringWrites: after kill -9 the next start opens the
// store and counts no run twice.
func TestEndToEndKillDuringWrites(t *testing.T) {
	env := newE2EEnv(t, 60)
	store := "--storage.path=" + filepath.Join(env.dir, "state")
	p := startExporter(t, env.config(), store)
	p.waitReady()
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
	again := startExporter(t, env.config(), store)
	again.waitReady()
	again.waitCycles(2)
	finished := env.terminal()
	waitFor(t, "every finished run counted once", func() bool {
		return sumOf(again.scrape(), "workflow_runs_finished_total") == float64(len(finished))
	})
}

// TestEndToEndShards runs three processes over one configuration: together
// they export every run once, and a restarted one keeps its runs.
func TestEndToEndShards(t *testing.T) {
	env := newE2EEnv(t, 60)
	var procs []*process
	owned := map[string]int{}
	var ownedBy [3][]string
	for i := range 3 {
		p := startExporter(t, env.config(), "--shard.count=3", fmt.Sprintf("--shard.index=%d", i))
		procs = append(procs, p)
	}
	for i, p := range procs {
		p.waitReady()
		mfs := p.scrape()
		if gaugeValue(mfs, "workflow_runs_exporter_shard", map[string]string{"index": fmt.Sprint(i), "count": "3"}) != 1 {
			t.Errorf("shard %d: workflow_runs_exporter_shard{index=%d,count=3} missing", i, i)
		}
		ownedBy[i] = runIDsOf(mfs)
		for _, id := range ownedBy[i] {
			owned[id]++
		}
		if n := gaugeValue(mfs, "workflow_runs_exporter_tracked_runs", nil); n != float64(len(ownedBy[i])) {
			t.Errorf("shard %d: tracked_runs %v, exports %d runs", i, n, len(ownedBy[i]))
		}
	}
	for _, id := range env.sim.IDs() {
		if owned[id] != 1 {
			t.Errorf("run %s exported by %d shards, want 1", id, owned[id])
		}
	}
	procs[1].stop()
	again := startExporter(t, env.config(), "--shard.count=3", "--shard.index=1")
	again.waitReady()
	if got := runIDsOf(again.scrape()); !slices.Equal(got, ownedBy[1]) {
		t.Errorf("restarted shard 1 owns %d runs, before %d: the assignment changed", len(got), len(ownedBy[1]))
	}
	for _, args := range [][]string{{"--shard.count=0"}, {"--shard.count=3", "--shard.index=3"}} {
		code, out := exitOf(t, append([]string{env.config()}, args...)...)
		flag := strings.Split(strings.TrimPrefix(args[len(args)-1], "--"), "=")[0]
		if code != 1 || !strings.Contains(out, "--"+flag) {
			t.Errorf("%v: exit %d, want 1 naming --%s:\n%s", args, code, flag, out)
		}
	}
}

// TestEndToEndProbe: /probe answers a run's metrics; bad run IDs never
// reach the API; a finished run is answered from memory.
func TestEndToEndProbe(t *testing.T) {
	env := newE2EEnv(t, 20)
	env.write("config.yml", fmt.Sprintf("api: {url: %s, authorization: {credentials_file: token}}\npoll: {interval: 1h}\n", env.api.URL))
	p := startExporter(t, env.config())
	p.waitReady()
	total := func() int {
		n := 0
		for _, id := range env.sim.IDs() {
			n += env.sim.Requests(id)
		}
		return n
	}
	for _, q := range []string{"", "?run_id=", "?run_id=nope", "?run_id=" + url404} {
		resp, err := http.Get(p.url("/probe" + q))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("/probe%s = %s, want 400", q, resp.Status)
		}
	}
	if n := total(); n != 0 {
		t.Fatalf("%d API requests for bad probes, want 0", n)
	}
	finished := env.terminal()[0]
	for range 3 {
		resp, err := http.Get(p.url("/probe?run_id=" + finished))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `workflow_run_fetch_success{run_id="`+finished+`"} 1`) {
			t.Fatalf("probe of %s:\n%s", finished, body)
		}
	}
	if n := env.sim.Requests(finished); n != 1 {
		t.Errorf("finished run requested %d times for 3 probes, want 1", n)
	}
	if ids := runIDsOf(p.scrape()); len(ids) != 0 {
		t.Errorf("/metrics exports probed runs: %v", ids)
	}
}

// url404 is a well-formed run ID with a path in it: not a UUID.
const url404 = "3c90c3cc-0d44-4b50-8888-8dd25736052a/../x"

// TestEndToEndStalledScrapeDoesNotDelayPublishing: a scrape held open by a
// client that stops reading, for many poll cycles, does not delay them: the
// cycles go on and other scrapes see new data. The exporter's own
// promhttp_metric_handler_requests_in_flight shows the stalled scrape is
// still being served all along: its body (1000 runs with the longest
// workflow names exported, about 8 MiB) is more than the socket buffers
// take.
func TestEndToEndStalledScrapeDoesNotDelayPublishing(t *testing.T) {
	env := newE2EEnvOf(t, longNamedRuns(1000, 0.99))
	p := startExporter(t, env.config())
	p.waitReady()
	inFlight := func() string {
		return strings.Join(p.lines("promhttp_metric_handler_requests_in_flight "), "")
	}

	scrapetest.StallScrape(t, p.addr, "") // its scrape stalls in the server
	waitFor(t, "the stalled scrape in flight beside this one", func() bool { return strings.HasSuffix(inFlight(), " 2") })
	before := p.lastCycle()
	env.clock.Add(int64(25 * time.Hour)) // the last 10 runs finish
	p.waitCycles(3)
	if !strings.HasSuffix(inFlight(), " 2") {
		t.Fatal("the stalled scrape ended during the test; it proves nothing")
	}
	if p.lastCycle() == before {
		t.Error("no poll cycle finished while a scrape was stalled")
	}
	finished := 0
	for _, line := range p.lines("workflow_runs{") {
		for _, s := range []string{"completed", "failed", "stopped"} {
			if strings.Contains(line, `status="`+s+`"`) {
				var n int
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &n)
				finished += n
			}
		}
	}
	if finished != 1000 {
		t.Errorf("%d runs shown finished beside the stalled scrape, want all 1000", finished)
	}
}

// TestEndToEndLogLinesHaveTheSameKeys: every line, the exporter's and the
// exporter-toolkit's, has time, level, caller and msg, in logfmt and json.
func TestEndToEndLogLinesHaveTheSameKeys(t *testing.T) {
	for _, format := range []string{"logfmt", "json"} {
		p := startExporter(t, "--demo", "--log.format="+format)
		p.waitReady()
		p.stop()
		sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
		lines := 0
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				continue
			}
			lines++
			keys := map[string]bool{}
			if format == "json" {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Errorf("%s: not JSON: %q", format, line)
					continue
				}
				for k := range m {
					keys[k] = true
				}
			} else {
				for _, f := range strings.Fields(line) {
					if k, _, ok := strings.Cut(f, "="); ok {
						keys[k] = true
					}
				}
			}
			for _, k := range []string{"time", "level", "caller", "msg"} {
				if !keys[k] {
					t.Errorf("%s line without %s: %s", format, k, line)
				}
			}
		}
		if lines < 4 || !strings.Contains(p.logs.String(), "Listening on") {
			t.Errorf("%s: %d lines, want the exporter's and the toolkit's (Listening on):\n%s", format, lines, p.logs.String())
		}
	}
}
