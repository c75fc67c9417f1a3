package scrapetest

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
)

func TestDiffLines(t *testing.T) {
	for _, tc := range []struct {
		name      string
		want, got []string
		diff      string
	}{
		{"the same", []string{"a", "b"}, []string{"a", "b"}, ""},
		{"the same in another order", []string{"a", "b"}, []string{"b", "a"}, ""},
		{"one missing, one extra", []string{"a", "b", "c"}, []string{"c", "d", "a"}, "- b\n+ d\n"},
		{"a line twice against once", []string{"a", "a", "b"}, []string{"a", "b"}, "- a\n"},
		{"a line once against twice", []string{"a"}, []string{"a", "a"}, "+ a\n"},
		{"none", nil, []string{"x"}, "+ x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := DiffLines(tc.want, tc.got); d != tc.diff {
				t.Errorf("DiffLines(%q, %q) = %q, want %q", tc.want, tc.got, d, tc.diff)
			}
		})
	}
}

func TestFamilies(t *testing.T) {
	const body = "# TYPE a gauge\na 1\n# TYPE b_total counter\nb_total 2\n"
	mfs, err := Families(strings.NewReader(body), expfmt.NewFormat(expfmt.TypeTextPlain))
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName()+" "+mf.GetType().String())
	}
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"a GAUGE", "b_total COUNTER"}) {
		t.Errorf("Families = %v, %v; want a GAUGE and b_total COUNTER", names, err)
	}
	if _, err := Families(strings.NewReader("a{ 1\n"), expfmt.NewFormat(expfmt.TypeTextPlain)); err == nil {
		t.Error("a malformed body decodes without an error")
	}
}
