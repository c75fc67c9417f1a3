package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shardedAPI serves runs to several exporters, each under its own path
// prefix (/shard-<i>/v1/runs/<id>), and counts the fetches of every run by
// the shard that made them.
type shardedAPI struct {
	*httptest.Server
	mu      sync.Mutex
	fetches map[string]map[int]int // run ID -> shard -> fetches
}

// fetchesOf returns a copy of the fetch counts of every run, by shard.
func (a *shardedAPI) fetchesOf() map[string]map[int]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]map[int]int{}
	for id, by := range a.fetches {
		out[id] = map[int]int{}
		for s, n := range by {
			out[id][s] = n
		}
	}
	return out
}

// shardProxy stands in for the cluster's DNS: Prometheus sends the probes
// through it (proxy_url), and it forwards each to the exporter of the shard
// the StatefulSet name in the address stands for, noting where each run's
// probes went.
type shardProxy struct {
	*httptest.Server
	mu       sync.Mutex
	probedOn map[string]map[int]bool // run_id -> shards probed
	unknown  []string                // hosts that are no shard
}

func newShardProxy(t *testing.T, exporters []string) *shardProxy {
	p := &shardProxy{probedOn: map[string]map[int]bool{}}
	forward := make([]*httputil.ReverseProxy, len(exporters))
	for i, addr := range exporters {
		forward[i] = httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
		// Refused until the shard listens: Prometheus sees a failed probe.
		forward[i].ErrorLog = log.New(io.Discard, "", 0)
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := probeShardHost.FindStringSubmatch(r.URL.Host)
		shard := -1
		if m != nil {
			shard, _ = strconv.Atoi(m[1])
		}
		p.mu.Lock()
		if shard < 0 || shard >= len(exporters) {
			p.unknown = append(p.unknown, r.URL.Host)
			p.mu.Unlock()
			http.Error(w, "no such shard", http.StatusBadGateway)
			return
		}
		id := r.URL.Query().Get("run_id")
		if p.probedOn[id] == nil {
			p.probedOn[id] = map[int]bool{}
		}
		p.probedOn[id][shard] = true
		p.mu.Unlock()
		forward[shard].ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// TestPrometheusRoutesProbesToOwners runs the shipped probe configuration
// against 3 shards: a real Prometheus discovers 50 run IDs (in mixed case)
// from a file, and its relabelling (lowercase, hashmod, the shard's stable
// name) sends each run's probe to the shard that owns it. Every run is
// probed and fetched on its owner only, the API sees at most one fetch per
// run per poll.interval, and the finished counters of the shards sum to
// the runs that finished.
func TestPrometheusRoutesProbesToOwners(t *testing.T) {
	const shards = 3
	dir := t.TempDir()

	// 50 runs: 30 finished 5 minutes ago (every third failed), 20 running
	// until finishedAt is set, then completed at that time.
	now := time.Now()
	done := now.Add(-5 * time.Minute)
	docs := map[string]map[string]any{}
	var ids, finished, running []string
	for i, id := range randomRunIDs(50) {
		lower := strings.ToLower(id)
		ids = append(ids, id)
		switch {
		case i < 30 && i%3 == 0:
			docs[lower] = runDocument(lower, "failed", 30, now.Add(-time.Hour), &done)
			finished = append(finished, lower)
		case i < 30:
			docs[lower] = runDocument(lower, "completed", 100, now.Add(-time.Hour), &done)
			finished = append(finished, lower)
		default:
			docs[lower] = runDocument(lower, "running", 40, now.Add(-time.Minute), nil)
			running = append(running, lower)
		}
	}
	var finishedAt atomic.Pointer[time.Time]
	api := &shardedAPI{fetches: map[string]map[int]int{}}
	api.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var shard int
		var id string
		if _, err := fmt.Sscanf(r.URL.Path, "/shard-%d/v1/runs/%s", &shard, &id); err != nil || r.Header.Get("Authorization") != "Bearer "+fakeToken {
			http.Error(w, `{"detail":"Not found"}`, http.StatusNotFound)
			return
		}
		api.mu.Lock()
		if api.fetches[id] == nil {
			api.fetches[id] = map[int]int{}
		}
		api.fetches[id][shard]++
		api.mu.Unlock()
		doc, ok := docs[id]
		if !ok {
			http.Error(w, `{"detail":"Run not found"}`, http.StatusNotFound)
			return
		}
		if at := finishedAt.Load(); at != nil && doc["status"] == "running" {
			doc = runDocument(id, "completed", 100, now.Add(-time.Minute), at)
		}
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(api.Close)

	// Three shards in probe-only mode (no run list), each with its own
	// path on the API so its fetches can be told apart. The configs are
	// written before any shard starts: writeConfig rewrites the token file.
	// Prometheus probes every second, three times per poll.interval, so
	// that more than one fetch per interval would show.
	const pollInterval = 3 * time.Second
	configs := make([]string, shards)
	for i := range configs {
		configs[i] = writeConfig(t, dir, fmt.Sprintf("shard-%d.yml", i), fmt.Sprintf("%s/shard-%d", api.URL, i), "5s")
		text, _ := os.ReadFile(configs[i])
		os.WriteFile(configs[i], []byte(strings.Replace(string(text), "interval: 1s", "interval: 3s", 1)), 0o600)
	}
	exporters := make([]string, shards)
	for i := range exporters {
		exporters[i] = freeAddr(t)
		start(t, exporterBinary(t), "--config.file="+configs[i], "--web.listen-address="+exporters[i],
			fmt.Sprintf("--shard.count=%d", shards), fmt.Sprintf("--shard.index=%d", i))
	}
	proxy := newShardProxy(t, exporters)

	// The shipped configuration, sped up, reading the discovered runs from
	// the test's file and reaching the StatefulSet's names through the
	// proxy; plus a plain job for the shards' own /metrics.
	var sd strings.Builder
	json.NewEncoder(&sd).Encode([]map[string]any{{"targets": ids}})
	os.WriteFile(filepath.Join(dir, "run_ids.json"), []byte(sd.String()), 0o600)
	prom := startShippedPrometheus(t, dir, "prometheus-probe.yml", func(cfg string) string {
		if !strings.Contains(cfg, "modulus: 3\n") || !strings.Contains(cfg, probeShardAddress) {
			t.Fatalf("prometheus-probe.yml routes to something else than %d shards at %s", shards, probeShardAddress)
		}
		return strings.NewReplacer(
			"30s", "1s",
			"'run_ids.json'", "'"+filepath.Join(dir, "run_ids.json")+"'",
			"metrics_path: /probe\n", "metrics_path: /probe\n    proxy_url: "+proxy.URL+"\n",
		).Replace(cfg) +
			fmt.Sprintf("  - job_name: workflow_runs_exporter\n    static_configs:\n      - targets: ['%s']\n", strings.Join(exporters, "', '"))
	})

	// The owner of each run: Prometheus' hashmod of its lower-case ID.
	owner := map[string]int{}
	for _, id := range ids {
		owner[strings.ToLower(id)] = hashmod(t, id, shards)
	}
	finishedOn := func(runs []string) []float64 {
		n := make([]float64, shards)
		for _, id := range runs {
			n[owner[id]]++
		}
		return n
	}
	for i, n := range finishedOn(append(append([]string(nil), finished...), running...)) {
		if n == 0 {
			t.Fatalf("shard %d owns none of the 50 runs; the test would prove nothing for it", i)
		}
	}

	eventually(t, "every run's series from its probe", 60*time.Second, func() error {
		res, err := promSamples(prom, `workflow_run_fetch_success{job="workflow_runs_probe"} == 1`)
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, s := range res {
			if s.labels["instance"] != s.labels["run_id"] {
				return fmt.Errorf("series labels %v: want instance = run_id", s.labels)
			}
			got[s.labels["run_id"]] = true
		}
		if len(got) != len(docs) {
			return fmt.Errorf("series for %d runs, want %d", len(got), len(docs))
		}
		return nil
	})
	// finishedPerShard checks the shards' own counters, as Prometheus
	// scraped them: only the owner counts a run.
	finishedPerShard := func(want []float64) func() error {
		return func() error {
			res, err := promSamples(prom, `sum by (instance) (workflow_runs_finished_total{job="workflow_runs_exporter"})`)
			if err != nil {
				return err
			}
			got := make([]float64, shards)
			for _, s := range res {
				for i, addr := range exporters {
					if s.labels["instance"] == addr {
						got[i] = s.value
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("workflow_runs_finished_total per shard = %v, want %v", got, want)
			}
			total, err := promSamples(prom, `sum(workflow_runs_finished_total)`)
			if err == nil && (len(total) != 1 || total[0].value != sumFloats(want)) {
				err = fmt.Errorf("sum(workflow_runs_finished_total) = %v, want %v", total, sumFloats(want))
			}
			return err
		}
	}
	eventually(t, "the 30 finished runs counted, each by its owner", 30*time.Second, finishedPerShard(finishedOn(finished)))

	// The running runs are fetched again as they are probed, about once per
	// poll.interval and never more often; finished runs are never fetched
	// again.
	before, start := api.fetchesOf(), time.Now()
	time.Sleep(15 * time.Second)
	after, elapsed := api.fetchesOf(), time.Since(start)
	most := int(elapsed/pollInterval) + 2
	total := 0
	for _, id := range running {
		n := 0
		for s := range after[id] {
			n += after[id][s] - before[id][s]
		}
		total += n
		if n > most {
			t.Errorf("running run %s fetched %d times in %v, want at most one per poll.interval (%d)", id, n, elapsed.Round(time.Second), most)
		}
	}
	t.Logf("%d running runs fetched %d times in %v with a %v poll.interval and probes every second", len(running), total, elapsed.Round(time.Second), pollInterval)
	if least := len(running) * int(elapsed/pollInterval) / 4; total < least {
		t.Errorf("running runs fetched %d times in all in %v, want at least %d: probes stopped fetching them", total, elapsed.Round(time.Second), least)
	}
	for _, id := range finished {
		if n := after[id][owner[id]]; n != 1 {
			t.Errorf("finished run %s fetched %d times by its owner, want 1", id, n)
		}
	}

	at := time.Now()
	finishedAt.Store(&at)
	eventually(t, "all 50 runs counted, each by its owner", 30*time.Second, finishedPerShard(finishedOn(append(append([]string(nil), finished...), running...))))

	// Where every probe and every fetch went.
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	if len(proxy.unknown) > 0 {
		t.Errorf("probes sent to addresses that are no shard: %v", proxy.unknown)
	}
	for id := range docs {
		if on := proxy.probedOn[id]; len(on) != 1 || !on[owner[id]] {
			t.Errorf("run %s probed on shards %v, want its owner %d only", id, on, owner[id])
		}
	}
	for id, by := range api.fetchesOf() {
		for s := range by {
			if s != owner[id] {
				t.Errorf("run %s fetched by shard %d, want its owner %d only", id, s, owner[id])
			}
		}
	}
}

func sumFloats(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s
}
