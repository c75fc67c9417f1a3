// Package idsfile notices changes of runs.ids_file while the exporter runs,
// so that run IDs can be added and removed without a restart or reload.
package idsfile

import (
	"bytes"
	"fmt"
	"os"
	"slices"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
)

// state is where a Watcher is between two checks.
type state int

const (
	// steady: the file reads as the list in force.
	steady state = iota
	// changeSeen: the last check read a different list; it is applied if
	// the next check reads the same.
	changeSeen
)

// Watcher re-reads the file on every Check. The file is small, so reading
// it every few seconds is cheaper and surer than trusting modification
// times. A changed list is applied only when two checks in a row read it
// the same: a file caught half written (truncated to nothing, say) must not
// drop every run. A broken file keeps the list in force and is logged once,
// not on every check.
type Watcher struct {
	logger  log.Logger
	path    string
	state   state
	current []string // the IDs in force
	seen    []string // the changed IDs read once, in state changeSeen
	lastErr string   // the last error logged
	// lastData and lastIDs are the last file content that parsed, and its
	// IDs: a file read the same is not parsed again.
	lastData []byte
	lastIDs  []string
}

// New watches path, whose IDs in force are current.
func New(logger log.Logger, path string, current []string) *Watcher {
	return &Watcher{logger: logger, path: path, current: current}
}

// Check reads the file once. It returns the new list and true when a change
// is confirmed.
func (w *Watcher) Check() ([]string, bool) {
	ids, err := w.read()
	if err != nil {
		// A broken read breaks "two checks in a row": a change seen before
		// it must be seen again after it.
		w.state, w.seen = steady, nil
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			level.Error(w.logger).Log("msg", "reading runs.ids_file failed; keeping the previous run list", "err", err)
		}
		return nil, false
	}
	if w.lastErr != "" {
		w.lastErr = ""
		level.Info(w.logger).Log("msg", "runs.ids_file reads fine again", "file", w.path)
	}
	switch {
	case slices.Equal(ids, w.current):
		w.state, w.seen = steady, nil
		return nil, false
	case w.state == changeSeen && slices.Equal(ids, w.seen):
		w.state, w.seen, w.current = steady, nil, ids
		return ids, true
	default:
		w.state, w.seen = changeSeen, ids
		return nil, false
	}
}

// read returns the file's IDs.
func (w *Watcher) read() ([]string, error) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return nil, fmt.Errorf("runs.ids_file: %w", err)
	}
	if w.lastData != nil && bytes.Equal(data, w.lastData) {
		return w.lastIDs, nil
	}
	ids, err := config.ParseIDsFile(w.path, data)
	if err != nil {
		return nil, err
	}
	if slices.Equal(ids, w.current) {
		ids = w.current // one copy of the strings, not two
	}
	w.lastData, w.lastIDs = data, ids
	return ids, nil
}
