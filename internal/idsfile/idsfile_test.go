package idsfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/syncbuffer"
)

const (
	a = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	b = "7d1e2f3a-0d44-4b50-8888-8dd25736052b"
)

func TestWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ids")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncbuffer.Buffer{}
	write(a + "\n")
	w := New(log.NewLogfmtLogger(logs), path, []string{a})

	type step struct {
		name    string
		file    string // "" leaves the file as it is; "-" removes it
		changed bool
		ids     string
	}
	for _, s := range []step{
		{name: "unchanged", changed: false},
		{name: "a change is seen once: not applied yet", file: a + "\n" + b + "\n"},
		{name: "the same change read again: applied", changed: true, ids: a + "," + b},
		{name: "steady again"},
		{name: "half written (empty) once", file: "\n"},
		{name: "written out before the next check", file: a + "\n" + b + "\n"},
		{name: "still nothing to apply"},
		{name: "a second change", file: b + "\n"},
		{name: "changes again before it was confirmed", file: a + "\n"},
		{name: "confirmed", changed: true, ids: a},
		{name: "broken file", file: "not-a-uuid\n"},
		{name: "still broken"},
		{name: "removed", file: "-"},
		{name: "back to the list in force", file: a + "\n"},
		// A change seen once, a broken read, then the same change: the
		// broken read in between means the two reads were not in a row.
		{name: "truncated to nothing", file: "\n"},
		{name: "broken in between", file: "not-a-uuid\n"},
		{name: "truncated again: seen once only", file: "\n"},
		{name: "and confirmed", changed: true, ids: ""},
	} {
		switch s.file {
		case "":
		case "-":
			os.Remove(path)
		default:
			write(s.file)
		}
		ids, changed := w.Check()
		if changed != s.changed || strings.Join(ids, ",") != s.ids {
			t.Fatalf("%s: Check() = %q %v, want %q %v", s.name, ids, changed, s.ids, s.changed)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "reading runs.ids_file failed"); n != 3 {
		t.Errorf("%d error lines for a broken, a missing and a broken file, want 3 (one per distinct problem):\n%s", n, out)
	}
	if !strings.Contains(out, "reads fine again") {
		t.Errorf("recovery not logged:\n%s", out)
	}
}
