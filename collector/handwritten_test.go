package collector

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

// The hand-written golden case: testdata/handwritten.txt (text) and
// testdata/handwritten.om.txt (OpenMetrics with exemplars and _created
// lines) were written by hand from DESIGN §6 for the store below, and are
// never rewritten by the code: a wrong name, HELP, type, label or value
// fails here, whatever the tables and helpers the code and the other tests
// share. Protobuf is compared after decoding with the text file, and its
// native buckets with values worked out by hand.
//
// Six runs of one workflow, "Invoice extraction" (flow), created at
// 05:31:56.5 (1794029516.5) on 7 November 2026, fetched at 06:00:00
// (1794031200) unless said otherwise:
//
//	…01 seen queued at +29.5 s, running (progress 40) at +59.5 s: it left the
//	    queue at the midpoint, +44.5 s.
//	…02 completed (progress 100) at +90.5 s: a duration of 90.5 s.
//	…03 status "paused" (unknown), no progress, a workflow_id with a quote,
//	    a backslash and a newline, source "café".
//	…04 failed at −1.5 s (before created_at: no duration, never negative),
//	    progress 100, then a fetch that timed out at 06:01:00.
//	…05 never fetched: the API answered 404.
//	…06 created at +100.5 s by the API's clock, yet seen queued and then
//	    running at +29.5 s and +59.5 s: a queue wait of 0, not negative.
//
// The ledger counted …02 and …04 finished, and …01 and …06 out of the
// queue. The store's clock says 07:00:00 (1794034800): its series were
// created then.
func handwrittenStore() *MetricsStore {
	c := time.Date(2026, 11, 7, 5, 31, 56, 500_000_000, time.UTC)
	at := func(seconds float64) time.Time { return c.Add(time.Duration(seconds * float64(time.Second))) }
	fetchedAt := time.Date(2026, 11, 7, 6, 0, 0, 0, time.UTC)
	run := func(n string, status runs.Status, progress float64) *runs.Run {
		return &runs.Run{ID: "0000000" + n + "-0d44-4b50-8888-8dd25736052a", GroupID: "g-1", WorkflowID: "wf-1", WorkflowName: "Invoice extraction",
			WorkflowType: "flow", Source: "api", Status: status, Progress: progress, HasProgress: true, CreatedAt: c}
	}
	state := func(r *runs.Run) *runs.State { return &runs.State{ID: r.ID} }

	r1 := run("1", runs.StatusQueued, 40)
	s1 := state(r1)
	s1.Succeeded(r1, at(29.5), time.Minute)
	r1b := *r1
	r1b.Status = runs.StatusRunning
	s1.Succeeded(&r1b, at(59.5), time.Minute)

	r2 := run("2", runs.StatusCompleted, 100)
	r2.FinishedAt = at(90.5)
	s2 := state(r2)
	s2.Succeeded(r2, fetchedAt, time.Minute)

	r3 := run("3", "paused", 0)
	r3.HasProgress, r3.WorkflowID, r3.Source = false, "wf \"q\" \\ end\ntwo", "café"
	s3 := state(r3)
	s3.Succeeded(r3, fetchedAt, time.Minute)

	r4 := run("4", runs.StatusFailed, 100)
	r4.FinishedAt = at(-1.5)
	s4 := state(r4)
	s4.Succeeded(r4, fetchedAt, time.Minute)
	s4.Failed("timeout", false, fetchedAt.Add(time.Minute), 15*time.Minute)

	s5 := &runs.State{ID: "00000005-0d44-4b50-8888-8dd25736052a"}
	s5.Failed("not_found", true, fetchedAt, 15*time.Minute)

	r6 := run("6", runs.StatusQueued, 40)
	r6.CreatedAt = at(100.5)
	s6 := state(r6)
	s6.Succeeded(r6, at(29.5), time.Minute)
	r6b := *r6
	r6b.Status = runs.StatusRunning
	s6.Succeeded(&r6b, at(59.5), time.Minute)

	s := NewMetricsStore(100)
	s.now = func() time.Time { return time.Date(2026, 11, 7, 7, 0, 0, 0, time.UTC) }
	for _, st := range []*runs.State{s1, s2, s3, s4, s5, s6} {
		s.Update(st)
	}
	wf := runs.WorkflowKey{WorkflowName: "Invoice extraction", WorkflowType: "flow"}
	finished := func(st runs.Status) runs.TotalKey {
		return runs.TotalKey{WorkflowName: wf.WorkflowName, WorkflowType: wf.WorkflowType, Status: st}
	}
	s.AddCounts(runs.Counts{
		Finishes: []runs.Finish{
			{RunID: r2.ID, Key: finished(runs.StatusCompleted), FinishedAt: r2.FinishedAt, Duration: 90500 * time.Millisecond, HasDuration: true},
			{RunID: r4.ID, Key: finished(runs.StatusFailed), FinishedAt: r4.FinishedAt},
		},
		QueueWaits: []runs.QueueWait{
			{RunID: r1.ID, Key: wf, LeftQueue: s1.LeftQueue, Wait: 44500 * time.Millisecond},
			{RunID: r6.ID, Key: wf, LeftQueue: s6.LeftQueue, Wait: 0},
		},
	})
	return s
}

// familyBlocks splits an exposition into its families: each one's
// comment lines as they are, then its samples sorted (the order of the
// series within a family is the store's own business). Family order, and
// every line's bytes, must match.
func familyBlocks(body string) []string {
	var blocks []string
	var comments, samples []string
	flush := func() {
		if len(comments)+len(samples) > 0 {
			sort.Strings(samples)
			blocks = append(blocks, strings.Join(append(comments, samples...), "\n"))
		}
		comments, samples = nil, nil
	}
	for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "# HELP "):
			flush()
			comments = append(comments, l)
		case strings.HasPrefix(l, "#"):
			comments = append(comments, l)
		default:
			samples = append(samples, l)
		}
	}
	flush()
	return blocks
}

func readGolden(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandwrittenGolden(t *testing.T) {
	s := handwrittenStore()
	for _, tc := range []struct {
		file string
		o    WriteOptions
	}{
		{"handwritten.txt", WriteOptions{}},
		{"handwritten.txt", WriteOptions{Gzip: true}},
		{"handwritten.om.txt", WriteOptions{Format: FormatOpenMetrics, CreatedLines: true}},
	} {
		want := readGolden(t, tc.file)
		got := string(scrapeAs(t, s, tc.o))
		if d := scrapetest.DiffLines(familyBlocks(want), familyBlocks(got)); d != "" {
			t.Errorf("%v gzip=%v differs from testdata/%s (- hand-written, + store):\n%s", tc.o.Format, tc.o.Gzip, tc.file, d)
		}
	}
	// The hand-written OpenMetrics is itself valid OpenMetrics.
	decodeAs(t, []byte(readGolden(t, "handwritten.om.txt")), FormatOpenMetrics)
}

func TestHandwrittenGoldenProtobuf(t *testing.T) {
	got := decodeAs(t, scrapeAs(t, handwrittenStore(), WriteOptions{Format: FormatProtobuf, Gzip: true}), FormatProtobuf)
	want := decodeAs(t, []byte(readGolden(t, "handwritten.txt")), FormatText)
	if d := scrapetest.DiffLines(flatten(want), flatten(got)); d != "" {
		t.Errorf("protobuf differs from testdata/handwritten.txt (- hand-written, + store):\n%s", d)
	}
	wantExemplars := exemplarsOf(decodeAs(t, []byte(readGolden(t, "handwritten.om.txt")), FormatOpenMetrics))
	if d := scrapetest.DiffLines(wantExemplars, exemplarsOf(got)); d != "" {
		t.Errorf("protobuf exemplars differ from testdata/handwritten.om.txt's:\n%s", d)
	}

	// Native buckets of schema 3: bucket i holds (2^((i-1)/8), 2^(i/8)].
	// 90.5 s: 2^(51/8) ≈ 83.0 < 90.5 ≤ 2^(52/8) ≈ 90.51, bucket 52.
	// 44.5 s: 2^(43/8) ≈ 41.5 < 44.5 ≤ 2^(44/8) ≈ 45.25, bucket 44.
	// 0 s: the zero bucket.
	span := func(offset int32) []*dto.BucketSpan {
		return []*dto.BucketSpan{{Offset: &offset, Length: proto.Uint32(1)}}
	}
	native := map[string]*dto.Histogram{
		`workflow_runs_finished_duration_seconds{status="completed",workflow_name="Invoice extraction",workflow_type="flow"}`: {
			ZeroCount: proto.Uint64(0), PositiveSpan: span(52), PositiveDelta: []int64{1}},
		`workflow_runs_finished_duration_seconds{status="failed",workflow_name="Invoice extraction",workflow_type="flow"}`:  {ZeroCount: proto.Uint64(0)},
		`workflow_runs_finished_duration_seconds{status="stopped",workflow_name="Invoice extraction",workflow_type="flow"}`: {ZeroCount: proto.Uint64(0)},
		`workflow_runs_queue_wait_seconds{workflow_name="Invoice extraction",workflow_type="flow"}`: {
			ZeroCount: proto.Uint64(1), PositiveSpan: span(44), PositiveDelta: []int64{1}},
	}
	created := time.Date(2026, 11, 7, 7, 0, 0, 0, time.UTC)
	seen := 0
	for _, mf := range got {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{" + labelString(m.GetLabel()) + "}"
			if c := m.GetCounter(); c != nil && !c.GetCreatedTimestamp().AsTime().Equal(created) {
				t.Errorf("%s: created %v, want %v", key, c.GetCreatedTimestamp().AsTime(), created)
			}
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			want, ok := native[key]
			if !ok {
				t.Errorf("unexpected histogram %s", key)
				continue
			}
			seen++
			if h.GetSchema() != 3 || h.GetZeroThreshold() != math.Ldexp(1, -128) || !h.GetCreatedTimestamp().AsTime().Equal(created) ||
				!proto.Equal(&dto.Histogram{ZeroCount: h.ZeroCount, PositiveSpan: h.PositiveSpan, PositiveDelta: h.PositiveDelta}, want) {
				t.Errorf("%s: schema %d, zero threshold %g, created %v, native %v; want schema 3, 2^-128, %v, %v",
					key, h.GetSchema(), h.GetZeroThreshold(), h.GetCreatedTimestamp().AsTime(), &dto.Histogram{ZeroCount: h.ZeroCount, PositiveSpan: h.PositiveSpan, PositiveDelta: h.PositiveDelta}, created, want)
			}
		}
	}
	if seen != len(native) {
		t.Errorf("%d histogram series, want %d", seen, len(native))
	}
}
