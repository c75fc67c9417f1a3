package api

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// documented is a run document whose fields all have the documented types.
type documented struct {
	ID, GroupID, WorkflowID, Status, CreatedAt, FinishedAt, Source string
	Progress                                                       *float64
	Workflow                                                       struct{ ID, Name, Type string }
}

// Reading a run is most of the exporter's own work per run. A document of
// the documented shape is read in one pass with fastjson, several times
// faster than encoding/json; anything else (a field of another type, a key
// in other case, an escape or a character encoding/json would read
// differently, invalid JSON) is left to decodeFieldByField, which is the
// reference. FuzzDecodeRun checks that the two always agree.
var parsers fastjson.ParserPool

// scanDocumented reads body if it has the documented shape; ok is false
// when decodeFieldByField must decide.
func scanDocumented(body []byte) (t *documented, ok bool) {
	// fastjson is lenient where encoding/json is not (it takes "\0" as an
	// escape, say): encoding/json's grammar decides what is JSON.
	if !validJSON(body) {
		return nil, false
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, false
	}
	t = &documented{}
	ok = visit(v, t, topLevelTexts, func(key []byte, v *fastjson.Value) bool {
		switch string(key) {
		case "progress":
			return number(v, &t.Progress)
		case "workflow":
			return workflow(v, t)
		}
		return !knownKeyInOtherCase(key, topLevelKeys)
	})
	if !ok {
		return nil, false
	}
	return t, true
}

// textField finds where a text member goes.
type textField func(*documented) *string

var (
	topLevelTexts = map[string]textField{
		"id":          func(t *documented) *string { return &t.ID },
		"group_id":    func(t *documented) *string { return &t.GroupID },
		"workflow_id": func(t *documented) *string { return &t.WorkflowID },
		"status":      func(t *documented) *string { return &t.Status },
		"created_at":  func(t *documented) *string { return &t.CreatedAt },
		"finished_at": func(t *documented) *string { return &t.FinishedAt },
		"source":      func(t *documented) *string { return &t.Source },
	}
	workflowTexts = map[string]textField{
		"id":   func(t *documented) *string { return &t.Workflow.ID },
		"name": func(t *documented) *string { return &t.Workflow.Name },
		"type": func(t *documented) *string { return &t.Workflow.Type },
	}
)

// visit reads an object's members: the texts into t, the others with
// other. It reports whether every member could be read.
func visit(v *fastjson.Value, t *documented, texts map[string]textField, other func(key []byte, v *fastjson.Value) bool) bool {
	obj, _ := v.Object()
	ok := true
	obj.Visit(func(key []byte, v *fastjson.Value) {
		if !ok {
			return
		}
		if field, isText := texts[string(key)]; isText {
			ok = str(v, field(t))
		} else {
			ok = other(key, v)
		}
	})
	return ok
}

var (
	topLevelKeys = []string{"id", "group_id", "workflow_id", "status", "created_at", "finished_at", "source", "progress", "workflow"}
	workflowKeys = []string{"id", "name", "type"}
)

// knownKeyInOtherCase: encoding/json matches keys regardless of case, so
// "ID" would be read as id there.
func knownKeyInOtherCase(key []byte, known []string) bool {
	for _, k := range known {
		if len(key) == len(k) && strings.EqualFold(string(key), k) {
			return true
		}
	}
	return false
}

func workflow(v *fastjson.Value, t *documented) bool {
	switch v.Type() {
	case fastjson.TypeNull:
		t.Workflow.ID, t.Workflow.Name, t.Workflow.Type = "", "", ""
		return true
	case fastjson.TypeObject:
	default:
		return false
	}
	// A workflow given twice: encoding/json keeps the last object whole.
	t.Workflow.ID, t.Workflow.Name, t.Workflow.Type = "", "", ""
	return visit(v, t, workflowTexts, func(key []byte, _ *fastjson.Value) bool {
		return !knownKeyInOtherCase(key, workflowKeys)
	})
}

// str reads a string or null (""). A string that is not valid UTF-8 once
// unescaped, or holds U+FFFD, is left to encoding/json, whose handling of
// invalid bytes and lone surrogates is the reference.
func str(v *fastjson.Value, dst *string) bool {
	switch v.Type() {
	case fastjson.TypeNull:
		*dst = ""
		return true
	case fastjson.TypeString:
	default:
		return false
	}
	b, _ := v.StringBytes()
	if !utf8.Valid(b) || bytes.Contains(b, replacementChar) {
		return false
	}
	*dst = string(b)
	return true
}

var replacementChar = []byte(string(utf8.RuneError))

var numbers = sync.Pool{New: func() any { b := make([]byte, 0, 32); return &b }}

// number reads a number as encoding/json does (strconv.ParseFloat), or
// null.
func number(v *fastjson.Value, dst **float64) bool {
	switch v.Type() {
	case fastjson.TypeNull:
		*dst = nil
		return true
	case fastjson.TypeNumber:
	default:
		return false
	}
	buf := numbers.Get().(*[]byte)
	defer numbers.Put(buf)
	*buf = v.MarshalTo((*buf)[:0])
	f, err := strconv.ParseFloat(string(*buf), 64)
	if err != nil {
		return false
	}
	*dst = &f
	return true
}
