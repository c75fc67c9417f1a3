package collector

import (
	"bytes"
	"math"
	"sort"
	"sync/atomic"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// The aggregate families have one series per workflow (and status), not
// per run: they are built as client_model MetricFamily messages when they
// change, and encoded by expfmt in each format a scrape asks for, with
// their exemplars, native buckets and created timestamps.

// workflowRuns counts a workflow's tracked runs by status.
type workflowRuns struct {
	byStatus map[string]int
	// since is when the store first held a run of the workflow: the
	// creation of its lifecycle series that have counted nothing yet.
	since time.Time
}

// seriesKey is one series of the lifecycle families, by its exported label
// values: of workflow_runs_finished_total and the duration histogram, or
// (queue) of the queue-wait histogram, which has no status.
type seriesKey struct {
	queue  bool
	wf     aggregateKey
	status string
}

func finishedKey(k runs.TotalKey) seriesKey {
	return seriesKey{wf: aggregateKey{LabelValue(k.WorkflowName), LabelValue(k.WorkflowType)}, status: LabelValue(string(k.Status))}
}

func queueKey(k runs.WorkflowKey) seriesKey {
	return seriesKey{queue: true, wf: aggregateKey{LabelValue(k.WorkflowName), LabelValue(k.WorkflowType)}}
}

// exemplar is the run an exemplar points to; runID is empty for none.
type exemplar struct {
	runID string
	value float64
	ts    time.Time
}

// maxExemplarRunes is OpenMetrics' limit on an exemplar's label names and
// values together, in characters.
const maxExemplarRunes = 128

// exemplarOf returns the exemplar of run id, or none when its label would
// be over OpenMetrics' limit (run IDs are UUIDs, far below it).
func exemplarOf(id string, value float64, ts time.Time) exemplar {
	id = LabelValue(id)
	if id == "" || utf8.RuneCountInString("run_id")+utf8.RuneCountInString(id) > maxExemplarRunes {
		return exemplar{}
	}
	return exemplar{runID: id, value: value, ts: ts}
}

// set makes next the exemplar, unless it is none: a run whose ID cannot
// be an exemplar leaves the one before.
func (e *exemplar) set(next exemplar) {
	if next.runID != "" {
		*e = next
	}
}

func (e exemplar) proto() *dto.Exemplar {
	if e.runID == "" {
		return nil
	}
	return &dto.Exemplar{Label: []*dto.LabelPair{labelPair("run_id", e.runID)}, Value: proto.Float64(e.value), Timestamp: timestamppb.New(e.ts)}
}

// seriesMeta is what the totals do not hold about a series that counted
// runs: when it was created, and the exemplar of the last run it counted,
// as a whole and in each classic bucket. Exemplars are not kept across
// restarts.
type seriesMeta struct {
	// created is zero when unknown: the series was restored from a state
	// store, and counted from before this process.
	created time.Time
	counter exemplar
	buckets []exemplar // len(runs.DurationBuckets)+1, the last for +Inf
}

func (m *seriesMeta) clone() *seriesMeta {
	c := *m
	c.buckets = append([]exemplar(nil), m.buckets...)
	return &c
}

// aggregateInput is what the aggregate families are built from, copied
// from the store under its lock.
type aggregateInput struct {
	workflows map[aggregateKey]workflowRuns
	totals    runs.Totals
	meta      map[seriesKey]*seriesMeta
	enabled   [numAggregateFamilies]bool
}

// aggregates are the encodings of the aggregate families of one version
// of the store, each made on first use. The MetricFamily messages are not
// kept: they take more memory than the encodings (some 2.5 KiB per
// histogram series), and a Prometheus asks for one format.
type aggregates struct {
	version uint64
	encoded [numVariants]atomic.Pointer[piece]
}

// variant is one way of writing the aggregates: a format, with or without
// OpenMetrics' _created lines.
type variant int

const numVariants = 2 * numFormats

func variantOf(o WriteOptions) variant {
	v := variant(o.Format) * 2
	if o.CreatedLines && o.Format == FormatOpenMetrics {
		v++
	}
	return v
}

// encodeAggregates writes families as o asks.
func encodeAggregates(families []*dto.MetricFamily, o WriteOptions) *piece {
	var buf bytes.Buffer
	var opts []expfmt.EncoderOption
	if o.CreatedLines {
		opts = append(opts, expfmt.WithCreatedLines())
	}
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(o.Format.formatType()), opts...)
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			panic("collector: the aggregates do not encode: " + err.Error()) // built here, valid by construction
		}
	}
	// No Close: the OpenMetrics "# EOF" ends the whole body, after the
	// self-metrics.
	return newPiece(buf.Bytes())
}

// buildAggregates builds workflow_runs and the lifecycle families.
func buildAggregates(in aggregateInput) []*dto.MetricFamily {
	keys := make([]aggregateKey, 0, len(in.workflows))
	for k := range in.workflows {
		keys = append(keys, k)
	}
	sortKeys(keys)

	var out []*dto.MetricFamily
	add := func(f int, metrics []*dto.Metric) {
		if in.enabled[f] && len(metrics) > 0 {
			fam := aggregateFamilies[f]
			out = append(out, &dto.MetricFamily{Name: &fam.name, Help: &fam.help, Type: fam.typ.Enum(), Metric: metrics})
		}
	}

	var running []*dto.Metric
	for _, k := range keys {
		if !in.enabled[famRuns] {
			break // a denied family is not built at all
		}
		byStatus := in.workflows[k].byStatus
		// Every known status is present, zero or not, so that a panel or
		// alert on status="failed" sees 0 rather than no data.
		statuses := make([]string, 0, len(runs.KnownStatuses)+1)
		for _, st := range runs.KnownStatuses {
			statuses = append(statuses, string(st))
		}
		var unknown []string
		for st := range byStatus {
			if !runs.Status(st).Known() {
				unknown = append(unknown, st)
			}
		}
		sort.Strings(unknown)
		for _, st := range append(statuses, unknown...) {
			running = append(running, &dto.Metric{Label: workflowLabels(k, "status", st), Gauge: &dto.Gauge{Value: proto.Float64(float64(byStatus[st]))}})
		}
	}
	add(famRuns, running)

	if !in.enabled[famFinishedDuration] && !in.enabled[famFinishedTotal] && !in.enabled[famQueueWaits] {
		return out
	}
	finished, queue := lifecycleSeries(in, keys)
	var durations, counts, waits []*dto.Metric
	for _, s := range finished {
		labels := workflowLabels(s.key.wf, "status", s.key.status)
		durations = append(durations, histogramMetric(labels, s.hist, s.meta, s.created))
		c := &dto.Counter{Value: proto.Float64(float64(s.runs))}
		if s.meta != nil {
			c.Exemplar = s.meta.counter.proto()
		}
		if !s.created.IsZero() {
			c.CreatedTimestamp = timestamppb.New(s.created)
		}
		counts = append(counts, &dto.Metric{Label: labels, Counter: c})
	}
	for _, s := range queue {
		waits = append(waits, histogramMetric(workflowLabels(s.key.wf, "", ""), s.hist, s.meta, s.created))
	}
	add(famFinishedDuration, durations)
	add(famFinishedTotal, counts)
	add(famQueueWaits, waits)
	return out
}

// lifecycle is one series of the lifecycle families.
type lifecycle struct {
	key     seriesKey
	runs    uint64
	hist    *runs.Histogram
	meta    *seriesMeta // nil for a series that counted nothing yet
	created time.Time
}

// lifecycleSeries merges the totals by their exported label values (two
// names cut to the same 256 characters must not make duplicate series) and
// adds zero series for every workflow now tracked: its terminal statuses
// and its queue wait, so that increase() counts its first run too.
func lifecycleSeries(in aggregateInput, tracked []aggregateKey) (finished, queue []lifecycle) {
	all := map[seriesKey]*lifecycle{}
	get := func(k seriesKey) *lifecycle {
		s := all[k]
		if s == nil {
			s = &lifecycle{key: k, hist: runs.NewHistogram(), meta: in.meta[k]}
			switch {
			case s.meta != nil:
				s.created = s.meta.created
			default: // a zero series of a tracked workflow
				s.created = in.workflows[k.wf].since
			}
			all[k] = s
		}
		return s
	}
	for k, t := range in.totals.Finished {
		s := get(finishedKey(k))
		s.runs += t.Runs
		s.hist.Merge(t.Duration)
	}
	for k, h := range in.totals.QueueWait {
		get(queueKey(k)).hist.Merge(h)
	}
	for _, wf := range tracked {
		for _, st := range runs.KnownStatuses {
			if st.Terminal() {
				get(seriesKey{wf: wf, status: string(st)})
			}
		}
		get(seriesKey{queue: true, wf: wf})
	}
	for _, s := range all {
		if s.key.queue {
			queue = append(queue, *s)
		} else {
			finished = append(finished, *s)
		}
	}
	less := func(a, b lifecycle) bool {
		if a.key.status != b.key.status {
			return a.key.status < b.key.status
		}
		return lessKey(a.key.wf, b.key.wf)
	}
	sort.Slice(finished, func(i, j int) bool { return less(finished[i], finished[j]) })
	sort.Slice(queue, func(i, j int) bool { return less(queue[i], queue[j]) })
	return finished, queue
}

// histogramMetric is one histogram series in both forms: classic buckets
// (with the exemplar of the last run observed in each) and native buckets
// of schema runs.NativeSchema, which only the protobuf format carries.
func histogramMetric(labels []*dto.LabelPair, h *runs.Histogram, meta *seriesMeta, created time.Time) *dto.Metric {
	hist := &dto.Histogram{
		SampleCount:   proto.Uint64(h.Count),
		SampleSum:     proto.Float64(h.Sum),
		Schema:        proto.Int32(runs.NativeSchema),
		ZeroThreshold: proto.Float64(runs.NativeZeroThreshold),
		ZeroCount:     proto.Uint64(h.ZeroCount),
	}
	var exemplars []exemplar
	if meta != nil {
		exemplars = meta.buckets
	}
	var cumulative uint64
	for i, le := range runs.DurationBuckets {
		cumulative += h.Buckets[i]
		b := &dto.Bucket{CumulativeCount: proto.Uint64(cumulative), UpperBound: proto.Float64(le)}
		if exemplars != nil {
			b.Exemplar = exemplars[i].proto()
		}
		hist.Bucket = append(hist.Bucket, b)
	}
	// The +Inf bucket is implied; it is written out only to carry an
	// exemplar, as client_golang does.
	if exemplars != nil && exemplars[len(runs.DurationBuckets)].runID != "" {
		hist.Bucket = append(hist.Bucket, &dto.Bucket{CumulativeCount: proto.Uint64(h.Count), UpperBound: proto.Float64(math.Inf(1)),
			Exemplar: exemplars[len(runs.DurationBuckets)].proto()})
	}
	hist.PositiveSpan, hist.PositiveDelta = nativeSpans(h.Native)
	// The native form's exemplars (Prometheus 3 reads them there): those
	// of the classic buckets, oldest first.
	for _, b := range hist.Bucket {
		if b.Exemplar != nil {
			hist.Exemplars = append(hist.Exemplars, b.Exemplar)
		}
	}
	sort.SliceStable(hist.Exemplars, func(i, j int) bool {
		return hist.Exemplars[i].GetTimestamp().AsTime().Before(hist.Exemplars[j].GetTimestamp().AsTime())
	})
	if !created.IsZero() {
		hist.CreatedTimestamp = timestamppb.New(created)
	}
	return &dto.Metric{Label: labels, Histogram: hist}
}

// nativeSpans encodes native bucket counts as spans and deltas, as
// client_golang does: a gap of one or two empty buckets is filled in
// rather than starting a new span.
func nativeSpans(buckets map[int]uint64) ([]*dto.BucketSpan, []int64) {
	if len(buckets) == 0 {
		return nil, nil
	}
	indices := make([]int, 0, len(buckets))
	for i := range buckets {
		indices = append(indices, i)
	}
	sort.Ints(indices)
	var (
		spans  []*dto.BucketSpan
		deltas []int64
		prev   int64
		next   int
	)
	appendDelta := func(count int64) {
		*spans[len(spans)-1].Length++
		deltas = append(deltas, count-prev)
		prev = count
	}
	for n, i := range indices {
		gap := i - next
		if n == 0 || gap > 2 {
			spans = append(spans, &dto.BucketSpan{Offset: proto.Int32(int32(gap)), Length: proto.Uint32(0)})
		} else {
			for range gap {
				appendDelta(0)
			}
		}
		appendDelta(int64(buckets[i]))
		next = i + 1
	}
	return spans, deltas
}

func labelPair(name, value string) *dto.LabelPair { return &dto.LabelPair{Name: &name, Value: &value} }

// workflowLabels are the labels of an aggregate series, sorted by name:
// extra (status; empty for none), workflow_name, workflow_type.
func workflowLabels(k aggregateKey, extra, value string) []*dto.LabelPair {
	var out []*dto.LabelPair
	if extra != "" {
		out = append(out, labelPair(extra, value))
	}
	return append(out, labelPair("workflow_name", k.name), labelPair("workflow_type", k.typ))
}

func sortKeys(keys []aggregateKey) {
	sort.Slice(keys, func(i, j int) bool { return lessKey(keys[i], keys[j]) })
}

func lessKey(a, b aggregateKey) bool {
	if a.name != b.name {
		return a.name < b.name
	}
	return a.typ < b.typ
}
