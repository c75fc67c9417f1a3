package collector

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// FamilyFilter decides which metric families are rendered and served, from
// --metric-allowlist or --metric-denylist as kube-state-metrics has them:
// comma-separated family names or RE2 regular expressions, each matched
// against the whole name. A nil filter allows every family.
type FamilyFilter struct {
	flag    string // the flag the entries came from, for messages
	allow   bool   // the entries allow; else they deny
	entries []filterEntry
}

type filterEntry struct {
	text string
	re   *regexp.Regexp
}

// NewFamilyFilter parses the two flags' values. Both set, or an entry that
// is not a regular expression, is an error naming the flag. With neither
// set it returns nil: every family.
func NewFamilyFilter(allowlist, denylist string) (*FamilyFilter, error) {
	allowlist, denylist = strings.TrimSpace(allowlist), strings.TrimSpace(denylist)
	switch {
	case allowlist != "" && denylist != "":
		return nil, errors.New("--metric-allowlist and --metric-denylist: set one of them, not both")
	case allowlist == "" && denylist == "":
		return nil, nil
	}
	f := &FamilyFilter{flag: "--metric-denylist", allow: allowlist != ""}
	list := denylist
	if f.allow {
		f.flag, list = "--metric-allowlist", allowlist
	}
	for _, text := range strings.Split(list, ",") {
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		re, err := regexp.Compile("^(?:" + text + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a family name or a regular expression: %w", f.flag, text, err)
		}
		f.entries = append(f.entries, filterEntry{text: text, re: re})
	}
	if len(f.entries) == 0 {
		return nil, fmt.Errorf("%s: no family name in %q", f.flag, list)
	}
	return f, nil
}

// Allows reports whether the family name is rendered and served.
func (f *FamilyFilter) Allows(name string) bool {
	if f == nil {
		return true
	}
	for _, e := range f.entries {
		if e.re.MatchString(name) {
			return f.allow
		}
	}
	return !f.allow
}

// Flag is the flag the filter came from.
func (f *FamilyFilter) Flag() string { return f.flag }

// Unmatched returns the entries that match none of the family names
// known: a typo, or a family of another version. They are kept (families
// come and go across versions); the caller warns about them.
func (f *FamilyFilter) Unmatched(known []string) []string {
	if f == nil {
		return nil
	}
	var out []string
	for _, e := range f.entries {
		found := false
		for _, name := range known {
			if e.re.MatchString(name) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, e.text)
		}
	}
	return out
}

// FamilyNames returns the names of every family the store renders: the
// per-run families and the aggregates.
func FamilyNames() []string {
	var out []string
	for _, f := range runFamilies {
		out = append(out, f.name)
	}
	for _, f := range aggregateFamilies {
		out = append(out, f.name)
	}
	return out
}
