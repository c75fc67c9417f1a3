// Command workflow_runs_exporter serves Prometheus metrics about the runs of
// an AI workflow platform. This file only parses flags and wires the parts
// together; the logic lives in packages the tests import.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/endpoints"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/ledger"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/logging"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/poller"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/reloader"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/shard"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/statestore"
)

const name = "workflow_runs_exporter"

func main() { os.Exit(run()) }

func run() int {
	app := kingpin.New(name, "Prometheus exporter for the runs of an AI workflow platform.")
	var (
		configFile = app.Flag("config.file", "Exporter configuration file.").
				Default(name + ".yml").String()
		configCheck = app.Flag("config.check", "Validate the configuration file and exit: 0 if valid, else 1 with the problem on stderr.").
				Bool()
		metricsPath = app.Flag("web.telemetry-path", "Path under which to expose metrics.").
				Default("/metrics").String()
		disableExporterMetrics = app.Flag("web.disable-exporter-metrics", "Leave out the go_*, process_* and promhttp_* metrics.").
					Bool()
		maxRequests = app.Flag("web.max-requests", "Maximum number of concurrent /metrics requests; 0 disables the limit.").
				Default("40").Int()
		createdLines = app.Flag("web.openmetrics-created-lines", "Add _created lines to the counters and histograms in OpenMetrics answers; Prometheus stores them as series unless its created-timestamp ingestion is on.").
				Bool()
		allowlist = app.Flag("metric-allowlist", "Comma-separated metric family names or RE2 regular expressions (matched against the whole name): only these families are rendered and served. Not with --metric-denylist.").
				Default("").String()
		denylist = app.Flag("metric-denylist", "Comma-separated metric family names or RE2 regular expressions (matched against the whole name): these families are neither rendered nor served. Not with --metric-allowlist.").
				Default("").String()
		storagePath = app.Flag("storage.path", "Directory of the state store that keeps run states and lifecycle counters across restarts; empty: memory only.").
				Default("").String()
		shardCount = app.Flag("shard.count", "Number of exporter instances the run IDs are split between.").
				Default("1").Int()
		shardIndex = app.Flag("shard.index", "This instance's shard, from 0 to --shard.count-1: it owns the run IDs whose hash mod count equals it.").
				Default("0").Int()
		shardFromHostname = app.Flag("shard.from-hostname", "Take the shard index from the host name's trailing ordinal, as a StatefulSet names its pods (name-3 -> 3).").
					Bool()
		demo = app.Flag("demo", "Serve a built-in simulated API with sample runs and watch those; no config file needed.").
			Bool()
		webFlags  = kingpinflag.AddFlags(app, ":10025")
		logConfig = &promslog.Config{}
	)
	promslogflag.AddFlags(app, logConfig)
	app.Version(version.Print(name))
	app.HelpFlag.Short('h')
	if _, err := app.Parse(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	logger, slogger := logging.New(os.Stderr, logConfig)

	fail := func(msg string, err error) int {
		level.Error(logger).Log("msg", msg, "err", err)
		return 1
	}

	families, err := collector.NewFamilyFilter(*allowlist, *denylist)
	if err != nil {
		return fail("invalid metric family list", err)
	}

	hostname, _ := os.Hostname()
	assignment, err := shard.FromFlags(*shardIndex, *shardCount, *shardFromHostname, hostname)
	if err != nil {
		return fail("invalid shard flags", err)
	}

	load := func() (*config.Config, error) { return config.LoadFile(*configFile) }
	if *demo {
		d, err := simapi.StartDemo(60)
		if err != nil {
			return fail("starting the simulated API failed", err)
		}
		defer d.Close()
		level.Info(logger).Log("msg", "demo: serving the simulated API", "url", d.URL, "runs", len(d.IDs))
		load = func() (*config.Config, error) { return config.Demo(d.URL, d.Token, d.IDs), nil }
	}

	if *configCheck {
		return checkConfig(load, assignment, *webFlags.WebConfigFile)
	}

	level.Info(logger).Log("msg", "starting", "name", name, "version", version.Info(), "build_context", version.BuildContext())
	if *webFlags.WebConfigFile != "" {
		if err := web.Validate(*webFlags.WebConfigFile); err != nil {
			level.Error(logger).Log("msg", "invalid --web.config.file", "file", *webFlags.WebConfigFile, "err", err)
			return 1
		}
	}

	// Self-metrics on one registry, each owned by the part that changes
	// it; go/process/promhttp on another, so the flag can leave them out.
	self := prometheus.NewRegistry()
	self.MustRegister(versioncollector.NewCollector(name))
	if err := assignment.Register(self); err != nil {
		return fail("registering the shard metric failed", err)
	}
	var exporterMetrics *prometheus.Registry
	if !*disableExporterMetrics {
		exporterMetrics = prometheus.NewRegistry()
		exporterMetrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}

	runMetrics := collector.NewMetricsStore(config.Default().API.ProgressMax, collector.WithFamilies(families))
	ledgerOptions := ledger.Options{Logger: logger, Owns: assignment.Owns, Counter: runMetrics}
	var store *statestore.Store
	if *storagePath != "" {
		store, err = statestore.Open(*storagePath, statestore.Options{Logger: logger, Registerer: self, OnCommit: runMetrics.AddCounts})
		if err != nil {
			return fail("opening the state store failed", err)
		}
		totals, err := store.Totals()
		if err != nil {
			store.Close()
			return fail("reading the state store failed", err)
		}
		runMetrics.SetTotals(totals)
		ledgerOptions.Store = store
		level.Info(logger).Log("msg", "state store opened", "path", store.Path())
	}
	led := ledger.New(ledgerOptions)
	p := poller.New(poller.Options{Logger: logger, Registerer: self, MetricsStore: runMetrics, Ledger: led})
	reload := reloader.New(reloader.Options{
		Logger: logger, Registerer: self, Load: load, Shard: assignment, Poller: p,
		Instrument: api.NewMetrics(self).Instrument,
	})
	if err := reload.Reload(); err != nil {
		if store != nil {
			store.Close()
		}
		return 1 // Reload logged the error, naming the field.
	}
	if store != nil {
		// A damaged record of a tracked run, read as the runs were loaded,
		// is a damaged store: the start stops, naming it.
		if err := led.Err(); err != nil {
			store.Close()
			return fail("reading the state store failed", err)
		}
	}
	if os.Getenv("GOGC") == "" {
		// Most of the heap is run data that lives as long as the run is
		// tracked, and little is allocated between cycles: collecting at
		// 25% above the live heap rather than Go's default 100% keeps
		// 100,000 runs near 250 MiB of RSS instead of 380, for more CPU
		// per refresh at full speed only (README "Performance"). It is set
		// once the start has loaded the runs from the state store: that
		// allocates most of what stays, and at 25% a start would spend
		// half its time collecting. GOGC in the environment wins.
		debug.SetGCPercent(25)
	}

	handler, err := endpoints.Handler(endpoints.Options{
		Logger: logger, MetricsPath: *metricsPath, Runs: runMetrics, Self: self, ExporterMetrics: exporterMetrics,
		MaxRequests: *maxRequests, CreatedLines: *createdLines, Families: families, Ready: p.Ready, Reload: reload.Reload,
		Probe: p.Probe,
	})
	if err != nil {
		if store != nil {
			store.Close()
		}
		return fail("building the HTTP handler failed", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var background sync.WaitGroup
	background.Go(func() { p.Run(ctx) })
	background.Go(func() { reload.Run(ctx) })
	if store != nil {
		background.Go(func() { store.Run(ctx) })
		background.Go(func() { sweep(ctx, logger, led, p, reload) })
		background.Go(func() {
			// The whole-file check runs after the start, not before it:
			// start-up follows the runs tracked, not the file's size.
			if err := store.Check(); err != nil {
				level.Error(logger).Log("msg", "the state store is damaged", "err", err)
			}
		})
	}

	srv := endpoints.NewServer(handler, endpoints.DefaultServerTimeouts)
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(srv, webFlags, slogger) }()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	for done := false; !done; {
		select {
		case err := <-serveErr:
			level.Error(logger).Log("msg", "HTTP server failed", "err", err)
			code, done = 1, true
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				_ = reload.Reload() // logged; the old configuration stays in force
				continue
			}
			level.Info(logger).Log("msg", "shutting down", "signal", sig)
			done = true
		}
	}
	cancel() // stops polling and cancels in-flight API requests
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		level.Warn(logger).Log("msg", "in-flight scrapes did not finish in time", "err", err)
	}
	background.Wait()
	if store != nil {
		if err := store.Close(); err != nil {
			level.Error(logger).Log("msg", "closing the state store failed", "err", err)
			code = 1
		}
	}
	return code
}

// checkConfig implements --config.check: the same checks as a reload, and
// a runs.ids_file that cannot be read or has invalid lines is refused too,
// though a reload would only skip them, so a pipeline can stop it before it
// ships. Every problem is printed, naming file and line, never a line's
// content.
func checkConfig(load func() (*config.Config, error), assignment shard.Assignment, webConfigFile string) int {
	report := func(err error) {
		fmt.Fprintf(os.Stderr, "%s: invalid configuration: %v\n", name, err)
	}
	plan, err := reloader.Prepare(load, assignment, nil)
	if err != nil {
		report(err)
		return 1
	}
	errs := plan.IDsFile.Problems()
	if webConfigFile != "" {
		if err := web.Validate(webConfigFile); err != nil {
			errs = append(errs, fmt.Errorf("--web.config.file %s: %w", webConfigFile, err))
		}
	}
	for _, err := range errs {
		report(err)
	}
	if len(errs) > 0 {
		return 1
	}
	fmt.Printf("configuration is valid: %d runs (%d in this shard), API %s\n", plan.Configured, len(plan.IDs), plan.Config.API.URL)
	return 0
}

// sweep deletes, once the run list is known, what earlier processes left
// in the state store of runs no longer tracked, but what counting still
// needs (ledger.Sweep). It waits for a late or emptied runs.ids_file to
// be read (10 minutes at most): sweeping before would drop the records of
// runs about to be listed again.
func sweep(ctx context.Context, logger log.Logger, led *ledger.Ledger, p *poller.Poller, reload *reloader.Reloader) {
	deadline := time.Now().Add(10 * time.Minute)
	for !reload.RunListKnown() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	deleted, err := led.Sweep(time.Now(), p.ProbeIdle(), p.Known, p.KnownIDs())
	if err != nil {
		level.Error(logger).Log("msg", "the state store is damaged", "err", err)
		return
	}
	level.Info(logger).Log("msg", "state store swept", "deleted_runs", deleted, "kept_dropped_runs", led.Kept())
}
