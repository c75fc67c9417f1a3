package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"go.uber.org/goleak"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	runID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
	// sentinel is the API token; no error message may ever contain it.
	sentinel = "SENTINEL-TOKEN-d41d8cd98f00b204"
)

var validBody = `{"id":"` + runID + `","status":"running","progress":42.5,"created_at":"2023-11-07T05:31:56Z",
"finished_at":null,"group_id":"g","workflow_id":"w","source":"api",
"workflow":{"id":"w","name":"Invoice extraction","type":"flow","meta":{"tags":[]}}}`

// newTestClient returns a client for url that authenticates with the
// sentinel token read from a credentials file, as in production.
func newTestClient(t *testing.T, url string, mod ...func(*Options)) *Client {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(sentinel+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	http := promconfig.DefaultHTTPClientConfig
	http.Authorization = &promconfig.Authorization{Type: "Bearer", CredentialsFile: tokenFile}
	o := Options{URL: url, Timeout: 2 * time.Second, MaxResponseBytes: 4096, HTTP: http}
	for _, m := range mod {
		m(&o)
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func withTimeout(d time.Duration) func(*Options) { return func(o *Options) { o.Timeout = d } }

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

// hijack takes over the connection for handlers that misbehave below HTTP.
func hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	return conn
}

func TestGetRunClassifiesFailures(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name       string
		handler    http.HandlerFunc
		timeout    time.Duration
		reason     Reason
		code       int
		retryAfter time.Duration
	}{
		{name: "500", reason: ReasonServerError, code: 500, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(500)
		}},
		{name: "502 with an HTML body", reason: ReasonServerError, code: 502, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			fmt.Fprint(w, "<html><body>Bad Gateway</body></html>")
		}},
		{name: "503 with Retry-After", reason: ReasonServerError, code: 503, retryAfter: 7 * time.Second, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(503)
		}},
		{name: "504", reason: ReasonServerError, code: 504, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(504)
		}},
		{name: "TCP reset", reason: ReasonNetwork, handler: func(w http.ResponseWriter, _ *http.Request) {
			conn := hijack(w)
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}},
		{name: "connection closed with no answer", reason: ReasonNetwork, handler: func(w http.ResponseWriter, _ *http.Request) {
			hijack(w).Close()
		}},
		{name: "truncated body", reason: ReasonNetwork, code: 200, handler: func(w http.ResponseWriter, _ *http.Request) {
			conn := hijack(w)
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(validBody), validBody[:20])
			conn.Close()
		}},
		{name: "no response headers (hang)", reason: ReasonTimeout, timeout: 200 * time.Millisecond, handler: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}},
		{name: "body trickles slowly", reason: ReasonTimeout, code: 200, timeout: 300 * time.Millisecond, handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			for i := 0; i < len(validBody); i++ {
				if _, err := w.Write([]byte{validBody[i]}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}},
		{name: "429 Retry-After seconds", reason: ReasonRateLimited, code: 429, retryAfter: 3 * time.Second, handler: retryAfter("3")},
		{name: "429 Retry-After HTTP date", reason: ReasonRateLimited, code: 429, retryAfter: -1, handler: retryAfter(now.Add(20 * time.Second).UTC().Format(http.TimeFormat))},
		{name: "429 Retry-After negative", reason: ReasonRateLimited, code: 429, handler: retryAfter("-5")},
		{name: "429 Retry-After garbage", reason: ReasonRateLimited, code: 429, handler: retryAfter("soon-ish")},
		{name: "429 Retry-After huge", reason: ReasonRateLimited, code: 429, retryAfter: MaxRetryAfter, handler: retryAfter("999999999999")},
		{name: "401", reason: ReasonUnauthorized, code: 401, handler: status(401)},
		{name: "403", reason: ReasonUnauthorized, code: 403, handler: status(403)},
		{name: "404", reason: ReasonNotFound, code: 404, handler: status(404)},
		{name: "400", reason: ReasonBadResponse, code: 400, handler: status(400)},
		{name: "body larger than max_response_bytes", reason: ReasonTooLarge, code: 200, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"id":"` + runID + `","status":"running","pad":"` + strings.Repeat("x", 5000) + `"}`))
		}},
		{name: "gzip body larger than max_response_bytes once decompressed", reason: ReasonTooLarge, code: 200, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gzipped(`{"id":"` + runID + `","status":"running","pad":"` + strings.Repeat("x", 1<<20) + `"}`))
		}},
		{name: "corrupt gzip", reason: ReasonBadResponse, code: 200, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write([]byte("not gzip at all"))
		}},
		{name: "gzip with a good header and corrupt data", reason: ReasonBadResponse, code: 200, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			good := gzipped(validBody)
			w.Write(append(good[:10:10], bytes.Repeat([]byte{0xff}, 40)...))
		}},
		{name: "gzip cut off", reason: ReasonBadResponse, code: 200, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			good := gzipped(validBody)
			w.Write(good[:len(good)/2])
		}},
		{name: "empty body", reason: ReasonBadResponse, code: 200, handler: body("")},
		{name: "null", reason: ReasonBadResponse, code: 200, handler: body("null")},
		{name: "HTML page", reason: ReasonBadResponse, code: 200, handler: body("<!DOCTYPE html><html><body>Login</body></html>")},
		{name: "cut-off JSON", reason: ReasonBadResponse, code: 200, handler: body(validBody[:40])},
		{name: "array instead of object", reason: ReasonBadResponse, code: 200, handler: body("[" + validBody + "]")},
		{name: "document for another run", reason: ReasonBadResponse, code: 200, handler: body(strings.Replace(validBody, runID, "ffffffff-0d44-4b50-8888-8dd25736052a", 1))},
		{name: "status missing", reason: ReasonBadResponse, code: 200, handler: body(`{"id":"` + runID + `"}`)},
		{name: "status null", reason: ReasonBadResponse, code: 200, handler: body(`{"id":"` + runID + `","status":null}`)},
		{name: "status not a string", reason: ReasonBadResponse, code: 200, handler: body(`{"id":"` + runID + `","status":3}`)},
		{name: "id missing", reason: ReasonBadResponse, code: 200, handler: body(`{"status":"running"}`)},
		{name: "status given twice", reason: ReasonBadResponse, code: 200, handler: body(`{"id":"` + runID + `","status":"running","ſtatus":"completed"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			timeout := 2 * time.Second
			if tc.timeout != 0 {
				timeout = tc.timeout
			}
			c := newTestClient(t, srv.URL, withTimeout(timeout))

			start := time.Now()
			run, _, err := c.GetRun(context.Background(), runID)
			if err == nil {
				t.Fatalf("got run %+v, want an error", run)
			}
			if tc.timeout != 0 && time.Since(start) > tc.timeout+time.Second {
				t.Errorf("took %s, want abandonment at api.timeout %s", time.Since(start), tc.timeout)
			}
			var apiErr *Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if apiErr.Reason != tc.reason {
				t.Errorf("reason = %s, want %s (err: %v)", apiErr.Reason, tc.reason, err)
			}
			if apiErr.StatusCode != tc.code {
				t.Errorf("status code = %d, want %d", apiErr.StatusCode, tc.code)
			}
			switch {
			case tc.retryAfter == -1: // HTTP date: about 20s from now
				if apiErr.RetryAfter < 15*time.Second || apiErr.RetryAfter > 20*time.Second {
					t.Errorf("RetryAfter = %s, want about 20s", apiErr.RetryAfter)
				}
			case apiErr.RetryAfter != tc.retryAfter:
				t.Errorf("RetryAfter = %s, want %s", apiErr.RetryAfter, tc.retryAfter)
			}
			if strings.Contains(err.Error(), sentinel) {
				t.Errorf("error message leaks the token: %v", err)
			}
		})
	}
}

func retryAfter(v string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", v)
		w.WriteHeader(429)
	}
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func body(s string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(s)) }
}

func TestGetRunConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, _, err = newTestClient(t, "http://"+addr).GetRun(context.Background(), runID)
	if got := ReasonOf(err); got != ReasonNetwork {
		t.Fatalf("reason = %q, want network (err: %v)", got, err)
	}
}

func TestGetRunSuccess(t *testing.T) {
	var gotAuth, gotPath string
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"plain JSON", body(validBody)},
		{"gzip JSON", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gzipped(validBody))
		}},
		{"wrong content type but a valid document", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(validBody))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotAuth, gotPath = r.Header.Get("Authorization"), r.URL.Path
				tc.handler(w, r)
			}))
			defer srv.Close()
			run, warnings, err := newTestClient(t, srv.URL+"/").GetRun(context.Background(), runID)
			if err != nil {
				t.Fatal(err)
			}
			if gotAuth != "Bearer "+sentinel {
				t.Errorf("Authorization = %q, want the bearer token from the credentials file", gotAuth)
			}
			if gotPath != "/v1/runs/"+runID {
				t.Errorf("path = %q", gotPath)
			}
			want := runs.Run{ID: runID, GroupID: "g", WorkflowID: "w", WorkflowName: "Invoice extraction",
				WorkflowType: "flow", Source: "api", Status: runs.StatusRunning, Progress: 42.5, HasProgress: true,
				CreatedAt: time.Date(2023, 11, 7, 5, 31, 56, 0, time.UTC)}
			if *run != want {
				t.Errorf("run = %+v\nwant  %+v", *run, want)
			}
			if len(warnings) != 0 {
				t.Errorf("warnings = %q, want none", warnings)
			}
		})
	}
}

// TestRotatedSecretFilesAreUsed: the request after a secret file changed
// uses the new secret, however it was rotated: rewritten in place with the
// same length, replaced by a rename, or swapped as a Kubernetes Secret
// volume swaps its ..data symlink.
func TestRotatedSecretFilesAreUsed(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if user, pass, ok := r.BasicAuth(); ok {
			seen = append(seen, user+":"+pass)
		} else {
			seen = append(seen, r.Header.Get("Authorization"))
		}
		mu.Unlock()
		w.Write([]byte(validBody))
	}))
	defer srv.Close()

	dir := t.TempDir()
	// The layout of a Kubernetes Secret volume: token -> ..data/token,
	// ..data -> a timestamped directory, swapped by a rename.
	version := func(name, token string) {
		os.MkdirAll(filepath.Join(dir, name), 0o700)
		os.WriteFile(filepath.Join(dir, name, "token"), []byte(token+"\n"), 0o600)
	}
	version("v1", "first")
	os.Symlink("v1", filepath.Join(dir, "..data"))
	os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token"))
	password := filepath.Join(dir, "password")
	os.WriteFile(password, []byte("pw-1"), 0o600)

	for _, tc := range []struct {
		name   string
		http   func(h *promconfig.HTTPClientConfig)
		rotate []func()
		want   []string
	}{
		{"bearer token in a Secret volume", func(h *promconfig.HTTPClientConfig) {
			h.Authorization = &promconfig.Authorization{Type: "Bearer", CredentialsFile: filepath.Join(dir, "token")}
		}, []func(){
			func() {},
			func() {
				version("v2", "second")
				os.Symlink("v2", filepath.Join(dir, "..data.tmp"))
				os.Rename(filepath.Join(dir, "..data.tmp"), filepath.Join(dir, "..data"))
			},
			func() { // rewritten in place with the same length
				os.WriteFile(filepath.Join(dir, "v2", "token"), []byte("SECOND\n"), 0o600)
			},
		}, []string{"Bearer first", "Bearer first", "Bearer second", "Bearer SECOND"}},
		{"basic auth password file", func(h *promconfig.HTTPClientConfig) {
			h.BasicAuth = &promconfig.BasicAuth{Username: "u", PasswordFile: password}
		}, []func(){
			func() {
				os.WriteFile(password+".new", []byte("pw-2"), 0o600)
				os.Rename(password+".new", password)
			},
		}, []string{"u:pw-1", "u:pw-2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen = nil
			h := promconfig.DefaultHTTPClientConfig
			tc.http(&h)
			c, err := NewClient(Options{URL: srv.URL, Timeout: time.Second, MaxResponseBytes: 4096, HTTP: h})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			if _, _, err := c.GetRun(context.Background(), runID); err != nil {
				t.Fatal(err)
			}
			for _, rotate := range tc.rotate {
				rotate()
				if _, _, err := c.GetRun(context.Background(), runID); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(seen, ",") != strings.Join(tc.want, ",") {
				t.Errorf("credentials sent = %q, want %q", seen, tc.want)
			}
		})
	}
}

func TestMissingSecretFileFailsTheRequestNamingIt(t *testing.T) {
	h := promconfig.DefaultHTTPClientConfig
	missing := filepath.Join(t.TempDir(), "gone")
	h.Authorization = &promconfig.Authorization{Type: "Bearer", CredentialsFile: missing}
	c, err := NewClient(Options{URL: "http://127.0.0.1:1", Timeout: time.Second, MaxResponseBytes: 4096, HTTP: h})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.GetRun(context.Background(), runID)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("error %v, want one naming %s", err, missing)
	}
}

func TestRedirectToAnotherHostDropsTheToken(t *testing.T) {
	var otherAuth string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherAuth = r.Header.Get("Authorization")
		w.Write([]byte(validBody))
	}))
	defer other.Close()
	// 127.0.0.1 and localhost are different hosts to an HTTP client.
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, otherURL+r.URL.Path, http.StatusFound)
	}))
	defer origin.Close()

	if _, _, err := newTestClient(t, origin.URL).GetRun(context.Background(), runID); err != nil {
		t.Fatal(err)
	}
	if otherAuth != "" {
		t.Fatalf("the other host received Authorization %q; the token must not follow a cross-host redirect", otherAuth)
	}
}

func TestSelfSignedCertificateIsATLSError(t *testing.T) {
	srv := httptest.NewTLSServer(body(validBody))
	defer srv.Close()
	_, _, err := newTestClient(t, srv.URL).GetRun(context.Background(), runID)
	if got := ReasonOf(err); got != ReasonTLS {
		t.Fatalf("reason = %q, want tls (err: %v)", got, err)
	}
}

func TestCancelledContextIsNotAnAPIError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, _, err := newTestClient(t, srv.URL).GetRun(ctx, runID)
	if !errors.Is(err, context.Canceled) || ReasonOf(err) != "" {
		t.Fatalf("err = %v, want context.Canceled without a reason", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-1", 0}, {"abc", 0}, {"1.5", 0}, {"120", 2 * time.Minute},
		{"301", MaxRetryAfter}, {"99999999999999999999", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(24 * time.Hour).Format(http.TimeFormat), MaxRetryAfter},
	} {
		if got := ParseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestRequestHeaders(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Write([]byte(validBody))
	}))
	defer srv.Close()
	c, err := NewClient(Options{URL: srv.URL, Timeout: time.Second, MaxResponseBytes: 4096, HTTP: promconfig.DefaultHTTPClientConfig})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if _, _, err := c.GetRun(context.Background(), runID); err != nil {
		t.Fatal(err)
	}
	if ua := got.Get("User-Agent"); !strings.HasPrefix(ua, "workflow_runs_exporter/") {
		t.Errorf("User-Agent %q, want workflow_runs_exporter/<version>", ua)
	}
	if got.Get("Accept") != "application/json" || got.Get("Accept-Encoding") != "gzip" {
		t.Errorf("Accept %q, Accept-Encoding %q", got.Get("Accept"), got.Get("Accept-Encoding"))
	}
}

// TestCloseIdleConnectionsClosesPooledConnections: asked to, a client closes
// the connections it keeps for reuse, also when its transport carries the
// request metrics. The poller asks this of every client a reload replaced;
// connections left open would pile up with their goroutines, reload after
// reload.
func TestCloseIdleConnectionsClosesPooledConnections(t *testing.T) {
	for _, tc := range []struct {
		name       string
		instrument func(http.RoundTripper) http.RoundTripper
	}{
		{"plain transport", nil},
		{"with request metrics", NewMetrics(prometheus.NewRegistry()).Instrument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var closed atomic.Int32
			srv := httptest.NewUnstartedServer(body(validBody))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateClosed {
					closed.Add(1)
				}
			}
			srv.Start()
			defer srv.Close()
			c := newTestClient(t, srv.URL, func(o *Options) { o.Instrument = tc.instrument })
			if _, _, err := c.GetRun(context.Background(), runID); err != nil {
				t.Fatal(err)
			}
			if n := closed.Load(); n != 0 {
				t.Fatalf("%d connections closed before CloseIdleConnections; the test needs a pooled one", n)
			}
			c.CloseIdleConnections()
			for deadline := time.Now().Add(10 * time.Second); closed.Load() == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the pooled connection is still open 10s after CloseIdleConnections")
				}
			}
		})
	}
}
