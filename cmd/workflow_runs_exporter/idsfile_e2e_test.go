package main

// End-to-end tests of runs.ids_file as data: a bad line, a late file or an
// empty one never stops the binary or the runs listed elsewhere, and no
// line of the file is ever shown.

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// idsSentinel stands for a secret in a file named as runs.ids_file by
// mistake.
const idsSentinel = "SENTINEL-IDS-FILE-LINE-3b5d5c37"

// The helpers below carry "ids" in their names: other test files of this
// package grow helpers too, and these must not collide with theirs.

// idsPostReload posts /-/reload and returns the status and body.
func idsPostReload(p *process) (int, string) {
	p.t.Helper()
	resp, err := http.Post(p.url("/-/reload"), "", nil)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// idsMetricsText returns /metrics as text.
func idsMetricsText(p *process) string {
	p.t.Helper()
	resp, err := http.Get(p.url("/metrics"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// idsGauge returns the value of the gauge name, NaN if absent.
func idsGauge(p *process, name string) float64 {
	p.t.Helper()
	return gaugeValue(p.scrape(), name, nil)
}

func TestEndToEndIDsFileWithAnInvalidLine(t *testing.T) {
	env := newE2EEnv(t, 10)
	ids := env.sim.IDs()
	path := filepath.Join(env.dir, "ids.txt")
	env.write("ids.txt", "# sample runs\n"+strings.Join(ids[:5], "\n")+"\n"+idsSentinel+"\n"+strings.Join(ids[5:], "\n")+"\n")

	// --config.check refuses it, naming file and line.
	code, out := exitOf(t, env.config(), "--config.check")
	if want := "runs.ids_file: " + path + " line 7: not a run ID (a UUID)"; code != 1 || !strings.Contains(out, want) {
		t.Errorf("--config.check: exit %d, output:\n%s\nwant exit 1 and %q", code, out, want)
	}
	if strings.Contains(out, idsSentinel) {
		t.Errorf("--config.check quotes the line:\n%s", out)
	}

	// The exporter starts and tracks the other ten.
	p := startExporter(t, env.config())
	p.waitReady()
	mfs := p.scrape()
	for name, want := range map[string]float64{
		"workflow_runs_exporter_tracked_runs":                  10,
		"workflow_runs_exporter_ids_file_invalid_lines":        1,
		"workflow_runs_exporter_ids_file_read_successful":      1,
		"workflow_runs_exporter_config_last_reload_successful": 1,
	} {
		if got := gaugeValue(mfs, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if n := len(mfs["workflow_run_fetch_success"].GetMetric()); n != 10 {
		t.Errorf("%d runs exported, want 10", n)
	}
	if want := "file=" + path + " line=7 "; !strings.Contains(p.logs.String(), want) {
		t.Errorf("no log line with %q", want)
	}
	code, body := idsPostReload(p)
	if code != 200 {
		t.Errorf("POST /-/reload = %d %q, want 200", code, body)
	}
	for what, text := range map[string]string{"log": p.logs.String(), "/metrics": idsMetricsText(p), "reload answer": body} {
		if strings.Contains(text, idsSentinel) {
			t.Errorf("the %s quotes the line", what)
		}
	}
}

func TestEndToEndIDsFileLateThenEmptied(t *testing.T) {
	env := newE2EEnv(t, 6)
	ids := env.sim.IDs()
	path := filepath.Join(env.dir, "ids.txt")
	os.Remove(path)
	env.write("config.yml", `
api: {url: `+env.api.URL+`, authorization: {credentials_file: token}}
runs: {ids: [`+ids[0]+`], ids_file: ids.txt}
poll: {interval: 300ms, max_requests_per_second: 5000}
`)

	code, out := exitOf(t, env.config(), "--config.check")
	if want := "runs.ids_file: stat " + path + ": no such file or directory"; code != 1 || !strings.Contains(out, want) {
		t.Errorf("--config.check: exit %d, output:\n%s\nwant exit 1 and %q", code, out, want)
	}

	// It starts, with runs.ids tracked at once.
	p := startExporter(t, env.config())
	p.waitReady()
	if got := idsGauge(p, "workflow_runs_exporter_tracked_runs"); got != 1 {
		t.Errorf("tracked_runs = %v with the file missing, want 1", got)
	}
	if got := idsGauge(p, "workflow_runs_exporter_ids_file_read_successful"); got != 0 {
		t.Errorf("read_successful = %v with the file missing, want 0", got)
	}

	// The file arrives; its runs are tracked within two checks.
	env.write("ids.txt", strings.Join(ids[1:], "\n")+"\n")
	waitFor(t, "the file's runs", func() bool { return idsGauge(p, "workflow_runs_exporter_tracked_runs") == 6 })
	if got := idsGauge(p, "workflow_runs_exporter_ids_file_read_successful"); got != 1 {
		t.Errorf("read_successful = %v, want 1", got)
	}

	// Emptied: warned about, and held for a minute. Nothing shows when a
	// check has read it, so this waits two checks (5s each) and a margin
	// past the warning: a slow machine makes the test weaker, never flaky.
	env.write("ids.txt", "")
	waitFor(t, "the empty file's warning", func() bool { return strings.Contains(p.logs.String(), "runs.ids_file lists no runs") })
	time.Sleep(12 * time.Second)
	if got := idsGauge(p, "workflow_runs_exporter_tracked_runs"); got != 6 {
		t.Errorf("tracked_runs = %v within a minute of the file emptied, want 6", got)
	}
	if n := len(p.scrape()["workflow_run_fetch_success"].GetMetric()); n != 6 {
		t.Errorf("%d runs exported within a minute of the file emptied, want 6", n)
	}
	if n := strings.Count(p.logs.String(), "runs.ids_file cannot be read"); n != 1 {
		t.Errorf("the missing file was logged %d times, want once", n)
	}
}
