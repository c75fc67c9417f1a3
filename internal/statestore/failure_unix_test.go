//go:build unix

package statestore

import (
	"context"
	"errors"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"
)

// Writes that fail at run time (here: the file may not grow, as on a full
// disk) never stop the store: the failures are counted, warned about once,
// the changes stay queued, OnCommit gets nothing while commits fail (the
// exported counters hold rather than run ahead of the file), then each
// finish once when the disk has room again and all is written.
//
// The failure is a real one: RLIMIT_FSIZE makes the kernel refuse to grow
// the file (EFBIG), for root too. The limit is process-wide, so this test
// does not run in parallel with others, and logs nothing while it is set.
func TestWriteErrorsAtRunTime(t *testing.T) {
	var logs syncbuffer.Buffer
	var got finishCollector
	reg := prometheus.NewPedanticRegistry()
	s := openT(t, t.TempDir(), Options{
		Logger:        log.NewLogfmtLogger(&logs),
		Registerer:    reg,
		OnCommit:      got.onCommit,
		FlushInterval: 5 * time.Millisecond,
	})
	first, _ := finishedState(13, 0)
	s.Put(first, runs.Counts{})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	size, err := s.SizeBytes()
	if err != nil {
		t.Fatal(err)
	}

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: uint64(size), Max: old.Max}); err != nil {
		t.Fatal("lowering the soft file size limit, which any process may do:", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()

	queued := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.queue)
	}
	errs := func() float64 { return testutil.ToFloat64(s.storageErrors) }

	// 2000 new runs need new pages: every commit fails while the limit holds.
	const n = 2000
	for i := range n {
		st, fin := finishedState(13, i+1)
		s.Put(st, fin)
	}
	if err := s.Flush(); err == nil || !strings.Contains(err.Error(), syscall.EFBIG.Error()) {
		t.Fatalf("Flush: %v, want %q (bbolt keeps only the text of this error)", err, syscall.EFBIG)
	}
	if got.count() != 0 || queued() != n || errs() != 1 {
		t.Fatalf("after a failed commit: %d finishes delivered, %d runs queued, %v errors; want 0, %d, 1", got.count(), queued(), errs(), n)
	}
	// The same runs again, changed: still one entry per run, and no finish
	// delivered twice.
	for i := range n {
		st, _ := finishedState(13, i+1)
		st.FetchOK = false
		s.Put(st, runs.Counts{})
	}
	if err := s.Flush(); err == nil || !strings.Contains(err.Error(), syscall.EFBIG.Error()) {
		t.Fatalf("Flush: %v, want %q (bbolt keeps only the text of this error)", err, syscall.EFBIG)
	}
	if got.count() != 0 || queued() != n || errs() != 2 {
		t.Fatalf("after two failed commits: %d finishes delivered, %d runs queued, %v errors; want 0, %d, 2", got.count(), queued(), errs(), n)
	}

	// The writer keeps going, and writes everything when it can.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "more failed commits", func() bool { return errs() >= 4 })
	restore()

	waitFor(t, "the queue to be written", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.queue) == 0 && strings.Contains(logs.String(), "works again")
	})
	if got.count() != n {
		t.Errorf("OnCommit got %d finishes, want each of %d once", got.count(), n)
	}
	if c := strings.Count(logs.String(), "level=warn"); c != 1 {
		t.Errorf("%d warnings for one streak of failures, want 1:\n%s", c, logs.String())
	}
	t.Log(logs.String())
	if !strings.Contains(logs.String(), "file too large") {
		t.Errorf("the warning does not give the reason:\n%s", logs.String())
	}
	if c := strings.Count(logs.String(), "level=info"); c != 1 {
		t.Errorf("%d info lines on recovery, want 1:\n%s", c, logs.String())
	}
	metric, err := testutil.GatherAndCount(reg, "workflow_runs_exporter_storage_errors_total")
	if err != nil || metric != 1 || errs() < 4 {
		t.Errorf("storage_errors_total: %d series, value %v, err %v", metric, errs(), err)
	}

	cancel()
	<-done
	s = reopen(t, s)
	defer closeT(t, s)
	tot, err := s.Totals()
	if err != nil {
		t.Fatal(err)
	}
	var counted uint64
	for _, v := range tot.Finished {
		counted += v.Runs
	}
	if counted != n {
		t.Errorf("the file counts %d finished runs, want %d", counted, n)
	}
	st, _, err := s.Get(runID(13, n))
	if err != nil || st.FetchOK {
		t.Errorf("the latest state was not written: %+v, %v", st, err)
	}
}

// A kill -9 at any moment leaves a store that opens cleanly with every
// acknowledged update, and totals that match the runs marked counted. A
// child process writes continuously and acknowledges each committed
// update on stdout; it is killed at a random moment, several times over
// the same store.
//
// What this can prove: bbolt's commit protocol keeps the file consistent
// when the process dies at any instruction, and the store acknowledges an
// update only after its commit returned. What it cannot prove: durability
// across a power loss or kernel crash. A killed process leaves its writes
// in the page cache, so this test passes with fsync off too;
// TestCommitsAreSynced checks that fsync stays on.
func TestKillDuringWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	totalAcked := 0
	for round := range 4 {
		var out syncbuffer.Buffer
		cmd := helperCommand(t, "write-until-killed", dir)
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the writer to start", func() bool { return strings.HasPrefix(out.String(), "ready\n") })
		time.Sleep(time.Duration(20+r.IntN(200)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()

		acked := map[string]float64{}
		lines := strings.Split(out.String(), "\n")
		for _, line := range lines[1 : len(lines)-1] { // after "ready"; the last may be cut off
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "ack" {
				t.Fatalf("round %d: bad line %q", round, line)
			}
			n, err := strconv.ParseFloat(f[2], 64)
			if err != nil {
				t.Fatalf("round %d: bad line %q", round, line)
			}
			acked[f[1]] = max(acked[f[1]], n)
		}
		totalAcked += len(acked)

		s := openT(t, dir, Options{})
		for id, n := range acked {
			st, ok, err := s.Get(id)
			if err != nil || !ok || st.Run.Progress < n || st.Verdict != runs.Counted {
				t.Errorf("round %d: run %s: acknowledged update %v, stored %v (ok %v, err %v, counted %v)", round, id, n, st.Run, ok, err, st.Verdict)
			}
		}
		states, err := s.States()
		if err != nil {
			t.Fatal(err)
		}
		tot, err := s.Totals()
		if err != nil {
			t.Fatal(err)
		}
		var counted uint64
		for _, v := range tot.Finished {
			counted += v.Runs
		}
		if counted != uint64(len(states)) {
			t.Errorf("round %d: totals count %d runs, the file holds %d counted runs", round, counted, len(states))
		}
		t.Logf("round %d: %d runs acknowledged, %d stored", round, len(acked), len(states))
		closeT(t, s)
	}
	if totalAcked == 0 {
		t.Error("no update was acknowledged before a kill: the test proved nothing")
	}
	checkWithBbolt(t, filepath.Join(dir, FileName))
}

// checkWithBbolt runs bbolt's own consistency check on the file.
func checkWithBbolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Error(err)
	}
}

// The store syncs every commit to disk (bbolt's NoSync off, the freelist
// synced too): without it a power loss could lose acknowledged counts, and
// TestKillDuringWrites would not notice (see there).
func TestCommitsAreSynced(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer closeT(t, s)
	if s.db.NoSync || s.db.NoFreelistSync || s.db.NoGrowSync {
		t.Errorf("commits are not synced: NoSync %v, NoFreelistSync %v, NoGrowSync %v", s.db.NoSync, s.db.NoFreelistSync, s.db.NoGrowSync)
	}
}
