// Package idsfile reads runs.ids_file, the list of run IDs that other
// programs write, and decides when a change of it goes in force. The file
// is data, not configuration (DESIGN §5): a bad line, a late file or an
// empty one never stops the exporter or the runs listed elsewhere; it only
// changes, with care, which runs are tracked.
package idsfile

import (
	"bytes"
	"slices"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// DefaultEmptyGrace is how long a file must list no runs, while the list in
// force has some, before that applies.
const DefaultEmptyGrace = time.Minute

// Options configure a Watcher.
type Options struct {
	Logger log.Logger
	Path   string
	// Listed are the IDs of runs.ids, lower case: a line of the file that
	// repeats one is skipped.
	Listed []string
	// EmptyGrace: a file that lists no runs while the list in force has
	// some applies only once it has listed none for this long (a writer
	// that truncates before it writes, a failed sync job, must not wipe
	// every series). DefaultEmptyGrace when zero.
	EmptyGrace time.Duration
	Metrics    *Metrics
}

// Watcher holds the file's list in force and re-reads the file on every
// Check. The file is small, so reading it every few seconds is cheaper and
// surer than trusting modification times. A changed list is applied only
// when two checks in a row read it the same: a file caught half written
// must not drop runs. A file that cannot be read keeps the list last read
// (none if it never could be). Each distinct problem is logged once, not on
// every check. A Watcher is not safe for concurrent use.
type Watcher struct {
	o       Options
	current []string // the file's IDs in force
	// pending is what the previous check read, when it differed from
	// current: a change applies when the next check reads the same.
	pending    []string
	hasPending bool
	// emptySince is when the file was first read listing no runs while
	// current lists some; zero otherwise.
	emptySince time.Time
	// last is the last content read: a file read the same is not parsed
	// again. nil until the file could be read once.
	last       *Contents
	lastErr    string                 // the read error last logged
	warned     map[LineError]struct{} // the invalid lines of last, logged
	warnedMore int                    // the invalid lines of last not logged one by one
}

// New starts watching from first, the file as read with the configuration
// (see Load), and puts its list in force at once: the runs listed are
// tracked from the start. A file that could not be read contributes no runs
// until it can be.
func New(o Options, first *Contents) *Watcher {
	if o.EmptyGrace == 0 {
		o.EmptyGrace = DefaultEmptyGrace
	}
	w := &Watcher{o: o}
	o.Metrics.read(first, true)
	if first.Err != nil {
		w.readFailed(first.Err)
		return w
	}
	w.current = first.IDs
	w.parsed(first)
	return w
}

// Known reports whether the list in force is what the file says: it was
// read, lists runs, and no change or emptying waits to be confirmed. Until
// then the runs it lists may not all be tracked yet (a sidecar that writes
// it late, a writer that truncates first).
func (w *Watcher) Known() bool {
	return w.last != nil && len(w.current) > 0 && !w.hasPending && w.emptySince.IsZero()
}

// Path returns the path of the file watched.
func (w *Watcher) Path() string { return w.o.Path }

// IDs returns the file's IDs in force.
func (w *Watcher) IDs() []string { return w.current }

// Check reads the file once. It returns the file's IDs in force and
// whether they changed.
func (w *Watcher) Check(now time.Time) ([]string, bool) {
	data, err := Read(w.o.Path)
	c := &Contents{Path: w.o.Path, Err: err, data: data}
	switch {
	case err != nil:
	case w.last != nil && bytes.Equal(data, w.last.data):
		c = w.last
	default:
		c.List = Parse(w.o.Path, data, w.o.Listed)
	}
	return w.take(now, c)
}

// Reload takes a reloaded configuration's runs.ids and its read of the file
// (Load, with those runs.ids) as one check: the list in force stays, unless
// that read confirms a change the previous check saw. A reload does not
// bypass what protects a check, so the same path keeps its Watcher.
func (w *Watcher) Reload(now time.Time, listed []string, c *Contents) ([]string, bool) {
	w.o.Listed = listed
	return w.take(now, c)
}

// take decides what a read of the file changes.
func (w *Watcher) take(now time.Time, c *Contents) ([]string, bool) {
	w.o.Metrics.read(c, false)
	if c.Err != nil {
		// A failed read breaks "two checks in a row": a change seen
		// before it must be seen again after it.
		w.pending, w.hasPending = nil, false
		w.readFailed(c.Err)
		return w.current, false
	}
	if w.lastErr != "" {
		w.lastErr = ""
		level.Info(w.o.Logger).Log("msg", "runs.ids_file can be read again", "file", w.o.Path)
	}
	if c != w.last {
		if slices.Equal(c.IDs, w.current) {
			c.IDs = w.current // one copy of the strings, not two
		}
		w.parsed(c)
	}
	ids := c.IDs
	// An empty list when none is in force matches the first case below.
	empty := len(ids) == 0
	if !empty && !w.emptySince.IsZero() {
		w.emptySince = time.Time{}
		level.Info(w.o.Logger).Log("msg", "runs.ids_file lists runs again", "file", w.o.Path, "runs", len(ids))
	}
	switch {
	case slices.Equal(ids, w.current):
		w.pending, w.hasPending = nil, false
		return w.current, false
	case empty && w.emptySince.IsZero():
		w.emptySince = now
		level.Warn(w.o.Logger).Log("msg", "runs.ids_file lists no runs; its previous runs stay tracked unless it lists none for a while",
			"file", w.o.Path, "runs", len(w.current), "for", w.o.EmptyGrace)
	case w.hasPending && slices.Equal(ids, w.pending) && (!empty || now.Sub(w.emptySince) >= w.o.EmptyGrace):
		if empty {
			level.Warn(w.o.Logger).Log("msg", "runs.ids_file has listed no runs for a while; its runs are no longer tracked",
				"file", w.o.Path, "runs", len(w.current), "for", now.Sub(w.emptySince))
			w.emptySince = time.Time{}
		}
		w.current, w.pending, w.hasPending = ids, nil, false
		return w.current, true
	}
	w.pending, w.hasPending = ids, true
	return w.current, false
}

// readFailed logs a read error, once as long as it stays the same.
func (w *Watcher) readFailed(err error) {
	msg := err.Error()
	if msg == w.lastErr {
		return
	}
	w.lastErr = msg
	if w.last == nil {
		level.Warn(w.o.Logger).Log("msg", "runs.ids_file cannot be read; its runs are tracked once it can be", "file", w.o.Path, "err", err)
		return
	}
	level.Warn(w.o.Logger).Log("msg", "runs.ids_file cannot be read; the runs it listed last stay tracked", "file", w.o.Path, "runs", len(w.current), "err", err)
}

// parsed makes c the last content read and logs its invalid lines that the
// last one did not have.
func (w *Watcher) parsed(c *Contents) {
	w.last = c
	warned := make(map[LineError]struct{}, len(c.Errors))
	for _, e := range c.Errors {
		warned[e] = struct{}{}
		if _, ok := w.warned[e]; !ok {
			level.Warn(w.o.Logger).Log("msg", "skipping an invalid line of runs.ids_file", "file", e.Path, "line", e.Line, "problem", e.Problem())
		}
	}
	w.warned = warned
	more := c.Invalid - len(c.Errors)
	if more > 0 && more != w.warnedMore {
		level.Warn(w.o.Logger).Log("msg", "skipping more invalid lines of runs.ids_file than are logged one by one",
			"file", w.o.Path, "invalid_lines", c.Invalid, "not_logged", more)
	}
	w.warnedMore = more
}
