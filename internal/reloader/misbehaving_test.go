package reloader

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/api"
)

func hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	return conn
}

func status(code int) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, _ *http.Request, _ string) { w.WriteHeader(code) }
}

func body(s string) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, _ *http.Request, _ string) { fmt.Fprint(w, s) }
}

// TestOneMisbehavingRunAmongHealthyOnes makes the API misbehave for one
// unfinished run after it was fetched once, and checks, through the real
// client, poller and run metrics store, what an operator relies on: the
// process serves, the other runs are unaffected, the run keeps its last
// values (except after a 404 past the grace), fetch_success is 0, and the
// right reason is counted and exported.
//
// Only the timeout cases run with a short api.timeout: the others must not
// race the clock, so a slow machine under -race cannot turn them into
// timeouts. Large bodies are built once, not per request.
func TestOneMisbehavingRunAmongHealthyOnes(t *testing.T) {
	const longTimeout, shortTimeout = "10s", "300ms"
	big := []byte(`{"id":"%s","status":"running","pad":"` + strings.Repeat("x", 2<<20) + `"}`)
	var gzipped bytes.Buffer
	zw := gzip.NewWriter(&gzipped)
	zw.Write(big)
	zw.Close()
	for _, tc := range []struct {
		name    string
		reason  api.Reason
		gone    bool   // the run's data series disappear
		timeout string // api.timeout
		grace   string // runs.not_found_grace
		respond func(w http.ResponseWriter, r *http.Request, id string)
	}{
		{name: "500", reason: "server_error", respond: status(500)},
		{name: "502 with HTML", reason: "server_error", respond: func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			fmt.Fprint(w, "<html><h1>502 Bad Gateway</h1></html>")
		}},
		{name: "503 with Retry-After", reason: "server_error", respond: func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
		}},
		{name: "504", reason: "server_error", respond: status(504)},
		{name: "TCP reset", reason: "network", respond: func(w http.ResponseWriter, _ *http.Request, _ string) {
			c := hijack(w)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}},
		{name: "closed with no answer", reason: "network", respond: func(w http.ResponseWriter, _ *http.Request, _ string) { hijack(w).Close() }},
		{name: "hang", reason: "timeout", timeout: shortTimeout, respond: func(w http.ResponseWriter, r *http.Request, _ string) { <-r.Context().Done() }},
		{name: "trickling body", reason: "timeout", timeout: shortTimeout, respond: func(w http.ResponseWriter, r *http.Request, _ string) {
			w.WriteHeader(200)
			for range 100 {
				w.Write([]byte(" "))
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}},
		{name: "429 with an HTTP-date Retry-After", reason: "rate_limited", respond: func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Retry-After", time.Now().Add(time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(429)
		}},
		{name: "429 with a garbage Retry-After", reason: "rate_limited", respond: func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Retry-After", "tomorrow")
			w.WriteHeader(429)
		}},
		{name: "401", reason: "unauthorized", respond: status(401)},
		{name: "403", reason: "unauthorized", respond: status(403)},
		{name: "404 past the grace", reason: "not_found", gone: true, grace: "0s", respond: status(404)},
		{name: "404 within the grace", reason: "not_found", respond: status(404)},
		{name: "too large", reason: "too_large", respond: func(w http.ResponseWriter, _ *http.Request, id string) {
			w.Write(bytes.Replace(big, []byte("%s"), []byte(id), 1))
		}},
		{name: "too large once gunzipped", reason: "too_large", respond: func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gzipped.Bytes()) // its id is never reached: the limit is hit first
		}},
		{name: "empty", reason: "bad_response", respond: body("")},
		{name: "null", reason: "bad_response", respond: body("null")},
		{name: "HTML page with 200", reason: "bad_response", respond: body("<!doctype html><title>Sign in</title>")},
		{name: "cut-off JSON", reason: "bad_response", respond: func(w http.ResponseWriter, _ *http.Request, id string) {
			fmt.Fprintf(w, `{"id":"%s","status":"runn`, id)
		}},
		{name: "another run's document", reason: "bad_response", respond: body(`{"id":"ffffffff-0d44-4b50-8888-8dd25736052a","status":"failed"}`)},
		{name: "status missing", reason: "bad_response", respond: func(w http.ResponseWriter, _ *http.Request, id string) {
			fmt.Fprintf(w, `{"id":"%s","status":null}`, id)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var victim atomic.Value // the run ID that misbehaves
			victim.Store("")
			var armed atomic.Bool
			timeout, grace := tc.timeout, tc.grace
			if timeout == "" {
				timeout = longTimeout
			}
			f := newFixture(t, 6, "", func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id := strings.TrimPrefix(r.URL.Path, "/v1/runs/")
					if armed.Load() && id == victim.Load().(string) {
						tc.respond(w, r, id)
						return
					}
					next.ServeHTTP(w, r)
				})
			})
			f.write("config.yml", `
api:
  url: `+f.api.URL+`
  timeout: `+timeout+`
  authorization:
    credentials_file: token
runs:
  ids: ["`+strings.Join(f.sim.IDs(), `", "`)+`"]
`+graceLine(grace)+`
poll:
  interval: 50ms
  max_requests_per_second: 1000
`)
			var bad string
			var others []string
			for _, id := range f.sim.IDs() {
				r, _ := f.sim.Run(id)
				if st := r.At(f.sim.Now()); !st.Status.Terminal() && bad == "" {
					bad = id
				} else {
					others = append(others, id)
				}
			}
			victim.Store(bad)
			f.start()
			r, _ := f.sim.Run(bad)
			want := r.At(f.sim.Now())

			armed.Store(true)
			f.waitFor("fetch_success 0 with reason "+string(tc.reason), func() bool {
				v, ok := f.series("workflow_run_fetch_error_reason", map[string]string{"run_id": bad, "reason": string(tc.reason)})
				return ok && v == 1
			})
			mfs := f.scrape()
			if v, _ := seriesIn(mfs, "workflow_run_fetch_success", map[string]string{"run_id": bad}); v != 0 {
				t.Errorf("fetch_success = %v, want 0", v)
			}
			if v, _ := seriesIn(mfs, "workflow_runs_exporter_fetch_errors_total", map[string]string{"reason": string(tc.reason)}); v < 1 {
				t.Errorf("fetch_errors_total{reason=%q} = %v, want at least 1", tc.reason, v)
			}
			v, hasStatus := seriesIn(mfs, "workflow_run_status", map[string]string{"run_id": bad, "status": string(want.Status)})
			if tc.gone && hasStatus {
				t.Error("the run's data series are still exported after a 404 past the grace")
			}
			if !tc.gone && (!hasStatus || v != 1) {
				t.Errorf("the run lost its last good status %s (present %v, value %v)", want.Status, hasStatus, v)
			}
			for _, id := range others {
				if v, _ := seriesIn(mfs, "workflow_run_fetch_success", map[string]string{"run_id": id}); v != 1 {
					t.Errorf("healthy run %s has fetch_success %v", id, v)
				}
			}
			for _, reason := range api.Reasons {
				if reason == tc.reason {
					continue
				}
				if v, _ := seriesIn(mfs, "workflow_runs_exporter_fetch_errors_total", map[string]string{"reason": string(reason)}); v != 0 {
					t.Errorf("fetch_errors_total{reason=%q} = %v, want 0", reason, v)
				}
			}
			if !strings.Contains(f.logs.String(), bad) {
				t.Errorf("no log line names the run %s", bad)
			}

		})
	}
}

func graceLine(grace string) string {
	if grace == "" {
		return ""
	}
	return "  not_found_grace: " + grace
}
