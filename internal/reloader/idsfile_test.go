package reloader

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/shard"
)

const (
	readSuccessful = "workflow_runs_exporter_ids_file_read_successful"
	invalidLines   = "workflow_runs_exporter_ids_file_invalid_lines"
)

// withIDsFile makes the fixture list listed in runs.ids and read
// runs.ids_file ids.txt.
func (f *fixture) withIDsFile(listed ...string) {
	f.t.Helper()
	f.write("config.yml", `
api: {url: `+f.api.URL+`, authorization: {credentials_file: token}}
runs: {ids: [`+strings.Join(listed, ", ")+`], ids_file: ids.txt}
poll: {interval: 50ms, max_requests_per_second: 1000}
`)
}

func (f *fixture) remove(name string) {
	f.t.Helper()
	if err := os.RemoveAll(filepath.Join(f.dir, name)); err != nil {
		f.t.Fatal(err)
	}
}

// idLines joins IDs one per line.
func idLines(ids ...string) string { return strings.Join(ids, "\n") + "\n" }

// logCount returns how many log lines carry msg.
func (f *fixture) logCount(msg string) int { return strings.Count(f.logs.String(), `msg="`+msg+`"`) }

// reload asks for a reload over HTTP and checks that it succeeded.
func (f *fixture) reload() {
	f.t.Helper()
	code, body := f.get("POST", "/-/reload")
	if code != http.StatusOK {
		f.t.Fatalf("POST /-/reload = %d %q, want 200: the ids_file never fails a reload", code, body)
	}
	if strings.Contains(body, sentinel) {
		f.t.Errorf("the reload answer quotes the ids_file: %q", body)
	}
	if got := f.gauge("workflow_runs_exporter_config_last_reload_successful"); got != 1 {
		f.t.Errorf("config_last_reload_successful = %v, want 1", got)
	}
}

func (f *fixture) noSentinelInLogs() {
	f.t.Helper()
	if strings.Contains(f.logs.String(), sentinel) {
		f.t.Errorf("the log quotes the ids_file:\n%s", f.logs.String())
	}
}

func TestIDsFileChangesApplyWithoutRestart(t *testing.T) {
	f := newFixture(t, 4, "")
	ids := f.sim.IDs()
	f.write("ids.txt", idLines(ids[0]))
	f.withIDsFile(ids[3])
	f.start()
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 2 {
		t.Fatalf("tracked_runs = %v, want 2", got)
	}
	f.write("ids.txt", idLines(ids[:3]...))
	f.waitFor("all runs tracked", func() bool { return f.gauge("workflow_runs_exporter_tracked_runs") == 4 })

	// A line that is not a UUID, and a run runs.ids lists already, are
	// skipped; the other lines apply.
	f.write("ids.txt", idLines(ids[0], sentinel, ids[1], ids[3]))
	f.waitFor("ids[2] dropped", func() bool { return f.gauge("workflow_runs_exporter_tracked_runs") == 3 })
	if got := f.gauge(invalidLines); got != 2 {
		t.Errorf("invalid_lines = %v, want 2", got)
	}
	for range 3 {
		f.reloader.CheckIDsFile()
	}
	f.reload()
	if n := f.logCount("skipping an invalid line of runs.ids_file"); n != 2 {
		t.Errorf("%d warnings for 2 invalid lines, checked many times and reloaded, want 2:\n%s", n, f.logs.String())
	}
	for _, want := range []string{"line=2 problem=\"not a run ID (a UUID)\"", "line=4 problem=\"already listed in runs.ids[0]\""} {
		if !strings.Contains(f.logs.String(), want) {
			t.Errorf("no warning with %s:\n%s", want, f.logs.String())
		}
	}
	f.noSentinelInLogs()
}

// TestIDsFileProblemsNeverFailALoad: in any state of the file, the start
// (the first load) and every reload succeed, runs.ids is tracked at once,
// and the file's valid lines count.
func TestIDsFileProblemsNeverFailALoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(f *fixture, ids []string)
		tracked float64 // runs.ids has one
		readOK  float64
		invalid float64
	}{
		{name: "missing", prepare: func(f *fixture, _ []string) {}, tracked: 1},
		{name: "a directory", prepare: func(f *fixture, _ []string) { os.Mkdir(filepath.Join(f.dir, "ids.txt"), 0o700) }, tracked: 1},
		{name: "empty", prepare: func(f *fixture, _ []string) { f.write("ids.txt", "") }, tracked: 1, readOK: 1},
		{name: "an invalid line", prepare: func(f *fixture, ids []string) { f.write("ids.txt", idLines(ids[0], sentinel, ids[1])) }, tracked: 3, readOK: 1, invalid: 1},
		{name: "only invalid lines", prepare: func(f *fixture, _ []string) { f.write("ids.txt", idLines(sentinel, "x")) }, tracked: 1, readOK: 1, invalid: 2},
		{name: "a duplicate of runs.ids", prepare: func(f *fixture, ids []string) { f.write("ids.txt", idLines(ids[0], ids[3])) }, tracked: 2, readOK: 1, invalid: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 4, "")
			ids := f.sim.IDs()
			f.withIDsFile(ids[3])
			tc.prepare(f, ids)
			f.start()
			check := func(when string) {
				mfs := f.scrape()
				for name, want := range map[string]float64{"workflow_runs_exporter_tracked_runs": tc.tracked, readSuccessful: tc.readOK, invalidLines: tc.invalid} {
					if got, ok := seriesIn(mfs, name, nil); !ok || got != want {
						t.Errorf("%s: %s = %v (present %v), want %v", when, name, got, ok, want)
					}
				}
			}
			check("at start")
			f.reload()
			check("after a reload")
			f.noSentinelInLogs()
		})
	}
}

func TestIDsFileMissingAtStartIsWatched(t *testing.T) {
	f := newFixture(t, 4, "")
	ids := f.sim.IDs()
	f.withIDsFile(ids[3])
	f.start()
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 1 {
		t.Errorf("tracked_runs = %v with the file missing, want 1 (runs.ids)", got)
	}
	f.write("ids.txt", idLines(ids[:3]...))
	f.waitFor("the file's runs tracked", func() bool { return f.gauge("workflow_runs_exporter_tracked_runs") == 4 })
	if got := f.gauge(readSuccessful); got != 1 {
		t.Errorf("read_successful = %v once the file exists, want 1", got)
	}
	if n := f.logCount("runs.ids_file cannot be read; its runs are tracked once it can be"); n != 1 {
		t.Errorf("the missing file was logged %d times, want once:\n%s", n, f.logs.String())
	}
}

func TestIDsFileUnreadableKeepsTheLastList(t *testing.T) {
	f := newFixture(t, 4, "")
	ids := f.sim.IDs()
	f.write("ids.txt", idLines(ids[:3]...))
	f.withIDsFile(ids[3])
	f.start()
	f.remove("ids.txt")
	f.waitFor("read_successful 0", func() bool { return f.gauge(readSuccessful) == 0 })
	f.reloader.CheckIDsFile()
	f.reload() // a reload reads the file again, and keeps the list too
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 4 {
		t.Errorf("tracked_runs = %v while the file cannot be read, want the last 4", got)
	}
	if got := f.gauge(readSuccessful); got != 0 {
		t.Errorf("read_successful = %v after a reload, the file still missing; want 0", got)
	}
	if n := f.logCount("runs.ids_file cannot be read; the runs it listed last stay tracked"); n != 1 {
		t.Errorf("the missing file was logged %d times, want once:\n%s", n, f.logs.String())
	}
	f.write("ids.txt", idLines(ids[:2]...))
	f.waitFor("the new list", func() bool { return f.gauge("workflow_runs_exporter_tracked_runs") == 3 })
	if got := f.gauge(readSuccessful); got != 1 {
		t.Errorf("read_successful = %v, want 1", got)
	}
}

// TestEmptyIDsFileWithinTheGraceChangesNothing: a file emptied, checked
// again and again, and reloaded, within the minute, keeps its runs.
func TestEmptyIDsFileWithinTheGraceChangesNothing(t *testing.T) {
	f := newFixture(t, 4, "")
	ids := f.sim.IDs()
	f.write("ids.txt", idLines(ids[:3]...))
	f.withIDsFile(ids[3])
	f.start()
	f.write("ids.txt", "")
	for range 5 {
		f.reloader.CheckIDsFile()
	}
	f.reload()
	f.reloader.CheckIDsFile()
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 4 {
		t.Errorf("tracked_runs = %v, want the 4 of before the file was emptied", got)
	}
	if n := len(f.scrape()["workflow_run_fetch_success"].GetMetric()); n != 4 {
		t.Errorf("%d runs exported, want 4", n)
	}
	if n := f.logCount("runs.ids_file lists no runs; its previous runs stay tracked unless it lists none for a while"); n != 1 {
		t.Errorf("the empty file was logged %d times, want once:\n%s", n, f.logs.String())
	}
}

func TestEmptyIDsFileAppliesAfterTheGrace(t *testing.T) {
	f := newFixtureWith(t, 4, "", func(o *Options) { o.IDsFileEmptyGrace = 100 * time.Millisecond })
	ids := f.sim.IDs()
	f.write("ids.txt", idLines(ids[:3]...))
	f.withIDsFile(ids[3])
	f.start()
	f.write("ids.txt", "# none today\n")
	f.waitFor("only runs.ids tracked", func() bool { return f.gauge("workflow_runs_exporter_tracked_runs") == 1 })
	if n := f.logCount("runs.ids_file has listed no runs for a while; its runs are no longer tracked"); n != 1 {
		t.Errorf("the emptied list was logged %d times, want once:\n%s", n, f.logs.String())
	}
}

// TestIDsFileMetricsFollowTheConfig: absent without an ids_file, present
// with one, gone again when a reload removes it.
func TestIDsFileMetricsFollowTheConfig(t *testing.T) {
	f := newFixture(t, 2, "")
	f.start()
	present := func() bool {
		mfs := f.scrape()
		_, ok1 := seriesIn(mfs, readSuccessful, nil)
		_, ok2 := seriesIn(mfs, invalidLines, nil)
		if ok1 != ok2 {
			t.Errorf("one of the ids_file metrics without the other")
		}
		return ok1
	}
	if present() {
		t.Error("ids_file metrics without runs.ids_file")
	}
	f.write("ids.txt", idLines(f.sim.IDs()...))
	f.withIDsFile()
	f.reload()
	if !present() {
		t.Error("no ids_file metrics with runs.ids_file")
	}
	f.writeConfig(f.sim.IDs(), "")
	f.reload()
	if present() {
		t.Error("ids_file metrics after a reload removed runs.ids_file")
	}
}

// TestPrepareReportsIDsFileProblems: Prepare, which --config.check runs,
// succeeds with the file's problems in the plan, naming file and line.
func TestPrepareReportsIDsFileProblems(t *testing.T) {
	const id = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir}
	f.write("c.yml", "api: {url: https://x}\nruns: {ids_file: ids.txt}\n")
	prepare := func() *Plan {
		t.Helper()
		p, err := Prepare(func() (*config.Config, error) { return config.LoadFile(filepath.Join(dir, "c.yml")) }, shard.Assignment{Count: 1}, nil)
		if err != nil {
			t.Fatalf("Prepare: %v, want the problem in the plan", err)
		}
		return p
	}
	path := filepath.Join(dir, "ids.txt")
	if errs := prepare().IDsFile.Problems(); len(errs) != 1 || !strings.Contains(errs[0].Error(), path) {
		t.Errorf("missing file: problems %v, want one naming %s", errs, path)
	}
	f.write("ids.txt", idLines(id, sentinel))
	p := prepare()
	if errs := p.IDsFile.Problems(); len(errs) != 1 || errs[0].Error() != "runs.ids_file: "+path+" line 2: not a run ID (a UUID)" {
		t.Errorf("invalid line: problems %v", errs)
	}
	if len(p.IDs) != 1 || p.IDs[0] != id {
		t.Errorf("IDs = %q, want the valid line's", p.IDs)
	}
}

// TestReloadListingAFileRunInRunsIDs: a reload that adds to runs.ids a run
// the file lists tracks it once, at once; the file's line becomes a
// duplicate. Checks are made by hand here, so that none comes between the
// reload and what is asserted right after it.
func TestReloadListingAFileRunInRunsIDs(t *testing.T) {
	f := newFixtureWith(t, 4, "", func(o *Options) { o.IDsFileCheck = time.Hour })
	ids := f.sim.IDs()
	f.write("ids.txt", idLines(ids[:3]...))
	f.withIDsFile(ids[3])
	f.start()
	f.withIDsFile(ids[3], ids[1])
	f.reload()
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 4 {
		t.Errorf("tracked_runs = %v right after the reload, want 4 (each run once)", got)
	}
	if got := f.gauge(invalidLines); got != 1 {
		t.Errorf("invalid_lines = %v right after the reload, want 1", got)
	}
	f.reloader.CheckIDsFile()
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 4 {
		t.Errorf("tracked_runs = %v once the file's list without the duplicate applies, want 4", got)
	}
	if !strings.Contains(f.logs.String(), `line=2 problem="already listed in runs.ids[1]"`) {
		t.Errorf("no warning for line 2:\n%s", f.logs.String())
	}
}
