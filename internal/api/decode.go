package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
	ID         json.RawMessage `json:"id"`
	GroupID    json.RawMessage `json:"group_id"`
	WorkflowID json.RawMessage `json:"workflow_id"`
	Status     json.RawMessage `json:"status"`
	Progress   json.RawMessage `json:"progress"`
	CreatedAt  json.RawMessage `json:"created_at"`
	FinishedAt json.RawMessage `json:"finished_at"`
	Source     json.RawMessage `json:"source"`
	Workflow   json.RawMessage `json:"workflow"`
}

type wireWorkflow struct {
	ID   json.RawMessage `json:"id"`
	Name json.RawMessage `json:"name"`
	Type json.RawMessage `json:"type"`
}

// DecodeRun turns a response body into a Run. It fails only when the document
// cannot describe the run at all (not JSON, not an object, no id or status, or
// another run's id). Problems with optional fields leave those fields unset and
// are returned as warnings, one short phrase each, for the caller to log.
func DecodeRun(body []byte, wantID string) (*runs.Run, []string, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil, errors.New("empty body")
	}
	if body[0] != '{' {
		return nil, nil, fmt.Errorf("body is not a JSON object (starts with %q)", firstRune(body))
	}
	if t, ok := scanDocumented(body); ok {
		return fromDocumented(t, wantID)
	}
	return decodeFieldByField(body, wantID)
}

// fromDocumented checks and converts a document read in one pass.
func fromDocumented(t *documented, wantID string) (*runs.Run, []string, error) {
	if t.ID == "" {
		return nil, nil, errors.New("field id is missing or not a string")
	}
	if !strings.EqualFold(t.ID, wantID) {
		return nil, nil, fmt.Errorf("document is for run %q, not the requested run", excerpt(t.ID))
	}
	if t.Status == "" {
		return nil, nil, errors.New("field status is missing or not a string")
	}
	r := &runs.Run{
		ID: wantID, Status: runs.Status(intern(t.Status)), GroupID: intern(t.GroupID), WorkflowID: intern(t.WorkflowID),
		Source: intern(t.Source), WorkflowName: intern(t.Workflow.Name), WorkflowType: intern(t.Workflow.Type),
	}
	if r.WorkflowID == "" {
		r.WorkflowID = intern(t.Workflow.ID)
	}
	var warnings []string
	if t.Progress != nil {
		if *t.Progress < 0 {
			warnings = append(warnings, "progress is negative")
		} else {
			r.Progress, r.HasProgress = *t.Progress, true
		}
	}
	r.CreatedAt = parseTime("created_at", t.CreatedAt, &warnings)
	r.FinishedAt = parseTime("finished_at", t.FinishedAt, &warnings)
	return r, warnings, nil
}

// decodeFieldByField decodes a document whose fields are not all of the
// documented types: each field on its own, so that a field of an unexpected
// type costs only that field.
func decodeFieldByField(body []byte, wantID string) (*runs.Run, []string, error) {
	var w wireRun
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, nil, fmt.Errorf("malformed JSON: %w", err)
	}

	id, ok := stringField(w.ID)
	if !ok || id == "" {
		return nil, nil, errors.New("field id is missing or not a string")
	}
	if !strings.EqualFold(id, wantID) {
		return nil, nil, fmt.Errorf("document is for run %q, not the requested run", excerpt(id))
	}
	status, ok := stringField(w.Status)
	if !ok || status == "" {
		return nil, nil, errors.New("field status is missing or not a string")
	}

	var warnings []string
	optional := func(name string, raw json.RawMessage) string {
		s, ok := stringField(raw)
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

	if !isNull(w.Workflow) {
		var wf wireWorkflow
		if err := json.Unmarshal(w.Workflow, &wf); err != nil {
			warnings = append(warnings, "workflow is not an object")
		} else {
			r.WorkflowName = optional("workflow.name", wf.Name)
			r.WorkflowType = optional("workflow.type", wf.Type)
			if r.WorkflowID == "" {
				r.WorkflowID = optional("workflow.id", wf.ID)
			}
		}
	}

	if !isNull(w.Progress) {
		var p float64
		switch err := json.Unmarshal(w.Progress, &p); {
		case err != nil:
			warnings = append(warnings, "progress is not a number")
		case p < 0:
			// JSON has no NaN or Inf, so a decoded number is finite.
			warnings = append(warnings, "progress is negative")
		default:
			r.Progress, r.HasProgress = p, true
		}
	}

	r.CreatedAt = timeField("created_at", w.CreatedAt, &warnings)
	r.FinishedAt = timeField("finished_at", w.FinishedAt, &warnings)
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
