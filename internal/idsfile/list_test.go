package idsfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	a = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	b = "7d1e2f3a-0d44-4b50-8888-8dd25736052b"
	c = "0a1b2c3d-0d44-4b50-8888-8dd25736052c"
	// sentinel stands for a secret in a file named as runs.ids_file by
	// mistake: it must never be shown.
	sentinel = "SENTINEL-SECRET-9f86d081884c"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    string
		listed  []string
		ids     []string
		invalid int
		errors  []string // LineError.Error() of the lines reported, in order
	}{
		{name: "empty"},
		{name: "comments and blank lines", data: "# runs\n\n  " + a + "  # nightly\n\t\n#" + b + "\n", ids: []string{a}},
		{name: "no newline at the end", data: a + "\n" + b, ids: []string{a, b}},
		{name: "CRLF and a byte order mark", data: "\uFEFF" + a + "\r\n" + b + "\r\n", ids: []string{a, b}},
		{name: "upper case is lowered", data: strings.ToUpper(a) + "\n", ids: []string{a}},
		{name: "not a UUID", data: a + "\n" + sentinel + "\n" + b + "\n", ids: []string{a, b}, invalid: 1,
			errors: []string{"runs.ids_file: F line 2: not a run ID (a UUID)"}},
		{name: "duplicate in the file: the first wins", data: a + "\n" + b + "\n" + strings.ToUpper(a) + "\n", ids: []string{a, b}, invalid: 1,
			errors: []string{"runs.ids_file: F line 3: duplicate of line 1"}},
		{name: "already in runs.ids", data: a + "\n" + b + "\n", listed: []string{c, b}, ids: []string{a}, invalid: 1,
			errors: []string{"runs.ids_file: F line 2: already listed in runs.ids[1]"}},
		{name: "a line longer than any scanner buffer", data: a + "\n" + strings.Repeat(sentinel, 1<<14) + "\n" + b + "\n", ids: []string{a, b}, invalid: 1,
			errors: []string{"runs.ids_file: F line 2: not a run ID (a UUID)"}},
		{name: "a UUID with a word after it", data: a + " " + sentinel + "\n", invalid: 1,
			errors: []string{"runs.ids_file: F line 1: not a run ID (a UUID)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Parse("F", []byte(tc.data), tc.listed)
			if strings.Join(l.IDs, ",") != strings.Join(tc.ids, ",") {
				t.Errorf("IDs = %q, want %q", l.IDs, tc.ids)
			}
			if l.Invalid != tc.invalid {
				t.Errorf("Invalid = %d, want %d", l.Invalid, tc.invalid)
			}
			var errs []string
			for _, e := range l.Errors {
				errs = append(errs, e.Error())
			}
			if strings.Join(errs, "\n") != strings.Join(tc.errors, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(errs, "\n"), strings.Join(tc.errors, "\n"))
			}
		})
	}
}

// TestParseKeepsTheFirstErrors: a wrong file of many lines costs a count,
// not one error per line.
func TestParseKeepsTheFirstErrors(t *testing.T) {
	l := Parse("F", []byte(strings.Repeat("nope\n", 10000)+a+"\n"), nil)
	if l.Invalid != 10000 || len(l.Errors) != maxErrors || len(l.IDs) != 1 {
		t.Fatalf("Invalid %d, %d errors kept, %d IDs; want 10000, %d, 1", l.Invalid, len(l.Errors), len(l.IDs), maxErrors)
	}
	if last := l.Errors[maxErrors-1]; last.Line != maxErrors {
		t.Errorf("last error kept is line %d, want %d (the first ones)", last.Line, maxErrors)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(path("ids"), []byte(a+"\n"), 0o600))
	must(os.Symlink("ids", path("link"))) // as Kubernetes mounts a ConfigMap
	must(os.Mkdir(path("dir"), 0o700))
	must(syscall.Mkfifo(path("fifo"), 0o600))
	big, err := os.Create(path("big"))
	must(err)
	must(big.Truncate(MaxSize + 1)) // sparse: costs no disk
	big.Close()

	for _, tc := range []struct {
		name, want string // want: "" for no error, else a part of it
	}{
		{"ids", ""},
		{"link", ""},
		{"missing", "runs.ids_file: stat " + path("missing") + ": no such file or directory"},
		{"dir", "runs.ids_file: " + path("dir") + " is not a regular file"},
		{"fifo", "runs.ids_file: " + path("fifo") + " is not a regular file"},
		{"big", "runs.ids_file: " + path("big") + " is larger than 67108864 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := Read(path(tc.name))
			switch {
			case tc.want == "" && (err != nil || string(data) != a+"\n"):
				t.Errorf("Read = %q, %v; want the file", data, err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("Read error = %v, want %s", err, tc.want)
			}
		})
	}
}

func TestProblems(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ids")
	if got := (*Contents)(nil).Problems(); got != nil {
		t.Errorf("no ids_file: %v, want none", got)
	}
	if got := Load(p, nil).Problems(); len(got) != 1 || !strings.Contains(got[0].Error(), p+": no such file") {
		t.Errorf("missing file: %v, want one error naming it", got)
	}
	os.WriteFile(p, []byte(a+"\n"+strings.Repeat(sentinel+"\n", maxErrors+3)), 0o600)
	got := Load(p, nil).Problems()
	if len(got) != maxErrors+1 {
		t.Fatalf("%d problems, want %d lines and a count", len(got), maxErrors+1)
	}
	if want := "runs.ids_file: " + p + " line 2: not a run ID (a UUID)"; got[0].Error() != want {
		t.Errorf("first problem %q, want %q", got[0], want)
	}
	if want := "runs.ids_file: " + p + ": 3 more invalid lines"; got[maxErrors].Error() != want {
		t.Errorf("last problem %q, want %q", got[maxErrors], want)
	}
	for _, e := range got {
		if strings.Contains(e.Error(), sentinel) {
			t.Errorf("a problem quotes the line: %v", e)
		}
	}
	os.WriteFile(p, []byte(a+"\n"), 0o600)
	if got := Load(p, nil).Problems(); got != nil {
		t.Errorf("valid file: %v, want none", got)
	}
}
