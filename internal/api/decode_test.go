package api

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

func TestDecodeRunFields(t *testing.T) {
	doc := func(fields string) []byte {
		return []byte(`{"id":"` + runID + `","status":"running"` + fields + `}`)
	}
	longName := strings.Repeat("é", 1000)
	for _, tc := range []struct {
		name     string
		body     []byte
		check    func(t *testing.T, r *runs.Run)
		warnings []string
	}{
		{name: "fractional seconds and a non-Z offset", body: doc(`,"created_at":"2023-11-07T07:31:56.123456+02:00","finished_at":"2023-11-07T05:32:06.623Z"`),
			check: func(t *testing.T, r *runs.Run) {
				want := time.Date(2023, 11, 7, 5, 31, 56, 123456000, time.UTC)
				if !r.CreatedAt.Equal(want) {
					t.Errorf("created_at = %s, want %s", r.CreatedAt, want)
				}
				if d, ok := r.Duration(); !ok || d != 10499544*time.Microsecond {
					t.Errorf("duration = %s %v, want 10.499544s", d, ok)
				}
			}},
		{name: "offset-less time is taken as UTC", body: doc(`,"created_at":"2023-11-07T05:31:56.5"`),
			check: func(t *testing.T, r *runs.Run) {
				if want := time.Date(2023, 11, 7, 5, 31, 56, 5e8, time.UTC); !r.CreatedAt.Equal(want) {
					t.Errorf("created_at = %s, want %s", r.CreatedAt, want)
				}
			}},
		{name: "unparsable time is left out", body: doc(`,"created_at":"yesterday"`), warnings: []string{"created_at is not an RFC 3339 time"},
			check: func(t *testing.T, r *runs.Run) {
				if !r.CreatedAt.IsZero() {
					t.Errorf("created_at = %s, want zero", r.CreatedAt)
				}
			}},
		{name: "finished_at before created_at: both kept, no duration (the model's problem, not the decoder's)", body: doc(`,"created_at":"2023-11-07T05:31:56Z","finished_at":"2023-11-07T05:30:00Z"`),
			check: func(t *testing.T, r *runs.Run) {
				if d, ok := r.Duration(); ok {
					t.Errorf("duration = %s, want none", d)
				}
			}},
		{name: "unknown status is kept verbatim", body: []byte(`{"id":"` + runID + `","status":"paused"}`),
			check: func(t *testing.T, r *runs.Run) {
				if r.Status != "paused" || r.Status.Known() {
					t.Errorf("status = %q", r.Status)
				}
			}},
		{name: "null workflow, progress and dates", body: doc(`,"workflow":null,"progress":null,"created_at":null,"finished_at":null`),
			check: func(t *testing.T, r *runs.Run) {
				if r.WorkflowName != "" || r.HasProgress || !r.CreatedAt.IsZero() {
					t.Errorf("run = %+v, want empty optional fields", r)
				}
			}},
		{name: "progress as a string is left out", body: doc(`,"progress":"42"`), warnings: []string{"progress is not a number"},
			check: func(t *testing.T, r *runs.Run) {
				if r.HasProgress {
					t.Errorf("progress = %v, want none", r.Progress)
				}
			}},
		{name: "negative progress is left out", body: doc(`,"progress":-3`), warnings: []string{"progress is negative"},
			check: func(t *testing.T, r *runs.Run) {
				if r.HasProgress {
					t.Errorf("progress = %v, want none", r.Progress)
				}
			}},
		{name: "workflow of the wrong type", body: doc(`,"workflow":"flow"`), warnings: []string{"workflow is not an object"}},
		{name: "workflow name of the wrong type", body: doc(`,"workflow":{"name":5,"type":"flow"}`), warnings: []string{"workflow.name is not a string"},
			check: func(t *testing.T, r *runs.Run) {
				if r.WorkflowName != "" || r.WorkflowType != "flow" {
					t.Errorf("workflow = %q/%q", r.WorkflowName, r.WorkflowType)
				}
			}},
		{name: "invalid UTF-8, quotes and newlines in the name", body: doc(",\"workflow\":{\"name\":\"a\xff\\\"b\\\"\\nc\"}"),
			check: func(t *testing.T, r *runs.Run) {
				if !utf8.ValidString(r.WorkflowName) || r.WorkflowName != "a\uFFFD\"b\"\nc" {
					t.Errorf("name = %q", r.WorkflowName)
				}
			}},
		{name: "very long names are kept whole (cutting them is the metrics' job)", body: doc(`,"workflow":{"name":"` + longName + `"}`),
			check: func(t *testing.T, r *runs.Run) {
				if r.WorkflowName != longName {
					t.Errorf("name has %d runes, want all %d", utf8.RuneCountInString(r.WorkflowName), utf8.RuneCountInString(longName))
				}
			}},
		{name: "names in another case or equal under Unicode folding are read as encoding/json reads them",
			body: []byte(`{"ID":"` + runID + `","ſtatus":"failed","progreſs":7,"wor\u212Aflow":{"NAME":"n"}}`),
			check: func(t *testing.T, r *runs.Run) {
				if r.Status != runs.StatusFailed || r.Progress != 7 || r.WorkflowName != "n" {
					t.Errorf("run = %+v, want status failed, progress 7, workflow name n", r)
				}
			}},
		{name: "duplicates of members the exporter does not read are ignored",
			body: doc(`,"input":{},"input":[],"INPUT":1,"workflow":{"name":"n","meta":{"tags":[],"tags":["a"]},"meta":null}`),
			check: func(t *testing.T, r *runs.Run) {
				if r.Status != runs.StatusRunning || r.WorkflowName != "n" {
					t.Errorf("run = %+v, want status running, workflow name n", r)
				}
			}},
		{name: "a member whose name only looks like status is not status",
			body: doc(",\"st\xffatus\":\"failed\",\"status\\u0000\":\"failed\",\"statuses\":\"failed\""),
			check: func(t *testing.T, r *runs.Run) {
				if r.Status != runs.StatusRunning {
					t.Errorf("status = %q, want running", r.Status)
				}
			}},
		{name: "upper-case ID of the same run", body: []byte(`{"id":"` + strings.ToUpper(runID) + `","status":"running"}`),
			check: func(t *testing.T, r *runs.Run) {
				if r.ID != runID {
					t.Errorf("id = %q, want the configured %q", r.ID, runID)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, warnings, err := DecodeRun(tc.body, runID)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(warnings, "|") != strings.Join(tc.warnings, "|") {
				t.Errorf("warnings = %q, want %q", warnings, tc.warnings)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestDecodeRunRejects(t *testing.T) {
	for _, body := range []string{
		"", "   ", "null", "[]", "42", `"run"`, "<html></html>", `{"id":`, `{"id":"` + runID + `"`,
		`{"id":"` + runID + `","status":""}`, `{"id":null,"status":"running"}`,
		`{"id":"ffffffff-0d44-4b50-8888-8dd25736052a","status":"running"}`,
	} {
		if r, _, err := DecodeRun([]byte(body), runID); err == nil {
			t.Errorf("DecodeRun(%q) = %+v, want an error", body, r)
		}
	}
}

// TestDecodeRunRefusesDuplicateMembers: a member the exporter reads, given
// twice under names encoding/json takes for the same field, makes the
// document ambiguous. The error names the member and quotes no value.
func TestDecodeRunRefusesDuplicateMembers(t *testing.T) {
	const first, second = "VALUE-ONE", "VALUE-TWO"
	doc := func(members string) []byte {
		members = strings.NewReplacer("V1", first, "V2", second).Replace(members)
		return []byte(`{"id":"` + runID + `","status":"running",` + members + `}`)
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		member string
	}{
		{"the same name twice", []byte(`{"id":"` + runID + `","status":"running","status":"completed"}`), "status"},
		{"the issue's folded status", []byte(`{"id":"` + runID + `","status":"running","ſtatus":"failed"}`), "status"},
		{"folded progress", doc(`"progress":1,"progreſs":100`), "progress"},
		{"another case", doc(`"Source":"V1","SOURCE":"V2"`), "source"},
		{"an escape in the name", doc(`"group_id":"V1","gr\u006fup_id":"V2"`), "group_id"},
		{"id twice, the second for another run", []byte(`{"id":"` + runID + `","status":"running","Id":"ffffffff-0d44-4b50-8888-8dd25736052a"}`), "id"},
		{"finished_at twice, first null", doc(`"finished_at":null,"finished_at":"2023-11-07T05:31:56Z"`), "finished_at"},
		{"status twice, last null", []byte(`{"id":"` + runID + `","status":"running","status":null}`), "status"},
		{"workflow twice, with a Kelvin sign", doc(`"workflow":{"name":"V1"},"wor\u212Aflow":{"name":"V2"}`), "workflow"},
		{"a workflow member twice", doc(`"workflow":{"name":"V1","NAME":"V2"}`), "workflow.name"},
		{"workflow.type folded", doc(`"workflow":{"type":"V1","Type":"V2"}`), "workflow.type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := DecodeRun(tc.body, runID)
			var dup *DuplicateMemberError
			if !errors.As(err, &dup) {
				t.Fatalf("DecodeRun = %+v, %v; want a *DuplicateMemberError", r, err)
			}
			if dup.Member != tc.member {
				t.Errorf("member = %q, want %q", dup.Member, tc.member)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.member) {
				t.Errorf("error %q does not name the member %s", msg, tc.member)
			}
			for _, value := range []string{first, second, "running", "completed", "failed", "ffffffff"} {
				if strings.Contains(msg, value) {
					t.Errorf("error %q quotes the value %q", msg, value)
				}
			}
		})
	}
}
