package idsfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/go-logfmt/logfmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
)

// Messages of the log lines, as the tests expect them.
const (
	msgMissing     = "runs.ids_file cannot be read; its runs are tracked once it can be"
	msgUnreadable  = "runs.ids_file cannot be read; the runs it listed last stay tracked"
	msgReadable    = "runs.ids_file can be read again"
	msgInvalid     = "skipping an invalid line of runs.ids_file"
	msgMoreInvalid = "skipping more invalid lines of runs.ids_file than are logged one by one"
	msgEmpty       = "runs.ids_file lists no runs; its previous runs stay tracked unless it lists none for a while"
	msgEmptied     = "runs.ids_file has listed no runs for a while; its runs are no longer tracked"
	msgRunsAgain   = "runs.ids_file lists runs again"
)

// step is one check of the file (or a reload, or the start) and what it
// must show.
type step struct {
	name  string
	file  string        // the file's content before the step: "" leaves it, "-" removes it, "/" makes it a directory, "<empty>" empties it
	after time.Duration // the fake clock advances this much before the step
	// reload, when set, takes the file as a reload with these runs.ids
	// does instead of a check.
	reload  []string
	ids     string // the file's IDs in force after the step, comma-separated
	changed bool
	readOK  float64
	invalid float64
	logs    []string // the messages this step logs, in order
}

// run starts a Watcher on the first step's file (listed: runs.ids), checks
// the file at every other step, and compares the list in force, the
// metrics and the log lines of each step.
func run(t *testing.T, listed []string, steps []step) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ids")
	logs := &syncbuffer.Buffer{}
	m := NewMetrics(prometheus.NewRegistry())
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var w *Watcher
	for i, s := range steps {
		switch s.file {
		case "":
		case "-":
			os.RemoveAll(path)
		case "/":
			os.RemoveAll(path)
			os.Mkdir(path, 0o700)
		default:
			os.RemoveAll(path)
			if err := os.WriteFile(path, []byte(strings.TrimPrefix(s.file, "<empty>")), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(s.after)
		before := len(logs.String())
		var ids []string
		var changed bool
		switch {
		case i == 0:
			w = New(Options{Logger: log.NewLogfmtLogger(logs), Path: path, Listed: listed, Metrics: m}, Load(path, listed))
			ids = w.IDs()
		case s.reload != nil:
			ids, changed = w.Reload(now, s.reload, Load(path, s.reload))
		default:
			ids, changed = w.Check(now)
		}
		if got := strings.Join(ids, ","); got != s.ids || changed != s.changed {
			t.Errorf("step %d %q: IDs %q changed %v, want %q %v", i, s.name, got, changed, s.ids, s.changed)
		}
		if got := strings.Join(w.IDs(), ","); got != s.ids {
			t.Errorf("step %d %q: IDs() = %q, want %q", i, s.name, got, s.ids)
		}
		if got := gauges(t, m); got["read_successful"] != s.readOK || got["invalid_lines"] != s.invalid {
			t.Errorf("step %d %q: metrics %v, want read_successful %v invalid_lines %v", i, s.name, got, s.readOK, s.invalid)
		}
		if got := messages(t, logs.String()[before:]); strings.Join(got, "\n") != strings.Join(s.logs, "\n") {
			t.Errorf("step %d %q logged:\n  %s\nwant:\n  %s", i, s.name, strings.Join(got, "\n  "), strings.Join(s.logs, "\n  "))
		}
	}
	if out := logs.String(); strings.Contains(out, sentinel) {
		t.Errorf("the log quotes a line of the file:\n%s", out)
	}
	if t.Failed() {
		t.Logf("log:\n%s", logs.String())
	}
}

// gauges returns the values of the ids_file metrics, by name without the
// prefix.
func gauges(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		out[strings.TrimPrefix(mf.GetName(), "workflow_runs_exporter_ids_file_")] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	return out
}

// messages returns the msg of each logfmt line.
func messages(t *testing.T, out string) []string {
	t.Helper()
	var msgs []string
	d := logfmt.NewDecoder(strings.NewReader(out))
	for d.ScanRecord() {
		for d.ScanKeyval() {
			if string(d.Key()) == "msg" {
				msgs = append(msgs, string(d.Value()))
			}
		}
	}
	if err := d.Err(); err != nil {
		t.Fatalf("log is not logfmt: %v\n%s", err, out)
	}
	return msgs
}

func TestWatcher(t *testing.T) {
	ab := a + "\n" + b + "\n"
	for _, tc := range []struct {
		name   string
		listed []string
		steps  []step
	}{
		{name: "a changed list applies when two checks in a row read it", steps: []step{
			{name: "start", file: a + "\n", ids: a, readOK: 1},
			{name: "unchanged", ids: a, readOK: 1},
			{name: "a change is seen once: not applied yet", file: ab, ids: a, readOK: 1},
			{name: "the same change read again: applied", ids: a + "," + b, changed: true, readOK: 1},
			{name: "steady again", ids: a + "," + b, readOK: 1},
			{name: "half written once", file: a + "\n", ids: a + "," + b, readOK: 1},
			{name: "written out before the next check", file: ab, ids: a + "," + b, readOK: 1},
			{name: "a second change", file: b + "\n", ids: a + "," + b, readOK: 1},
			{name: "changes again before it was confirmed", file: a + "\n", ids: a + "," + b, readOK: 1},
			{name: "confirmed", ids: a, changed: true, readOK: 1},
			// A change seen once, a failed read, then the same change: the
			// failed read in between means the two reads were not in a row.
			{name: "a change seen once", file: ab, ids: a, readOK: 1},
			{name: "then the file is gone", file: "-", ids: a, readOK: 0, logs: []string{msgUnreadable}},
			{name: "back with the change: seen once only", file: ab, ids: a, readOK: 1, logs: []string{msgReadable}},
			{name: "and confirmed", ids: a + "," + b, changed: true, readOK: 1},
		}},
		{name: "missing at start, created later", listed: []string{c}, steps: []step{
			{name: "start", file: "-", readOK: 0, logs: []string{msgMissing}},
			{name: "still missing: no second warning", readOK: 0},
			{name: "created", file: ab, readOK: 1, logs: []string{msgReadable}},
			{name: "read again: applied", ids: a + "," + b, changed: true, readOK: 1},
		}},
		{name: "unreadable after it was read", steps: []step{
			{name: "start", file: ab, ids: a + "," + b, readOK: 1},
			{name: "removed: the list read last stays", file: "-", ids: a + "," + b, readOK: 0, logs: []string{msgUnreadable}},
			{name: "still removed: no second warning", after: time.Hour, ids: a + "," + b, readOK: 0},
			{name: "a directory now: another problem, another warning", file: "/", ids: a + "," + b, readOK: 0, logs: []string{msgUnreadable}},
			{name: "readable again, unchanged", file: ab, ids: a + "," + b, readOK: 1, logs: []string{msgReadable}},
		}},
		{name: "invalid lines are skipped and logged once", listed: []string{c}, steps: []step{
			{name: "start", file: a + "\n" + sentinel + "\n" + strings.ToUpper(a) + "\n" + c + "\n" + b + "\n", ids: a + "," + b, readOK: 1, invalid: 3,
				logs: []string{msgInvalid, msgInvalid, msgInvalid}},
			{name: "unchanged: not logged again", ids: a + "," + b, readOK: 1, invalid: 3},
			{name: "the same invalid lines, one more run", file: a + "\n" + sentinel + "\n" + strings.ToUpper(a) + "\n" + c + "\n" + b + "\n" + "# new\n",
				ids: a + "," + b, readOK: 1, invalid: 3},
			{name: "one fixed, one new", file: a + "\n" + b + "\n" + strings.ToUpper(a) + "\n" + c + "\n" + sentinel + "\n",
				ids: a + "," + b, readOK: 1, invalid: 3, logs: []string{msgInvalid}}, // line 5; lines 3 and 4 were logged
			{name: "unreadable: the last count stays", file: "-", ids: a + "," + b, readOK: 0, invalid: 3, logs: []string{msgUnreadable}},
			{name: "all fixed", file: ab, ids: a + "," + b, readOK: 1, logs: []string{msgReadable}},
		}},
		{name: "many invalid lines: the first logged, the rest counted", steps: []step{
			{name: "start", file: a + "\n" + strings.Repeat("x\n", maxErrors+5), ids: a, readOK: 1, invalid: maxErrors + 5,
				logs: append(repeat(msgInvalid, maxErrors), msgMoreInvalid)},
			{name: "unchanged", ids: a, readOK: 1, invalid: maxErrors + 5},
			{name: "a comment added: the same problems", file: a + "\n" + strings.Repeat("x\n", maxErrors+5) + "#\n", ids: a, readOK: 1, invalid: maxErrors + 5},
			{name: "one more", file: a + "\n" + strings.Repeat("x\n", maxErrors+6), ids: a, readOK: 1, invalid: maxErrors + 6, logs: []string{msgMoreInvalid}},
		}},
		{name: "an empty file applies only after the grace", steps: []step{
			{name: "start", file: ab, ids: a + "," + b, readOK: 1},
			{name: "truncated", file: "<empty>", ids: a + "," + b, readOK: 1, logs: []string{msgEmpty}},
			{name: "only a comment", file: "# nothing\n", ids: a + "," + b, readOK: 1},
			{name: "30s later", after: 30 * time.Second, ids: a + "," + b, readOK: 1},
			{name: "59s later", after: 29 * time.Second, ids: a + "," + b, readOK: 1},
			{name: "a minute later", after: time.Second, changed: true, readOK: 1, logs: []string{msgEmptied}},
			{name: "steady", after: time.Hour, readOK: 1},
		}},
		{name: "an empty file that lists runs again within the grace changes nothing", steps: []step{
			{name: "start", file: ab, ids: a + "," + b, readOK: 1},
			{name: "emptied", file: "\n", ids: a + "," + b, readOK: 1, logs: []string{msgEmpty}},
			{name: "written again", file: ab, after: 50 * time.Second, ids: a + "," + b, readOK: 1, logs: []string{msgRunsAgain}},
			{name: "emptied again: the grace starts again", file: "\n", after: 50 * time.Second, ids: a + "," + b, readOK: 1, logs: []string{msgEmpty}},
			{name: "59s later", after: 59 * time.Second, ids: a + "," + b, readOK: 1},
			{name: "a minute later", after: time.Second, changed: true, readOK: 1, logs: []string{msgEmptied}},
		}},
		{name: "an empty file must be read empty twice in a row, past the grace", steps: []step{
			{name: "start", file: ab, ids: a + "," + b, readOK: 1},
			{name: "emptied", file: "\n", ids: a + "," + b, readOK: 1, logs: []string{msgEmpty}},
			{name: "unreadable past the grace", file: "-", after: 2 * time.Minute, ids: a + "," + b, readOK: 0, logs: []string{msgUnreadable}},
			{name: "empty again: once in a row", file: "\n", ids: a + "," + b, readOK: 1, logs: []string{msgReadable}},
			{name: "twice", changed: true, readOK: 1, logs: []string{msgEmptied}},
		}},
		{name: "empty at start, or missing, is no change", steps: []step{
			{name: "start", file: "\n", readOK: 1},
			{name: "still empty", after: time.Hour, readOK: 1},
			{name: "removed", file: "-", readOK: 0, logs: []string{msgUnreadable}},
			{name: "empty again", file: "<empty>", readOK: 1, logs: []string{msgReadable}},
		}},
		{name: "a reload takes the file as a check, with the new runs.ids", listed: []string{c}, steps: []step{
			{name: "start", file: ab, ids: a + "," + b, readOK: 1},
			{name: "reload: b is in runs.ids now", reload: []string{b}, ids: a + "," + b, readOK: 1, invalid: 1, logs: []string{msgInvalid}},
			{name: "the next check confirms", ids: a, changed: true, readOK: 1, invalid: 1},
			{name: "reload while the file is gone keeps the list", reload: []string{b}, file: "-", ids: a, readOK: 0, invalid: 1, logs: []string{msgUnreadable}},
			{name: "reload with an empty file keeps the list", reload: []string{b}, file: "\n", ids: a, readOK: 1, logs: []string{msgReadable, msgEmpty}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.listed, tc.steps) })
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestWatcherLogsNameFileAndLine: a skipped line's warning names the file
// and the line, and what is wrong, never what the line says.
func TestWatcherLogsNameFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids")
	os.WriteFile(path, []byte(a+"\n\n"+sentinel+"\n"), 0o600)
	logs := &syncbuffer.Buffer{}
	New(Options{Logger: log.NewLogfmtLogger(logs), Path: path, Metrics: NewMetrics(prometheus.NewRegistry())}, Load(path, nil))
	want := `level=warn msg="skipping an invalid line of runs.ids_file" file=` + path + ` line=3 problem="not a run ID (a UUID)"`
	if got := strings.TrimSpace(logs.String()); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}

// TestMetricsAreAbsentWithoutIDsFile: the series exist while an ids_file
// is configured, with their HELP, and go with it.
func TestMetricsAreAbsentWithoutIDsFile(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d series before any ids_file, want none", n)
	}
	path := filepath.Join(t.TempDir(), "ids")
	os.WriteFile(path, []byte("nope\n"+a+"\n"), 0o600)
	New(Options{Logger: log.NewNopLogger(), Path: path, Metrics: m}, Load(path, nil))
	err := testutil.CollectAndCompare(m, strings.NewReader(`
# HELP workflow_runs_exporter_ids_file_invalid_lines Lines of runs.ids_file skipped at its last successful read: not a run ID (UUID), or an ID listed before in the file or in runs.ids. Absent without runs.ids_file.
# TYPE workflow_runs_exporter_ids_file_invalid_lines gauge
workflow_runs_exporter_ids_file_invalid_lines 1
# HELP workflow_runs_exporter_ids_file_read_successful 1 if the last read of runs.ids_file succeeded, 0 while it cannot be read (missing, unreadable, not a regular file, too large); its last list read stays in force. Absent without runs.ids_file.
# TYPE workflow_runs_exporter_ids_file_read_successful gauge
workflow_runs_exporter_ids_file_read_successful 1
`))
	if err != nil {
		t.Error(err)
	}
	// A new path starts from nothing: the old file's count goes.
	New(Options{Logger: log.NewNopLogger(), Path: path + ".new", Metrics: m}, Load(path+".new", nil))
	if got := gauges(t, m); got["read_successful"] != 0 || got["invalid_lines"] != 0 {
		t.Errorf("metrics of a new, missing path: %v, want both 0", got)
	}
	m.Unconfigured()
	if n := testutil.CollectAndCount(m); n != 0 {
		t.Errorf("%d series once no ids_file is configured, want none", n)
	}
}

// TestWatcherKnown: the run list is known once the file was read and lists
// runs, with no change or emptying waiting to be confirmed: what the
// start-up sweep of the state store waits for.
func TestWatcherKnown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids")
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	w := New(Options{Logger: log.NewNopLogger(), Path: path, Metrics: NewMetrics(prometheus.NewRegistry())}, Load(path, nil))
	if w.Known() {
		t.Fatal("known before the file exists")
	}
	os.WriteFile(path, []byte(a+"\n"), 0o600)
	w.Check(now)
	if w.Known() {
		t.Error("known on the first read of a change, before a second confirms it")
	}
	w.Check(now.Add(5 * time.Second))
	if !w.Known() {
		t.Error("not known once the file's list is in force")
	}
	os.WriteFile(path, nil, 0o600)
	w.Check(now.Add(10 * time.Second))
	if w.Known() {
		t.Error("known while the file was just emptied")
	}
}
