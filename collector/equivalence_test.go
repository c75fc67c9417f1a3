package collector

import (
	"bytes"
	"compress/gzip"
	"flag"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// reference renders the same states and totals the slow, obviously right
// way: client_golang const metrics, gathered and encoded by client_golang.
// The store must produce the same series, values, HELP and TYPE.
type reference struct {
	states      []*runs.State
	totals      runs.Totals
	progressMax float64
}

func desc(f family, labels ...string) *prometheus.Desc {
	sort.Strings(labels)
	return prometheus.NewDesc(f.name, f.help, labels, nil)
}

func (r reference) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(r, ch) }

func (r reference) Collect(ch chan<- prometheus.Metric) {
	gauge := func(f family, v float64, labels map[string]string) {
		names := make([]string, 0, len(labels))
		for k := range labels {
			names = append(names, k)
		}
		d := desc(f, names...)
		sort.Strings(names)
		values := make([]string, len(names))
		for i, n := range names {
			values[i] = LabelValue(labels[n])
		}
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, values...)
	}
	type wf struct{ name, typ string }
	counts := map[wf]map[string]int{}
	for _, st := range r.states {
		id := map[string]string{"run_id": st.ID}
		gauge(runFamilies[famFetchSuccess], boolValue(st.FetchOK), id)
		if !st.LastSuccess.IsZero() {
			gauge(runFamilies[famLastFetch], unixSeconds(st.LastSuccess), id)
		}
		if !st.FetchOK && st.FailReason != "" {
			gauge(runFamilies[famFetchErrorReason], 1, map[string]string{"run_id": st.ID, "reason": st.FailReason})
		}
		run := st.Run
		if run == nil {
			continue
		}
		labels := func(extra ...string) map[string]string {
			l := map[string]string{"run_id": st.ID, "workflow_id": run.WorkflowID, "workflow_name": run.WorkflowName, "workflow_type": run.WorkflowType}
			for i := 0; i < len(extra); i += 2 {
				l[extra[i]] = extra[i+1]
			}
			return l
		}
		for _, s := range runs.KnownStatuses {
			gauge(runFamilies[famStatus], boolValue(run.Status == s), labels("status", string(s)))
		}
		if !run.Status.Known() {
			gauge(runFamilies[famStatus], 1, labels("status", string(run.Status)))
		}
		if v, ok := run.ProgressRatio(r.progressMax); ok {
			gauge(runFamilies[famProgress], v, labels())
		}
		if d, ok := run.Duration(); ok {
			gauge(runFamilies[famDuration], d.Seconds(), labels())
		}
		if !run.CreatedAt.IsZero() {
			gauge(runFamilies[famCreated], unixSeconds(run.CreatedAt), labels())
		}
		if !run.FinishedAt.IsZero() {
			gauge(runFamilies[famFinished], unixSeconds(run.FinishedAt), labels())
		}
		gauge(runFamilies[famInfo], 1, labels("group_id", run.GroupID, "source", run.Source))
		if t := st.StatusSinceTime(); !t.IsZero() {
			gauge(runFamilies[famStatusSince], unixSeconds(t), labels())
		}
		if !st.ProgressUpdated.IsZero() {
			gauge(runFamilies[famProgressUpdated], unixSeconds(st.ProgressUpdated), labels())
		}
		if d, ok := st.QueueWait(); ok {
			gauge(runFamilies[famQueueWait], d.Seconds(), labels())
		}
		k := wf{LabelValue(run.WorkflowName), LabelValue(run.WorkflowType)}
		if counts[k] == nil {
			counts[k] = map[string]int{}
		}
		counts[k][LabelValue(string(run.Status))]++
	}
	for k, byStatus := range counts {
		statuses := map[string]bool{}
		for _, s := range runs.KnownStatuses {
			statuses[string(s)] = true
		}
		for s := range byStatus {
			statuses[s] = true
		}
		for s := range statuses {
			gauge(aggregateFamilies[famRuns], float64(byStatus[s]), map[string]string{"workflow_name": k.name, "workflow_type": k.typ, "status": s})
		}
	}

	type series struct {
		wf
		status string
	}
	totals := map[series]*runs.Total{}
	for key, t := range r.totals.Finished {
		totals[series{wf{LabelValue(key.WorkflowName), LabelValue(key.WorkflowType)}, string(key.Status)}] = t
	}
	for k := range counts {
		for _, s := range runs.KnownStatuses {
			if _, ok := totals[series{k, string(s)}]; !ok && s.Terminal() {
				totals[series{k, string(s)}] = &runs.Total{Duration: runs.NewHistogram()}
			}
		}
	}
	names := []string{"status", "workflow_name", "workflow_type"}
	for k, t := range totals {
		values := []string{k.status, k.name, k.typ}
		ch <- prometheus.MustNewConstMetric(desc(aggregateFamilies[famFinishedTotal], names...), prometheus.CounterValue, float64(t.Runs), values...)
		buckets := map[float64]uint64{}
		var cumulative uint64
		for i, le := range runs.DurationBuckets {
			cumulative += t.Duration.Buckets[i]
			buckets[le] = cumulative
		}
		ch <- prometheus.MustNewConstHistogram(desc(aggregateFamilies[famFinishedDuration], names...), t.Duration.Count, t.Duration.Sum, buckets, values...)
	}

	waits := map[wf]*runs.Histogram{}
	for key, h := range r.totals.QueueWait {
		waits[wf{LabelValue(key.WorkflowName), LabelValue(key.WorkflowType)}] = h
	}
	for k := range counts {
		if waits[k] == nil {
			waits[k] = runs.NewHistogram()
		}
	}
	for k, h := range waits {
		buckets := map[float64]uint64{}
		var cumulative uint64
		for i, le := range runs.DurationBuckets {
			cumulative += h.Buckets[i]
			buckets[le] = cumulative
		}
		ch <- prometheus.MustNewConstHistogram(desc(aggregateFamilies[famQueueWaits], "workflow_name", "workflow_type"), h.Count, h.Sum, buckets, k.name, k.typ)
	}
}

// scrape writes the store in the text format as a scrape would, plain or
// gzip, and returns the plain text.
func scrape(t testing.TB, s *MetricsStore, gz bool) string {
	t.Helper()
	return string(scrapeAs(t, s, WriteOptions{Gzip: gz}))
}

// scrapeAs writes the store as a scrape would, with o, and returns the
// body, decompressed. An OpenMetrics body gets its "# EOF", which the
// self-metrics' encoder writes in a real scrape.
func scrapeAs(t testing.TB, s *MetricsStore, o WriteOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	e := NewExposition(&buf, o)
	e.WriteRuns(s)
	if o.Format == FormatOpenMetrics {
		e.Write([]byte("# EOF\n"))
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if !o.Gzip {
		return buf.Bytes()
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	plain, err := io.ReadAll(zr) // verifies the CRC-32 and the size
	if err != nil {
		t.Fatalf("gzip body does not decode: %v", err)
	}
	if rest, _ := io.ReadAll(&buf); len(rest) > 0 {
		t.Fatalf("%d bytes after the gzip member", len(rest))
	}
	return plain
}

func parse(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, text)
	}
	return mfs
}

// seriesOf flattens families to "name{sorted labels} type value" lines,
// histograms to one line per bucket, sum and count.
func seriesOf(mfs map[string]*dto.MetricFamily) []string {
	var out []string
	for name, mf := range mfs {
		out = append(out, "# "+name+" "+mf.GetType().String()+" "+mf.GetHelp())
		for _, m := range mf.GetMetric() {
			var l []string
			for _, lp := range m.GetLabel() {
				l = append(l, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(l)
			key := name + "{" + strings.Join(l, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					out = append(out, key+" le="+model.SampleValue(b.GetUpperBound()).String()+" "+model.SampleValue(float64(b.GetCumulativeCount())).String())
				}
				out = append(out, key+" sum "+model.SampleValue(h.GetSampleSum()).String(), key+" count "+model.SampleValue(float64(h.GetSampleCount())).String())
			case dto.MetricType_COUNTER:
				out = append(out, key+" "+model.SampleValue(m.GetCounter().GetValue()).String())
			default:
				out = append(out, key+" "+model.SampleValue(m.GetGauge().GetValue()).String())
			}
		}
	}
	sort.Strings(out)
	return out
}

func encodeReference(t testing.TB, r reference) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

func TestStoreMatchesClientGolang(t *testing.T) {
	states, totals := sampleStates(), sampleTotals()
	want := seriesOf(parse(t, encodeReference(t, reference{states, totals, 100})))
	s := storeOf(states, totals)
	for _, gz := range []bool{false, true} {
		got := seriesOf(parse(t, scrape(t, s, gz)))
		if d := scrapetest.DiffLines(want, got); d != "" {
			t.Errorf("gzip=%v: store output differs from client_golang's (- client_golang, + store):\n%s", gz, d)
		}
	}
}

// TestExpositionIsByteIdenticalPerFamily: within each family the store
// writes the very lines client_golang writes, label order included; only
// the order of series within a family may differ.
func TestExpositionIsByteIdenticalPerFamily(t *testing.T) {
	states, totals := sampleStates(), sampleTotals()
	want := sortedLines(encodeReference(t, reference{states, totals, 100}))
	got := sortedLines(scrape(t, storeOf(states, totals), false))
	if d := scrapetest.DiffLines(want, got); d != "" {
		t.Errorf("lines differ (- client_golang, + store):\n%s", d)
	}
}

func TestExpositionPassesLint(t *testing.T) {
	mfs := parse(t, scrape(t, storeOf(sampleStates(), sampleTotals()), false))
	g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		var out []*dto.MetricFamily
		for _, mf := range mfs {
			out = append(out, mf)
		}
		return out, nil
	})
	problems, err := testutil.GatherAndLint(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestGoldenExposition pins the whole output, as node_exporter's
// e2e-output.txt does: any change to names, HELP, labels or values shows in
// review. Rewrite with: go test ./collector -run TestGoldenExposition -update
func TestGoldenExposition(t *testing.T) {
	got := scrape(t, storeOf(sampleStates(), sampleTotals()), false)
	path := filepath.Join("testdata", "exposition.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if got != string(want) {
		d := scrapetest.DiffLines(strings.Split(string(want), "\n"), strings.Split(got, "\n"))
		if d == "" {
			d = "the same lines, in another order"
		}
		t.Errorf("exposition differs from %s (rewrite with -update if intended):\n%s", path, d)
	}
}

func sortedLines(s string) []string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return lines
}
