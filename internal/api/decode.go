package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
	"unique"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// wireRun mirrors the API document. Every field is raw so that a field of an
// unexpected type costs only that field, not the whole run: API drift must
// not blind the exporter to a failed run. Only id and status are required.
type wireRun struct {
	ID         member `json:"id"`
	GroupID    member `json:"group_id"`
	WorkflowID member `json:"workflow_id"`
	Status     member `json:"status"`
	Progress   member `json:"progress"`
	CreatedAt  member `json:"created_at"`
	FinishedAt member `json:"finished_at"`
	Source     member `json:"source"`
	Workflow   member `json:"workflow"`
}

type wireWorkflow struct {
	ID   member `json:"id"`
	Name member `json:"name"`
	Type member `json:"type"`
}

// member is the raw value of a member the exporter reads, and how many
// members of its object encoding/json gave to it: encoding/json calls
// UnmarshalJSON once for each (null included), and matches names to fields
// by its own rules (any case, Unicode folding: "ſtatus" is status), so the
// count needs no second reading of the document and no copy of those rules.
type member struct {
	raw   json.RawMessage
	times int
}

func (m *member) UnmarshalJSON(b []byte) error {
	m.times++
	return m.raw.UnmarshalJSON(b) // keeps the last, as encoding/json would
}

// DuplicateMemberError is a document that gives a member the exporter
// reads more than once, under the same name or names encoding/json takes
// for the same field ("status" and "ſtatus"). encoding/json would keep the
// last one, but a document that says both "running" and "completed" is
// ambiguous: taking either could count a running run as finished and never
// fetch it again. Duplicates of members the exporter does not read are
// ignored, as those members are. The message names the member and never
// quotes a value.
type DuplicateMemberError struct {
	Member string // as documented: "status", "workflow.name"
}

func (e *DuplicateMemberError) Error() string {
	return fmt.Sprintf("member %s is given more than once; the document is ambiguous", e.Member)
}

// refuseDuplicates returns a *DuplicateMemberError for the first field of
// the decoded struct *wire (a wireRun or wireWorkflow) that its object gave
// more than once.
func refuseDuplicates(wire any, prefix string) error {
	v := reflect.ValueOf(wire).Elem()
	for i := range v.NumField() {
		if v.Field(i).Addr().Interface().(*member).times > 1 {
			return &DuplicateMemberError{Member: prefix + v.Type().Field(i).Tag.Get("json")}
		}
	}
	return nil
}

// DecodeRun turns a response body into a Run. It reads the document as
// encoding/json does, except that a member the exporter reads given twice
// is a *DuplicateMemberError. It fails only when the document cannot
// describe the run (not JSON, not an object, no id or status, another run's
// id, a duplicated member). Problems with optional fields leave those
// fields unset and are returned as warnings, one short phrase each, for the
// caller to log.
func DecodeRun(body []byte, wantID string) (*runs.Run, []string, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil, errors.New("empty body")
	}
	if body[0] != '{' {
		return nil, nil, fmt.Errorf("body is not a JSON object (starts with %q)", firstRune(body))
	}
	var w wireRun
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, nil, fmt.Errorf("malformed JSON: %w", err)
	}
	hasWorkflow := !isNull(w.Workflow.raw)
	var wf wireWorkflow
	workflowIsObject := hasWorkflow && json.Unmarshal(w.Workflow.raw, &wf) == nil
	if err := refuseDuplicates(&w, ""); err != nil {
		return nil, nil, err
	}
	if err := refuseDuplicates(&wf, "workflow."); err != nil {
		return nil, nil, err
	}

	id, ok := stringField(w.ID.raw)
	if !ok || id == "" {
		return nil, nil, errors.New("field id is missing or not a string")
	}
	if !strings.EqualFold(id, wantID) {
		return nil, nil, fmt.Errorf("document is for run %q, not the requested run", excerpt(id))
	}
	status, ok := stringField(w.Status.raw)
	if !ok || status == "" {
		return nil, nil, errors.New("field status is missing or not a string")
	}

	var warnings []string
	optional := func(name string, m member) string {
		s, ok := stringField(m.raw)
		if !ok {
			warnings = append(warnings, name+" is not a string")
		}
		return intern(s)
	}

	r := &runs.Run{
		ID:         wantID,
		Status:     runs.Status(intern(status)),
		GroupID:    optional("group_id", w.GroupID),
		WorkflowID: optional("workflow_id", w.WorkflowID),
		Source:     optional("source", w.Source),
	}

	if hasWorkflow && !workflowIsObject {
		warnings = append(warnings, "workflow is not an object")
	}
	if workflowIsObject {
		r.WorkflowName = optional("workflow.name", wf.Name)
		r.WorkflowType = optional("workflow.type", wf.Type)
		if r.WorkflowID == "" {
			r.WorkflowID = optional("workflow.id", wf.ID)
		}
	}

	if !isNull(w.Progress.raw) {
		var p float64
		switch err := json.Unmarshal(w.Progress.raw, &p); {
		case err != nil:
			warnings = append(warnings, "progress is not a number")
		case p < 0:
			// JSON has no NaN or Inf, so a decoded number is finite.
			warnings = append(warnings, "progress is negative")
		default:
			r.Progress, r.HasProgress = p, true
		}
	}

	r.CreatedAt = timeField("created_at", w.CreatedAt.raw, &warnings)
	r.FinishedAt = timeField("finished_at", w.FinishedAt.raw, &warnings)
	return r, warnings, nil
}

// timeLayouts are tried in order. The last one accepts the offset-less form
// that many Python services emit; such times are taken as UTC.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"}

func timeField(name string, raw json.RawMessage, warnings *[]string) time.Time {
	if isNull(raw) {
		return time.Time{}
	}
	s, ok := stringField(raw)
	if !ok {
		*warnings = append(*warnings, name+" is not a string")
		return time.Time{}
	}
	return parseTime(name, s, warnings)
}

// parseTime reads a time; the empty string is no time.
func parseTime(name, s string, warnings *[]string) time.Time {
	if s == "" {
		return time.Time{}
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	*warnings = append(*warnings, name+" is not an RFC 3339 time")
	return time.Time{}
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// stringField decodes a JSON string. A missing or null field is an empty
// string and ok; any other type is not ok.
func stringField(raw json.RawMessage) (string, bool) {
	if isNull(raw) {
		return "", true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// intern returns one shared copy of s. The texts a run carries besides its
// ID (workflow, group, source, status) are the same for many runs, and an
// exporter keeps every run it tracks in memory.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// excerpt bounds a value the API sent before it goes into an error message
// and from there into a log line.
func excerpt(s string) string {
	const max = 64
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max]) + "…"
}

func firstRune(b []byte) string {
	r, _ := utf8.DecodeRune(b)
	return string(r)
}
