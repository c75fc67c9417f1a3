package poller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/fetch"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// BenchmarkIdleCycle is a poll cycle when every tracked run is finished:
// no request, nothing to publish. Run with:
//
//	go test -run '^$' -bench IdleCycle -benchmem ./internal/poller
func BenchmarkIdleCycle(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			api := newFakeAPI()
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("%08x-0d44-4b50-8888-8dd25736052a", i)
				api.set(ids[i], ok(runs.StatusCompleted, 100))
			}
			store := collector.NewMetricsStore(100)
			p := New(Options{Logger: log.NewNopLogger(), Registerer: prometheus.NewRegistry(), MetricsStore: store})
			p.Apply(api, Settings{IDs: ids, Interval: time.Hour, Concurrency: 8, MaxRequestsPerSecond: 1e9, ProgressMax: 100, ProbeMaxRuns: 1})
			<-p.startCycle(context.Background()).done // the first cycle fetches every run
			if api.totalCalls() != n || store.Len() != n {
				b.Fatalf("%d calls, %d runs in the store", api.totalCalls(), store.Len())
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				<-p.startCycle(context.Background()).done
			}
			if api.totalCalls() != n {
				b.Fatalf("idle cycles made %d requests", api.totalCalls()-n)
			}
		})
	}
}

// BenchmarkRecord is the poller's share of one run refresh once the API
// answered: the state change, its log checks, and the render and swap in
// the run metrics store.
func BenchmarkRecord(b *testing.B) {
	store := collector.NewMetricsStore(100)
	p := New(Options{Logger: log.NewNopLogger(), Registerer: prometheus.NewRegistry(), MetricsStore: store})
	const n = 10000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-0d44-4b50-8888-8dd25736052a", i)
	}
	p.Apply(newFakeAPI(), Settings{IDs: ids, Interval: time.Hour, Concurrency: 8, MaxRequestsPerSecond: 1e9, ProgressMax: 100, ProbeMaxRuns: 1})
	r := ok(runs.StatusRunning, 10).run
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		run := *r
		run.ID, run.Progress = ids[i%n], float64(i%100)
		p.record(ids[i%n], fetch.Result{Run: &run}, false)
		i++
	}
}
