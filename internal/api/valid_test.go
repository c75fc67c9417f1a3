package api

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzValidJSON: validJSON says what encoding/json's Valid says, for any
// input.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		validBody, `{}`, `[]`, `[1,2,{"a":[true,false,null]}]`, ` {"a" : "b" } `, `"x"`, `-0.5e+10`, `0`,
		`{"a":}`, `{"a":1,}`, `[1,]`, `01`, `1.`, `.5`, `1e`, `"\u12"`, `"\x"`, "\"a\x01\"", `{"a" 1}`, `tru`, `nul`, `{"a":1}}`,
		`[`, `]`, `{`, `"\ud800"`, "\"\xff\"", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), `{"a":[1,{"b":2}]}x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := validJSON(data), json.Valid(data); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid = %v", data, got, want)
		}
	})
}
