package api

import (
	"bytes"
	"reflect"
	"strings"
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
	// Duplicate keys: encoding/json keeps the last value, and the last
	// workflow object whole.
	f.Add([]byte(`{"id":"` + runID + `","status":"running","workflow":{"name":"a","id":"w1"},"workflow":{"type":"flow"}}`))
	f.Add([]byte(`{"id":"` + runID + `","status":"running","status":"failed","progress":5,"progress":null}`))
	f.Add([]byte(`{"ID":"` + runID + `","Status":"running"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		run, warnings, err := DecodeRun(body, runID)
		// The one-pass decoding says what the field-by-field one says.
		slowRun, slowWarnings, slowErr := decodeFieldByField(bytes.TrimSpace(body), runID)
		if (err == nil) != (slowErr == nil) || !reflect.DeepEqual(run, slowRun) || strings.Join(warnings, "|") != strings.Join(slowWarnings, "|") {
			t.Fatalf("DecodeRun = %+v %q %v; field by field = %+v %q %v", run, warnings, err, slowRun, slowWarnings, slowErr)
		}
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
