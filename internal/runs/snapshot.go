package runs

import (
	"sync/atomic"
	"time"
)

// Tracked is the exporter's knowledge of one configured run ID.
type Tracked struct {
	ID string
	// Run is the last successfully fetched state; nil when the run was never
	// fetched successfully or the API said it does not exist (404).
	Run *Run
	// FetchOK reports whether the most recent fetch succeeded.
	FetchOK bool
	// LastSuccess is when Run was fetched; zero if never.
	LastSuccess time.Time
}

// Snapshot is the state of every tracked run after a poll cycle. It is never
// modified after it has been published, so scrapes read it without locks.
type Snapshot struct {
	Runs        []Tracked // sorted by ID
	ProgressMax float64   // the API's progress value for "done"
	// CycleEnd is when the poll cycle that produced this snapshot ended;
	// zero before the first cycle.
	CycleEnd time.Time
}

// Store publishes snapshots from the poller to any number of readers.
type Store struct {
	current atomic.Pointer[Snapshot]
}

// NewStore returns a store holding an empty snapshot.
func NewStore() *Store {
	s := &Store{}
	s.current.Store(&Snapshot{ProgressMax: 100})
	return s
}

// Load returns the latest snapshot. Callers must not modify it.
func (s *Store) Load() *Snapshot { return s.current.Load() }

// Publish replaces the latest snapshot.
func (s *Store) Publish(snap *Snapshot) { s.current.Store(snap) }
