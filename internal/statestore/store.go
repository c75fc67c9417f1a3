// Package statestore keeps the exporter's run state across restarts
// (--storage.path, DESIGN §8): each run's last state, what the ledger
// decided about counting it, and the lifecycle totals, in one bbolt file.
//
// With it, a restart serves every run's last values from the first scrape,
// does not fetch finished runs again, and continues the lifecycle counters
// instead of restarting them at 0. Changes are queued by Put and Delete and
// committed in the background by Run, so the poller never waits on the
// disk. A run's record and the totals it adds to are committed in one
// transaction, and what was counted is handed on (OnCommit) only once that
// transaction is durable: a crash at any moment never counts a run twice,
// and the exported counters never run ahead of the file, so they never go
// down. While commits fail they hold, and catch up when a commit works.
package statestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// FileName is the store's file inside the --storage.path directory.
const FileName = "state.db"

const (
	// DefaultLockTimeout is how long Open waits for another process to
	// release the store before failing: long enough to ride over the old
	// process of a restart exiting, short enough that a second exporter on
	// the same path fails at once instead of hanging.
	DefaultLockTimeout = time.Second

	// DefaultFlushInterval is how often queued changes are committed. A
	// commit costs two fsyncs whatever it holds, so this bounds the disk
	// load at 10 commits/s however fast runs change, while the finished-run
	// counters lag a fetch by at most 0.1 s and a kill -9 loses at most
	// 0.1 s of changes (which the next start fetches again: the API is the
	// source of truth, the store only saves work and keeps the counts).
	DefaultFlushInterval = 100 * time.Millisecond

	// flushSoon is the queue length at which the writer commits without
	// waiting for the tick, so a burst (the first cycle over many runs)
	// is written in bounded transactions and memory.
	flushSoon = 1024

	// schemaVersion is the format of the records (record.go). Open
	// upgrades a file of format 1 and refuses a newer one rather than
	// misread it.
	schemaVersion = 2
)

var (
	bucketMeta      = []byte("meta")
	bucketRuns      = []byte("runs")
	bucketTotals    = []byte("totals")
	bucketQueueWait = []byte("queue_wait")
	keyVersion      = []byte("version")
	keyBounds       = []byte("duration_buckets")
)

// Errors from Open, wrapped with the path and what to do; the caller exits 1
// with the message.
var (
	// ErrLocked: another process has the store open.
	ErrLocked = errors.New("locked by another process (another exporter with the same --storage.path?)")
	// ErrCorrupt: the file is damaged, or is not a state store.
	ErrCorrupt = errors.New("corrupt or not a state store")
	// ErrIncompatible: the file is a state store in a format this version
	// does not read.
	ErrIncompatible = errors.New("written in a format this version does not read")
)

// ErrClosed is returned by Flush after Close.
var ErrClosed = errors.New("state store closed")

// Options configure a Store. The zero value is usable.
type Options struct {
	Logger log.Logger
	// Registerer, if set, gets workflow_runs_exporter_storage_errors_total.
	Registerer prometheus.Registerer
	// LockTimeout is how long Open waits for another process's lock;
	// DefaultLockTimeout when zero.
	LockTimeout time.Duration
	// FlushInterval is how often Run commits queued changes;
	// DefaultFlushInterval when zero.
	FlushInterval time.Duration
	// OnCommit receives what the store has counted, once each, after the
	// commit that counted it is durable, so the exported counters never run
	// ahead of the file (a counter that went back after a crash would read
	// as a reset). After a failed commit nothing is handed on: the counts
	// stay queued and are retried. A finish the store does not count (the
	// file already counts that run) is not handed on.
	//
	// It is called by whichever goroutine commits (Run's, or the caller of
	// Flush or Close), never concurrently with itself; it must not call
	// Flush or Close.
	OnCommit func(runs.Counts)

	// noSync skips fsync; only benchmarks building large fixtures set it.
	noSync bool
}

// Store is an open state store. Put may be called from any goroutine; Run
// commits in the background.
type Store struct {
	db            *bolt.DB
	dir, path     string
	logger        log.Logger
	onCommit      func(runs.Counts)
	flushInterval time.Duration
	storageErrors prometheus.Counter

	mu    sync.Mutex // guards queue, committing and closed
	queue map[string]*pending
	// committing is the batch being committed, so that Get sees it too.
	committing map[string]*pending
	closed     bool
	kick       chan struct{} // capacity 1: asks Run to commit now

	flushMu  sync.Mutex // one commit at a time; guards the fields below
	failing  bool       // the last commit failed
	failures int        // commits failed in the current streak
	dbClosed bool
}

// pending is the queued change of one run: its latest state or its
// deletion, and what to count, kept until a commit succeeds however many
// Puts come after.
type pending struct {
	st      runs.State
	deleted bool
	counts  runs.Counts
}

// Open opens the store in dir, creating dir (like Prometheus'
// --storage.tsdb.path) and the file when missing. It verifies the whole file
// first, so a damaged store is reported at start, naming the file and what
// to do, rather than found by a crash later; Open never panics.
func Open(dir string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("--storage.path %s: cannot create the directory: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := openBolt(path, o.LockTimeout, o.noSync)
	switch {
	case errors.Is(err, errLockTimeout):
		return nil, fmt.Errorf("--storage.path %s: state file %s is %w; gave up after %s", dir, path, ErrLocked, o.LockTimeout)
	case isDamaged(err):
		return nil, corruptError(dir, path, err)
	case err != nil:
		return nil, fmt.Errorf("--storage.path %s: cannot open the state file: %w", dir, err)
	}
	if err := prepare(db); err != nil {
		closeQuietly(db)
		if errors.Is(err, ErrIncompatible) {
			return nil, fmt.Errorf("--storage.path %s: state file %s is %w: run the exporter version that wrote it, or move it away to start afresh (run states will be fetched again and the lifecycle counters restart at 0)",
				dir, path, err)
		}
		if isDamaged(err) {
			return nil, corruptError(dir, path, err)
		}
		return nil, fmt.Errorf("--storage.path %s: cannot initialise the state file %s: %w", dir, path, err)
	}

	s := &Store{
		db:            db,
		dir:           dir,
		path:          path,
		logger:        o.Logger,
		onCommit:      o.OnCommit,
		flushInterval: o.FlushInterval,
		queue:         make(map[string]*pending),
		kick:          make(chan struct{}, 1),
		storageErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "workflow_runs_exporter_storage_errors_total",
			Help: "Commits to the state store (--storage.path) that failed. The changes stay queued and are retried; metrics are served from memory meanwhile.",
		}),
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(s.storageErrors); err != nil {
			// Reopening with the same registry continues the same counter.
			var are prometheus.AlreadyRegisteredError
			existing, ok := prometheus.Counter(nil), false
			if errors.As(err, &are) {
				existing, ok = are.ExistingCollector.(prometheus.Counter)
			}
			if !ok {
				closeQuietly(db)
				return nil, fmt.Errorf("registering the state store metrics: %w", err)
			}
			s.storageErrors = existing
		}
	}
	return s, nil
}

func corruptError(dir, path string, err error) error {
	return fmt.Errorf("--storage.path %s: state file %s is %w (%v): move it away (mv %s %s.broken) to start afresh; run states will be fetched again and the lifecycle counters restart at 0",
		dir, path, ErrCorrupt, err, path, path)
}

// Path returns the store's file.
func (s *Store) Path() string { return s.path }

// SizeBytes returns the size of the store's file.
func (s *Store) SizeBytes() (int64, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Put queues the changed state of a run, and what it counts, to be
// committed by the next flush in one transaction. It never waits on the
// disk. Puts of one run coalesce: the latest state wins, and counts add up
// until a commit succeeds. The store counts each run as finished at most
// once: a finish for a run whose stored record is already counted is
// dropped (the ledger decides what counts; this only keeps a stale state,
// read back after a failed read, from counting a run twice).
//
// Run IDs are UUIDs, compared without regard to ASCII case (the key is the
// ID with A-Z lowered; the ID itself is stored as given). Puts after Close
// are dropped.
func (s *Store) Put(st runs.State, c runs.Counts) {
	s.queueChange(st.ID, func(p *pending) {
		p.st, p.deleted = st, false
		p.counts.Finishes = append(p.counts.Finishes, c.Finishes...)
		p.counts.QueueWaits = append(p.counts.QueueWaits, c.QueueWaits...)
	})
}

// Delete queues the removal of a run's record. Counts queued for it are
// still committed.
func (s *Store) Delete(id string) {
	s.queueChange(id, func(p *pending) { p.st, p.deleted = runs.State{ID: id}, true })
}

func (s *Store) queueChange(id string, change func(*pending)) {
	key := keyOf(id)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	p := s.queue[key]
	if p == nil {
		p = &pending{}
		s.queue[key] = p
	}
	change(p)
	n := len(s.queue)
	s.mu.Unlock()
	if n >= flushSoon {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Run commits queued changes every FlushInterval, and sooner when many are
// queued, until ctx is done; then it commits once more and returns. Commit
// errors are counted and logged, never fatal.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(s.flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = s.Flush()
			return
		case <-t.C:
		case <-s.kick:
		}
		_ = s.Flush()
	}
}

// Flush commits what is queued now and returns when it is durable. Run
// calls it on its own; tests and shutdown call it to wait for a commit.
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.dbClosed {
		return ErrClosed
	}
	return s.flush()
}

// Close commits what is queued and closes the file. Call it after Run has
// returned. An error says the last changes were not saved.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.dbClosed {
		return nil
	}
	s.dbClosed = true
	ferr := s.flush()
	if ferr != nil {
		s.mu.Lock()
		ferr = fmt.Errorf("%d changed runs not saved: %w", len(s.queue), ferr)
		s.mu.Unlock()
	}
	if err := s.db.Close(); err != nil {
		return errors.Join(ferr, fmt.Errorf("closing %s: %w", s.path, err))
	}
	return ferr
}

// flush commits the queue. The caller holds flushMu.
func (s *Store) flush() error {
	s.mu.Lock()
	batch := s.queue
	if len(batch) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.queue = make(map[string]*pending, len(batch))
	s.committing = batch
	s.mu.Unlock()

	counted, err := s.commit(batch)
	defer func() {
		s.mu.Lock()
		s.committing = nil
		s.mu.Unlock()
	}()
	if err == nil {
		if s.failing {
			level.Info(s.logger).Log("msg", "writing the state store works again", "path", s.path, "failed_commits", s.failures)
			s.failing, s.failures = false, 0
		}
		if s.onCommit != nil && !counted.Empty() {
			s.onCommit(counted)
		}
		return nil
	}

	err = fmt.Errorf("committing %d changed runs to %s: %w", len(batch), s.path, err)
	s.storageErrors.Inc()
	s.failures++
	if !s.failing {
		// One warning per streak: a full disk fails every commit, and a
		// line per commit would bury everything else.
		level.Warn(s.logger).Log("msg", "writing the state store failed; the lifecycle counters hold until a commit works, run metrics are served from memory", "path", s.path, "queued_runs", len(batch), "err", err)
		s.failing = true
	} else {
		level.Debug(s.logger).Log("msg", "writing the state store failed again", "path", s.path, "failed_commits", s.failures, "err", err)
	}
	s.requeue(batch)
	return err
}

// requeue puts a failed batch back, under what was queued since: the newer
// state or deletion wins, the counts of both are kept.
func (s *Store) requeue(batch map[string]*pending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, old := range batch {
		cur := s.queue[key]
		if cur == nil {
			s.queue[key] = old
			continue
		}
		cur.counts.Finishes = append(old.counts.Finishes, cur.counts.Finishes...)
		cur.counts.QueueWaits = append(old.counts.QueueWaits, cur.counts.QueueWaits...)
	}
}

// commit writes batch in one transaction and returns what it counted.
func (s *Store) commit(batch map[string]*pending) (counted runs.Counts, err error) {
	keys := make([]string, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	// Sorted keys append to bbolt's nodes in order: fewer shifts and splits.
	sort.Strings(keys)
	err = guard(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			counted = runs.Counts{}
			rb, tb, qb := tx.Bucket(bucketRuns), tx.Bucket(bucketTotals), tx.Bucket(bucketQueueWait)
			// bbolt keeps the key and value slices until the commit, so
			// each gets its own bytes; one arena keeps that to a few
			// allocations.
			var arena []byte
			for _, key := range keys {
				p := batch[key]
				if len(key) == 0 || len(key) > bolt.MaxKeySize {
					level.Warn(s.logger).Log("msg", "run ID cannot be stored; its state is kept in memory only", "run_id_bytes", len(key))
					continue
				}
				wasCounted := false
				if old := rb.Get([]byte(key)); old != nil {
					// A record that cannot be read counts as not counted:
					// it is overwritten now, and refusing to write would
					// stop the store for one bad record.
					wasCounted, _ = storedCounted(old)
				}
				for _, f := range p.counts.Finishes {
					if wasCounted {
						continue
					}
					if err := addTotal(tb, f, &arena); err != nil {
						return err
					}
					counted.Finishes = append(counted.Finishes, f)
					wasCounted = true
				}
				for _, q := range p.counts.QueueWaits {
					if err := addQueueWait(qb, q, &arena); err != nil {
						return err
					}
					counted.QueueWaits = append(counted.QueueWaits, q)
				}
				k := sub(&arena, func(b []byte) []byte { return append(b, key...) })
				if p.deleted {
					if err := rb.Delete(k); err != nil {
						return err
					}
					continue
				}
				st := p.st
				if wasCounted {
					st.Verdict = runs.Counted
				}
				v := sub(&arena, func(b []byte) []byte { return appendState(b, key, &st) })
				if err := rb.Put(k, v); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return runs.Counts{}, err
	}
	return counted, nil
}

// sub appends with fn to *arena and returns what it appended, capped so a
// later append never writes into it.
func sub(arena *[]byte, fn func([]byte) []byte) []byte {
	start := len(*arena)
	*arena = fn(*arena)
	return (*arena)[start:len(*arena):len(*arena)]
}

func addTotal(tb *bolt.Bucket, f runs.Finish, arena *[]byte) error {
	k := sub(arena, func(b []byte) []byte { return appendTotalKey(b, f.Key) })
	t := runs.NewTotals()
	if old := tb.Get(k); old != nil {
		tot, err := decodeTotal(old)
		if err != nil {
			// Adding to a damaged total would hide the damage; the commit
			// fails and the next start reports the file as corrupt.
			return damaged("lifecycle total %q: %v", k, err)
		}
		t.Finished[f.Key] = tot
	}
	t.AddFinish(f)
	return tb.Put(k, sub(arena, func(b []byte) []byte { return appendTotal(b, t.Finished[f.Key]) }))
}

func addQueueWait(qb *bolt.Bucket, q runs.QueueWait, arena *[]byte) error {
	k := sub(arena, func(b []byte) []byte { return appendWorkflowKey(b, q.Key) })
	t := runs.NewTotals()
	if old := qb.Get(k); old != nil {
		h, err := decodeQueueWait(old)
		if err != nil {
			return damaged("queue-wait total %q: %v", k, err)
		}
		t.QueueWait[q.Key] = h
	}
	t.AddQueueWait(q)
	return qb.Put(k, sub(arena, func(b []byte) []byte { return appendQueueWait(b, t.QueueWait[q.Key]) }))
}

// Get returns a run's latest state, a queued change included; ok is false
// when the store has none.
func (s *Store) Get(id string) (st runs.State, ok bool, err error) {
	got, err := s.GetMany([]string{id})
	st, ok = got[id]
	return st, ok, err
}

// GetMany returns the latest states of the runs of ids that have one,
// queued changes included, in one read transaction, by the IDs asked for.
func (s *Store) GetMany(ids []string) (map[string]runs.State, error) {
	out := make(map[string]runs.State)
	var read []string
	// A change not committed yet is the latest state: a run taken off the
	// list and put back a moment later must not lose it.
	s.mu.Lock()
	for _, id := range ids {
		key := keyOf(id)
		if len(key) == 0 || len(key) > bolt.MaxKeySize {
			continue
		}
		p := s.queue[key]
		if p == nil {
			p = s.committing[key]
		}
		switch {
		case p == nil:
			read = append(read, id)
		case !p.deleted:
			out[id] = p.st
		}
	}
	s.mu.Unlock()
	if len(read) == 0 {
		return out, nil
	}
	// Each record is read on its own: a damaged one is reported (the
	// first of them), and the others are still read.
	var bad error
	err := guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketRuns)
			for _, id := range read {
				key := keyOf(id)
				v := b.Get([]byte(key))
				if v == nil {
					continue
				}
				st, err := decodeState(key, v)
				if err != nil {
					if bad == nil {
						bad = damaged("run %s: %v", key, err)
					}
					continue
				}
				out[id] = st
			}
			return nil
		})
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return out, s.readError(err)
	}
	return out, nil
}

// readError names the file, and for damage says what to do.
func (s *Store) readError(err error) error {
	if isDamaged(err) {
		return corruptError(s.dir, s.path, err)
	}
	return fmt.Errorf("reading %s: %w", s.path, err)
}

// Each calls fn with every committed state, in key order, until fn returns
// false. Each record is read through its checksum: a damaged one is an
// error naming it.
func (s *Store) Each(fn func(st runs.State) bool) error {
	return s.EachExcept(nil, fn)
}

// EachExcept is Each without the runs whose key (the run ID in lower case)
// skip reports: those are neither decoded nor checked, so a sweep over a
// store whose runs are all in memory costs a walk over its keys.
func (s *Store) EachExcept(skip func(key string) bool, fn func(st runs.State) bool) error {
	errStop := errors.New("stop")
	err := guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRuns).ForEach(func(k, v []byte) error {
				if v == nil {
					return damaged("run %q is a bucket", k)
				}
				if skip != nil && skip(string(k)) {
					return nil
				}
				st, err := decodeState(string(k), v)
				if err != nil {
					return damaged("run %s: %v", k, err)
				}
				if !fn(st) {
					return errStop
				}
				return nil
			})
		})
	})
	if err != nil && !errors.Is(err, errStop) {
		return s.readError(err)
	}
	return nil
}

// States returns every stored run's committed state, in key order (for
// tests and tools).
func (s *Store) States() ([]runs.State, error) {
	var out []runs.State
	err := s.Each(func(st runs.State) bool { out = append(out, st); return true })
	return out, err
}

// Totals returns the committed lifecycle totals: finished runs and queue
// waits.
func (s *Store) Totals() (runs.Totals, error) {
	t := runs.NewTotals()
	err := guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketTotals).ForEach(func(k, v []byte) error {
				key, err := decodeTotalKey(k)
				if err != nil {
					return damaged("lifecycle total key %q: %v", k, err)
				}
				tot, err := decodeTotal(v)
				if err != nil {
					return damaged("lifecycle total %q: %v", k, err)
				}
				t.Finished[key] = tot
				return nil
			}); err != nil {
				return err
			}
			return tx.Bucket(bucketQueueWait).ForEach(func(k, v []byte) error {
				key, err := decodeWorkflowKey(k)
				if err != nil {
					return damaged("queue-wait total key %q: %v", k, err)
				}
				h, err := decodeQueueWait(v)
				if err != nil {
					return damaged("queue-wait total %q: %v", k, err)
				}
				t.QueueWait[key] = h
				return nil
			})
		})
	})
	if err != nil {
		return runs.Totals{}, s.readError(err)
	}
	return t, nil
}

// keyOf is a run's key: its ID with ASCII letters lowered. UUIDs are
// compared without case; strings.ToLower would also rewrite invalid UTF-8,
// making distinct odd IDs one key.
func keyOf(id string) string {
	for i := 0; i < len(id); i++ {
		if 'A' <= id[i] && id[i] <= 'Z' {
			b := []byte(id)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return id
}

// Check reads the whole file: every record and every total through its
// checksum, then bbolt's own consistency check (pages both used and free,
// keys out of order), which reading alone cannot find. Open checks only
// what a start needs (the schema and the page headers), so that start-up
// follows the runs being tracked; the exporter runs Check in the
// background after the start, and reports damage as an error naming the
// file and what to do.
func (s *Store) Check() error {
	err := guard(func() error { return s.db.View(verify) })
	if err != nil {
		return corruptError(s.dir, s.path, err)
	}
	return nil
}
