package statestore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Some tests need a second process (a lock holder, a writer to kill -9).
// They re-execute this test binary with helperEnv set; TestMain then runs
// the helper instead of the tests.
const (
	helperEnv    = "STATESTORE_TEST_HELPER"
	helperDirEnv = "STATESTORE_TEST_DIR"
)

func TestMain(m *testing.M) {
	switch h := os.Getenv(helperEnv); h {
	case "":
		code := m.Run()
		removeFixtures()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				code = 1
			}
		}
		os.Exit(code)
	case "hold-lock":
		os.Exit(holdLock(os.Getenv(helperDirEnv)))
	case "write-until-killed":
		os.Exit(writeUntilKilled(os.Getenv(helperDirEnv)))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", h)
		os.Exit(2)
	}
}

// helperCommand returns a command running helper in a child process.
func helperCommand(t testing.TB, helper, dir string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+helper, helperDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	return cmd
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runID returns the i-th run ID of a deterministic sequence of UUIDs.
func runID(seed uint64, i int) string {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff, r.Uint32()&0xfff, r.Uint64()&0xffffffffffff)
}

var testEpoch = time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.UTC)

// finishedState returns a realistic finished, counted run: what most of a
// long-lived store holds.
func finishedState(seed uint64, i int) (runs.State, runs.Counts) {
	created := testEpoch.Add(time.Duration(i) * time.Second)
	finished := created.Add(time.Duration(60+i%3600) * time.Second)
	seen := finished.Add(17 * time.Second)
	r := &runs.Run{
		ID:           runID(seed, i),
		GroupID:      runID(seed+1, i%100),
		WorkflowID:   runID(seed+2, i%20),
		WorkflowName: fmt.Sprintf("nightly-etl-%d", i%20),
		WorkflowType: "batch",
		Source:       "api",
		Status:       []runs.Status{runs.StatusCompleted, runs.StatusFailed, runs.StatusStopped}[i%3],
		Progress:     100,
		HasProgress:  true,
		CreatedAt:    created,
		FinishedAt:   finished,
	}
	st := runs.State{
		ID: r.ID, Run: r, FetchOK: true,
		LastSuccess: seen, StatusSince: seen, ProgressUpdated: created.Add(3 * time.Second), FinishedSeen: seen,
		Verdict: runs.Counted,
	}
	fin := runs.Finish{RunID: r.ID, Key: runs.TotalKey{WorkflowName: r.WorkflowName, WorkflowType: r.WorkflowType, Status: r.Status}, FinishedAt: finished}
	fin.Duration, fin.HasDuration = r.Duration()
	return st, runs.Counts{Finishes: []runs.Finish{fin}}
}

// holdLock opens the store in dir, says "ready" and keeps it open until its
// stdin is closed.
func holdLock(dir string) int {
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	_, _ = os.Stdin.Read(make([]byte, 1))
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// writeUntilKilled updates the runs of a store continuously, as a busy
// exporter does, and prints "ack <id> <seq>" for each update once it is
// committed, until it is killed. An update's seq is its Run.Progress; the
// first update of a run carries its finish.
func writeUntilKilled(dir string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Open(dir, Options{FlushInterval: 3 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go s.Run(ctx) // commits on its own too, so a kill can land in either writer
	seq := map[string]float64{}
	// Continue the sequences of a previous round.
	old, err := s.States()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, st := range old {
		seq[st.ID] = st.Run.Progress
	}
	fmt.Println("ready")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	unacked := map[string]float64{}
	for i := 0; ; i++ {
		n := r.IntN(500)
		st, fin := finishedState(7, n)
		seq[st.ID]++
		r := *st.Run
		r.Progress = seq[st.ID]
		st.Run = &r
		if seq[st.ID] > 1 {
			fin = runs.Counts{}
		}
		s.Put(st, fin)
		unacked[st.ID] = seq[st.ID]
		if i%8 == 7 {
			if err := s.Flush(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			var b strings.Builder
			for id, n := range unacked {
				fmt.Fprintf(&b, "ack %s %g\n", id, n)
			}
			_, _ = os.Stdout.WriteString(b.String())
			clear(unacked)
		}
	}
}
