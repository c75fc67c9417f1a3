package statestore

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

var (
	// errLockTimeout: bbolt's lock timeout ran out.
	errLockTimeout = errors.New("lock timeout")
	// errNotEmpty stops a walk over the root at its first bucket.
	errNotEmpty = errors.New("not empty")
)

// contentError is a problem with what the file holds, not with the system:
// the file is corrupt.
type contentError struct{ err error }

func (e *contentError) Error() string { return e.err.Error() }
func (e *contentError) Unwrap() error { return e.err }

func damaged(format string, args ...any) error {
	return &contentError{fmt.Errorf(format, args...)}
}

func isDamaged(err error) bool {
	var ce *contentError
	return errors.As(err, &ce)
}

// openBolt opens path with bbolt, turning its panics and memory faults on a
// damaged file into errors (contentError).
//
// bbolt reads the file through a memory map and trusts the page ids it
// finds. On a truncated or scribbled file those point past the end of the
// file (SIGBUS) or of the map (SIGSEGV), which crash the process unless the
// goroutine asked for a panic instead (debug.SetPanicOnFault), and a broken
// page can also trip one of bbolt's own assertions (a panic). Both become
// an error here.
func openBolt(path string, lockTimeout time.Duration, noSync bool) (db *bolt.DB, err error) {
	var file *os.File
	opts := &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
		NoSync:       noSync,
		// Keep the file so it can be closed (and its lock released) when
		// bbolt panics halfway through Open and never returns a DB.
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	}
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				_ = file.Close() // the memory map stays until the process exits, as it does on this error
			}
			db, err = nil, damaged("%s", panicDetail(r))
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))

	db, err = bolt.Open(path, 0o600, opts)
	if err == nil {
		return db, nil
	}
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, errLockTimeout
	}
	// The system's errors (permission, missing directory, I/O, memory) come
	// as *fs.PathError or errno; every other error of bbolt's Open is about
	// the content (invalid, checksum, version mismatch, file size too small).
	var pe *fs.PathError
	var errno syscall.Errno
	if errors.As(err, &pe) || errors.As(err, &errno) {
		return nil, err
	}
	return nil, &contentError{err}
}

// guard runs fn, which reads or writes db, turning bbolt's panics and
// memory faults on a damaged file into an error, so neither a read nor a
// commit ever crashes the exporter.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = damaged("%s", panicDetail(r))
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

// panicDetail says what a recovered panic of bbolt means.
func panicDetail(r any) string {
	if f, ok := r.(interface{ Addr() uintptr }); ok && f.Addr() != 0 {
		// A memory fault: bbolt followed a page id past the end of the
		// file or of its map.
		return "a page reference points outside the file (truncated, or a damaged page)"
	}
	return fmt.Sprint("bbolt: ", r)
}

// closeQuietly closes db after a failed Open. bbolt's Close can itself
// fault on a damaged map; the error of Open says all there is to say.
func closeQuietly(db *bolt.DB) {
	_ = guard(db.Close)
}

// prepare checks the schema of an opened file and the page headers, or
// initialises a new file, and upgrades a file of format 1.
func prepare(db *bolt.DB) error {
	fresh, version := false, byte(0)
	err := guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketMeta) == nil {
				if err := tx.ForEach(func([]byte, *bolt.Bucket) error { return errNotEmpty }); err != nil {
					return damaged("a bbolt file, but not a state store: no %q bucket", bucketMeta)
				}
				fresh = true
				return nil
			}
			var err error
			if version, err = checkSchema(tx); err != nil {
				return err
			}
			if err := walkPages(tx); err != nil {
				return err
			}
			// bbolt's Check follows every branch in a goroutine of its
			// own, where a memory fault cannot be turned into an error:
			// this goroutine visits every page through the cursors first.
			if err := walkKeys(tx); err != nil {
				return err
			}
			return checkStructure(tx)
		})
	})
	switch {
	case err != nil:
		return err
	case fresh:
		return guard(func() error { return db.Update(initialise) })
	case version == 1:
		return guard(func() error { return db.Update(upgradeFrom1) })
	}
	return nil
}

func initialise(tx *bolt.Tx) error {
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	if err := meta.Put(keyVersion, []byte{schemaVersion}); err != nil {
		return err
	}
	if err := meta.Put(keyBounds, appendBounds(nil, runs.DurationBuckets)); err != nil {
		return err
	}
	for _, b := range [][]byte{bucketRuns, bucketTotals, bucketQueueWait} {
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	return nil
}

// upgradeFrom1 turns a file of format 1 into format 2, in one transaction:
// the queue-wait totals get their bucket, and a run stored unfinished is
// marked seen unfinished, which format 1 implied (it stored only runs the
// exporter owned, and counted every run it saw finish). Its totals records
// read as they are (see decoder.histogram).
func upgradeFrom1(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketQueueWait); err != nil {
		return err
	}
	b := tx.Bucket(bucketRuns)
	type change struct{ k, v []byte }
	var changes []change
	err := b.ForEach(func(k, v []byte) error {
		st, err := decodeState(string(k), v)
		if err != nil {
			return damaged("run %q: %v", k, err)
		}
		if st.Run == nil || st.Finished() || st.SeenUnfinished {
			return nil
		}
		st.SeenUnfinished = true
		changes = append(changes, change{append([]byte(nil), k...), appendState(nil, string(k), &st)})
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range changes {
		if err := b.Put(c.k, c.v); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(keyVersion, []byte{schemaVersion})
}

// checkSchema returns the file's format version. It refuses a file of a
// newer format, or whose histogram totals were kept with other bucket
// bounds: they cannot be added to. A version or bounds that no version
// ever wrote mean the file is damaged, and say so.
func checkSchema(tx *bolt.Tx) (byte, error) {
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keyVersion)
	switch {
	case len(v) != 1 || v[0] == 0:
		return 0, damaged("bad schema version %x", v)
	case v[0] > schemaVersion && v[0] <= maxPlausibleVersion:
		return 0, fmt.Errorf("%w (schema version %d; this exporter reads versions 1 to %d)", ErrIncompatible, v[0], schemaVersion)
	case v[0] > schemaVersion:
		return 0, damaged("schema version %d, which no version of the exporter writes", v[0])
	}
	b := meta.Get(keyBounds)
	if string(b) != string(appendBounds(nil, runs.DurationBuckets)) {
		if !plausibleBounds(b) {
			return 0, damaged("histogram bucket bounds unreadable")
		}
		return 0, fmt.Errorf("%w (its histograms have other buckets)", ErrIncompatible)
	}
	if tx.Bucket(bucketRuns) == nil || tx.Bucket(bucketTotals) == nil || (v[0] >= 2 && tx.Bucket(bucketQueueWait) == nil) {
		return 0, damaged("a bucket is missing")
	}
	return v[0], nil
}

// maxPlausibleVersion bounds the versions taken for a newer exporter's
// format rather than a damaged byte.
const maxPlausibleVersion = 16

// plausibleBounds reports whether b encodes increasing, finite, positive
// bucket bounds, as some version of the exporter could have written.
func plausibleBounds(b []byte) bool {
	d := decoder{s: string(b)}
	n := d.uvarint()
	if d.err != nil || n == 0 || n > 64 {
		return false
	}
	prev := 0.0
	for range n {
		x := math.Float64frombits(d.uint64())
		if d.err != nil || !(x > prev) || math.IsInf(x, 0) {
			return false
		}
		prev = x
	}
	return d.end() == nil
}

// walkPages touches every page header in use and bounds its overflow
// count, so that a truncated or scribbled file is reported at start
// rather than crash a later read. It reads page headers only. The records
// themselves are checked, each through its CRC, when they are read (the
// ledger reads them all once at start, and skips nothing). The caller
// guards it (see guard).
func walkPages(tx *bolt.Tx) error {
	pageSize := int64(tx.DB().Info().PageSize)
	hwm := int(tx.Size() / pageSize) // pages in use: ids below hwm
	for id := 2; id < hwm; {
		p, err := tx.Page(id)
		if err != nil {
			return damaged("page %d: %v", id, err)
		}
		if p == nil || p.Type == "free" {
			id++
			continue
		}
		if p.OverflowCount < 0 || p.OverflowCount >= hwm-id {
			return damaged("page %d: overflow of %d pages beyond the end (%d pages)", id, p.OverflowCount, hwm)
		}
		id += p.OverflowCount + 1
	}
	return nil
}

// walkKeys visits every key of every bucket through bbolt's cursors,
// reading no value: every branch and leaf page is reached, so a page
// reference out of the file faults here, in a goroutine guard turns the
// fault into an error in. About 20 ms at 100k runs. The caller guards it.
func walkKeys(tx *bolt.Tx) error {
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
		}
		return nil
	})
}

// checkStructure runs bbolt's own consistency check: pages both used and
// free (a later commit would overwrite live data), keys out of order. It
// reads every page but decodes no record: 33 ms at 100k runs, against 133
// ms for a check that also decodes every record (BenchmarkVerify), which
// start-up does not need because every record is checked when read.
//
// The order matters. bbolt's Check runs in a goroutine of its own, where a
// memory fault cannot be turned into a panic, and it trusts each page's
// overflow count (a scribbled one would have it loop over billions of page
// ids). So first this goroutine touches every page header and bounds the
// overflow counts, and reads every record through bbolt's cursors, which
// visit each reachable page; only then may Check walk the same pages.
func checkStructure(tx *bolt.Tx) error {
	var problems []error
	for err := range tx.Check() {
		if len(problems) < 3 {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		return damaged("%w", errors.Join(problems...))
	}
	return nil
}

// verify reads the whole file: every page header, every record and total
// through its checksum, and bbolt's consistency check. The caller guards
// it (see guard).
func verify(tx *bolt.Tx) error {
	if err := walkPages(tx); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRuns).ForEach(func(k, v []byte) error {
		if v == nil {
			return damaged("run %q is a bucket", k)
		}
		if _, err := decodeState(string(k), v); err != nil {
			return damaged("run %q: %v", k, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bucketTotals).ForEach(func(k, v []byte) error {
		if _, err := decodeTotalKey(k); err != nil {
			return damaged("lifecycle total key %q: %v", k, err)
		}
		if v == nil {
			return damaged("lifecycle total %q is a bucket", k)
		}
		if _, err := decodeTotal(v); err != nil {
			return damaged("lifecycle total %q: %v", k, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bucketQueueWait).ForEach(func(k, v []byte) error {
		if _, err := decodeWorkflowKey(k); err != nil {
			return damaged("queue-wait total key %q: %v", k, err)
		}
		if v == nil {
			return damaged("queue-wait total %q is a bucket", k)
		}
		if _, err := decodeQueueWait(v); err != nil {
			return damaged("queue-wait total %q: %v", k, err)
		}
		return nil
	}); err != nil {
		return err
	}
	return checkStructure(tx)
}
