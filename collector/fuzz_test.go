package collector

import (
	"math"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

// FuzzExposition takes whatever the API may send through decoding, the run
// state and the store: the exposition always parses, plain and gzip say
// the same, protobuf (transcoded from the text lines) carries the same
// series and values, and no value is NaN or a negative duration.
func FuzzExposition(f *testing.F) {
	const runID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	f.Add([]byte(`{"id":"` + runID + `","status":"completed","progress":100,"created_at":"2023-11-07T05:31:56Z","finished_at":"2023-11-07T05:32:56.5Z","workflow":{"id":"w","name":"Invoice extraction","type":"flow"},"source":"api","group_id":"g"}`))
	f.Add([]byte(`{"id":"` + runID + `","status":"paused","progress":"x","created_at":"2023-11-07T05:31:56+02:00","finished_at":"2023-11-07T01:00:00Z"}`))
	f.Add([]byte("{\"id\":\"" + runID + "\",\"status\":\"fa\\\"il\\\\ed\\n\",\"workflow\":{\"name\":\"a\xff\\\"b\\nc \u00e9 &\"},\"progress\":1e308}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		run, _, err := api.DecodeRun(body, runID)
		if err != nil {
			return
		}
		st := &runs.State{ID: runID}
		st.Succeeded(run, time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC), time.Minute)
		s := storeOf([]*runs.State{st}, runs.Totals{})
		plain := scrape(t, s, false)
		if gz := scrape(t, s, true); gz != plain {
			t.Fatalf("gzip body differs from the plain one")
		}
		text := decodeAs(t, []byte(plain), FormatText)
		pb := decodeAs(t, scrapeAs(t, s, WriteOptions{Format: FormatProtobuf}), FormatProtobuf)
		if d := scrapetest.DiffLines(flatten(text), flatten(pb)); d != "" {
			t.Fatalf("protobuf differs from text (- text, + protobuf):\n%s", d)
		}
		for name, mf := range parse(t, plain) {
			for _, m := range mf.GetMetric() {
				v := m.GetGauge().GetValue()
				if math.IsNaN(v) || name == "workflow_run_duration_seconds" && v < 0 {
					t.Fatalf("%s = %v", name, v)
				}
			}
		}
	})
}
