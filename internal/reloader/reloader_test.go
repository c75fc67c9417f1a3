package reloader

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/config"
	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/shard"
)

func TestReloadWithBrokenConfigKeepsTheOldOne(t *testing.T) {
	f := newFixture(t, 6, "")
	f.start()
	f.write("config.yml", "api: {url: [broken\n")
	code, body := f.get("POST", "/-/reload")
	if code != http.StatusInternalServerError || !strings.Contains(body, "previous configuration stays in force") {
		t.Errorf("reload of a broken config = %d %q, want 500 saying the old config stays", code, body)
	}
	if got := f.gauge("workflow_runs_exporter_config_last_reload_successful"); got != 0 {
		t.Errorf("config_last_reload_successful = %v, want 0", got)
	}
	// Polling goes on with the old configuration.
	before := f.gauge("workflow_runs_exporter_last_poll_cycle_timestamp_seconds")
	f.waitFor("another poll cycle", func() bool {
		return f.gauge("workflow_runs_exporter_last_poll_cycle_timestamp_seconds") > before
	})

	// A good reload applies; finished runs are not fetched again.
	ids := f.sim.IDs()
	var finished []string
	for _, id := range ids[:4] {
		if r, _ := f.sim.Run(id); r.At(f.sim.Now()).Status.Terminal() {
			finished = append(finished, id)
		}
	}
	if len(finished) == 0 {
		t.Fatal("sample has no finished run among the first four")
	}
	f.writeConfig(ids[:4], "")
	if code, body := f.get("POST", "/-/reload"); code != 200 {
		t.Fatalf("good reload = %d %q", code, body)
	}
	if got := f.gauge("workflow_runs_exporter_config_last_reload_successful"); got != 1 {
		t.Errorf("config_last_reload_successful = %v, want 1", got)
	}
	if got := f.gauge("workflow_runs_exporter_tracked_runs"); got != 4 {
		t.Errorf("tracked_runs = %v right after the reload, want 4", got)
	}
	if n := len(f.scrape()["workflow_run_fetch_success"].GetMetric()); n != 4 {
		t.Errorf("%d runs exported right after the reload, want 4", n)
	}
	before = f.gauge("workflow_runs_exporter_last_poll_cycle_timestamp_seconds")
	f.waitFor("a cycle after the reload", func() bool {
		return f.gauge("workflow_runs_exporter_last_poll_cycle_timestamp_seconds") > before
	})
	for _, id := range finished {
		if got := f.sim.Requests(id); got != 1 {
			t.Errorf("finished run %s requested %d times, want 1", id, got)
		}
	}
}

func TestTokenNeverLeaks(t *testing.T) {
	f := newFixture(t, 5, "")
	f.start()
	// Make every request fail with 401 for a while, and log at debug.
	f.write("token", "wrong-token\n")
	f.waitFor("a failed fetch", func() bool { return strings.Contains(f.logs.String(), "unauthorized") })
	f.write("token", sentinel+"\n")
	f.write("config.yml", "api: {url: https://x, authorization: {credentials: "+sentinel+", credentials_file: token}}\nruns: {ids: []}\n")
	_, reloadBody := f.get("POST", "/-/reload")
	_, metrics := f.get("GET", "/metrics")
	_, landing := f.get("GET", "/")
	_, probe := f.get("GET", "/probe?run_id="+f.sim.IDs()[0])
	for what, text := range map[string]string{"logs": f.logs.String(), "metrics": metrics, "reload error": reloadBody, "landing page": landing, "probe": probe} {
		if strings.Contains(text, sentinel) {
			t.Errorf("%s contain the token", what)
		}
	}
}

func TestEveryRunIsExported(t *testing.T) {
	f := newFixture(t, 12, "")
	f.start()
	if n := len(f.scrape()["workflow_run_status"].GetMetric()); n != 12*5 {
		t.Errorf("workflow_run_status series = %d, want %d", n, 12*5)
	}
}

// TestShardsSplitEveryIDSource: the shard filter applies to runs.ids and
// runs.ids_file alike, and three shards own every run exactly once.
func TestShardsSplitEveryIDSource(t *testing.T) {
	dir := t.TempDir()
	var ids []string
	for i := range 60 {
		ids = append(ids, strings.Replace("00000000-0d44-4b50-8888-8dd25736052a", "00000000", strings.Repeat(string(rune('a'+i%6)), 2)+strings.Repeat("0", 4)+string(rune('a'+i/10))+string(rune('0'+i%10)), 1))
	}
	f := &fixture{t: t, dir: dir}
	f.write("ids.txt", strings.Join(ids[30:], "\n"))
	f.write("c.yml", "api: {url: https://x}\nruns: {ids: ["+strings.Join(ids[:30], ",")+"], ids_file: ids.txt}\n")
	load := func() (*config.Config, error) { return config.LoadFile(filepath.Join(dir, "c.yml")) }
	owners := map[string]int{}
	for i := range 3 {
		sh, _ := shard.New(i, 3)
		p, err := Prepare(load, sh, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.Configured != 60 {
			t.Errorf("shard %d: %d configured, want 60", i, p.Configured)
		}
		for _, id := range p.IDs {
			owners[id]++
		}
	}
	for _, id := range ids {
		if owners[id] != 1 {
			t.Errorf("%s owned by %d shards", id, owners[id])
		}
	}
}

func TestPrepareChecksWhatReloadChecks(t *testing.T) {
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir}
	f.write("c.yml", "api: {url: https://x, tls_config: {ca_file: missing-ca.pem}}\n")
	_, err := Prepare(func() (*config.Config, error) { return config.LoadFile(filepath.Join(dir, "c.yml")) }, shard.Assignment{Count: 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "missing-ca.pem") {
		t.Errorf("Prepare with a missing CA file: %v, want an error naming it", err)
	}
}

func TestProbeOnlyConfiguration(t *testing.T) {
	f := newFixture(t, 3, "")
	f.write("config.yml", "api: {url: "+f.api.URL+", authorization: {credentials_file: token}}\npoll: {interval: 1h}\n")
	f.start()
	if !strings.Contains(f.logs.String(), "answering /probe") {
		t.Errorf("probe-only mode not logged:\n%s", f.logs.String())
	}
	id := f.sim.IDs()[1]
	code, body := f.get("GET", "/probe?run_id="+strings.ToUpper(id))
	if code != 200 || !strings.Contains(body, `workflow_run_fetch_success{run_id="`+id+`"} 1`) {
		t.Errorf("/probe = %d:\n%s", code, body)
	}
	if n := f.sim.Requests(id); n != 1 {
		t.Errorf("%d requests for the probed run, want 1", n)
	}
	_ = time.Second
}
