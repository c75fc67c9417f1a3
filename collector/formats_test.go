package collector

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

// decodeAs decodes a body of format f with the prometheus/common decoders:
// the text parser, the OpenMetrics 1.0 parser (which checks the grammar,
// exemplars and their 128-character limit included) and the delimited
// protobuf decoder.
func decodeAs(t testing.TB, body []byte, f Format) []*dto.MetricFamily {
	t.Helper()
	var format expfmt.Format
	switch f {
	case FormatText:
		format = expfmt.NewFormat(expfmt.TypeTextPlain)
	case FormatOpenMetrics:
		format = expfmt.FmtOpenMetrics_1_0_0
	case FormatProtobuf:
		format = expfmt.NewFormat(expfmt.TypeProtoDelim)
	}
	mfs, err := scrapetest.Families(bytes.NewReader(body), format)
	if err != nil {
		t.Fatalf("the %v body does not decode: %v\n%s", f, err, body)
	}
	return mfs
}

func (f Format) String() string { return [...]string{"text", "OpenMetrics", "protobuf"}[f] }

// flatten lists every sample of mfs as "name{labels} what value", sorted,
// with each family's help and type; histograms by their classic buckets
// (the implied +Inf bucket left out: _count says it), sum and count.
func flatten(mfs []*dto.MetricFamily) []string {
	var out []string
	for _, mf := range mfs {
		name := mf.GetName()
		out = append(out, "# "+name+" "+mf.GetType().String()+" "+mf.GetHelp())
		for _, m := range mf.GetMetric() {
			key := name + "{" + labelString(m.GetLabel()) + "}"
			v := func(f float64) string { return model.SampleValue(f).String() }
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					if !math.IsInf(b.GetUpperBound(), 1) {
						out = append(out, key+" le="+v(b.GetUpperBound())+" "+v(float64(b.GetCumulativeCount())))
					}
				}
				out = append(out, key+" sum "+v(h.GetSampleSum()), key+" count "+v(float64(h.GetSampleCount())))
			case dto.MetricType_COUNTER:
				out = append(out, key+" "+v(m.GetCounter().GetValue()))
			default:
				out = append(out, key+" "+v(m.GetGauge().GetValue()))
			}
		}
	}
	sort.Strings(out)
	return out
}

func labelString(pairs []*dto.LabelPair) string {
	var l []string
	for _, lp := range pairs {
		l = append(l, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
	}
	sort.Strings(l)
	return strings.Join(l, ",")
}

// exemplarsOf lists the exemplars of mfs, by series and bucket.
func exemplarsOf(mfs []*dto.MetricFamily) []string {
	var out []string
	ex := func(where string, e *dto.Exemplar) {
		if e != nil {
			// OpenMetrics writes the timestamp as float seconds, a few
			// hundred nanoseconds off; Prometheus keeps milliseconds.
			ts := e.GetTimestamp().AsTime().Round(time.Millisecond).Format(time.RFC3339Nano)
			out = append(out, fmt.Sprintf("%s # {%s} %v %s", where, labelString(e.GetLabel()), e.GetValue(), ts))
		}
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{" + labelString(m.GetLabel()) + "}"
			ex(key, m.GetCounter().GetExemplar())
			for _, b := range m.GetHistogram().GetBucket() {
				ex(fmt.Sprintf("%s le=%v", key, b.GetUpperBound()), b.GetExemplar())
			}
		}
	}
	sort.Strings(out)
	return out
}

// storeWithCounts is the sample store with runs counted through AddCounts,
// as the ledger reports them: exemplars on every lifecycle family.
func storeWithCounts() *MetricsStore {
	s := storeOf(sampleStates(), sampleTotals())
	s.now = func() time.Time { return fetched }
	flow := runs.TotalKey{WorkflowName: "Invoice extraction", WorkflowType: "flow", Status: runs.StatusCompleted}
	s.AddCounts(runs.Counts{
		Finishes: []runs.Finish{
			{RunID: id(3), Key: flow, FinishedAt: finished, Duration: 90500 * time.Millisecond, HasDuration: true},
			{RunID: id(30), Key: flow, FinishedAt: finished.Add(time.Hour), Duration: 30 * time.Hour, HasDuration: true},
			{RunID: id(31), Key: runs.TotalKey{WorkflowName: "Résumé parser", WorkflowType: "handler", Status: runs.StatusFailed}},
		},
		QueueWaits: []runs.QueueWait{
			{RunID: id(21), Key: runs.WorkflowKey{WorkflowName: "Invoice extraction", WorkflowType: "flow"}, LeftQueue: created.Add(45 * time.Second), Wait: 45 * time.Second},
		},
	})
	return s
}

// TestFormatsCarryTheSameData: text, OpenMetrics and protobuf, plain and
// gzip, of one store decode to the same families, series and values; the
// two formats with exemplars carry the same ones. (Each format is decoded
// once: its gzip body must decompress to the very bytes of the plain one,
// and OpenMetrics without _created lines is the same less those lines. The
// strict OpenMetrics parser takes seconds per body.)
func TestFormatsCarryTheSameData(t *testing.T) {
	s := storeWithCounts()
	want := flatten(decodeAs(t, scrapeAs(t, s, WriteOptions{}), FormatText))
	var exemplars []string
	for _, f := range []Format{FormatText, FormatOpenMetrics, FormatProtobuf} {
		o := WriteOptions{Format: f, CreatedLines: f == FormatOpenMetrics}
		body := scrapeAs(t, s, o)
		mfs := decodeAs(t, body, f)
		if d := scrapetest.DiffLines(want, flatten(mfs)); d != "" {
			t.Errorf("%v differs from the text format (- text, + %[1]v):\n%s", f, d)
		}
		o.Gzip = true
		if gz := scrapeAs(t, s, o); !bytes.Equal(gz, body) {
			t.Errorf("%v: the gzip body decompresses to other bytes than the plain one", f)
		}
		if f == FormatText {
			continue
		}
		if f == FormatOpenMetrics {
			var withoutCreated []byte
			for _, l := range bytes.SplitAfter(body, []byte("\n")) {
				if !bytes.Contains(l, []byte("_created{")) {
					withoutCreated = append(withoutCreated, l...)
				}
			}
			if got := scrapeAs(t, s, WriteOptions{Format: f}); !bytes.Equal(got, withoutCreated) {
				t.Errorf("OpenMetrics without _created lines is not the same body less them:\n%s", scrapetest.DiffLines(sortedLines(string(withoutCreated)), sortedLines(string(got))))
			}
		}
		got := exemplarsOf(mfs)
		if exemplars == nil {
			exemplars = got
		} else if d := scrapetest.DiffLines(exemplars, got); d != "" {
			t.Errorf("%v: exemplars differ from OpenMetrics':\n%s", f, d)
		}
	}
	if len(exemplars) == 0 {
		t.Error("no exemplars at all")
	}
}

// TestExemplars: each classic bucket carries the last run observed in it,
// and each counter series the last run it counted, with the values and
// timestamps DESIGN §6 gives: duration and finished_at, queue wait and the
// moment the run left the queue, 1 and finished_at (or, without one, when
// it was counted).
func TestExemplars(t *testing.T) {
	s := NewMetricsStore(100)
	counted := time.Date(2026, 11, 7, 9, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return counted }
	flow := runs.TotalKey{WorkflowName: "Invoice extraction", WorkflowType: "flow", Status: runs.StatusFailed}
	wf := runs.WorkflowKey{WorkflowName: "Invoice extraction", WorkflowType: "flow"}
	s.AddCounts(runs.Counts{Finishes: []runs.Finish{
		{RunID: id(1), Key: flow, FinishedAt: finished, Duration: 100 * time.Second, HasDuration: true},
		{RunID: id(2), Key: flow, FinishedAt: finished.Add(time.Second), Duration: 110 * time.Second, HasDuration: true},
		{RunID: id(3), Key: flow, FinishedAt: finished.Add(2 * time.Second), Duration: 5 * time.Second, HasDuration: true},
		{RunID: id(4), Key: flow, FinishedAt: finished.Add(3 * time.Second), Duration: 30 * time.Hour, HasDuration: true},
	}})
	s.AddCounts(runs.Counts{
		Finishes: []runs.Finish{
			{RunID: id(5), Key: flow}, // no finished_at, no duration
			{RunID: strings.Repeat("x", 123), Key: flow, FinishedAt: finished, Duration: time.Second, HasDuration: true},
		},
		QueueWaits: []runs.QueueWait{
			{RunID: id(6), Key: wf, LeftQueue: created.Add(45 * time.Second), Wait: 45 * time.Second},
			{RunID: id(7), Key: wf, LeftQueue: created.Add(50 * time.Second), Wait: 50 * time.Second},
		},
	})
	ts := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	status := `status="failed",workflow_name="Invoice extraction",workflow_type="flow"`
	workflow := `workflow_name="Invoice extraction",workflow_type="flow"`
	want := []string{
		// 1 s, the 123-character run ID: 6+123 characters are over 128,
		// so it is counted but is no exemplar, in its bucket or of the
		// counter; 5 s: id(3).
		`workflow_runs_finished_duration_seconds{` + status + `} le=5 # {run_id="` + id(3) + `"} 5 ` + ts(finished.Add(2*time.Second)),
		// 100 s then 110 s in (60, 120]: the last one.
		`workflow_runs_finished_duration_seconds{` + status + `} le=120 # {run_id="` + id(2) + `"} 110 ` + ts(finished.Add(time.Second)),
		`workflow_runs_finished_duration_seconds{` + status + `} le=+Inf # {run_id="` + id(4) + `"} 108000 ` + ts(finished.Add(3*time.Second)),
		// The counter: the last run counted that can be an exemplar, at
		// the moment it was counted (it has no finished_at).
		`workflow_runs_finished_total{` + status + `} # {run_id="` + id(5) + `"} 1 ` + ts(counted),
		`workflow_runs_queue_wait_seconds{` + workflow + `} le=60 # {run_id="` + id(7) + `"} 50 ` + ts(created.Add(50*time.Second)),
	}
	for _, f := range []Format{FormatOpenMetrics, FormatProtobuf} {
		mfs := decodeAs(t, scrapeAs(t, s, WriteOptions{Format: f}), f)
		if d := scrapetest.DiffLines(want, exemplarsOf(mfs)); d != "" {
			t.Errorf("%v: exemplars (- want, + got):\n%s", f, d)
		}
		if got := flatten(mfs); !contains(got, `workflow_runs_finished_total{`+status+`} 6`) {
			t.Errorf("%v: the run with the long ID is not counted:\n%s", f, strings.Join(got, "\n"))
		}
	}

	// Counts restored from a state store have no exemplars.
	s.SetTotals(runs.Totals{Finished: map[runs.TotalKey]*runs.Total{flow: {Runs: 6, Duration: runs.NewHistogram()}}, QueueWait: map[runs.WorkflowKey]*runs.Histogram{}})
	if got := exemplarsOf(decodeAs(t, scrapeAs(t, s, WriteOptions{Format: FormatOpenMetrics}), FormatOpenMetrics)); len(got) != 0 {
		t.Errorf("exemplars after SetTotals: %v", got)
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// TestCreatedTimestamps: _created lines only when asked for; a series
// has the moment it first appeared (the first run of its workflow, or its
// first count), and none when it was restored from a state store, whose
// counts began before this process.
func TestCreatedTimestamps(t *testing.T) {
	s := NewMetricsStore(100)
	first := time.Date(2026, 11, 7, 9, 0, 0, 0, time.UTC)
	clock := first
	s.now = func() time.Time { return clock }
	s.SetTotals(runs.Totals{Finished: map[runs.TotalKey]*runs.Total{
		{WorkflowName: "Restored", WorkflowType: "flow", Status: runs.StatusFailed}: {Runs: 3, Duration: runs.NewHistogram()},
	}, QueueWait: map[runs.WorkflowKey]*runs.Histogram{}})
	s.Update(fetchedState(baseRun(id(1), runs.StatusRunning))) // Invoice extraction, tracked at first
	clock = first.Add(time.Hour)
	s.AddCounts(runs.Counts{Finishes: []runs.Finish{
		{RunID: id(1), Key: runs.TotalKey{WorkflowName: "Invoice extraction", WorkflowType: "flow", Status: runs.StatusFailed}, FinishedAt: finished},
		{RunID: id(2), Key: runs.TotalKey{WorkflowName: "Untracked", WorkflowType: "flow", Status: runs.StatusFailed}, FinishedAt: finished},
	}})

	without := string(scrapeAs(t, s, WriteOptions{Format: FormatOpenMetrics}))
	if strings.Contains(without, "_created{") {
		t.Errorf("_created lines without --web.openmetrics-created-lines:\n%s", without)
	}
	body := scrapeAs(t, s, WriteOptions{Format: FormatOpenMetrics, CreatedLines: true})
	decodeAs(t, body, FormatOpenMetrics)
	created := map[string]string{}
	for _, l := range strings.Split(string(body), "\n") {
		if name, rest, ok := strings.Cut(l, "_created{"); ok {
			created[name+"{"+rest[:strings.Index(rest, "}")]+"}"] = rest[strings.Index(rest, "} ")+2:]
		}
	}
	unix := func(t time.Time) string { return model.SampleValue(float64(t.Unix())).String() }
	for series, want := range map[string]string{
		// Tracked since first: its zero series, and the one that counted
		// an hour later, began then.
		`workflow_runs_finished{status="failed",workflow_name="Invoice extraction",workflow_type="flow"}`:  unix(first),
		`workflow_runs_finished{status="stopped",workflow_name="Invoice extraction",workflow_type="flow"}`: unix(first),
		`workflow_runs_queue_wait_seconds{workflow_name="Invoice extraction",workflow_type="flow"}`:        unix(first),
		// Counted at once, with no run tracked.
		`workflow_runs_finished{status="failed",workflow_name="Untracked",workflow_type="flow"}`:                  unix(first.Add(time.Hour)),
		`workflow_runs_finished_duration_seconds{status="failed",workflow_name="Untracked",workflow_type="flow"}`: unix(first.Add(time.Hour)),
		// Restored: unknown.
		`workflow_runs_finished{status="failed",workflow_name="Restored",workflow_type="flow"}`: "",
	} {
		got := created[series]
		if got != "" {
			v, _ := strconv.ParseFloat(got, 64)
			got = model.SampleValue(v).String()
		}
		if got != want {
			t.Errorf("%s_created = %q, want %q", series, got, want)
		}
	}

	// Protobuf carries the same, whatever the flag, as client_golang does.
	for _, mf := range decodeAs(t, scrapeAs(t, s, WriteOptions{Format: FormatProtobuf}), FormatProtobuf) {
		for _, m := range mf.GetMetric() {
			ct := m.GetCounter().GetCreatedTimestamp()
			if ct == nil {
				ct = m.GetHistogram().GetCreatedTimestamp()
			}
			restored := strings.Contains(labelString(m.GetLabel()), "Restored")
			if mf.GetType() != dto.MetricType_GAUGE && (ct == nil) != restored {
				t.Errorf("protobuf %s{%s}: created timestamp %v", mf.GetName(), labelString(m.GetLabel()), ct)
			}
		}
	}
}

// TestNativeHistogramsMatchClientGolang: the native buckets in protobuf are
// those a client_golang native histogram of the same schema has after the
// same observations: schema, zero bucket, spans and deltas.
func TestNativeHistogramsMatchClientGolang(t *testing.T) {
	values := []float64{0, 1e-40, 0.3, 1, 1.05, 1.1, 2, 2.2, 90.5, 91, 95, 1000, 7200, 108000, 3e6}
	s := NewMetricsStore(100)
	reference := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Help: "h",
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 1000}) // schema 3: 2^(2^-3) ≈ 1.09
	var c runs.Counts
	for i, v := range values {
		reference.Observe(v)
		c.QueueWaits = append(c.QueueWaits, runs.QueueWait{RunID: id(i), Key: runs.WorkflowKey{WorkflowName: "w", WorkflowType: "flow"},
			Wait: time.Duration(v * float64(time.Second))})
	}
	s.AddCounts(c)
	var want dto.Metric
	if err := reference.Write(&want); err != nil {
		t.Fatal(err)
	}
	var got *dto.Histogram
	for _, mf := range decodeAs(t, scrapeAs(t, s, WriteOptions{Format: FormatProtobuf, Gzip: true}), FormatProtobuf) {
		if mf.GetName() == "workflow_runs_queue_wait_seconds" {
			got = mf.GetMetric()[0].GetHistogram()
		}
	}
	w := want.GetHistogram()
	if got.GetSchema() != w.GetSchema() || got.GetZeroThreshold() != w.GetZeroThreshold() || got.GetZeroCount() != w.GetZeroCount() ||
		got.GetSampleCount() != w.GetSampleCount() ||
		!proto.Equal(&dto.Histogram{PositiveSpan: got.PositiveSpan, PositiveDelta: got.PositiveDelta}, &dto.Histogram{PositiveSpan: w.PositiveSpan, PositiveDelta: w.PositiveDelta}) {
		t.Errorf("native histogram differs from client_golang's:\n got: schema %d zero %v/%d count %d spans %v deltas %v\nwant: schema %d zero %v/%d count %d spans %v deltas %v",
			got.GetSchema(), got.GetZeroThreshold(), got.GetZeroCount(), got.GetSampleCount(), got.GetPositiveSpan(), got.GetPositiveDelta(),
			w.GetSchema(), w.GetZeroThreshold(), w.GetZeroCount(), w.GetSampleCount(), w.GetPositiveSpan(), w.GetPositiveDelta())
	}
	if len(got.GetExemplars()) == 0 {
		t.Error("the native histogram carries no exemplars")
	}
}
