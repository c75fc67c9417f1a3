package api

import (
	"math"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/collector"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// FuzzDecodeRun feeds arbitrary bodies through decoding and the collector:
// whatever the API sends, there is no panic, every label value is valid
// UTF-8, no value is NaN and no duration is negative.
func FuzzDecodeRun(f *testing.F) {
	f.Add([]byte(validBody))
	f.Add([]byte(`{"id":"` + runID + `","status":"paused","progress":"x","created_at":"2023-11-07T05:31:56+02:00","finished_at":"2023-11-07T01:00:00Z"}`))
	f.Add([]byte(`{"id":"` + runID + `","status":"failed","workflow":{"name":"a\"b\nc é &"},"progress":1e308}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		run, _, err := DecodeRun(body, runID)
		if err != nil {
			return
		}
		for _, s := range []string{run.ID, run.GroupID, run.WorkflowID, run.WorkflowName, run.WorkflowType, run.Source, string(run.Status)} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 label value %q", s)
			}
		}
		if d, ok := run.Duration(); ok && d < 0 {
			t.Fatalf("negative duration %s", d)
		}
		snap := &runs.Snapshot{ProgressMax: 100, Runs: []runs.Tracked{{ID: runID, Run: run, FetchOK: true}}}
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(collector.New(func() *runs.Snapshot { return snap }))
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("gathering: %v", err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if v := m.GetGauge().GetValue(); math.IsNaN(v) {
					t.Fatalf("%s is NaN", mf.GetName())
				}
			}
		}
		if _, err := testutil.GatherAndCount(reg); err != nil {
			t.Fatal(err)
		}
	})
}
