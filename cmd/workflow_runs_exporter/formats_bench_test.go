package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

// BenchmarkExporterSlowReaders: 40 clients (--web.max-requests) ask for
// /metrics and never read. For the next 15 s a scrape as Prometheus sends
// it (gzip, 10 s timeout) comes every 500 ms, one after the other; the
// figures are how many of them got the whole body, got 503, or failed, the
// slowest that got through, and the RSS at the end. Every run is finished
// (a plain body of about 2.5 KiB per run).
//
//	WRE_BENCH_SIZES=2000,10000 go test -run '^$' -bench SlowReaders -benchtime 1x ./cmd/workflow_runs_exporter
func BenchmarkExporterSlowReaders(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			env := newBenchEnv(b, n, 1)
			p := env.start()
			p.waitReady(time.Now())
			for b.Loop() {
				for range 40 {
					scrapetest.StallScrape(b, p.addr, "")
				}
				var ok, refused, failed int
				var slowest time.Duration
				for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
					next := time.Now().Add(500 * time.Millisecond)
					start := time.Now()
					resp, _, err := promScrape(p.url("/metrics"), 10*time.Second, "")
					switch {
					case err != nil:
						failed++
					case resp.StatusCode == 503:
						refused++
					case resp.StatusCode == 200:
						ok++
						slowest = max(slowest, time.Since(start))
					default:
						failed++
					}
					time.Sleep(time.Until(next))
				}
				b.ReportMetric(float64(ok), "ok")
				b.ReportMetric(float64(refused), "503s")
				b.ReportMetric(float64(failed), "failed")
				b.ReportMetric(slowest.Seconds()*1e3, "slowest-ok-ms")
				b.ReportMetric(p.rssMiB(), "RSS-MiB")
			}
		})
	}
}
