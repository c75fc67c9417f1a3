package idsfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
)

// MaxSize bounds what is read of the file: it is read every few seconds,
// so a path pointing at a log or a disk image by mistake must not cost
// gigabytes each time. 64 MiB holds 1.8 million IDs, far beyond the 100k
// runs one instance serves.
const MaxSize = 64 << 20

// maxErrors is how many invalid lines a List keeps one by one; the rest are
// only counted, so a wrong file of a million lines costs a count, not a
// million errors in memory or in the log.
const maxErrors = 20

// Reason says why a line was skipped.
type Reason int

const (
	// NotARunID: the line is not a UUID.
	NotARunID Reason = iota + 1
	// Duplicate: the file lists the ID on an earlier line (LineError.First).
	Duplicate
	// InRunsIDs: runs.ids lists the ID (at index LineError.First).
	InRunsIDs
)

// LineError is a line of the file that was skipped. It names the file and
// the line, never the line's content: the path may point at a secret by
// mistake.
type LineError struct {
	Path   string
	Line   int // counted from 1
	Reason Reason
	// First is where a duplicate's ID was listed first: a line of the
	// file, or an index of runs.ids.
	First int
}

// Problem says what is wrong with the line, for a log line's "problem" key.
func (e LineError) Problem() string {
	switch e.Reason {
	case Duplicate:
		return fmt.Sprintf("duplicate of line %d", e.First)
	case InRunsIDs:
		return fmt.Sprintf("already listed in runs.ids[%d]", e.First)
	default:
		return "not a run ID (a UUID)"
	}
}

func (e LineError) Error() string {
	return fmt.Sprintf("runs.ids_file: %s line %d: %s", e.Path, e.Line, e.Problem())
}

// List is the content of the file, parsed.
type List struct {
	// IDs are the run IDs, in lower case, in the order of the file, each
	// once (the first line listing it wins).
	IDs []string
	// Invalid is the number of lines skipped.
	Invalid int
	// Errors are the first of the skipped lines, at most maxErrors.
	Errors []LineError
}

// Parse reads one run ID per line. Blank lines and '#' comments are fine;
// any other line that is not a UUID, or lists an ID again (listed: the IDs
// of runs.ids, lower case), is skipped and reported in the List. Parsing
// never fails: the file is data that other programs write, and one bad line
// must not cost the runs of the others.
func Parse(path string, data []byte, listed []string) List {
	inRunsIDs := make(map[string]int, len(listed))
	for i, id := range listed {
		inRunsIDs[id] = i
	}
	// Sized for the most IDs the file can hold (a line is at least 37
	// bytes): growing the map and the slice line by line allocates twice as
	// much for a file of 100k IDs (BenchmarkParse: 20.7 MB, now 9.9 MB).
	lines := min(bytes.Count(data, []byte{'\n'})+1, len(data)/37+1)
	l := List{IDs: make([]string, 0, lines)}
	skip := func(e LineError) {
		l.Invalid++
		if len(l.Errors) < maxErrors {
			l.Errors = append(l.Errors, e)
		}
	}
	lineOf := make(map[string]int, lines)
	data = bytes.TrimPrefix(data, []byte("\uFEFF")) // a byte order mark, as some editors write
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		s := string(line)
		if !config.IsRunID(s) {
			skip(LineError{Path: path, Line: n, Reason: NotARunID})
			continue
		}
		id := strings.ToLower(s)
		if i, ok := inRunsIDs[id]; ok {
			skip(LineError{Path: path, Line: n, Reason: InRunsIDs, First: i})
			continue
		}
		if first, ok := lineOf[id]; ok {
			skip(LineError{Path: path, Line: n, Reason: Duplicate, First: first})
			continue
		}
		lineOf[id] = n
		l.IDs = append(l.IDs, id)
	}
	return l
}

// Read returns the file's content. Only regular files are read (opening a
// FIFO would block every later check), and at most MaxSize bytes.
func Read(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("runs.ids_file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("runs.ids_file: %s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("runs.ids_file: %w", err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("runs.ids_file: %w", err)
	}
	tooLarge := fmt.Errorf("runs.ids_file: %s is larger than %d bytes", path, MaxSize)
	if fi.Size() > MaxSize {
		return nil, tooLarge
	}
	// Sized from the file, as os.ReadFile does: one allocation rather
	// than the doublings of io.ReadAll (7.6 MB allocated per check of a
	// file of 100k IDs instead of 3.8 MB; BenchmarkCheckUnchanged).
	var buf bytes.Buffer
	buf.Grow(int(fi.Size()) + bytes.MinRead)
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxSize+1)); err != nil {
		return nil, fmt.Errorf("runs.ids_file: %w", err)
	}
	if buf.Len() > MaxSize { // it grew since the Stat
		return nil, tooLarge
	}
	return buf.Bytes(), nil
}

// Contents is the file as read once: its list, or why it could not be read.
type Contents struct {
	Path string
	// Err is why the file could not be read; the List is empty then.
	Err error
	List
	data []byte // what was read, to tell an unchanged file at the next check
}

// Load reads and parses the file at path; listed are the IDs of runs.ids,
// lower case.
func Load(path string, listed []string) *Contents {
	data, err := Read(path)
	if err != nil {
		return &Contents{Path: path, Err: err}
	}
	return &Contents{Path: path, List: Parse(path, data, listed), data: data}
}

// Problems returns what --config.check reports: why the file cannot be
// read, or its invalid lines (the first ones, and how many more). A nil
// Contents, no ids_file, has none.
func (c *Contents) Problems() []error {
	switch {
	case c == nil:
		return nil
	case c.Err != nil:
		return []error{c.Err}
	}
	var errs []error
	for _, e := range c.Errors {
		errs = append(errs, e)
	}
	if more := c.Invalid - len(c.Errors); more > 0 {
		errs = append(errs, fmt.Errorf("runs.ids_file: %s: %d more invalid lines", c.Path, more))
	}
	return errs
}
