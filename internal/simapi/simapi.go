// Package simapi is a simulated workflow platform API. It serves
// GET /v1/runs/{id} with bearer-token authentication, and its runs move from
// queued to running to completed, failed or stopped as its clock advances.
// --demo serves it in-process; the tests use it as a well-behaved API whose
// every answer they can check the exporter's metrics against.
package simapi

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Run is a simulated run's script: when it was created, how long it queues
// and runs, and how it ends.
type Run struct {
	ID           string
	GroupID      string
	WorkflowID   string
	WorkflowName string
	WorkflowType string // flow, handler or ingestion
	Source       string
	CreatedAt    time.Time
	Queued       time.Duration // time spent queued
	Running      time.Duration // time spent running before it ends
	Outcome      runs.Status   // completed, failed or stopped
	// EndProgress is the progress reached when a failed or stopped run
	// ends; completed runs end at 100.
	EndProgress float64
}

// State is what the API reports for a run at one moment.
type State struct {
	Status     runs.Status
	Progress   float64
	FinishedAt time.Time // zero while unfinished
}

// At returns the run's state at time t.
func (r *Run) At(t time.Time) State {
	startRun := r.CreatedAt.Add(r.Queued)
	end := startRun.Add(r.Running)
	switch {
	case t.Before(startRun):
		return State{Status: runs.StatusQueued}
	case t.Before(end):
		done := float64(t.Sub(startRun)) / float64(r.Running)
		endAt := 100.0
		if r.Outcome != runs.StatusCompleted {
			endAt = r.EndProgress
		}
		return State{Status: runs.StatusRunning, Progress: math.Floor(done*endAt*10) / 10}
	}
	s := State{Status: r.Outcome, Progress: 100, FinishedAt: end}
	if r.Outcome != runs.StatusCompleted {
		s.Progress = r.EndProgress
	}
	return s
}

// Server serves the runs. It counts requests per run and the largest number
// in flight at once, so tests can check the exporter's pacing.
type Server struct {
	token string
	delay time.Duration

	mu          sync.Mutex
	now         func() time.Time
	runs        map[string]*Run
	order       []string
	requests    map[string]int
	inFlight    int
	maxInFlight int
}

// Option configures a Server.
type Option func(*Server)

// WithClock replaces the wall clock, so tests decide when runs change.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithDelay makes every answer take d, so concurrency becomes observable.
func WithDelay(d time.Duration) Option { return func(s *Server) { s.delay = d } }

// New returns a server that accepts only "Authorization: Bearer <token>".
func New(token string, list []Run, opts ...Option) *Server {
	s := &Server{token: token, now: time.Now, runs: map[string]*Run{}, requests: map[string]int{}}
	for _, o := range opts {
		o(s)
	}
	for i := range list {
		r := list[i]
		s.runs[r.ID] = &r
		s.order = append(s.order, r.ID)
	}
	return s
}

// IDs returns the run IDs in the order they were given.
func (s *Server) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

// Run returns a copy of the script of run id.
func (s *Server) Run(id string) (Run, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[id]
	if !ok {
		return Run{}, false
	}
	return *r, true
}

// Now returns the server's current time.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

// Requests returns how many authorised requests run id received.
func (s *Server) Requests(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[id]
}

// MaxInFlight returns the largest number of requests served at once.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

// ServeHTTP implements GET /v1/runs/{id}.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, "/v1/runs/")
	if !ok || strings.Contains(id, "/") || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	want := "Bearer " + s.token
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "Not authenticated"})
		return
	}

	s.mu.Lock()
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.requests[id]++
	run, found := s.runs[id]
	var doc map[string]any
	if found {
		doc = Document(run, run.At(s.now()))
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-r.Context().Done():
			return
		}
	}
	if !found {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Run not found"})
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

// Document renders a run the way the platform's API documents it, extra
// fields included, with finished_at null while the run is unfinished.
func Document(r *Run, st State) map[string]any {
	var finished any
	if !st.FinishedAt.IsZero() {
		finished = st.FinishedAt.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"id":          r.ID,
		"group_id":    r.GroupID,
		"workflow_id": r.WorkflowID,
		"input":       map[string]any{},
		"node_ids":    []string{},
		"status":      string(st.Status),
		"progress":    st.Progress,
		"definitions": map[string]any{},
		"created_at":  r.CreatedAt.UTC().Format(time.RFC3339Nano),
		"finished_at": finished,
		"workflow": map[string]any{
			"id":              r.WorkflowID,
			"group_id":        r.GroupID,
			"name":            r.WorkflowName,
			"type":            r.WorkflowType,
			"definition":      map[string]any{},
			"workflow_hash":   "sim",
			"meta":            map[string]any{"tags": []string{"simulated"}, "icon": "sim"},
			"runs_count":      1,
			"author_name":     "Simulated API",
			"description":     "A run of the simulated workflow API.",
			"saved":           true,
			"created_at":      r.CreatedAt.UTC().Format(time.RFC3339Nano),
			"last_run_at":     r.CreatedAt.UTC().Format(time.RFC3339Nano),
			"last_updated_at": r.CreatedAt.UTC().Format(time.RFC3339Nano),
		},
		"source": r.Source,
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// workflows are the sample workflows. Their names hold the characters that
// break naive exporters: spaces, '&', non-ASCII letters, quotes.
var workflows = []struct{ name, typ string }{
	{"Invoice extraction", "flow"},
	{"Support triage & routing", "flow"},
	{"Résumé parser", "handler"},
	{`Customer "VIP" sync`, "handler"},
	{"Knowledge base ingest", "ingestion"},
	{"Nightly docs crawl", "ingestion"},
}

// SampleRuns returns n reproducible runs (for a given seed and now): some
// already finished, some running, most still queued. About one run in
// five fails and one in ten is stopped; run 1 is always an early failure so
// that alerts have something to fire on.
func SampleRuns(n int, seed uint64, now time.Time) []Run {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	list := make([]Run, 0, n)
	for i := range n {
		outcome := runs.StatusCompleted
		switch x := rng.IntN(10); {
		case x < 2:
			outcome = runs.StatusFailed
		case x < 3:
			outcome = runs.StatusStopped
		}
		// Every run already exists (created in the last few minutes), but
		// their starts are spread over the next quarter hour, as in a
		// queue backlog, so a demo keeps changing for a while.
		created := now.Add(-time.Duration(n-i) * 5 * time.Second).Add(-time.Duration(rng.IntN(1000)) * time.Millisecond)
		start := now.Add(time.Duration(i-n/3) * 15 * time.Second)
		queued := max(start.Sub(created), time.Duration(2+rng.IntN(20))*time.Second)
		r := newRun(rng, i)
		r.Source = []string{"api", "schedule", "ui"}[rng.IntN(3)]
		r.CreatedAt, r.Queued = created, queued
		r.Running = time.Duration(30+rng.IntN(240)) * time.Second
		r.Outcome, r.EndProgress = outcome, float64(10+rng.IntN(80))
		if i == 1 {
			r.CreatedAt = now.Add(-10 * time.Minute)
			r.Queued, r.Running = 5*time.Second, time.Minute
			r.Outcome = runs.StatusFailed
		}
		list = append(list, r)
	}
	return list
}

// newRun returns run i of a sample: its ID and its workflow, one of the
// sample workflows in turn.
func newRun(rng *rand.Rand, i int) Run {
	wf := workflows[i%len(workflows)]
	return Run{
		ID:           uuidFrom(rng),
		GroupID:      "6f0c3c90-0d44-4b50-8888-8dd25736052a",
		WorkflowID:   fmt.Sprintf("00000000-0000-4000-8000-%012d", i%len(workflows)+1),
		WorkflowName: wf.name,
		WorkflowType: wf.typ,
	}
}

func uuidFrom(rng *rand.Rand) string {
	a, b := rng.Uint64(), rng.Uint64()
	// Version 4, variant 10, like the platform's IDs.
	a = a&^0xf000 | 0x4000
	b = b&^(0xc<<60) | 0x8<<60
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// LoadRuns returns n runs for load tests: the first finished·n completed an
// hour before now, the others running until a day after, so that their
// progress moves with the clock.
func LoadRuns(n int, finished float64, now time.Time) []Run {
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	list := make([]Run, n)
	done := int(float64(n) * finished)
	for i := range list {
		r := newRun(rng, i)
		r.Source, r.Outcome, r.EndProgress = "api", runs.StatusCompleted, 100
		if i < done {
			r.CreatedAt, r.Queued, r.Running = now.Add(-2*time.Hour), time.Minute, 30*time.Minute
		} else {
			r.CreatedAt, r.Queued, r.Running = now.Add(-time.Minute), 30*time.Second, 24*time.Hour
		}
		list[i] = r
	}
	return list
}
