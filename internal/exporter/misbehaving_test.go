package exporter

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

	dto "github.com/prometheus/client_model/go"
)

// series returns the value of the series of name whose labels include
// match, and whether it exists.
func (f *fixture) series(name string, match map[string]string) (float64, bool) {
	mfs, err := f.exp.Gatherer(f.reg).Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := match[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	return conn
}

// TestOneMisbehavingRunAmongHealthyOnes makes the API misbehave for one
// unfinished run after it was fetched once, and checks what an operator
// relies on: the process serves, the other runs are unaffected, the run
// keeps its last values (except after a 404), fetch_success is 0, and the
// right reason is counted.
func TestOneMisbehavingRunAmongHealthyOnes(t *testing.T) {
	big := `{"id":"%s","status":"running","pad":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, tc := range []struct {
		name    string
		reason  string
		gone    bool // the run's data series disappear
		respond func(w http.ResponseWriter, r *http.Request, id string)
	}{
		{"500", "server_error", false, status(500)},
		{"502 with HTML", "server_error", false, func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			fmt.Fprint(w, "<html><h1>502 Bad Gateway</h1></html>")
		}},
		{"503 with Retry-After", "server_error", false, func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
		}},
		{"504", "server_error", false, status(504)},
		{"TCP reset", "network", false, func(w http.ResponseWriter, _ *http.Request, _ string) {
			c := hijack(w)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}},
		{"closed with no answer", "network", false, func(w http.ResponseWriter, _ *http.Request, _ string) { hijack(w).Close() }},
		{"hang", "timeout", false, func(w http.ResponseWriter, r *http.Request, _ string) { <-r.Context().Done() }},
		{"trickling body", "timeout", false, func(w http.ResponseWriter, r *http.Request, _ string) {
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
		{"429 with an HTTP-date Retry-After", "rate_limited", false, func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Retry-After", time.Now().Add(time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(429)
		}},
		{"429 with a garbage Retry-After", "rate_limited", false, func(w http.ResponseWriter, _ *http.Request, _ string) {
			w.Header().Set("Retry-After", "tomorrow")
			w.WriteHeader(429)
		}},
		{"401", "unauthorized", false, status(401)},
		{"403", "unauthorized", false, status(403)},
		{"404", "not_found", true, status(404)},
		{"too large", "too_large", false, func(w http.ResponseWriter, _ *http.Request, id string) { fmt.Fprintf(w, big, id) }},
		{"too large once gunzipped", "too_large", false, func(w http.ResponseWriter, _ *http.Request, id string) {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			fmt.Fprintf(zw, big, id)
			zw.Close()
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(b.Bytes())
		}},
		{"empty", "bad_response", false, body("")},
		{"null", "bad_response", false, body("null")},
		{"HTML page with 200", "bad_response", false, body("<!doctype html><title>Sign in</title>")},
		{"cut-off JSON", "bad_response", false, func(w http.ResponseWriter, _ *http.Request, id string) {
			fmt.Fprintf(w, `{"id":"%s","status":"runn`, id)
		}},
		{"another run's document", "bad_response", false, body(`{"id":"ffffffff-0d44-4b50-8888-8dd25736052a","status":"failed"}`)},
		{"status missing", "bad_response", false, func(w http.ResponseWriter, _ *http.Request, id string) {
			fmt.Fprintf(w, `{"id":"%s","status":null}`, id)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var victim atomic.Value // the run ID that misbehaves
			victim.Store("")
			var armed atomic.Bool
			f := newFixture(t, 6, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id := strings.TrimPrefix(r.URL.Path, "/v1/runs/")
					if armed.Load() && id == victim.Load().(string) {
						tc.respond(w, r, id)
						return
					}
					next.ServeHTTP(w, r)
				})
			})
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
			counted := func() bool {
				v, _ := f.series("workflow_runs_exporter_fetch_errors_total", map[string]string{"reason": tc.reason})
				return v >= 1
			}
			f.waitFor("a "+tc.reason+" error", counted)
			// The cycle that counted the error has published its snapshot.
			f.waitFor("fetch_success 0", func() bool {
				v, ok := f.series("workflow_run_fetch_success", map[string]string{"run_id": bad})
				return ok && v == 0
			})

			_, hasStatus := f.series("workflow_run_status", map[string]string{"run_id": bad, "status": string(want.Status)})
			if tc.gone && hasStatus {
				t.Error("the run's data series are still exported after a 404")
			}
			if !tc.gone {
				v, ok := f.series("workflow_run_status", map[string]string{"run_id": bad, "status": string(want.Status)})
				if !ok || v != 1 {
					t.Errorf("the run lost its last good status %s (present %v, value %v)", want.Status, ok, v)
				}
			}
			for _, id := range others {
				if v, _ := f.series("workflow_run_fetch_success", map[string]string{"run_id": id}); v != 1 {
					t.Errorf("healthy run %s has fetch_success %v", id, v)
				}
			}
			for _, reason := range []string{"timeout", "network", "tls", "unauthorized", "not_found", "rate_limited", "server_error", "bad_response", "too_large"} {
				if reason == tc.reason {
					continue
				}
				if v, _ := f.series("workflow_runs_exporter_fetch_errors_total", map[string]string{"reason": reason}); v != 0 {
					t.Errorf("fetch_errors_total{reason=%q} = %v, want 0", reason, v)
				}
			}
			if code, _ := f.get("GET", "/metrics"); code != 200 {
				t.Errorf("/metrics = %d while the API misbehaves", code)
			}
			if !strings.Contains(f.logs.String(), bad) {
				t.Errorf("no log line names the run %s", bad)
			}
		})
	}
}

func status(code int) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, _ *http.Request, _ string) { w.WriteHeader(code) }
}

func body(s string) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, _ *http.Request, _ string) { fmt.Fprint(w, s) }
}
