package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboard is the part of the Grafana dashboard JSON the tests read.
type dashboard struct {
	UID           string      `json:"uid"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
}

type dashVariable struct {
	Name       string  `json:"name"`
	Type       string  `json:"type"`
	AllValue   *string `json:"allValue"`
	Multi      bool    `json:"multi"`
	IncludeAll bool    `json:"includeAll"`
	Definition string  `json:"definition"`
	Regex      string  `json:"regex"`
}

type dashTarget struct {
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Expr     string `json:"expr"`
	RefID    string `json:"refId"`
	Format   string `json:"format"`
	Instant  bool   `json:"instant"`
	Exemplar bool   `json:"exemplar"`
}

type dashPanel struct {
	ID         int    `json:"id"`
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos     struct{ X, Y, W, H int } `json:"gridPos"`
	Targets     []dashTarget             `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Mappings []struct {
				Options map[string]struct {
					Text string `json:"text"`
				} `json:"options"`
			} `json:"mappings"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Transformations []struct {
		ID      string          `json:"id"`
		Options json.RawMessage `json:"options"`
	} `json:"transformations"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile("../dashboards/workflow-runs.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (p dashPanel) exprs() string {
	var all []string
	for _, tg := range p.Targets {
		all = append(all, tg.Expr)
	}
	return strings.Join(all, "\n")
}

// TestDashboardLayout checks what Grafana does not: unique panel IDs, no
// panels stacked on one another, and every query using the datasource
// variable, so the dashboard works in any Grafana whatever its data
// source is called.
func TestDashboardLayout(t *testing.T) {
	dash := loadDashboard(t)
	if dash.UID != "workflow-runs" {
		t.Errorf("uid = %q; it must stay stable for links", dash.UID)
	}
	if dash.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d is old", dash.SchemaVersion)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" {
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %q, want ${datasource}", p.Title, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: a query uses datasource %q", p.Title, tg.Datasource.UID)
			}
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap", other, p.Title)
				}
				taken[cell{x, y}] = p.Title
			}
		}
	}
}

var (
	joinOn      = regexp.MustCompile(`\b(?:on|ignoring)\s*\(([^)]*)\)`)
	maxOverAll  = regexp.MustCompile(`\b(?:max|min|avg)\s*\(\s*workflow_runs_exporter_last_poll_cycle`)
	selector    = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^{}]*)\}`)
	histogram   = regexp.MustCompile(`\b(workflow_runs_finished_duration_seconds|workflow_runs_queue_wait_seconds)_bucket\{`)
	instanceVar = `instance=~"$instance"`
	podInstance = `"instance", "$1", "pod", "(.+)")`
	scope       = []string{`cluster="$cluster"`, `namespace="$namespace"`, `job=~"$job"`}
)

// classicOnly are the panels that read a histogram's classic buckets
// without the native alternative, and why.
var classicOnly = map[string]string{
	// A bar per bucket bound needs the le label; the README and the
	// panel's description say it is empty with native histograms only.
	"Duration distribution (selected range)": "per-bucket counts",
}

// scoped checks that every selector in expr narrows to the chosen
// cluster, namespace and job (those of want), so that two installations
// in one Prometheus never merge.
func scoped(t *testing.T, where, expr string, want []string) {
	t.Helper()
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		name, matchers := m[1], m[2]
		for _, w := range want {
			if name == "ALERTS" && w == `job=~"$job"` {
				continue // WorkflowRunsExporterAbsent has no job label
			}
			if !strings.Contains(matchers, w) {
				t.Errorf("%s: selector %s{%s} lacks %s", where, name, matchers, w)
			}
		}
	}
}

// TestDashboardQueries: the panels an operator needs on the first incident
// exist and query what they must, and no query mixes up installations or
// instances.
func TestDashboardQueries(t *testing.T) {
	dash := loadDashboard(t)
	vars := map[string]dashVariable{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v
	}
	for _, want := range []string{"datasource", "cluster", "namespace", "job", "instance", "workflow_type", "workflow_name", "platform_url", "stalled_after"} {
		if _, ok := vars[want]; !ok {
			t.Errorf("template variable %s missing", want)
		}
	}
	for _, name := range []string{"job", "instance"} {
		if v := vars[name]; v.AllValue != nil {
			t.Errorf("variable %s has allValue %q: \"All\" must stay the list of the exporter's own %ss, not every one in Prometheus", name, *v.AllValue, name)
		}
	}
	for _, name := range []string{"cluster", "namespace"} {
		if v := vars[name]; v.Multi || v.IncludeAll {
			t.Errorf("variable %s: multi %v, includeAll %v; one at a time, so that staging and production never merge", name, v.Multi, v.IncludeAll)
		}
	}
	for name, want := range map[string][]string{
		"namespace": scope[:1], "job": scope[:2], "instance": scope, "workflow_type": scope, "workflow_name": scope,
	} {
		scoped(t, "variable "+name, vars[name].Definition, want)
	}

	panels := map[string]dashPanel{}
	for _, p := range dash.Panels {
		panels[p.Title] = p
		for _, tg := range p.Targets {
			where := fmt.Sprintf("panel %q/%s", p.Title, tg.RefID)
			scoped(t, where, tg.Expr, scope)
			// Several shards, or /probe with instance = run ID: a join
			// across targets would pair one run with another's data.
			for _, m := range joinOn.FindAllStringSubmatch(tg.Expr, -1) {
				if m[1] == "le" {
					continue // the classic and native forms of one histogram
				}
				if !strings.Contains(m[1], "instance") || !strings.Contains(m[1], "job") {
					t.Errorf("%s joins %s without job and instance: %s", where, m[0], tg.Expr)
				}
			}
			if maxOverAll.MatchString(tg.Expr) {
				t.Errorf("%s aggregates the data age over instances; a stale instance would hide: %s", where, tg.Expr)
			}
			// Prometheus keeps only the native form of a histogram when it
			// scrapes native histograms (unless told to keep both).
			if histogram.MatchString(tg.Expr) && classicOnly[p.Title] == "" && !strings.Contains(tg.Expr, ") or ignoring (le) sum by (") {
				t.Errorf("%s reads classic buckets only; with native histograms it would be empty: %s", where, tg.Expr)
			}
		}
	}
	need := func(title, typ string, contains ...string) dashPanel {
		t.Helper()
		p, ok := panels[title]
		if !ok {
			t.Errorf("no panel %q", title)
			return p
		}
		if p.Type != typ {
			t.Errorf("panel %q is a %s, want %s", title, p.Type, typ)
		}
		for _, s := range contains {
			if !strings.Contains(p.exprs(), s) {
				t.Errorf("panel %q does not query %s:\n%s", title, s, p.exprs())
			}
		}
		return p
	}
	sortedBy := func(p dashPanel, field string, desc bool) {
		t.Helper()
		for _, tr := range p.Transformations {
			var opts struct {
				Sort []struct {
					Field string `json:"field"`
					Desc  bool   `json:"desc"`
				} `json:"sort"`
			}
			if tr.ID == "sortBy" && json.Unmarshal(tr.Options, &opts) == nil &&
				len(opts.Sort) == 1 && opts.Sort[0].Field == field && opts.Sort[0].Desc == desc {
				return
			}
		}
		t.Errorf("panel %q is not sorted by %s (descending %v)", p.Title, field, desc)
	}
	columns := func(p dashPanel, names ...string) {
		t.Helper()
		for _, tr := range p.Transformations {
			var opts struct {
				Rename map[string]string `json:"renameByName"`
			}
			if tr.ID != "organize" || json.Unmarshal(tr.Options, &opts) != nil {
				continue
			}
			for _, n := range names {
				if !slices.Contains(slices.Collect(maps.Values(opts.Rename)), n) {
					t.Errorf("panel %q has no column %q (columns %v)", p.Title, n, opts.Rename)
				}
			}
			return
		}
		t.Errorf("panel %q names no columns", p.Title)
	}
	linksToPlatform := func(p dashPanel, url string) {
		t.Helper()
		for _, o := range p.FieldConfig.Overrides {
			for _, prop := range o.Properties {
				if o.Matcher.Options == "run_id" && prop.ID == "links" && strings.Contains(string(prop.Value), url) {
					return
				}
			}
		}
		t.Errorf("panel %q has no run_id link to %s", p.Title, url)
	}
	const runLink, exemplarLink = "${platform_url}/runs/${__data.fields.run_id}", "${platform_url}/runs/${__value.raw}"
	withExemplars := func(p dashPanel) {
		t.Helper()
		for _, tg := range p.Targets {
			if !tg.Exemplar {
				t.Errorf("panel %q/%s does not ask for exemplars", p.Title, tg.RefID)
			}
		}
		linksToPlatform(p, exemplarLink)
	}

	// The top row: runs by status counted from the per-run series, so that
	// probe-only installs, which have no workflow_runs, count too.
	need("Runs by status now", "stat", "count by (status) (max by (run_id, status) (workflow_run_status{", "== 1")
	need("Failed (selected range)", "stat", "workflow_runs_finished_total", "[$__range]")
	need("Firing alerts", "table", `ALERTS{alertstate="firing", alertname=~"Workflow.*"`)

	// Which runs failed: recent first, with time, duration, workflow, link.
	p := need("Recent failed runs", "table", "workflow_run_finished_timestamp_seconds", `status="failed"`, "$__range_s", "workflow_run_duration_seconds")
	sortedBy(p, "Finished", true)
	linksToPlatform(p, runLink)
	need("Throughput and failure ratio by workflow (selected range)", "table",
		`increase(workflow_runs_finished_total{status="failed"`, "[$__range]", "sum by (workflow_name, workflow_type)")
	withExemplars(need("Finished per hour by status", "timeseries", "sum by (status) (increase(workflow_runs_finished_total{", "[1h]"))

	// Which runs are stuck or stalled: ages, oldest first, and whether the
	// data is fresh, so that a run whose fetches fail does not look stuck.
	fetchHealth := []string{"time() - workflow_run_last_fetch_success_timestamp_seconds{", "workflow_run_fetch_success{"}
	p = need("Unfinished runs, oldest first", "table", append([]string{`status=~"queued|running"`,
		"time() - workflow_run_created_timestamp_seconds", "time() - workflow_run_status_since_timestamp_seconds",
		"time() - workflow_run_progress_updated_timestamp_seconds"}, fetchHealth...)...)
	sortedBy(p, "Age", true)
	columns(p, "Age", "Last fetch", "Data age")
	linksToPlatform(p, runLink)
	p = need("Stalled runs", "table", append([]string{"time() - workflow_run_progress_updated_timestamp_seconds", "> $stalled_after", `status="running"`}, fetchHealth...)...)
	sortedBy(p, "Progress unchanged for", true)
	columns(p, "Progress unchanged for", "Last fetch", "Data age")
	// Hundreds of running runs: a table, not a bar per run.
	p = need("Progress of running runs", "table", "workflow_run_progress_ratio{", `status="running"`)
	sortedBy(p, "Progress", false)
	linksToPlatform(p, runLink)

	// How long runs take and wait: by workflow name and type, classic or
	// native histograms.
	bothForms := func(metric, by string) []string {
		return []string{
			"sum by (le, " + by + ") (increase(" + metric + "_bucket{",
			"or ignoring (le) sum by (" + by + ") (increase(" + metric + "{",
		}
	}
	const wf = "workflow_name, workflow_type"
	const dur, qw = "workflow_runs_finished_duration_seconds", "workflow_runs_queue_wait_seconds"
	need("Duration by workflow (selected range)", "table", append(bothForms(dur, wf), "[$__range]",
		"histogram_quantile(0.5, ", "histogram_quantile(0.95, ", "histogram_sum(increase("+dur+"{", "histogram_count(increase("+dur+"{")...)
	withExemplars(need("Duration p50 / p95 over time", "timeseries", bothForms(dur, wf)...))
	p = need("Duration distribution (selected range)", "bargauge", "sum by (le) (increase(workflow_runs_finished_duration_seconds_bucket{")
	if len(p.Targets) == 1 && p.Targets[0].Format != "heatmap" {
		t.Errorf("panel %q: format %q, want heatmap (per-bucket counts)", p.Title, p.Targets[0].Format)
	}
	need("Queue wait by workflow (selected range)", "table", append(bothForms(qw, wf), "[$__range]",
		"histogram_quantile(0.9, ", "histogram_count(increase("+qw+"{")...)
	withExemplars(need("Queue wait p50 / p90 over time", "timeseries", bothForms(qw, wf)...))
	p = need("Longest queue waits (selected range)", "table", "workflow_run_queue_wait_seconds{", "$__range_s")
	sortedBy(p, "Queue wait", true)
	linksToPlatform(p, runLink)

	// Is the exporter healthy: per instance, shown by pod name.
	for title, metric := range map[string]string{
		"Up":                              "up{",
		"Data age":                        "workflow_runs_exporter_last_poll_cycle_timestamp_seconds{",
		"Config reload":                   "workflow_runs_exporter_config_last_reload_successful{",
		"Rate-limit pause left":           "workflow_runs_exporter_api_paused_until_timestamp_seconds{",
		"Storage errors (selected range)": "workflow_runs_exporter_storage_errors_total{",
		"Tracked runs":                    "workflow_runs_exporter_tracked_runs{",
		"Run list (runs.ids_file)":        "workflow_runs_exporter_ids_file_invalid_lines{",
		"Probe-only runs in memory":       "workflow_runs_exporter_probe_runs{",
		"Rate-limit pauses":               "workflow_runs_exporter_api_pauses_total{",
		"Poll cycle duration":             "workflow_runs_exporter_poll_cycle_duration_seconds_bucket{",
	} {
		need(title, panels[title].Type, metric, instanceVar, podInstance)
	}
	need("Run list (runs.ids_file)", "table", "workflow_runs_exporter_ids_file_read_successful{")
	need("Instances", "table", "workflow_runs_exporter_build_info{", instanceVar)
	// The first cycle is not 57 years of data age.
	p = need("Data age", "stat", "_seconds{"+strings.Join(scope, ", ")+", "+instanceVar+"} > 0)", "== 0) - 1")
	if m := p.FieldConfig.Defaults.Mappings; len(m) != 1 || m[0].Options["-1"].Text != "first cycle" {
		t.Errorf(`panel "Data age" does not show -1 as "first cycle": %+v`, m)
	}
	need("Runs whose last fetch failed", "table", "workflow_run_fetch_error_reason{", "== 1", "reason")
}

// grafanaVariableValues does what Grafana does with the result of a
// query_result() variable query and the variable's regex: each line is
// `{<labels>} <value> <timestamp>`, the regex's named groups "value" and
// "text" give an option's value and the text shown (the value when there
// is no text).
func grafanaVariableValues(t *testing.T, regex string, lines []string) map[string]string {
	t.Helper()
	if !strings.HasPrefix(regex, "/") || !strings.HasSuffix(regex, "/") {
		t.Fatalf("regex %q is not /.../", regex)
	}
	re := regexp.MustCompile(regex[1 : len(regex)-1])
	options := map[string]string{}
	for _, line := range lines {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		value, text := m[re.SubexpIndex("value")], m[re.SubexpIndex("text")]
		if text == "" {
			text = value
		}
		options[value] = text
	}
	return options
}

// TestDashboardInstanceIsPod: the instance variable shows a pod's name
// where the target has one, and keeps the address as its value, which the
// queries match instance against.
func TestDashboardInstanceIsPod(t *testing.T) {
	var instance dashVariable
	for _, v := range loadDashboard(t).Templating.List {
		if v.Name == "instance" {
			instance = v
		}
	}
	if !strings.HasPrefix(instance.Definition, "query_result(max by (instance, pod) (workflow_runs_exporter_build_info{") {
		t.Errorf("instance variable query %q: want query_result of the instances and pods of build_info", instance.Definition)
	}
	got := grafanaVariableValues(t, instance.Regex, []string{
		`{instance="10.1.2.3:10025",pod="workflow-runs-exporter-2"} 1 1700000000000`,
		`{instance="exporter:10025"} 1 1700000000000`,
	})
	want := map[string]string{"10.1.2.3:10025": "workflow-runs-exporter-2", "exporter:10025": "exporter:10025"}
	if !maps.Equal(got, want) {
		t.Errorf("instance options (value: text) = %v, want %v", got, want)
	}
}
