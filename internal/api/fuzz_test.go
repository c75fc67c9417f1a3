package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// FuzzDecodeRun feeds arbitrary bodies through decoding and checks it
// against encoding/json itself: whatever the API sends, there is no panic;
// a document in which encoding/json would read a member twice is refused
// with a *DuplicateMemberError naming it, and no other document is; without
// duplicates, the run holds what encoding/json reads from the document.
// collector.FuzzExposition takes decoded runs on through the metrics.
func FuzzDecodeRun(f *testing.F) {
	doc := func(members string) []byte { return []byte(`{"id":"` + runID + `",` + members + `}`) }
	f.Add([]byte(validBody))
	f.Add(doc(`"status":"paused","progress":"x","created_at":"2023-11-07T05:31:56+02:00","finished_at":"2023-11-07T01:00:00Z"`))
	f.Add(doc(`"status":"failed","workflow":{"name":"a\"b\nc é &"},"progress":1e308`))
	f.Add([]byte(`{"ID":"` + strings.ToUpper(runID) + `","Status":"running","PROGRESS":3}`))
	// Duplicates, spelled the same, in another case, or equal only under
	// Unicode folding (ſ is s, the Kelvin sign K is k), or escaped.
	f.Add(doc(`"status":"running","status":"completed"`))
	f.Add(doc(`"status":"running","ſtatus":"failed"`))
	f.Add(doc(`"status":"running","progress":5,"progreſs":100`))
	f.Add(doc(`"Status":"running","STATUS":"completed"`))
	f.Add(doc(`"st\u0061tus":"running","status":"completed"`))
	f.Add(doc(`"\u017ftatus":"failed","status":"running"`))
	f.Add(doc(`"status":"running","workflow":{"name":"a"},"wor\u212Aflow":{"name":"b"}`))
	f.Add(doc(`"status":"running","workflow":{"name":"a","NAME":"b"}`))
	f.Add(doc(`"status":"running","workflow":{"type":"flow","typ\u0065":"handler"}`))
	f.Add([]byte(`{"id":"` + runID + `","status":"running","id":"ffffffff-0d44-4b50-8888-8dd25736052a"}`))
	// Folded names without a duplicate are read as encoding/json reads them.
	f.Add(doc(`"ſtatus":"failed","progreſs":7,"wor\u212Aflow":{"NAME":"n","\u0074ype":"flow"}`))
	// Duplicates of members the exporter does not read are no concern.
	f.Add(doc(`"status":"running","input":{},"input":[],"workflow":{"name":"a","meta":{"tags":[],"tags":[1]}}`))
	// Names that are not what they look like: invalid UTF-8, NUL, a
	// suffix.
	f.Add(doc("\"st\xffatus\":\"failed\",\"status\":\"running\",\"status\\u0000\":\"x\",\"statuses\":1"))
	f.Fuzz(func(t *testing.T, body []byte) {
		run, warnings, err := DecodeRun(body, runID)
		var dup *DuplicateMemberError
		refusedAsDuplicate := errors.As(err, &dup)

		trimmed := bytes.TrimSpace(body)
		var w wireRun
		if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &w) != nil {
			if err == nil || refusedAsDuplicate {
				t.Fatalf("DecodeRun(%q) = %+v, %v; want an error, not about duplicates: encoding/json reads no object", body, run, err)
			}
			return
		}
		duplicated := readTwice(t, trimmed, reflect.TypeFor[wireRun](), "")
		if raw := w.Workflow.raw; len(raw) > 0 && raw[0] == '{' {
			duplicated = append(duplicated, readTwice(t, raw, reflect.TypeFor[wireWorkflow](), "workflow.")...)
		}
		switch {
		case len(duplicated) > 0 && (!refusedAsDuplicate || !slices.Contains(duplicated, dup.Member)):
			t.Fatalf("DecodeRun(%q) = %+v, %v; want a *DuplicateMemberError for one of %q", body, run, err, duplicated)
		case len(duplicated) == 0 && refusedAsDuplicate:
			t.Fatalf("DecodeRun(%q) refused %s as a duplicate; encoding/json reads no member twice", body, dup.Member)
		case len(duplicated) > 0:
			return
		}

		if err == nil {
			checkInvariants(t, body, run)
		}
		// A document whose members have the documented types, decoded
		// strictly by encoding/json: the run must say the same.
		var typed struct {
			ID         *string  `json:"id"`
			GroupID    *string  `json:"group_id"`
			WorkflowID *string  `json:"workflow_id"`
			Status     *string  `json:"status"`
			Progress   *float64 `json:"progress"`
			CreatedAt  *string  `json:"created_at"`
			Source     *string  `json:"source"`
			Workflow   *struct{ ID, Name, Type *string }
		}
		if json.Unmarshal(trimmed, &typed) != nil {
			return // a member of another type: TestDecodeRunFields
		}
		if typed.ID == nil || !strings.EqualFold(*typed.ID, runID) || deref(typed.Status) == "" {
			if err == nil {
				t.Fatalf("DecodeRun(%q) accepted a document without this run's id and a status", body)
			}
			return
		}
		if err != nil {
			t.Fatalf("DecodeRun(%q): %v; encoding/json reads id and status from it", body, err)
		}
		var wf struct{ ID, Name, Type *string }
		if typed.Workflow != nil {
			wf = *typed.Workflow
		}
		workflowID := deref(typed.WorkflowID)
		if workflowID == "" {
			workflowID = deref(wf.ID)
		}
		want := []string{*typed.Status, deref(typed.GroupID), workflowID, deref(typed.Source), deref(wf.Name), deref(wf.Type)}
		got := []string{string(run.Status), run.GroupID, run.WorkflowID, run.Source, run.WorkflowName, run.WorkflowType}
		if !slices.Equal(got, want) {
			t.Fatalf("DecodeRun(%q) read %q, encoding/json %q (warnings %q)", body, got, want, warnings)
		}
		wantProgress := typed.Progress != nil && *typed.Progress >= 0
		if run.HasProgress != wantProgress || wantProgress && run.Progress != *typed.Progress {
			t.Fatalf("DecodeRun(%q) read progress %v (%v), encoding/json %v", body, run.Progress, run.HasProgress, typed.Progress)
		}
		if typed.CreatedAt != nil {
			if c, perr := time.Parse(time.RFC3339Nano, *typed.CreatedAt); perr == nil && !run.CreatedAt.Equal(c) {
				t.Fatalf("DecodeRun(%q) read created_at %s, want %s", body, run.CreatedAt, c)
			}
		}
	})
}

// checkInvariants holds for every decoded run.
func checkInvariants(t *testing.T, body []byte, run *runs.Run) {
	t.Helper()
	if run.ID != runID {
		t.Fatalf("DecodeRun(%q) decoded run %q, want %q", body, run.ID, runID)
	}
	for _, s := range []string{run.GroupID, run.WorkflowID, run.WorkflowName, run.WorkflowType, run.Source, string(run.Status)} {
		if !utf8.ValidString(s) {
			t.Fatalf("DecodeRun(%q) kept invalid UTF-8 %q", body, s)
		}
	}
	if d, ok := run.Duration(); ok && d < 0 {
		t.Fatalf("DecodeRun(%q) gave a negative duration %s", body, d)
	}
	if run.HasProgress && !(run.Progress >= 0) {
		t.Fatalf("DecodeRun(%q) kept progress %v", body, run.Progress)
	}
}

// readTwice returns the fields of typ (wireRun or wireWorkflow) that two
// members of the JSON object obj go to, as prefix+json name.
// Which field a member goes to is asked of encoding/json, one member at a
// time, so the test does not share the decoder's idea of case folding.
func readTwice(t *testing.T, obj []byte, typ reflect.Type, prefix string) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	var twice []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
		name, _ := json.Marshal(tok.(string))
		one := reflect.New(typ)
		if err := json.Unmarshal([]byte(`{`+string(name)+`:0}`), one.Interface()); err != nil {
			t.Fatal(err)
		}
		for i := range typ.NumField() {
			if one.Elem().Field(i).IsZero() {
				continue
			}
			if seen[i] {
				twice = append(twice, prefix+typ.Field(i).Tag.Get("json"))
			}
			seen[i] = true
		}
	}
	return twice
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
