package collector

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// MaxLabelLength caps label values taken from the API (workflow name,
// source, ...) in characters. A Prometheus server with
// label_value_length_limit set rejects a whole scrape over one long value,
// so one odd workflow name must not cost every metric.
const MaxLabelLength = 256

// LabelValue makes s safe and bounded as a label value: valid UTF-8 (invalid
// bytes become U+FFFD) and at most MaxLabelLength characters, the longer
// ones cut and ending in "…".
func LabelValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= MaxLabelLength {
		return s
	}
	return string([]rune(s)[:MaxLabelLength-1]) + "…"
}

// appendLabel appends name="value" with the value made safe and escaped as
// the text format requires.
func appendLabel(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, '=', '"')
	b = appendEscaped(b, LabelValue(value))
	return append(b, '"')
}

func appendEscaped(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '"':
			b = append(b, '\\', '"')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendValue formats v as client_golang's text encoder does, so the output
// is the same series for series.
func appendValue(b []byte, v float64) []byte {
	switch {
	case v == 0:
		return append(b, '0')
	case v == 1:
		return append(b, '1')
	case math.IsInf(v, +1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// unixSeconds keeps sub-second precision, so durations and timestamps agree
// with the API to the millisecond. It avoids UnixNano, which overflows for
// dates past the year 2262.
func unixSeconds(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}

// sample is one line being written: name{labels} value.
type sample struct{ b []byte }

func (s *sample) start(name string) { s.b = append(append(s.b, name...), '{') }

func (s *sample) end(v float64) {
	s.b = append(s.b, '}', ' ')
	s.b = appendValue(s.b, v)
	s.b = append(s.b, '\n')
}

// renderedRun is one run's exposition, rendered once per change: the lines
// of every per-run family, back to back, with the offset where each
// family's lines start. It is never modified once built, so a scrape can
// write it while the poller replaces it.
type renderedRun struct {
	id  string
	buf []byte
	off [numRunFamilies + 1]uint32
	// agg is the run's contribution to workflow_runs; hasAgg is false when
	// the run has no data.
	agg    aggregateKey
	status string
	hasAgg bool
	// settled runs are finished and will not change again.
	settled bool
}

func (r *renderedRun) family(f int) []byte { return r.buf[r.off[f]:r.off[f+1]] }

// aggregateKey is a workflow, as its label values are exported.
type aggregateKey struct{ name, typ string }

// renderRun renders the series of one tracked run, in the families
// enabled. A run that was never fetched successfully has only its fetch
// health; a run with data has every series its data supports, and nothing
// is invented for what it lacks. The lines are appended to buf, which the
// result then holds.
func renderRun(st *runs.State, progressMax float64, enabled *[numRunFamilies]bool, buf []byte) *renderedRun {
	rr := &renderedRun{id: st.ID, settled: st.Finished()}
	s := sample{b: buf[:0]}
	var idBuf [64]byte
	runID := appendLabel(idBuf[:0], "run_id", st.ID)

	var workflow []byte // workflow_id="…",workflow_name="…",workflow_type="…"
	r := st.Run
	if r != nil {
		workflow = appendLabel(workflow, "workflow_id", r.WorkflowID)
		workflow = append(workflow, ',')
		workflow = appendLabel(workflow, "workflow_name", r.WorkflowName)
		workflow = append(workflow, ',')
		workflow = appendLabel(workflow, "workflow_type", r.WorkflowType)
		rr.agg = aggregateKey{LabelValue(r.WorkflowName), LabelValue(r.WorkflowType)}
		rr.status, rr.hasAgg = LabelValue(string(r.Status)), true
	}
	// runGauge writes name{run_id,workflow_*} v: the labels of most series.
	runGauge := func(name string, v float64) {
		s.start(name)
		s.b = append(s.b, runID...)
		s.b = append(s.b, ',')
		s.b = append(s.b, workflow...)
		s.end(v)
	}

	for f := range numRunFamilies {
		rr.off[f] = uint32(len(s.b))
		if !enabled[f] {
			continue // a denied family costs nothing, not even rendering
		}
		name := runFamilies[f].name
		switch f {
		case famFetchSuccess:
			s.start(name)
			s.b = append(s.b, runID...)
			s.end(boolValue(st.FetchOK))
		case famLastFetch:
			if !st.LastSuccess.IsZero() {
				s.start(name)
				s.b = append(s.b, runID...)
				s.end(unixSeconds(st.LastSuccess))
			}
		case famFetchErrorReason:
			if !st.FetchOK && st.FailReason != "" {
				s.start(name)
				s.b = appendLabel(s.b, "reason", st.FailReason)
				s.b = append(s.b, ',')
				s.b = append(s.b, runID...)
				s.end(1)
			}
		}
		if r == nil {
			continue
		}
		switch f {
		case famStatus:
			statusLine := func(status string, v float64) {
				s.start(name)
				s.b = append(s.b, runID...)
				s.b = append(s.b, ',')
				s.b = appendLabel(s.b, "status", status)
				s.b = append(s.b, ',')
				s.b = append(s.b, workflow...)
				s.end(v)
			}
			for _, k := range runs.KnownStatuses {
				statusLine(string(k), boolValue(r.Status == k))
			}
			if !r.Status.Known() {
				statusLine(string(r.Status), 1)
			}
		case famProgress:
			if ratio, ok := r.ProgressRatio(progressMax); ok {
				runGauge(name, ratio)
			}
		case famDuration:
			if d, ok := r.Duration(); ok {
				runGauge(name, d.Seconds())
			}
		case famCreated:
			if !r.CreatedAt.IsZero() {
				runGauge(name, unixSeconds(r.CreatedAt))
			}
		case famFinished:
			if !r.FinishedAt.IsZero() {
				runGauge(name, unixSeconds(r.FinishedAt))
			}
		case famInfo:
			s.start(name)
			s.b = appendLabel(s.b, "group_id", r.GroupID)
			s.b = append(s.b, ',')
			s.b = append(s.b, runID...)
			s.b = append(s.b, ',')
			s.b = appendLabel(s.b, "source", r.Source)
			s.b = append(s.b, ',')
			s.b = append(s.b, workflow...)
			s.end(1)
		case famStatusSince:
			if t := st.StatusSinceTime(); !t.IsZero() {
				runGauge(name, unixSeconds(t))
			}
		case famProgressUpdated:
			if !st.ProgressUpdated.IsZero() {
				runGauge(name, unixSeconds(st.ProgressUpdated))
			}
		case famQueueWait:
			if d, ok := st.QueueWait(); ok {
				runGauge(name, d.Seconds())
			}
		}
	}
	rr.off[numRunFamilies] = uint32(len(s.b))
	rr.buf = s.b
	return rr
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
