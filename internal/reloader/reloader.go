// Package reloader loads the configuration, checks everything it refers to,
// and puts it in force: at start, on SIGHUP and POST /-/reload, and when
// runs.ids_file changes. A configuration that fails any check changes
// nothing: the one in force stays. The ids_file is data, not configuration:
// its problems never fail a load (package idsfile decides what they change).
package reloader

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/idsfile"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/poller"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/shard"
)

// Plan is a configuration that passed every check, and what it takes to put
// it in force.
type Plan struct {
	Config *config.Config
	// IDs are the run IDs this instance owns: runs.ids and runs.ids_file,
	// filtered by the shard.
	IDs []string
	// Configured is how many run IDs the configuration lists in all shards.
	Configured int
	Client     *api.Client
	// IDsFile is runs.ids_file as Prepare read it, nil without one. Its
	// problems (unreadable, invalid lines) fail no load; --config.check
	// reports them. Once in force, the file's watcher holds it.
	IDsFile *idsfile.Contents
}

// Prepare loads the configuration and checks everything it refers to: the
// run IDs, the secret files, and the TLS files, by building the API client;
// and it reads runs.ids_file. --config.check and every reload call it, so
// they accept exactly the same configurations.
func Prepare(load func() (*config.Config, error), sh shard.Assignment, instrument func(http.RoundTripper) http.RoundTripper) (*Plan, error) {
	cfg, err := load()
	if err != nil {
		return nil, err
	}
	ids := cfg.Runs.IDs
	var file *idsfile.Contents
	if cfg.Runs.IDsFile != "" {
		file = idsfile.Load(cfg.Runs.IDsFile, cfg.Runs.IDs)
		ids = combine(ids, file.IDs)
	}
	client, err := api.NewClient(api.Options{
		URL:              cfg.API.URL,
		Timeout:          cfg.API.Timeout.Duration,
		MaxResponseBytes: cfg.API.MaxResponseBytes,
		HTTP:             cfg.API.HTTP,
		Instrument:       instrument,
	})
	if err != nil {
		return nil, err
	}
	return &Plan{Config: cfg, IDs: sh.Filter(ids), Configured: len(ids), Client: client, IDsFile: file}, nil
}

// combine returns listed (runs.ids) followed by the IDs of runs.ids_file
// that listed does not hold: the first one wins. The file's watcher skips
// those already, but its list in force may predate a reload that changed
// runs.ids.
func combine(listed, fromFile []string) []string {
	if len(fromFile) == 0 {
		return listed
	}
	in := make(map[string]struct{}, len(listed))
	for _, id := range listed {
		in[id] = struct{}{}
	}
	ids := make([]string, 0, len(listed)+len(fromFile))
	ids = append(ids, listed...)
	for _, id := range fromFile {
		if _, dup := in[id]; !dup {
			ids = append(ids, id)
		}
	}
	return ids
}

// settings are what the poller takes from a plan.
func (p *Plan) settings() poller.Settings {
	c := p.Config
	return poller.Settings{
		IDs:                  p.IDs,
		Interval:             c.Poll.Interval.Duration,
		Concurrency:          c.Poll.Concurrency,
		MaxRequestsPerSecond: c.Poll.MaxRequestsPerSecond,
		ProgressMax:          c.API.ProgressMax,
		FinishedRetention:    c.Runs.FinishedRetention.Duration,
		NotFoundGrace:        c.Runs.NotFoundGrace.Duration,
		CountWindow:          c.Runs.CountWindow.Duration,
		ProbeMaxRuns:         c.Probe.MaxRuns,
	}
}

// Options configure a Reloader.
type Options struct {
	Logger     log.Logger
	Registerer prometheus.Registerer
	// Load reads the configuration, e.g. a closure over config.LoadFile.
	Load   func() (*config.Config, error)
	Shard  shard.Assignment
	Poller *poller.Poller
	// Instrument wraps the API client's transport with the request metrics.
	Instrument func(http.RoundTripper) http.RoundTripper
	// IDsFileCheck is how often runs.ids_file is read for changes; 5s
	// when zero.
	IDsFileCheck time.Duration
	// IDsFileEmptyGrace is how long runs.ids_file must list no runs before
	// that applies; idsfile.DefaultEmptyGrace (1m) when zero.
	IDsFileEmptyGrace time.Duration
}

// Reloader holds the configuration in force.
type Reloader struct {
	o              Options
	metrics        *metrics
	idsFileMetrics *idsfile.Metrics

	mu      sync.Mutex // serialises reloads and ids_file checks
	plan    *Plan
	watcher *idsfile.Watcher // nil without runs.ids_file
}

// New returns a reloader with no configuration in force; call Reload.
func New(o Options) *Reloader {
	if o.IDsFileCheck == 0 {
		o.IDsFileCheck = 5 * time.Second
	}
	return &Reloader{o: o, metrics: newMetrics(o.Registerer), idsFileMetrics: idsfile.NewMetrics(o.Registerer)}
}

// Reload loads the configuration and puts it in force. On any error the
// configuration in force stays and config_last_reload_successful drops to
// 0. Runs that stay configured keep their state, so finished runs are not
// fetched again.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := Prepare(r.o.Load, r.o.Shard, r.o.Instrument)
	if err != nil {
		r.metrics.success.Set(0)
		level.Error(r.o.Logger).Log("msg", "loading configuration failed; keeping the previous one", "err", err)
		return err
	}
	p = r.apply(p)
	r.metrics.success.Set(1)
	r.metrics.successTime.SetToCurrentTime()
	level.Info(r.o.Logger).Log("msg", "configuration loaded", "runs", len(p.IDs), "configured_runs", p.Configured,
		"shard", r.o.Shard.Index, "shards", r.o.Shard.Count, "api_url", p.Config.API.URL)
	if len(p.Config.Runs.IDs) == 0 && p.Config.Runs.IDsFile == "" {
		level.Info(r.o.Logger).Log("msg", "no run IDs configured: answering /probe?run_id=... only")
	}
	return nil
}

// apply puts p in force, with the ids_file's list in force, and returns
// the plan in force. Called with r.mu held.
func (r *Reloader) apply(p *Plan) *Plan {
	next := *p
	next.IDsFile = nil // the watcher holds it now
	ids := combine(p.Config.Runs.IDs, r.watchIDsFile(p))
	next.IDs, next.Configured = r.o.Shard.Filter(ids), len(ids)
	r.plan = &next
	r.o.Poller.Apply(next.Client, next.settings())
	return r.plan
}

// watchIDsFile hands p's runs.ids_file to its watcher and returns the
// file's IDs in force. The same path keeps its watcher, so that a reload
// keeps the list of a file that cannot be read now, or has just turned
// empty, as a check would. Called with r.mu held.
func (r *Reloader) watchIDsFile(p *Plan) []string {
	path := p.Config.Runs.IDsFile
	switch {
	case path == "":
		r.watcher = nil
		r.idsFileMetrics.Unconfigured()
		return nil
	case r.watcher != nil && r.watcher.Path() == path:
		ids, _ := r.watcher.Reload(time.Now(), p.Config.Runs.IDs, p.IDsFile)
		return ids
	default:
		r.watcher = idsfile.New(idsfile.Options{Logger: r.o.Logger, Path: path, Listed: p.Config.Runs.IDs,
			EmptyGrace: r.o.IDsFileEmptyGrace, Metrics: r.idsFileMetrics}, p.IDsFile)
		return r.watcher.IDs()
	}
}

// RunListKnown reports whether the runs tracked are the whole run list: true
// without runs.ids_file, else once the file was read and lists runs (see
// idsfile.Watcher.Known).
func (r *Reloader) RunListKnown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watcher == nil || r.watcher.Known()
}

// Run reads runs.ids_file for changes until ctx is cancelled.
func (r *Reloader) Run(ctx context.Context) {
	ticker := time.NewTicker(r.o.IDsFileCheck)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			r.CheckIDsFile()
		}
	}
}

// CheckIDsFile reads runs.ids_file and applies a confirmed change.
func (r *Reloader) CheckIDsFile() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watcher == nil {
		return
	}
	fromFile, changed := r.watcher.Check(time.Now())
	if !changed {
		return
	}
	ids := combine(r.plan.Config.Runs.IDs, fromFile)
	next := *r.plan
	next.IDs, next.Configured = r.o.Shard.Filter(ids), len(ids)
	r.plan = &next
	level.Info(r.o.Logger).Log("msg", "runs.ids_file changed", "runs", len(next.IDs), "configured_runs", next.Configured)
	r.o.Poller.Apply(next.Client, next.settings())
}
