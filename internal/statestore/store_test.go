package statestore

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

func openT(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func closeT(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// reopen closes s and opens its directory again: what a restart reads.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	closeT(t, s)
	return openT(t, s.dir, Options{})
}

func TestStateRoundTrip(t *testing.T) {
	ts := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UTC()
	}
	odd := "quote\" back\\slash\nnew line\x00nul \xff\xfe invalid utf-8 ✓"
	full := &runs.Run{
		ID: "3c90c3cc-0d44-4b50-8888-8dd25736052a", GroupID: odd, WorkflowID: "wf",
		WorkflowName: odd, WorkflowType: "type\ttab", Source: "",
		Status: "paused \"new\"\n", Progress: 42.125, HasProgress: true,
		CreatedAt: ts("2024-02-29T23:59:59.999999999Z"), FinishedAt: ts("2024-03-01T00:00:00.000000001Z"),
	}
	cases := []struct {
		name string
		st   runs.State
	}{
		{"only an ID", runs.State{ID: "3c90c3cc-0d44-4b50-8888-8dd25736052c"}},
		{"nil Run with health and timestamps", runs.State{
			ID: "3c90c3cc-0d44-4b50-8888-8dd25736052b", FailReason: "not_found",
			NotFoundSince: ts("2025-01-01T00:00:00.5Z"), LastSuccess: ts("2024-12-31T23:59:59.123456789Z"),
		}},
		{"every field", runs.State{
			ID: full.ID, Run: full, FetchOK: true, FailReason: odd,
			LastSuccess: ts("2025-06-01T12:00:00.000000007Z"), NotFoundSince: ts("2025-06-01T12:00:01Z"),
			StatusSince: ts("2025-06-01T12:00:02Z"), ProgressUpdated: ts("2025-06-01T12:00:03Z"),
			FinishedSeen: ts("2025-06-01T12:00:04Z"), Verdict: runs.Counted, Retired: true,
		}},
		{"upper-case ID kept as given, Run.ID in another case", runs.State{
			ID:  "ABCDEF01-0D44-4B50-8888-8DD25736052A",
			Run: &runs.Run{ID: "abcdef01-0d44-4b50-8888-8dd25736052a", Status: runs.StatusRunning},
		}},
		{"progress zero but present, negative zero, times before 1970 and after 2262", runs.State{
			ID: "run-zero", Run: &runs.Run{ID: "run-zero", HasProgress: true, Status: runs.StatusQueued,
				CreatedAt: ts("1969-07-20T20:17:40.000000001Z"), FinishedAt: ts("2999-12-31T23:59:59.999999999Z")},
		}},
		{"negative zero progress", runs.State{ID: "run-neg", Run: &runs.Run{ID: "run-neg", Progress: math.Copysign(0, -1)}}},
		{"a long name", runs.State{ID: "run-long", Run: &runs.Run{ID: "run-long", WorkflowName: strings.Repeat("ab\xff", 20000)}}},
	}
	s := openT(t, t.TempDir(), Options{})
	for _, c := range cases {
		s.Put(c.st, runs.Counts{})
	}
	s = reopen(t, s)
	defer closeT(t, s)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := s.Get(strings.ToUpper(c.st.ID)) // any case finds it
			if err != nil || !ok {
				t.Fatalf("Get: ok %v, err %v", ok, err)
			}
			if !reflect.DeepEqual(got, c.st) {
				t.Errorf("round trip changed the state\n got %#v\nwant %#v", got, c.st)
				if got.Run != nil && c.st.Run != nil {
					t.Errorf("Run\n got %#v\nwant %#v", *got.Run, *c.st.Run)
				}
			}
			if got.Run != nil && c.st.Run != nil && math.Signbit(got.Run.Progress) != math.Signbit(c.st.Run.Progress) {
				t.Error("the sign of a zero progress changed")
			}
		})
	}
	all, err := s.States()
	if err != nil || len(all) != len(cases) {
		t.Fatalf("States: %d states, err %v; want %d", len(all), err, len(cases))
	}
}

// A time in another zone, with a monotonic reading (time.Now), comes back
// as the same instant in UTC.
func TestTimeComesBackAsUTC(t *testing.T) {
	now := time.Now().In(time.FixedZone("X", 5*3600+1800))
	s := openT(t, t.TempDir(), Options{})
	s.Put(runs.State{ID: "r", StatusSince: now}, runs.Counts{})
	s = reopen(t, s)
	defer closeT(t, s)
	got, _, err := s.Get("r")
	if err != nil {
		t.Fatal(err)
	}
	if !got.StatusSince.Equal(now) || got.StatusSince.Location() != time.UTC || got.StatusSince != now.UTC().Round(0) {
		t.Errorf("got %v, want %v in UTC", got.StatusSince, now)
	}
}

func TestGetMissing(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer closeT(t, s)
	for _, id := range []string{"nope", ""} {
		if _, ok, err := s.Get(id); ok || err != nil {
			t.Errorf("Get(%q): ok %v, err %v; want nothing", id, ok, err)
		}
	}
}

func TestTotalsRoundTrip(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	want := runs.NewTotals()
	durations := []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 59 * time.Minute, 30 * time.Hour}
	for i, d := range durations {
		for j, key := range []runs.TotalKey{
			{WorkflowName: "etl", WorkflowType: "batch", Status: runs.StatusCompleted},
			{WorkflowName: "etl", WorkflowType: "batch", Status: runs.StatusFailed},
			{WorkflowName: "odd \"name\"\n\xff", WorkflowType: "", Status: "weird"},
		} {
			fin := runs.Finish{Key: key, Duration: d, HasDuration: i != 2}
			st := runs.State{ID: runID(1, i*10+j), Verdict: runs.Counted}
			s.Put(st, runs.Counts{Finishes: []runs.Finish{fin}})
			want.AddFinish(fin)
		}
	}
	s = reopen(t, s)
	defer closeT(t, s)
	got, err := s.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("totals changed:\n got %v\nwant %v", dumpTotals(got), dumpTotals(want))
	}
}

func dumpTotals(t runs.Totals) string {
	var lines []string
	for k, v := range t.Finished {
		lines = append(lines, fmt.Sprintf("%q: %d %+v; ", k, v.Runs, *v.Duration))
	}
	sort.Strings(lines)
	return strings.Join(lines, "")
}

// finishCollector records what OnCommit delivers.
type finishCollector struct {
	mu   sync.Mutex
	fins []runs.Finish
}

func (c *finishCollector) onCommit(counts runs.Counts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fins = append(c.fins, counts.Finishes...)
}

func (c *finishCollector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fins)
}

// Each run is counted once, whatever is Put after its finish, and across
// restarts.
func TestExactlyOnce(t *testing.T) {
	st, fin := finishedState(3, 1)
	key := fin.Finishes[0].Key
	type put struct {
		st  runs.State
		fin runs.Counts
	}
	later := st
	later.FetchOK, later.FailReason = false, "network" // a later change of the same run
	fresh := runs.State{ID: strings.ToUpper(st.ID)}    // the ID removed and re-added with no memory of it
	freshFinished := fresh
	freshFinished.Run, freshFinished.Verdict = st.Run, runs.Counted
	cases := []struct {
		name string
		// rounds of Puts; the store is closed and reopened after each
		rounds        [][]put
		wantCount     uint64
		wantDelivered int
		wantState     runs.State
	}{
		{"finish, then reopen", [][]put{{{st, fin}}}, 1, 1, st},
		{"finish, then another state without finish", [][]put{{{st, fin}}, {{later, runs.Counts{}}}}, 1, 1, withCounted(later)},
		{"two Puts coalesced keep the finish", [][]put{{{st, fin}, {later, runs.Counts{}}}}, 1, 1, withCounted(later)},
		{"a second finish while the first is queued is dropped", [][]put{{{st, fin}, {st, fin}}}, 1, 1, st},
		{"re-added ID with a fresh state: Counted stays, finish not counted again",
			[][]put{{{st, fin}}, {{fresh, runs.Counts{}}}, {{freshFinished, fin}}}, 1, 1, freshFinished},
		{"finish with Counted false in the state: stored as counted", [][]put{{{withoutCounted(st), fin}}}, 1, 1, st},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got finishCollector
			dir := t.TempDir()
			for _, round := range c.rounds {
				s := openT(t, dir, Options{OnCommit: got.onCommit})
				for _, p := range round {
					s.Put(p.st, p.fin)
				}
				closeT(t, s)
			}
			s := openT(t, dir, Options{})
			defer closeT(t, s)
			tot, err := s.Totals()
			if err != nil {
				t.Fatal(err)
			}
			if n := countOf(tot, key); n != c.wantCount {
				t.Errorf("count %d, want %d", n, c.wantCount)
			}
			if got.count() != c.wantDelivered {
				t.Errorf("OnCommit got %d finishes, want %d", got.count(), c.wantDelivered)
			}
			gotSt, _, err := s.Get(st.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotSt, c.wantState) {
				t.Errorf("stored state\n got %+v\nwant %+v", gotSt, c.wantState)
			}
		})
	}
}

func withCounted(st runs.State) runs.State    { st.Verdict = runs.Counted; return st }
func withoutCounted(st runs.State) runs.State { st.Verdict = runs.Undecided; return st }

func countOf(t runs.Totals, k runs.TotalKey) uint64 {
	if t.Finished[k] == nil {
		return 0
	}
	return t.Finished[k].Runs
}

// OnCommit runs after the commit: the file already holds the finishes it
// is given. A copy of the file, opened as a store of its own, shows it.
func TestOnCommitAfterCommit(t *testing.T) {
	dir := t.TempDir()
	var s *Store
	var calls []int
	var errs []string
	onCommit := func(c runs.Counts) {
		want := runs.NewTotals()
		want.Add(c)
		fins := c.Finishes
		tot := totalsOfCopy(t, s.Path())
		for k, w := range want.Finished {
			if countOf(tot, k) < w.Runs {
				errs = append(errs, "OnCommit before the file held "+k.WorkflowName)
			}
		}
		calls = append(calls, len(fins))
	}
	s = openT(t, dir, Options{OnCommit: onCommit})
	for i := range 10 {
		st, fin := finishedState(5, i)
		s.Put(st, fin)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	st, _ := finishedState(5, 3)
	s.Put(st, runs.Counts{}) // no finish: no call
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	closeT(t, s)
	if !reflect.DeepEqual(calls, []int{10}) {
		t.Errorf("OnCommit calls %v, want one with 10 finishes", calls)
	}
	for _, e := range errs {
		t.Error(e)
	}
}

// totalsOfCopy reads the totals from a copy of the file at path, as it is
// on disk now.
func totalsOfCopy(t testing.TB, path string) runs.Totals {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c := openT(t, dir, Options{})
	defer closeT(t, c)
	tot, err := c.Totals()
	if err != nil {
		t.Fatal(err)
	}
	return tot
}

// Run commits on its own, sooner when many runs are queued, and once more
// when its context ends.
func TestRunCommits(t *testing.T) {
	var got finishCollector
	reg := prometheus.NewPedanticRegistry()
	s := openT(t, t.TempDir(), Options{OnCommit: got.onCommit, FlushInterval: time.Hour, Registerer: reg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()

	// A full queue is committed without waiting for the (hour-long) tick.
	for i := range flushSoon {
		st, fin := finishedState(9, i)
		s.Put(st, fin)
	}
	waitFor(t, "a commit of a full queue", func() bool { return got.count() == flushSoon })

	// What is left at the end is committed by the last flush.
	st, fin := finishedState(9, flushSoon)
	s.Put(st, fin)
	cancel()
	<-done
	if got.count() != flushSoon+1 {
		t.Errorf("OnCommit got %d finishes, want %d", got.count(), flushSoon+1)
	}
	if n := testutil.ToFloat64(s.storageErrors); n != 0 {
		t.Errorf("storage errors %v, want 0", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP workflow_runs_exporter_storage_errors_total Commits to the state store (--storage.path) that failed. The changes stay queued and are retried; metrics are served from memory meanwhile.
# TYPE workflow_runs_exporter_storage_errors_total counter
workflow_runs_exporter_storage_errors_total 0
`)); err != nil {
		t.Error(err)
	}
	s = reopen(t, s)
	defer closeT(t, s)
	if all, err := s.States(); err != nil || len(all) != flushSoon+1 {
		t.Errorf("States: %d, err %v; want %d", len(all), err, flushSoon+1)
	}
}

func TestPutAfterCloseIsDropped(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	closeT(t, s)
	s.Put(runs.State{ID: "late"}, runs.Counts{})
	if err := s.Flush(); err != ErrClosed {
		t.Errorf("Flush after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Reopening with the same registry continues the same counter rather
// than failing to register it.
func TestReopenSameRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	closeT(t, openT(t, dir, Options{Registerer: reg}))
	closeT(t, openT(t, dir, Options{Registerer: reg}))
}

func TestKeyOf(t *testing.T) {
	for in, want := range map[string]string{
		"3C90C3CC-0D44-4B50-8888-8DD25736052A": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
		"already-lower":                        "already-lower",
		"\xffÄ\xfeB":                           "\xffÄ\xfeb", // only ASCII letters change; odd bytes stay
	} {
		if got := keyOf(in); got != want {
			t.Errorf("keyOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestGetSeesQueuedChanges: the poller forgets a run taken off the list and
// reads it back from the store when it is listed again, maybe before the
// change was committed; it must get the latest state, not the one on disk.
func TestGetSeesQueuedChanges(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer closeT(t, s)
	id := "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	s.Put(runs.State{ID: id, FetchOK: true}, runs.Counts{})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Put(runs.State{ID: id, FetchOK: true, Verdict: runs.Counted, Run: &runs.Run{ID: id, Status: runs.StatusFailed}}, runs.Counts{})
	st, ok, err := s.Get(id)
	if err != nil || !ok || st.Verdict != runs.Counted || st.Run == nil {
		t.Errorf("Get before the commit = %+v %v %v, want the queued state", st, ok, err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if st, ok, _ := s.Get(id); !ok || st.Verdict != runs.Counted {
		t.Errorf("Get after the commit = %+v %v", st, ok)
	}
}

// Delete removes a run's record, but what was counted for it before the
// deletion is still committed and handed on; GetMany sees the deletion
// before the commit, and a later Put brings the record back.
func TestDeleteKeepsCounts(t *testing.T) {
	var got finishCollector
	dir := t.TempDir()
	s := openT(t, dir, Options{OnCommit: got.onCommit})
	st, counts := finishedState(41, 1)
	other, _ := finishedState(41, 2)
	s.Put(st, counts)
	s.Put(other, runs.Counts{})
	s.Delete(st.ID)
	if m, err := s.GetMany([]string{st.ID, other.ID}); err != nil || len(m) != 1 || m[other.ID].ID != other.ID {
		t.Fatalf("GetMany before the commit = %v, %v; want only %s", m, err, other.ID)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got.count() != 1 {
		t.Errorf("OnCommit got %d finishes, want the deleted run's 1", got.count())
	}
	s = reopen(t, s)
	defer closeT(t, s)
	tot, err := s.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if n := countOf(tot, counts.Finishes[0].Key); n != 1 {
		t.Errorf("totals count %d, want 1", n)
	}
	states, err := s.States()
	if err != nil || len(states) != 1 || states[0].ID != other.ID {
		t.Errorf("records after the delete: %v, %v", states, err)
	}
	s.Put(st, runs.Counts{})
	if _, ok, err := s.Get(st.ID); !ok || err != nil {
		t.Errorf("the run put again is missing: %v %v", ok, err)
	}
}

// Queue-wait totals add up per workflow and survive a restart, native
// buckets included.
func TestQueueWaitTotalsRoundTrip(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	want := runs.NewTotals()
	for i, d := range []time.Duration{0, time.Second, 90 * time.Second, 3 * time.Hour} {
		q := runs.QueueWait{RunID: runID(43, i), Key: runs.WorkflowKey{WorkflowName: "etl", WorkflowType: "flow"}, Wait: d}
		s.Put(runs.State{ID: q.RunID}, runs.Counts{QueueWaits: []runs.QueueWait{q}})
		want.AddQueueWait(q)
	}
	s = reopen(t, s)
	defer closeT(t, s)
	got, err := s.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.QueueWait, want.QueueWait) {
		t.Errorf("queue-wait totals\n got %+v\nwant %+v", *got.QueueWait[runs.WorkflowKey{WorkflowName: "etl", WorkflowType: "flow"}], *want.QueueWait[runs.WorkflowKey{WorkflowName: "etl", WorkflowType: "flow"}])
	}
}
