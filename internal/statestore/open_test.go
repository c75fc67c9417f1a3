package statestore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// A path the exporter cannot write is an error naming it. Tests run as
// root in CI, and root ignores permission bits, so the cases that must hold
// for every user use failures root cannot bypass: a path through a regular
// file (ENOTDIR), and sysfs, which refuses to create files for anyone
// (EACCES, or EROFS where a container mounts /sys read-only).
func TestOpenPathNotWritable(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dbIsDir := filepath.Join(base, "db-is-a-dir")
	if err := os.MkdirAll(filepath.Join(dbIsDir, FileName), 0o700); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, dir string
		want      []string // one of these in the message
	}{
		{"parent is a regular file", filepath.Join(file, "state"), []string{"not a directory"}},
		{"path is a regular file", file, []string{"not a directory"}},
		{"state file is a directory", dbIsDir, []string{"is a directory"}},
		{"sysfs refuses new files, even to root", "/sys", []string{"permission denied", "read-only file system"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Open(c.dir, Options{})
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "--storage.path "+c.dir+": ") {
				t.Errorf("error does not start with the path: %s", msg)
			}
			if !containsAny(msg, c.want) {
				t.Errorf("error does not say %q: %s", c.want, msg)
			}
		})
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// A store held open by another process makes Open fail after LockTimeout,
// naming the path, instead of hanging.
func TestOpenLockedByAnotherProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := helperCommand(t, "hold-lock", dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}

	const timeout = 300 * time.Millisecond
	start := time.Now()
	s, err := Open(dir, Options{LockTimeout: timeout})
	took := time.Since(start)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open succeeded while another process holds the store")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), filepath.Join(dir, FileName)) || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("error does not name the file and the lock: %v", err)
	}
	// bbolt gives up within one 50 ms retry step of the timeout.
	if took < timeout-100*time.Millisecond || took > timeout+2*time.Second {
		t.Errorf("Open took %v with a lock timeout of %v", took, timeout)
	}

	// Once the other process is gone, the store opens.
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	closeT(t, openT(t, dir, Options{LockTimeout: timeout}))
}

// storeWithRuns returns the directory of a closed store holding n runs.
func storeWithRuns(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	s := openT(t, dir, Options{noSync: true})
	for i := range n {
		st, fin := finishedState(11, i)
		s.Put(st, fin)
	}
	closeT(t, s)
	return dir
}

// copyStore returns a new directory holding a copy of the store in dir.
func copyStore(t testing.TB, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	cp := t.TempDir()
	if err := os.WriteFile(filepath.Join(cp, FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return cp
}

// pagesOf returns the ids of the pages of the given type ("leaf",
// "branch", "freelist") in the store file at path.
func pagesOf(t testing.TB, path, typ string) []int {
	t.Helper()
	db, err := bolt.Open(path, 0, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ids []int
	err = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if p == nil || err != nil {
				return err
			}
			if p.Type == typ {
				ids = append(ids, id)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// A damaged or foreign file is an error naming it and saying what to do;
// Open never panics or crashes on it.
func TestOpenCorrupt(t *testing.T) {
	const pageSize = 4096
	random := func(seed uint64, n int) []byte {
		b := make([]byte, n)
		r := rand.New(rand.NewPCG(seed, 0))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	writeAt := func(t *testing.T, path string, off int64, b []byte) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name    string
		damage  func(t *testing.T, path string)
		wantErr error
	}{
		{"random bytes", func(t *testing.T, path string) {
			_ = os.WriteFile(path, random(1, 64<<10), 0o600)
		}, ErrCorrupt},
		{"a text file", func(t *testing.T, path string) {
			_ = os.WriteFile(path, []byte("run_ids:\n- 3c90c3cc\n"), 0o600)
		}, ErrCorrupt},
		{"truncated to half", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			_ = os.Truncate(path, fi.Size()/2)
		}, ErrCorrupt},
		{"truncated before its freelist page: bbolt faults reading it", func(t *testing.T, path string) {
			_ = os.Truncate(path, int64(pagesOf(t, path, "freelist")[0])*pageSize)
		}, ErrCorrupt},
		{"truncated within the first pages", func(t *testing.T, path string) {
			_ = os.Truncate(path, 5000)
		}, ErrCorrupt},
		{"a leaf page scribbled over", func(t *testing.T, path string) {
			leaves := pagesOf(t, path, "leaf")
			writeAt(t, path, int64(leaves[len(leaves)/2])*pageSize, random(2, pageSize))
		}, ErrCorrupt},
		{"a branch page zeroed", func(t *testing.T, path string) {
			writeAt(t, path, int64(pagesOf(t, path, "branch")[0])*pageSize, make([]byte, pageSize))
		}, ErrCorrupt},
		{"a branch page's child pointing far past the file: bbolt's Check would fault", func(t *testing.T, path string) {
			var pgid [8]byte
			binary.LittleEndian.PutUint64(pgid[:], 1<<30)
			// The first element of a branch page: pos, ksize, then pgid.
			writeAt(t, path, int64(pagesOf(t, path, "branch")[0])*pageSize+16+8, pgid[:])
		}, ErrCorrupt},
		{"the freelist page scribbled over", func(t *testing.T, path string) {
			writeAt(t, path, int64(pagesOf(t, path, "freelist")[0])*pageSize+16, random(3, 64))
		}, ErrCorrupt},
		{"both meta pages scribbled over", func(t *testing.T, path string) {
			writeAt(t, path, 0, random(4, 2*pageSize))
		}, ErrCorrupt},
		{"one byte of a record flipped", func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			i := strings.Index(string(b), "nightly-etl-7")
			if i < 0 {
				t.Fatal("record not found in the file")
			}
			writeAt(t, path, int64(i+3), []byte{b[i+3] ^ 0x20})
		}, ErrCorrupt},
		{"a bbolt file of something else", func(t *testing.T, path string) {
			_ = os.Remove(path)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err })
			_ = db.Close()
		}, ErrCorrupt},
		{"a newer schema version", func(t *testing.T, path string) {
			setMeta(t, path, keyVersion, []byte{schemaVersion + 1})
		}, ErrIncompatible},
		{"the schema version scribbled over", func(t *testing.T, path string) {
			setMeta(t, path, keyVersion, []byte{0xc7})
		}, ErrCorrupt},
		{"the histogram bounds scribbled over", func(t *testing.T, path string) {
			setMeta(t, path, keyBounds, random(5, 40))
		}, ErrCorrupt},
		{"other histogram buckets", func(t *testing.T, path string) {
			setMeta(t, path, keyBounds, appendBounds(nil, []float64{1, 2, 3}))
		}, ErrIncompatible},
	}
	clean := storeWithRuns(t, 3000)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyStore(t, clean)
			path := filepath.Join(dir, FileName)
			c.damage(t, path)
			err := start(dir)
			if err == nil {
				t.Fatal("a start succeeded on a damaged file")
			}
			t.Log(err)
			msg := err.Error()
			if !errors.Is(err, c.wantErr) || !strings.Contains(msg, "state file "+path+" is ") || !strings.Contains(msg, "move it away") {
				t.Errorf("error does not name the file, the problem and what to do: %v", err)
			}
			// The failed Open released the file: once moved away, a new
			// store opens in its place.
			if err := os.Rename(path, path+".broken"); err != nil {
				t.Fatal(err)
			}
			closeT(t, openT(t, dir, Options{LockTimeout: 100 * time.Millisecond}))
		})
	}
}

func setMeta(t testing.TB, path string, key, value []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(key, value) }); err != nil {
		t.Fatal(err)
	}
}

// start does what the exporter's start does with a store: Open, read every
// record (the ledger's sweep) and the totals, close.
func start(dir string) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	err = s.Each(func(runs.State) bool { return true })
	if err == nil {
		_, err = s.Totals()
	}
	return errors.Join(err, s.Close())
}

// Random damage anywhere in the file: a start either fails with a corrupt
// error naming the file or finds every record readable, and never panics
// or crashes.
func TestOpenRandomDamageNeverPanics(t *testing.T) {
	t.Parallel()
	clean := storeWithRuns(t, 500)
	orig, err := os.ReadFile(filepath.Join(clean, FileName))
	if err != nil {
		t.Fatal(err)
	}
	opened, failed := 0, 0
	for seed := range uint64(60) {
		r := rand.New(rand.NewPCG(seed, 1))
		b := append([]byte(nil), orig...)
		for range 1 + r.IntN(3) {
			off, n := r.IntN(len(b)), 1+r.IntN(256)
			for i := off; i < off+n && i < len(b); i++ {
				if seed%2 == 0 {
					b[i] = byte(r.Uint32())
				} else {
					b[i] = 0
				}
			}
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := start(dir); err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "move it away") {
				t.Errorf("seed %d: %v", seed, err)
			}
			failed++
			continue
		}
		opened++
	}
	t.Logf("%d damaged files started (damage in free space), %d refused", opened, failed)
}

// An empty file (a crash while creating the store) is a new store.
func TestOpenEmptyFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, dir, Options{})
	s.Put(runs.State{ID: "a"}, runs.Counts{})
	s = reopen(t, s)
	defer closeT(t, s)
	if _, ok, err := s.Get("a"); !ok || err != nil {
		t.Errorf("Get: %v %v", ok, err)
	}
}

// Open creates a missing directory, as Prometheus does with its data path.
func TestOpenCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	closeT(t, openT(t, dir, Options{}))
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Error(err)
	}
}

// A store written by the previous format (1) opens as format 2: the
// queue-wait totals get their bucket, a run stored unfinished counts as
// seen unfinished (so it is counted when it finishes), and a total of
// format 1 gets native buckets that add up to its count.
func TestUpgradeFromFormat1(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	s := openT(t, dir, Options{noSync: true})
	done, counts := finishedState(31, 1)
	running, _ := finishedState(31, 2)
	r := *running.Run
	r.Status, r.FinishedAt = runs.StatusRunning, time.Time{}
	running.Run, running.FinishedSeen, running.Verdict = &r, time.Time{}, runs.Undecided
	s.Put(done, counts)
	s.Put(running, runs.Counts{})
	closeT(t, s)

	// Rewrite it as format 1 wrote it.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := counts.Finishes[0].Key
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keyVersion, []byte{1}); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketQueueWait); err != nil {
			return err
		}
		// Format 1's total: count, observed, sum, classic buckets.
		tot := runs.NewTotals()
		tot.Add(counts)
		h := tot.Finished[key].Duration
		v := []byte{0, 0, 0, 0}
		v = binary.AppendUvarint(v, 1)
		v = binary.AppendUvarint(v, h.Count)
		v = binary.LittleEndian.AppendUint64(v, math.Float64bits(h.Sum))
		v = binary.AppendUvarint(v, uint64(len(h.Buckets)))
		for _, n := range h.Buckets {
			v = binary.AppendUvarint(v, n)
		}
		binary.LittleEndian.PutUint32(v, crc32.Checksum(v[4:], castagnoli))
		return tx.Bucket(bucketTotals).Put(appendTotalKey(nil, key), v)
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = openT(t, dir, Options{})
	defer closeT(t, s)
	got, err := s.GetMany([]string{done.ID, running.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !got[running.ID].SeenUnfinished || got[done.ID].SeenUnfinished || got[done.ID].Verdict != runs.Counted {
		t.Errorf("upgraded records: running %+v, done %+v", got[running.ID], got[done.ID])
	}
	tot, err := s.Totals()
	if err != nil {
		t.Fatal(err)
	}
	h := tot.Finished[key].Duration
	var native uint64
	for _, n := range h.Native {
		native += n
	}
	if tot.Finished[key].Runs != 1 || h.Count != 1 || native+h.ZeroCount != h.Count {
		t.Errorf("upgraded total: runs %d, count %d, native buckets hold %d", tot.Finished[key].Runs, h.Count, native+h.ZeroCount)
	}
	// The queue-wait totals can be written.
	s.Put(running, runs.Counts{QueueWaits: []runs.QueueWait{{RunID: running.ID, Key: runs.WorkflowKey{WorkflowName: "w"}, Wait: time.Minute}}})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if tot, err := s.Totals(); err != nil || tot.QueueWait[runs.WorkflowKey{WorkflowName: "w"}].Count != 1 {
		t.Errorf("queue wait after the upgrade: %+v, %v", tot.QueueWait, err)
	}
}
