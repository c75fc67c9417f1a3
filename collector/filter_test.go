package collector

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/scrapetest"
)

func TestFamilyFilterFlags(t *testing.T) {
	for _, tc := range []struct {
		name, allow, deny string
		err               string // empty: valid
		nilFilter         bool
	}{
		{name: "neither", nilFilter: true},
		{name: "blank", allow: " ", deny: "", nilFilter: true},
		{name: "both", allow: "workflow_run_status", deny: "workflow_run_info", err: "--metric-allowlist and --metric-denylist"},
		{name: "bad regexp in the allowlist", allow: "workflow_run_status,workflow_run_(", err: `--metric-allowlist: "workflow_run_(" is not`},
		{name: "bad regexp in the denylist", deny: "[z-a]", err: `--metric-denylist: "[z-a]" is not`},
		{name: "only commas", deny: " , ,", err: "--metric-denylist: no family name"},
		{name: "names and regexps", allow: "workflow_run_status, workflow_runs_.*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFamilyFilter(tc.allow, tc.deny)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one with %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.err == "" && (f == nil) != tc.nilFilter:
				t.Errorf("filter %v, want nil: %v", f, tc.nilFilter)
			}
		})
	}
}

func TestFamilyFilterAllows(t *testing.T) {
	allow, _ := NewFamilyFilter("workflow_run_status,workflow_runs_.*", "")
	deny, _ := NewFamilyFilter("", "workflow_run_status, go_.*")
	for name, want := range map[string][2]bool{ // allowlist, denylist
		"workflow_run_status":                         {true, false},
		"workflow_run_status_since_timestamp_seconds": {false, true}, // anchored: a prefix is not a match
		"workflow_runs_finished_total":                {true, true},
		"workflow_runs":                               {false, true},
		"go_goroutines":                               {false, false},
		"xgo_goroutines":                              {false, true},
	} {
		if got := allow.Allows(name); got != want[0] {
			t.Errorf("allowlist: Allows(%s) = %v, want %v", name, got, want[0])
		}
		if got := deny.Allows(name); got != want[1] {
			t.Errorf("denylist: Allows(%s) = %v, want %v", name, got, want[1])
		}
	}
	var none *FamilyFilter
	if !none.Allows("anything") {
		t.Error("no filter must allow every family")
	}
	if got := allow.Unmatched(append(FamilyNames(), "go_goroutines")); len(got) != 0 {
		t.Errorf("unmatched %v, want none", got)
	}
	typo, _ := NewFamilyFilter("", "workflow_run_stauts,go_.*,workflow_run_info")
	if got := typo.Unmatched(FamilyNames()); len(got) != 2 || got[0] != "workflow_run_stauts" || got[1] != "go_.*" {
		t.Errorf("unmatched %v, want the typo and go_.* (no go_ family known)", got)
	}
}

// TestDeniedFamiliesAreNotRendered: a denied family is in no format, and
// costs nothing: it is not rendered into the stored runs at all. The
// others are as without a list.
func TestDeniedFamiliesAreNotRendered(t *testing.T) {
	deny, err := NewFamilyFilter("", "workflow_run_info,workflow_run_status,workflow_runs_finished_.*")
	if err != nil {
		t.Fatal(err)
	}
	states, totals := sampleStates(), sampleTotals()
	all := storeOf(states, totals)
	lean := NewMetricsStore(100, WithFamilies(deny))
	for _, st := range states {
		lean.Update(st)
	}
	lean.SetTotals(totals)

	denied := map[string]bool{"workflow_run_info": true, "workflow_run_status": true,
		"workflow_runs_finished_total": true, "workflow_runs_finished_duration_seconds": true}
	for _, f := range []Format{FormatText, FormatProtobuf} {
		var kept []*dto.MetricFamily
		for _, mf := range decodeAs(t, scrapeAs(t, all, WriteOptions{Format: f}), f) {
			if !denied[mf.GetName()] {
				kept = append(kept, mf)
			}
		}
		got := flatten(decodeAs(t, scrapeAs(t, lean, WriteOptions{Format: f, Gzip: true}), f))
		if d := scrapetest.DiffLines(flatten(kept), got); d != "" {
			t.Errorf("%v: with the denylist (- every family less the denied, + got):\n%s", f, d)
		}
	}
	if body := string(lean.AppendRun(nil, states[0])); strings.Contains(body, "workflow_run_status{") || !strings.Contains(body, "workflow_run_fetch_success{") {
		t.Errorf("/probe's answer does not follow the list:\n%s", body)
	}
	var stored int
	for _, c := range lean.active.chunks {
		for _, rr := range c.runs {
			stored += len(rr.buf)
			for _, f := range []int{famInfo, famStatus} {
				if rr.off[f] != rr.off[f+1] {
					t.Fatalf("run %s has %d bytes of a denied family", rr.id, rr.off[f+1]-rr.off[f])
				}
			}
		}
	}
	if stored == 0 {
		t.Fatal("no unfinished run stored: the check above checked nothing")
	}
}
