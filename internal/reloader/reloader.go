// Package reloader loads the configuration, checks everything it refers to,
// and puts it in force: at start, on SIGHUP and POST /-/reload, and when
// runs.ids_file changes. A configuration that fails any check changes
// nothing: the one in force stays.
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
	// FileIDs are the IDs read from runs.ids_file, which its watcher
	// starts from.
	FileIDs []string
	// Configured is how many run IDs the configuration lists in all shards.
	Configured int
	Client     *api.Client
}

// Prepare loads the configuration and checks everything it refers to: the
// run IDs (runs.ids_file read now), the secret files, and the TLS files, by
// building the API client. --config.check and every reload call it, so
// they accept exactly the same configurations.
func Prepare(load func() (*config.Config, error), sh shard.Assignment, instrument func(http.RoundTripper) http.RoundTripper) (*Plan, error) {
	cfg, err := load()
	if err != nil {
		return nil, err
	}
	ids, err := cfg.RunIDs()
	if err != nil {
		return nil, err
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
	return &Plan{Config: cfg, IDs: sh.Filter(ids), FileIDs: cfg.FileIDs(), Configured: len(ids), Client: client}, nil
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
}

// Reloader holds the configuration in force.
type Reloader struct {
	o       Options
	metrics *metrics

	mu      sync.Mutex // serialises reloads and ids_file checks
	plan    *Plan
	watcher *idsfile.Watcher // nil without runs.ids_file
}

// New returns a reloader with no configuration in force; call Reload.
func New(o Options) *Reloader {
	if o.IDsFileCheck == 0 {
		o.IDsFileCheck = 5 * time.Second
	}
	return &Reloader{o: o, metrics: newMetrics(o.Registerer)}
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
	r.apply(p)
	r.metrics.success.Set(1)
	r.metrics.successTime.SetToCurrentTime()
	level.Info(r.o.Logger).Log("msg", "configuration loaded", "runs", len(p.IDs), "configured_runs", p.Configured,
		"shard", r.o.Shard.Index, "shards", r.o.Shard.Count, "api_url", p.Config.API.URL)
	if p.Configured == 0 {
		level.Info(r.o.Logger).Log("msg", "no run IDs configured: answering /probe?run_id=... only")
	}
	return nil
}

// apply puts p in force. Called with r.mu held.
func (r *Reloader) apply(p *Plan) {
	r.plan = p
	r.watcher = nil
	if f := p.Config.Runs.IDsFile; f != "" {
		r.watcher = idsfile.New(r.o.Logger, f, p.FileIDs)
	}
	r.o.Poller.Apply(p.Client, p.settings())
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

// CheckIDsFile applies a confirmed change of runs.ids_file.
func (r *Reloader) CheckIDsFile() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watcher == nil {
		return
	}
	fromFile, changed := r.watcher.Check()
	if !changed {
		return
	}
	ids, err := r.plan.Config.CombineIDs(fromFile)
	if err != nil {
		level.Error(r.o.Logger).Log("msg", "runs.ids_file changed, but the run list is invalid; keeping the previous one", "err", err)
		return
	}
	next := *r.plan
	next.IDs, next.FileIDs, next.Configured = r.o.Shard.Filter(ids), fromFile, len(ids)
	r.plan = &next
	level.Info(r.o.Logger).Log("msg", "runs.ids_file changed", "runs", len(next.IDs), "configured_runs", next.Configured)
	r.o.Poller.Apply(next.Client, next.settings())
}
