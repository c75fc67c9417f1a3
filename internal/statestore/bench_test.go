package statestore

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Benchmark stores are built once per size and shared by the benchmarks;
// TestMain removes them.
var (
	fixtureMu   sync.Mutex
	fixtureRoot string
	fixtures    = map[int]string{}
)

// fixture returns the directory of a store holding n runs, written the way
// the exporter writes them: every run first seen running, later finished
// and counted, committed in batches of 500 changed runs, random UUIDs
// arriving in no order. So its pages are as full (or empty) as a real
// store's, not packed by sorted bulk loading.
func fixture(b *testing.B, n int) string {
	b.Helper()
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if dir, ok := fixtures[n]; ok {
		return dir
	}
	if fixtureRoot == "" {
		var err error
		if fixtureRoot, err = os.MkdirTemp("", "statestore-bench-"); err != nil {
			b.Fatal(err)
		}
	}
	dir := filepath.Join(fixtureRoot, fmt.Sprint(n))
	s, err := Open(dir, Options{noSync: true}) // fsync changes no byte of the file
	if err != nil {
		b.Fatal(err)
	}
	flushEvery := func(i int) {
		if i%500 == 499 {
			if err := s.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i := range n {
		st, _ := finishedState(21, i)
		r := *st.Run
		r.Status, r.Progress, r.FinishedAt = runs.StatusRunning, 40, time.Time{}
		st.Run, st.FinishedSeen, st.Verdict = &r, time.Time{}, runs.Undecided
		s.Put(st, runs.Counts{})
		flushEvery(i)
	}
	for i := range n {
		s.Put(finishedState(21, i))
		flushEvery(i)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	fixtures[n] = dir
	return dir
}

func removeFixtures() {
	if fixtureRoot != "" {
		_ = os.RemoveAll(fixtureRoot)
	}
}

// The cost of a changed run: Put alone (what the poller pays), and Put
// plus its share of a commit with fsync when a commit carries 1, 100 or
// 1000 changed runs (what the disk pays). commits/op shows the fsync
// amortisation; a commit is two fsyncs (data, then meta).
func BenchmarkPut(b *testing.B) {
	const stored = 10000
	b.Run("queue-only", func(b *testing.B) {
		s, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		states := finishedStates(stored)
		i := 0
		for b.Loop() {
			s.Put(states[i%stored], runs.Counts{})
			i++
		}
	})
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("runs=%d/commit-every=%d", stored, batch), func(b *testing.B) {
			dir := b.TempDir()
			data, err := os.ReadFile(filepath.Join(fixture(b, stored), FileName))
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
				b.Fatal(err)
			}
			s, err := Open(dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			states := finishedStates(stored)
			i := 0
			for b.Loop() {
				st := states[(i*7919)%stored] // a stored run, changed
				st.FetchOK = i%2 == 0
				s.Put(st, runs.Counts{})
				i++
				if i%batch == 0 {
					if err := s.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(1/float64(batch), "commits/op")
		})
	}
}

// What a restart costs the store: Open (with the verification of the whole
// file) plus reading every run and the totals, then Close. Also the size
// of the file per run. The file is in the page cache, as after a restart
// of the process (not of the machine).
func BenchmarkRestart(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			dir := fixture(b, n)
			fi, err := os.Stat(filepath.Join(dir, FileName))
			if err != nil {
				b.Fatal(err)
			}
			var used int64
			if db, err := bolt.Open(filepath.Join(dir, FileName), 0, &bolt.Options{ReadOnly: true}); err != nil {
				b.Fatal(err)
			} else {
				_ = db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
				_ = db.Close()
			}
			for b.Loop() {
				s, err := Open(dir, Options{})
				if err != nil {
					b.Fatal(err)
				}
				states, err := s.States()
				if err != nil || len(states) != n {
					b.Fatalf("%d states, %v", len(states), err)
				}
				if _, err := s.Totals(); err != nil {
					b.Fatal(err)
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(fi.Size())/float64(n), "bytes/run")
			// The file grows ahead of its pages in use; this is what the runs take.
			b.ReportMetric(float64(used)/float64(n), "used-bytes/run")
		})
	}
}

// The cost of Open's verification, apart: "all" is what Open adds (every
// page header, every record decoded, bbolt's Check), "bbolt-check" is
// bbolt's Check alone.
func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		db, err := bolt.Open(filepath.Join(fixture(b, n), FileName), 0, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("runs=%d/all", n), func(b *testing.B) {
			for b.Loop() {
				if err := db.View(verify); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("runs=%d/bbolt-check", n), func(b *testing.B) {
			for b.Loop() {
				err := db.View(func(tx *bolt.Tx) error {
					var first error
					for err := range tx.Check() { // drained whole, so its goroutine ends
						first = cmp.Or(first, err)
					}
					return first
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = db.Close()
	}
}

// finishedStates returns n stored runs' states, as fixture writes them.
func finishedStates(n int) []runs.State {
	states := make([]runs.State, n)
	for i := range states {
		states[i], _ = finishedState(21, i)
	}
	return states
}
