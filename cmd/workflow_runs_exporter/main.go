// Command workflow_runs_exporter serves Prometheus metrics about the runs of
// an AI workflow platform. This file only parses flags and wires the parts
// together; the logic lives in packages the tests import.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
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
	sloggokit "github.com/tjhop/slog-gokit"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/exporter"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
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
	logger, slogger := newLoggers(logConfig)

	load := func() (*config.Config, error) { return config.LoadFile(*configFile) }
	if *demo {
		demoLoad, stop, err := startDemo(logger)
		if err != nil {
			level.Error(logger).Log("msg", "starting the simulated API failed", "err", err)
			return 1
		}
		defer stop()
		load = demoLoad
	}

	if *configCheck {
		return checkConfig(load, *webFlags.WebConfigFile)
	}

	level.Info(logger).Log("msg", "starting "+name, "version", version.Info(), "build_context", version.BuildContext())
	if *webFlags.WebConfigFile != "" {
		if err := web.Validate(*webFlags.WebConfigFile); err != nil {
			level.Error(logger).Log("msg", "invalid --web.config.file", "file", *webFlags.WebConfigFile, "err", err)
			return 1
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector(name))
	exp := exporter.New(exporter.Options{Logger: logger, Registerer: reg, Load: load})
	if err := exp.Reload(); err != nil {
		return 1 // Reload logged the error, naming the field.
	}

	gatherer, instrument := prometheus.Gatherer(reg), prometheus.Registerer(nil)
	if !*disableExporterMetrics {
		// Runtime metrics live in their own registry, as in node_exporter,
		// so the flag can leave them out without touching the run metrics.
		runtime := prometheus.NewRegistry()
		runtime.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		gatherer, instrument = collector.Concat(runtime, reg), runtime
	}
	handler, err := exp.Handler(exporter.HandlerOptions{MetricsPath: *metricsPath, Gatherer: gatherer, Instrument: instrument})
	if err != nil {
		level.Error(logger).Log("msg", "building the HTTP handler failed", "err", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	polling := make(chan struct{})
	go func() {
		defer close(polling)
		exp.Run(ctx)
	}()

	srv := &http.Server{
		Handler: handler,
		// A slow or stuck client must not hold a connection, and with it a
		// goroutine, for long.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- web.ListenAndServe(srv, webFlags, slogger) }()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-serveErr:
			level.Error(logger).Log("msg", "HTTP server failed", "err", err)
			return 1
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				_ = exp.Reload() // logged; the old configuration stays in force
				continue
			}
			level.Info(logger).Log("msg", "shutting down", "signal", sig)
			cancel() // stops polling and cancels in-flight API requests
			shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
			defer done()
			if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				level.Warn(logger).Log("msg", "in-flight scrapes did not finish in time", "err", err)
			}
			<-polling
			return 0
		}
	}
}

// checkConfig implements --config.check.
func checkConfig(load func() (*config.Config, error), webConfigFile string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "%s: invalid configuration: %v\n", name, err)
		return 1
	}
	cfg, err := load()
	if err != nil {
		return fail(err)
	}
	ids, err := cfg.RunIDs()
	if err != nil {
		return fail(err)
	}
	if _, err := exporter.NewClient(cfg, nil); err != nil {
		return fail(err)
	}
	if webConfigFile != "" {
		if err := web.Validate(webConfigFile); err != nil {
			return fail(fmt.Errorf("--web.config.file %s: %w", webConfigFile, err))
		}
	}
	fmt.Printf("configuration is valid: %d runs, API %s\n", len(ids), cfg.API.URL)
	return 0
}

// newLoggers builds the go-kit logger the exporter logs with, from the
// standard --log.level and --log.format flags, and bridges it to the
// *slog.Logger the exporter-toolkit takes, so there is one logging setup.
func newLoggers(c *promslog.Config) (log.Logger, *slog.Logger) {
	w := log.NewSyncWriter(os.Stderr)
	var base log.Logger
	if c.Format.String() == "json" {
		base = log.NewJSONLogger(w)
	} else {
		base = log.NewLogfmtLogger(w)
	}
	base = level.NewFilter(base, level.Allow(level.ParseDefault(c.Level.String(), level.InfoValue())))
	// The bridge adds its own time and caller, taken from the slog record.
	slogger := slog.New(sloggokit.NewGoKitHandler(base, c.Level.Level()))
	return log.With(base, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller), slogger
}

// startDemo serves the simulated API on a loopback port and returns a
// configuration loader that watches its sample runs.
func startDemo(logger log.Logger) (func() (*config.Config, error), func(), error) {
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, nil, err
	}
	secret := hex.EncodeToString(token)
	sim := simapi.New(secret, simapi.SampleRuns(60, uint64(time.Now().UnixNano()), time.Now()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String()
	level.Info(logger).Log("msg", "demo: serving the simulated API", "url", url, "runs", len(sim.IDs()))
	load := func() (*config.Config, error) { return config.Demo(url, secret, sim.IDs()), nil }
	return load, func() { srv.Close() }, nil
}
