package main

// End-to-end tests of /metrics as the real binary serves it: slow
// readers, formats and the families lists.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
)

// promScrape scrapes url as Prometheus does: gzip (the transport asks for
// it and decodes it), with its scrape timeout in the header and as the
// deadline of the whole request, body included.
func promScrape(url string, timeout time.Duration, accept string) (*http.Response, []byte, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", fmt.Sprint(timeout.Seconds()))
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestEndToEndSlowReadersDoNotStarveScrapes: as many clients as
// --web.max-requests allows (the default, 40) ask for /metrics and never
// read their answer, whose body (1000 runs with long names, about 8 MiB)
// is far more than the socket buffers hold. A scrape as Prometheus sends
// it still gets the whole body within its timeout.
func TestEndToEndSlowReadersDoNotStarveScrapes(t *testing.T) {
	env := newE2EEnvOf(t, longNamedRuns(1000, 1))
	p := startExporter(t, env.config())
	p.waitReady()
	for range 40 {
		scrapetest.StallScrape(t, p.addr, "")
	}
	const timeout = 10 * time.Second
	resp, body, err := promScrape(p.url("/metrics"), timeout, "")
	if err != nil {
		t.Fatalf("scrape beside 40 stalled ones: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("scrape beside 40 stalled ones: %s %q", resp.Status, body)
	}
	if n := strings.Count(string(body), "\nworkflow_run_info{"); n != 1000 || !strings.Contains(string(body), "\nworkflow_runs_exporter_tracked_runs 1000\n") {
		t.Errorf("the scrape has %d runs' workflow_run_info, want 1000, and the self-metrics", n)
	}
}

// longNamedRuns returns n load-test runs (simapi.LoadRuns), the first
// finished·n finished, with the longest workflow names exported in ten
// workflows and long group IDs: 1000 of them make a body of about 8 MiB,
// more than the socket buffers hold.
func longNamedRuns(n int, finished float64) []simapi.Run {
	list := simapi.LoadRuns(n, finished, e2eStart)
	for i := range list {
		list[i].WorkflowName = fmt.Sprintf("%d %s", i%10, strings.Repeat("a long workflow name ", 12))
		list[i].GroupID = strings.Repeat("g", 200)
	}
	return list
}

// Accept headers as Prometheus sends them.
const (
	acceptOpenMetrics = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	acceptProtobuf    = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)

// runFamilies decodes a /metrics body by its Content-Type and lists the
// samples of the run metrics (workflow_run_*, workflow_runs*), sorted: histograms by
// bucket, sum and count, leaving out the +Inf bucket that only some
// formats write out.
func runFamilies(t *testing.T, contentType string, body []byte) []string {
	t.Helper()
	mfs, err := scrapetest.Families(bytes.NewReader(body), expfmt.Format(contentType))
	if err != nil {
		t.Fatalf("%s body does not decode: %v", contentType, err)
	}
	var out []string
	for _, mf := range mfs {
		if name := mf.GetName(); !strings.HasPrefix(name, "workflow_run") || strings.HasPrefix(name, "workflow_runs_exporter_") {
			continue // the self-metrics change from one scrape to the next
		}
		for _, m := range mf.GetMetric() {
			var l []string
			for _, lp := range m.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(l)
			key := mf.GetName() + "{" + strings.Join(l, ",") + "}"
			v := func(f float64) string { return model.SampleValue(f).String() }
			switch h := m.GetHistogram(); {
			case h != nil:
				for _, b := range h.GetBucket() {
					if b.GetUpperBound() < 1e300 {
						out = append(out, fmt.Sprintf("%s le=%v %d", key, b.GetUpperBound(), b.GetCumulativeCount()))
					}
				}
				out = append(out, key+" sum "+v(h.GetSampleSum()), fmt.Sprintf("%s count %d", key, h.GetSampleCount()))
			case m.GetCounter() != nil:
				out = append(out, key+" "+v(m.GetCounter().GetValue()))
			default:
				out = append(out, key+" "+v(m.GetGauge().GetValue()))
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestEndToEndFormatsAgree: the real binary answers a scrape as Prometheus
// 2 and 3 ask it (OpenMetrics), as a Prometheus with native histograms
// asks it (protobuf) and as curl does (text), each in its Content-Type,
// and the run metrics are the same in all three.
func TestEndToEndFormatsAgree(t *testing.T) {
	env := newE2EEnvOf(t, simapi.LoadRuns(40, 1, e2eStart)) // finished: nothing changes between the scrapes
	// Without the Go collector: in OpenMetrics its go_memstats_alloc_bytes
	// gauge and go_memstats_alloc_bytes_total counter share a family name,
	// which Prometheus reads but the strict parser here refuses.
	p := startExporter(t, env.config(), "--web.disable-exporter-metrics")
	p.waitReady()
	p.waitCycles(1)
	var want []string
	for _, tc := range []struct{ accept, contentType string }{
		{"", "text/plain; version=0.0.4"},
		{acceptOpenMetrics, "application/openmetrics-text; version=1.0.0"},
		{acceptProtobuf, "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"},
	} {
		resp, body, err := promScrape(p.url("/metrics"), 10*time.Second, tc.accept)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("Accept %q: %v %v", tc.accept, resp, err)
		}
		ct := resp.Header.Get("Content-Type")
		if !strings.HasPrefix(ct, tc.contentType) {
			t.Errorf("Accept %q: Content-Type %q, want %q", tc.accept, ct, tc.contentType)
		}
		got := runFamilies(t, ct, body)
		if want == nil {
			want = got
			if len(want) < 40*10 {
				t.Fatalf("only %d run samples in the text scrape", len(want))
			}
			continue
		}
		if d := scrapetest.DiffLines(want, got); d != "" {
			t.Errorf("%s differs from the text format (- text, + it):\n%s", ct, d)
		}
	}
}

// leanAllowlist keeps what the shipped alerts and the run tables need, and
// the aggregates and self-metrics; README, Performance, has its sizing.
const leanAllowlist = "workflow_run_status,workflow_run_created_timestamp_seconds,workflow_run_finished_timestamp_seconds,workflow_run_progress_updated_timestamp_seconds,workflow_runs.*"

// TestEndToEndFamilyLists: a lean --metric-allowlist serves only its
// families, the per-run ones and the self-metrics alike; an entry naming
// no family is a warning; both lists at once, or a bad regular
// expression, stop the exporter with exit 1 naming the flag.
func TestEndToEndFamilyLists(t *testing.T) {
	env := newE2EEnv(t, 30)
	p := startExporter(t, env.config(), "--metric-allowlist="+leanAllowlist+",workflow_run_renamed_in_v9")
	p.waitReady()
	p.waitCycles(1)
	mfs := p.scrape()
	for name := range mfs {
		switch {
		case name == "workflow_run_status", name == "workflow_run_created_timestamp_seconds", name == "workflow_run_finished_timestamp_seconds",
			name == "workflow_run_progress_updated_timestamp_seconds", strings.HasPrefix(name, "workflow_runs"):
		default:
			t.Errorf("%s served outside the allowlist", name)
		}
	}
	for _, name := range []string{"workflow_run_status", "workflow_runs", "workflow_runs_exporter_tracked_runs"} {
		if mfs[name] == nil {
			t.Errorf("%s not served", name)
		}
	}
	if logs := p.logs.String(); !strings.Contains(logs, "entry=workflow_run_renamed_in_v9") || !strings.Contains(logs, "flag=--metric-allowlist") {
		t.Errorf("no warning naming the unknown family; log:\n%s", logs)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--metric-allowlist=workflow_run_status", "--metric-denylist=go_.*"}, "--metric-allowlist and --metric-denylist"},
		{[]string{"--metric-denylist=workflow_run_(info"}, `--metric-denylist: "workflow_run_(info" is not`},
	} {
		code, out := exitOf(t, append([]string{env.config()}, tc.args...)...)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want 1 with %q:\n%s", tc.args, code, tc.want, out)
		}
	}
}
