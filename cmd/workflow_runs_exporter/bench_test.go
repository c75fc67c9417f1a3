package main

// Benchmarks of the real binary, measured as a user would: the exporter in
// its own process against the simulated API in another, its CPU read from
// /proc, its memory from VmRSS. Each benchmark runs its scenario once per
// size; the figures are reported as custom metrics. Run with
//
//	go test -run '^$' -bench . -benchtime 1x ./cmd/workflow_runs_exporter
//
// WRE_BENCH_BINARY=<path> measures another build (an older version, say)
// instead of this one; WRE_BENCH_SIZES=1000,10000 picks the sizes.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
)

// simEnv asks TestMain to serve the simulated API instead of running tests:
// "<runs>:<finished fraction>".
const simEnv = "WRE_SIMAPI_SERVE"

// serveSimAPI is the child process's main: it serves LoadRuns on a free
// port, prints its address, and serves until killed.
func serveSimAPI(spec string) {
	n, frac, _ := strings.Cut(spec, ":")
	runs, _ := strconv.Atoi(n)
	finished, _ := strconv.ParseFloat(frac, 64)
	sim := simapi.New(e2eToken, simapi.LoadRuns(runs, finished, time.Now()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	for _, id := range sim.IDs() {
		fmt.Println(id)
	}
	fmt.Println("end")
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	srv.Serve(ln)
}

type benchEnv struct {
	b      *testing.B
	dir    string
	apiURL string
	ids    []string
}

// newBenchEnv starts the simulated API with n runs, the given fraction of
// them finished, in a child process.
func newBenchEnv(b *testing.B, n int, finished float64) *benchEnv {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%g", simEnv, n, finished))
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	e := &benchEnv{b: b, dir: b.TempDir()}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case e.apiURL == "":
			e.apiURL = "http://" + line
		case line == "end":
			go io.Copy(io.Discard, out)
			e.writeConfig("")
			return e
		default:
			e.ids = append(e.ids, line)
		}
	}
	b.Fatalf("the simulated API did not start: %v", sc.Err())
	return nil
}

// writeConfig lists every run in an ids_file, or none with probeOnly.
func (e *benchEnv) writeConfig(extra string) {
	os.WriteFile(filepath.Join(e.dir, "token"), []byte(e2eToken), 0o600)
	os.WriteFile(filepath.Join(e.dir, "ids.txt"), []byte(strings.Join(e.ids, "\n")), 0o600)
	os.WriteFile(filepath.Join(e.dir, "config.yml"), []byte(fmt.Sprintf(`
api: {url: %s, authorization: {credentials_file: token}}
runs: {ids_file: ids.txt}
poll: {interval: 1s, concurrency: 8, max_requests_per_second: 1000000}
%s`, e.apiURL, extra)), 0o600)
}

var (
	benchBuildOnce sync.Once
	benchBinary    string
)

// binaryForBench is the exporter without the race detector, or
// WRE_BENCH_BINARY.
func binaryForBench(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("WRE_BENCH_BINARY"); p != "" {
		return p
	}
	benchBuildOnce.Do(func() {
		benchBinary = filepath.Join(buildDir, "workflow_runs_exporter.bench")
		if out, err := exec.Command("go", "build", "-o", benchBinary, ".").CombinedOutput(); err != nil {
			b.Fatalf("go build: %v\n%s", err, out)
		}
	})
	return benchBinary
}

type benchProcess struct {
	b    *testing.B
	cmd  *exec.Cmd
	addr string
	log  *strings.Builder
}

func (e *benchEnv) start(args ...string) *benchProcess {
	p := &benchProcess{b: e.b, addr: freePortB(e.b), log: &strings.Builder{}}
	p.cmd = exec.Command(binaryForBench(e.b), append([]string{"--config.file=" + filepath.Join(e.dir, "config.yml"), "--web.listen-address=" + p.addr, "--log.level=warn"}, args...)...)
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		e.b.Fatal(err)
	}
	e.b.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

func freePortB(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (p *benchProcess) url(path string) string { return "http://" + p.addr + path }

// waitReady waits for /-/ready and returns how long it took since start.
func (p *benchProcess) waitReady(started time.Time) time.Duration {
	for deadline := time.Now().Add(15 * time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if resp, err := http.Get(p.url("/-/ready")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(started)
			}
		}
	}
	p.b.Fatalf("not ready within 15 minutes:\n%s", p.log.String())
	return 0
}

// cpu returns the CPU time the process has used, summed over its threads,
// to the nanosecond (/proc/<pid>/task/*/schedstat).
func (p *benchProcess) cpu() time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", p.cmd.Process.Pid))
	var ns int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		v, _ := strconv.ParseInt(strings.Fields(string(data))[0], 10, 64)
		ns += v
	}
	return time.Duration(ns)
}

// rssMiB is the process's resident memory.
func (p *benchProcess) rssMiB() float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// scrape fetches /metrics as Prometheus does (gzip unless plain), and
// returns the wall time it took and the sums of the samples of the named
// metrics.
func (p *benchProcess) scrape(plain bool, names ...string) (time.Duration, map[string]float64) {
	req, _ := http.NewRequest("GET", p.url("/metrics"), nil)
	if plain {
		req.Header.Set("Accept-Encoding", "identity")
	} else {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	start := time.Now()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		p.b.Fatal(err)
	}
	defer resp.Body.Close()
	sums := map[string]float64{}
	if len(names) == 0 { // only the time: the body goes nowhere, as with curl -o /dev/null
		io.Copy(io.Discard, resp.Body)
		return time.Since(start), sums
	}
	raw, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	var body io.Reader = bytes.NewReader(raw)
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			p.b.Fatal(err)
		}
		body = zr
	}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if strings.HasPrefix(line, n+" ") || strings.HasPrefix(line, n+"{") {
				v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				sums[n] += v
			}
		}
	}
	return took, sums
}

func benchSizes() []int {
	sizes := []int{1000, 10000, 100000}
	if s := os.Getenv("WRE_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, _ := strconv.Atoi(f)
			sizes = append(sizes, n)
		}
	}
	return sizes
}

const (
	cycles   = "workflow_runs_exporter_poll_cycle_duration_seconds_count"
	requests = "workflow_runs_exporter_api_requests_total"
)

// BenchmarkExporterIdle: every run finished. CPU per poll cycle when no
// request is due, /metrics time, RSS after 10 scrapes.
func BenchmarkExporterIdle(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			env := newBenchEnv(b, n, 1)
			started := time.Now()
			p := env.start()
			b.ReportMetric(p.waitReady(started).Seconds(), "s-to-ready")
			time.Sleep(3 * time.Second) // the first scrapes compress everything once
			p.scrape(false)
			_, before := p.scrape(false, cycles, requests)
			cpu0 := p.cpu()
			time.Sleep(10 * time.Second)
			cpu1 := p.cpu()
			_, after := p.scrape(false, cycles, requests)
			idle := after[cycles] - before[cycles]
			if idle < 1 {
				b.Fatalf("no cycle in 10s")
			}
			// The two scrapes in the window cost something too; they are
			// counted against the cycles, so the figure errs high.
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1000/idle, "ms-cpu/cycle")
			b.ReportMetric(after[requests]-before[requests], "requests")
			var gz, plain time.Duration
			for range 10 {
				t, _ := p.scrape(false)
				gz += t
			}
			b.ReportMetric(p.rssMiB(), "MiB-rss-after-10-scrapes")
			for range 3 {
				t, _ := p.scrape(true)
				plain += t
			}
			b.ReportMetric(float64(gz.Microseconds())/10/1000, "ms/scrape-gzip")
			b.ReportMetric(float64(plain.Microseconds())/3/1000, "ms/scrape-plain")
		})
	}
}

// BenchmarkExporterRefresh: no run finished, so each cycle fetches every
// run. CPU of the exporter per run fetched, decoded and published.
func BenchmarkExporterRefresh(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			env := newBenchEnv(b, n, 0)
			p := env.start()
			p.waitReady(time.Now())
			_, before := p.scrape(false, requests)
			cpu0 := p.cpu()
			time.Sleep(10 * time.Second)
			cpu1 := p.cpu()
			_, after := p.scrape(false, requests)
			fetched := after[requests] - before[requests]
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/fetched, "us-cpu/refresh")
			b.ReportMetric(fetched/10, "refreshes/s")
			b.ReportMetric(p.rssMiB(), "MiB-rss")
		})
	}
}

// BenchmarkExporterRestart: with a state store, the time from starting the
// process to ready and to a first scrape with every run, with no request
// for the finished runs; and the store's size.
func BenchmarkExporterRestart(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) {
			env := newBenchEnv(b, n, 1)
			store := filepath.Join(env.dir, "state")
			p := env.start("--storage.path=" + store)
			p.waitReady(time.Now())
			time.Sleep(time.Second) // the store's last commit
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.cmd.Wait()
			if info, err := os.Stat(filepath.Join(store, "state.db")); err == nil {
				b.ReportMetric(float64(info.Size())/float64(n), "store-bytes/run")
			}

			started := time.Now()
			again := env.start("--storage.path=" + store)
			b.ReportMetric(again.waitReady(started).Seconds(), "s-to-ready")
			for {
				_, sums := again.scrape(false, "workflow_run_fetch_success", requests)
				if sums["workflow_run_fetch_success"] == float64(n) {
					b.ReportMetric(time.Since(started).Seconds(), "s-to-full-scrape")
					b.ReportMetric(sums[requests], "requests-after-restart")
					break
				}
				if time.Since(started) > 5*time.Minute {
					b.Fatal("no full scrape within 5 minutes")
				}
			}
		})
	}
}

// BenchmarkExporterProbe: a Prometheus with 10,000 probe targets of
// finished runs, each probed once a minute. CPU per probe answered from
// memory, and the API requests that cost (none).
func BenchmarkExporterProbe(b *testing.B) {
	const n = 10000
	env := newBenchEnv(b, n, 1)
	os.WriteFile(filepath.Join(env.dir, "config.yml"), []byte(fmt.Sprintf(
		"api: {url: %s, authorization: {credentials_file: token}}\npoll: {interval: 1m, concurrency: 8, max_requests_per_second: 1000000}\n", env.apiURL)), 0o600)
	p := env.start()
	p.waitReady(time.Now())
	probeAll := func() {
		var wg sync.WaitGroup
		ids := make(chan string)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		for range 8 {
			wg.Go(func() {
				for id := range ids {
					resp, err := client.Get(p.url("/probe?run_id=" + id))
					if err != nil {
						b.Error(err)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		for _, id := range env.ids {
			ids <- id
		}
		close(ids)
		wg.Wait()
	}
	probeAll() // the first round fetches each run once
	_, before := p.scrape(false, requests)
	cpu0 := p.cpu()
	start := time.Now()
	const rounds = 5 // what a Prometheus probing each run once a minute asks in five minutes
	for range rounds {
		probeAll()
	}
	took := time.Since(start)
	cpu1 := p.cpu()
	_, after := p.scrape(false, requests)
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/(rounds*n), "us-cpu/probe")
	b.ReportMetric(after[requests]-before[requests], "api-requests")
	b.ReportMetric(rounds*n/took.Seconds(), "probes/s")
	b.ReportMetric(p.rssMiB(), "MiB-rss")
}

// BenchmarkHTTPClientFloor is the part of a run refresh no exporter written
// with Go's HTTP client avoids: a bare keep-alive GET of a run document
// from the same simulated API, body read and dropped, nothing decoded, in
// this process, eight at a time. Compare with BenchmarkExporterRefresh.
func BenchmarkHTTPClientFloor(b *testing.B) {
	const n = 10000
	env := newBenchEnv(b, n, 0)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	get := func(id string) {
		req, _ := http.NewRequest("GET", env.apiURL+"/v1/runs/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var count int
	var wg sync.WaitGroup
	ids := make(chan string)
	for range 8 {
		wg.Go(func() {
			for id := range ids {
				get(id)
			}
		})
	}
	var usage0, usage1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage0)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		ids <- env.ids[count%n]
		count++
	}
	close(ids)
	wg.Wait()
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage1)
	cpu := time.Duration(syscall.TimevalToNsec(usage1.Utime)-syscall.TimevalToNsec(usage0.Utime)) +
		time.Duration(syscall.TimevalToNsec(usage1.Stime)-syscall.TimevalToNsec(usage0.Stime))
	b.ReportMetric(float64(cpu.Microseconds())/float64(count), "us-cpu/request")
	b.ReportMetric(float64(count)/10, "requests/s")
}
