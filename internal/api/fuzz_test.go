package api

import (
	"testing"
	"unicode/utf8"
)

// FuzzDecodeRun feeds arbitrary bodies through decoding: whatever the API
// sends, there is no panic, the run is the requested one, every text is
// valid UTF-8, and no duration is negative. collector.FuzzExposition takes
// the decoded runs on through the metrics.
func FuzzDecodeRun(f *testing.F) {
	f.Add([]byte(validBody))
	f.Add([]byte(`{"id":"` + runID + `","status":"paused","progress":"x","created_at":"2023-11-07T05:31:56+02:00","finished_at":"2023-11-07T01:00:00Z"}`))
	f.Add([]byte(`{"id":"` + runID + `","status":"failed","workflow":{"name":"a\"b\nc é &"},"progress":1e308}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		run, _, err := DecodeRun(body, runID)
		if err != nil {
			return
		}
		if run.ID != runID {
			t.Fatalf("decoded run %q, want %q", run.ID, runID)
		}
		for _, s := range []string{run.GroupID, run.WorkflowID, run.WorkflowName, run.WorkflowType, run.Source, string(run.Status)} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 %q", s)
			}
		}
		if d, ok := run.Duration(); ok && d < 0 {
			t.Fatalf("negative duration %s", d)
		}
		if run.HasProgress && !(run.Progress >= 0) {
			t.Fatalf("progress %v kept", run.Progress)
		}
	})
}
