package main

// End-to-end tests of /metrics as the real binary serves it: slow
// readers, formats and the families lists.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
)

// stall opens a connection that asks for /metrics, reads the first bytes
// of the answer and no more; it is closed when the test ends.
func stall(t testing.TB, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.(*net.TCPConn).SetReadBuffer(4096)
	conn.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := conn.Read(make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
}

// promScrape scrapes url as Prometheus does: gzip (the transport asks for
// it and decodes it), with its scrape timeout in the header and as the
// deadline of the whole request, body included.
func promScrape(url string, timeout time.Duration, accept string) (*http.Response, []byte, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", fmt.Sprint(timeout.Seconds()))
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestEndToEndSlowReadersDoNotStarveScrapes: as many clients as
// --web.max-requests allows (the default, 40) ask for /metrics and never
// read their answer, whose body (1000 runs with long names, about 8 MiB)
// is far more than the socket buffers hold. A scrape as Prometheus sends
// it still gets the whole body within its timeout.
func TestEndToEndSlowReadersDoNotStarveScrapes(t *testing.T) {
	list := simapi.LoadRuns(1000, 1, e2eStart)
	for i := range list {
		list[i].WorkflowName = fmt.Sprintf("%d %s", i%10, strings.Repeat("a long workflow name ", 12))
		list[i].GroupID = strings.Repeat("g", 200)
	}
	env := newE2EEnvOf(t, list)
	p := startExporter(t, env.config())
	p.waitReady()
	for range 40 {
		stall(t, p.addr)
	}
	const timeout = 10 * time.Second
	resp, body, err := promScrape(p.url("/metrics"), timeout, "")
	if err != nil {
		t.Fatalf("scrape beside 40 stalled ones: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("scrape beside 40 stalled ones: %s %q", resp.Status, body)
	}
	if n := strings.Count(string(body), "\nworkflow_run_info{"); n != 1000 || !strings.Contains(string(body), "\nworkflow_runs_exporter_tracked_runs 1000\n") {
		t.Errorf("the scrape has %d runs' workflow_run_info, want 1000, and the self-metrics", n)
	}
}
