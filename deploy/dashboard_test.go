package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// dashboard is the part of the Grafana dashboard JSON the tests read.
type dashboard struct {
	UID           string      `json:"uid"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name     string  `json:"name"`
			Type     string  `json:"type"`
			AllValue *string `json:"allValue"`
		} `json:"list"`
	} `json:"templating"`
}

type dashPanel struct {
	ID         int    `json:"id"`
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Expr    string `json:"expr"`
		RefID   string `json:"refId"`
		Format  string `json:"format"`
		Instant bool   `json:"instant"`
	} `json:"targets"`
	FieldConfig struct {
		Overrides []struct {
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
	instanceVar = `instance=~"$instance"`
)

// TestDashboardQueries: the panels the operator's four questions need
// exist and query what they must, and no query mixes up instances.
func TestDashboardQueries(t *testing.T) {
	dash := loadDashboard(t)
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		if v.Name == "job" || v.Name == "instance" {
			if v.AllValue != nil {
				t.Errorf("variable %s has allValue %q: \"All\" must stay the list of the exporter's own %ss, not every one in Prometheus", v.Name, *v.AllValue, v.Name)
			}
		}
	}
	for _, want := range []string{"datasource", "job", "instance", "workflow_type", "workflow_name", "platform_url", "stalled_after"} {
		if !vars[want] {
			t.Errorf("template variable %s missing", want)
		}
	}

	panels := map[string]dashPanel{}
	for _, p := range dash.Panels {
		panels[p.Title] = p
		for _, tg := range p.Targets {
			// Several shards, or /probe with instance = run ID: a join
			// across targets would pair one run with another's data.
			for _, m := range joinOn.FindAllStringSubmatch(tg.Expr, -1) {
				if !strings.Contains(m[1], "instance") || !strings.Contains(m[1], "job") {
					t.Errorf("panel %q joins %s without job and instance: %s", p.Title, m[0], tg.Expr)
				}
			}
			if maxOverAll.MatchString(tg.Expr) {
				t.Errorf("panel %q aggregates the data age over instances; a stale instance would hide: %s", p.Title, tg.Expr)
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
	sortedDesc := func(p dashPanel, field string) {
		t.Helper()
		for _, tr := range p.Transformations {
			var opts struct {
				Sort []struct {
					Field string `json:"field"`
					Desc  bool   `json:"desc"`
				} `json:"sort"`
			}
			if tr.ID == "sortBy" && json.Unmarshal(tr.Options, &opts) == nil &&
				len(opts.Sort) == 1 && opts.Sort[0].Field == field && opts.Sort[0].Desc {
				return
			}
		}
		t.Errorf("panel %q is not sorted by %s, descending", p.Title, field)
	}
	linksToPlatform := func(p dashPanel) {
		t.Helper()
		for _, o := range p.FieldConfig.Overrides {
			for _, prop := range o.Properties {
				if prop.ID == "links" && strings.Contains(string(prop.Value), "${platform_url}/runs/${__data.fields.run_id}") {
					return
				}
			}
		}
		t.Errorf("panel %q has no run_id link to ${platform_url}/runs/<run_id>", p.Title)
	}

	// Which runs failed: recent first, with time, duration, workflow, link.
	p := need("Recent failed runs", "table", "workflow_run_finished_timestamp_seconds", `status="failed"`, "$__range_s", "workflow_run_duration_seconds")
	sortedDesc(p, "Finished")
	linksToPlatform(p)
	need("Throughput and failure ratio by workflow (selected range)", "table",
		`increase(workflow_runs_finished_total{status="failed"`, "[$__range]", "sum by (workflow_name, workflow_type)")
	need("Finished per hour by status", "timeseries", "sum by (status) (increase(workflow_runs_finished_total{", "[1h]")
	need("Failed (selected range)", "stat", "workflow_runs_finished_total", "[$__range]")

	// Which runs are stuck or stalled: ages, oldest first.
	p = need("Unfinished runs, oldest first", "table", `status=~"queued|running"`,
		"time() - workflow_run_created_timestamp_seconds", "time() - workflow_run_status_since_timestamp_seconds",
		"time() - workflow_run_progress_updated_timestamp_seconds")
	sortedDesc(p, "Age")
	linksToPlatform(p)
	p = need("Stalled runs", "table", "time() - workflow_run_progress_updated_timestamp_seconds", "> $stalled_after", `status="running"`)
	sortedDesc(p, "Progress unchanged for")

	// How long runs take: from the histogram, over the selected range.
	need("Duration by workflow (selected range)", "table",
		"histogram_quantile(0.5, sum by (le, workflow_name) (increase(workflow_runs_finished_duration_seconds_bucket{",
		"histogram_quantile(0.95, sum by (le, workflow_name) (increase(workflow_runs_finished_duration_seconds_bucket{", "[$__range]")
	p = need("Duration distribution (selected range)", "bargauge", "sum by (le) (increase(workflow_runs_finished_duration_seconds_bucket{")
	if len(p.Targets) == 1 && p.Targets[0].Format != "heatmap" {
		t.Errorf("panel %q: format %q, want heatmap (per-bucket counts)", p.Title, p.Targets[0].Format)
	}

	// Is the exporter healthy: per instance.
	for title, metric := range map[string]string{
		"Up":                              "up{",
		"Data age":                        "time() - workflow_runs_exporter_last_poll_cycle_timestamp_seconds{",
		"Config reload":                   "workflow_runs_exporter_config_last_reload_successful{",
		"Rate-limit pause left":           "workflow_runs_exporter_api_paused_until_timestamp_seconds{",
		"Instances":                       "workflow_runs_exporter_build_info{",
		"Storage errors (selected range)": "workflow_runs_exporter_storage_errors_total{",
	} {
		p := panels[title]
		need(title, p.Type, metric, instanceVar)
	}
	need("Runs whose last fetch failed", "table", "workflow_run_fetch_error_reason{", "== 1", "reason")
	need("Firing alerts", "table", `ALERTS{alertstate="firing", alertname=~"WorkflowRun.*"}`)
}
