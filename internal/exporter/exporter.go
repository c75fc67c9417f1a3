// Package exporter wires the configuration, the API client, the poller and
// the collector together, handles reloads, and serves the HTTP endpoints.
// It is everything main does apart from flags, logging and the listener, so
// that tests can run it in-process.
package exporter

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/poller"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// Options configure an Exporter.
type Options struct {
	Logger log.Logger
	// Registerer receives the exporter's self-metrics. The run metrics are
	// served from a render cache; see Handler.
	Registerer prometheus.Registerer
	// Load reads the configuration; it is called at start and on every
	// reload. Usually a closure over config.LoadFile.
	Load func() (*config.Config, error)
	// Backoff paces retries; poller.DefaultBackoff when zero.
	Backoff poller.Backoff
	// IDsFileCheck is how often runs.ids_file is checked for changes;
	// 5s when zero.
	IDsFileCheck time.Duration
}

// Exporter is the running exporter.
type Exporter struct {
	logger       log.Logger
	load         func() (*config.Config, error)
	poller       *poller.Poller
	apiMetrics   *api.Metrics
	runMetrics   *collector.Gatherer
	idsFileCheck time.Duration

	reloadSuccess     prometheus.Gauge
	reloadSuccessTime prometheus.Gauge

	mu         sync.Mutex // guards the fields below and serialises reloads
	cfg        *config.Config
	client     *api.Client
	ids        []string
	idsFileErr string    // last runs.ids_file error logged, to log it once
	pendingIDs *[]string // a changed run list read once, not applied yet
}

// New registers the metrics and returns an exporter that has not loaded its
// configuration yet; call Reload, then Run.
func New(o Options) *Exporter {
	if o.Backoff.Attempts == 0 {
		o.Backoff = poller.DefaultBackoff
	}
	if o.IDsFileCheck == 0 {
		o.IDsFileCheck = 5 * time.Second
	}
	store := runs.NewStore()
	e := &Exporter{
		logger:       o.Logger,
		load:         o.Load,
		poller:       poller.New(o.Logger, store, poller.NewMetrics(o.Registerer), o.Backoff),
		apiMetrics:   api.NewMetrics(o.Registerer),
		idsFileCheck: o.IDsFileCheck,
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_config_last_reload_successful",
			Help: "1 if the last configuration load succeeded, else 0.",
		}),
		reloadSuccessTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "workflow_runs_exporter_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully, as Unix time.",
		}),
	}
	e.runMetrics = collector.NewGatherer(store.Load)
	// Render each snapshot in the poll loop, so no scrape pays for it.
	e.poller.AfterPublish(func() { _, _ = e.runMetrics.Gather() })
	o.Registerer.MustRegister(e.reloadSuccess, e.reloadSuccessTime)
	return e
}

// Reload loads the configuration and applies it. On any error the running
// configuration stays in force and config_last_reload_successful drops to 0.
// Runs that stay configured keep their state, so finished runs are not
// fetched again.
func (e *Exporter) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.reload()
	if err != nil {
		e.reloadSuccess.Set(0)
		level.Error(e.logger).Log("msg", "loading configuration failed; keeping the previous one", "err", err)
		return err
	}
	e.reloadSuccess.Set(1)
	e.reloadSuccessTime.SetToCurrentTime()
	level.Info(e.logger).Log("msg", "configuration loaded", "runs", len(e.ids), "api_url", e.cfg.API.URL)
	return nil
}

func (e *Exporter) reload() error {
	cfg, err := e.load()
	if err != nil {
		return err
	}
	ids, err := cfg.RunIDs()
	if err != nil {
		return err
	}
	client, err := NewClient(cfg, e.apiMetrics.Instrument)
	if err != nil {
		return err
	}
	old := e.client
	e.cfg, e.client, e.ids = cfg, client, ids
	e.idsFileErr, e.pendingIDs = "", nil
	e.apply()
	if old != nil {
		old.CloseIdleConnections()
	}
	return nil
}

// NewClient builds the API client a configuration describes. It is also
// what --config.check uses, so TLS files are checked there too.
func NewClient(cfg *config.Config, instrument func(http.RoundTripper) http.RoundTripper) (*api.Client, error) {
	return api.NewClient(api.Options{
		URL:              cfg.API.URL,
		Timeout:          cfg.API.Timeout.D(),
		MaxResponseBytes: cfg.API.MaxResponseBytes,
		HTTP:             cfg.API.HTTP,
		Instrument:       instrument,
	})
}

func (e *Exporter) apply() {
	e.poller.Apply(poller.Settings{
		Fetcher:              e.client,
		IDs:                  e.ids,
		Interval:             e.cfg.Poll.Interval.D(),
		Concurrency:          e.cfg.Poll.Concurrency,
		MaxRequestsPerSecond: e.cfg.Poll.MaxRequestsPerSecond,
		ProgressMax:          e.cfg.API.ProgressMax,
	})
}

// Ready reports whether every tracked run has been attempted once.
func (e *Exporter) Ready() bool { return e.poller.Ready() }

// Run polls and watches runs.ids_file until ctx is cancelled.
func (e *Exporter) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.poller.Run(ctx)
	}()
	ticker := time.NewTicker(e.idsFileCheck)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-ticker.C:
			e.checkIDsFile()
		}
	}
}

// checkIDsFile re-reads runs.ids_file and applies the run list if it
// changed. The file is small, so reading it every few seconds is cheaper
// and surer than trusting modification times. A changed list is applied
// only when two checks in a row read it the same: a file caught half
// written (truncated to nothing, say) must not drop every run. A broken
// file keeps the previous run list and is logged once, not on every check.
func (e *Exporter) checkIDsFile() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg == nil || e.cfg.Runs.IDsFile == "" {
		return
	}
	ids, err := e.cfg.RunIDs()
	if err != nil {
		if msg := err.Error(); msg != e.idsFileErr {
			e.idsFileErr = msg
			level.Error(e.logger).Log("msg", "reading runs.ids_file failed; keeping the previous run list", "err", err)
		}
		return
	}
	e.idsFileErr = ""
	if slices.Equal(ids, e.ids) {
		e.pendingIDs = nil
		return
	}
	if e.pendingIDs == nil || !slices.Equal(ids, *e.pendingIDs) {
		e.pendingIDs = &ids // seen once; apply if the next check agrees
		return
	}
	e.pendingIDs = nil
	e.ids = ids
	level.Info(e.logger).Log("msg", "runs.ids_file changed", "runs", len(ids))
	e.apply()
}
