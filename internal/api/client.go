// Package api is the client for the workflow platform's runs endpoint. It
// fetches one run per request and classifies every failure into a Reason.
package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/version"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/runs"
)

// MaxRetryAfter caps a server-requested pause, so a garbage or hostile
// Retry-After header can never stop polling for long.
const MaxRetryAfter = 5 * time.Minute

var userAgent = version.ComponentUserAgent("workflow_runs_exporter")

// Options configure a Client.
type Options struct {
	URL              string // base URL; requests go to {URL}/v1/runs/{id}
	Timeout          time.Duration
	MaxResponseBytes int64
	HTTP             promconfig.HTTPClientConfig
	// Instrument, when set, wraps the transport, e.g. with promhttp's
	// round-tripper instrumentation.
	Instrument func(http.RoundTripper) http.RoundTripper
}

// Client fetches runs. It is safe for concurrent use.
type Client struct {
	http     *http.Client
	base     *url.URL
	timeout  time.Duration
	maxBytes int64
}

// NewClient builds a client from Prometheus' HTTP client configuration, so
// authorization, TLS, proxies and redirects behave as they do in
// Prometheus. Secret files (credentials_file, password_file, ...) are read
// by prometheus/common on every request, so a rotated secret is used from
// the next request on. Reading a token file costs about 4 µs, 0.004 % of a
// core at the default 10 requests per second: not worth a cache.
func NewClient(o Options) (*Client, error) {
	base, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("api.url: %w", err)
	}
	// The User-Agent is set on each request rather than with
	// promconfig.WithUserAgent, whose round tripper copies every request
	// once more.
	hc, err := promconfig.NewClientFromConfig(o.HTTP, "workflow_runs_exporter")
	if err != nil {
		return nil, fmt.Errorf("api http client: %w", err)
	}
	if o.Instrument != nil {
		hc.Transport = instrumented{RoundTripper: o.Instrument(hc.Transport), inner: hc.Transport}
	}
	return &Client{http: hc, base: base, timeout: o.Timeout, maxBytes: o.MaxResponseBytes}, nil
}

// instrumented is a transport wrapped by Options.Instrument that can still
// close its idle connections. promhttp's wrappers are plain
// RoundTripperFuncs: through them, http.Client.CloseIdleConnections would
// reach nothing, and every client a reload replaced would keep its pooled
// connections, each with its goroutines, until the server dropped them.
type instrumented struct {
	http.RoundTripper
	inner http.RoundTripper
}

func (t instrumented) CloseIdleConnections() {
	if c, ok := t.inner.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// CloseIdleConnections releases pooled connections, e.g. after a reload
// replaced this client.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// GetRun fetches one run. The timeout covers connecting, headers and the
// whole body. A failure is an *Error, or the context's error when ctx itself
// was cancelled. Warnings name optional fields that were left out.
func (c *Client) GetRun(ctx context.Context, id string) (*runs.Run, []string, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	u := c.base.JoinPath("v1", "runs", id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, &Error{Reason: ReasonBadResponse, Err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	// The transport leaves compression to us so the size limit below applies
	// to the decompressed body: a small gzip bomb must not exhaust memory.
	req.Header.Set("Accept-Encoding", "gzip")

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, c.transportError(parent, err, 0)
	}
	defer func() {
		// Drain a little so the connection can be reused, never a whole
		// oversized or endless body.
		_, _ = io.CopyN(io.Discard, resp.Body, 4096)
		resp.Body.Close()
	}()

	if resp.StatusCode != http.StatusOK {
		return nil, nil, c.statusError(resp)
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer putBodyBuffer(buf)
	body, err := c.readBody(resp, buf)
	if err != nil {
		var apiErr *Error
		if errors.As(err, &apiErr) {
			return nil, nil, err
		}
		return nil, nil, c.transportError(parent, err, resp.StatusCode)
	}
	run, warnings, err := DecodeRun(body, id)
	if err != nil {
		return nil, nil, &Error{Reason: ReasonBadResponse, StatusCode: resp.StatusCode, Err: err}
	}
	return run, warnings, nil
}

// bodyBuffers hold response bodies while they are decoded: a run's body is
// read, decoded into new strings and dropped, once per run and cycle.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putBodyBuffer(b *bytes.Buffer) {
	if b.Cap() <= 64<<10 { // an oversized body's buffer is left to the GC
		b.Reset()
		bodyBuffers.Put(b)
	}
}

// readBody reads the body into buf, at most api.max_response_bytes of it
// after gzip decoding, and returns buf's bytes.
func (c *Client) readBody(resp *http.Response, buf *bytes.Buffer) ([]byte, error) {
	raw := &errorRecorder{r: resp.Body}
	var r io.Reader = raw
	// A failure to decompress is a bad answer, not retried; a failure to
	// read what was sent is the network's or the clock's.
	badGzip := func(err error) error {
		if raw.err != nil {
			return raw.err
		}
		return &Error{Reason: ReasonBadResponse, StatusCode: resp.StatusCode, Err: fmt.Errorf("gzip: %w", err)}
	}
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return nil, badGzip(err)
		}
		defer zr.Close()
		r = zr
	}
	_, err := buf.ReadFrom(io.LimitReader(r, c.maxBytes+1))
	body := buf.Bytes()
	if err != nil {
		if r != raw {
			return nil, badGzip(err)
		}
		return nil, err
	}
	if int64(len(body)) > c.maxBytes {
		return nil, &Error{Reason: ReasonTooLarge, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("body exceeds api.max_response_bytes (%d)", c.maxBytes)}
	}
	return body, nil
}

// errorRecorder remembers the error reading the response body, other than
// its end.
type errorRecorder struct {
	r   io.Reader
	err error
}

func (e *errorRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

func (c *Client) statusError(resp *http.Response) error {
	e := &Error{StatusCode: resp.StatusCode, Err: fmt.Errorf("unexpected status %q", resp.Status)}
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		e.Reason = ReasonUnauthorized
	case code == http.StatusNotFound:
		e.Reason = ReasonNotFound
	case code == http.StatusTooManyRequests:
		e.Reason = ReasonRateLimited
		e.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case code >= 500:
		e.Reason = ReasonServerError
		if code == http.StatusServiceUnavailable {
			e.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	default:
		// Unfollowed redirects and other 4xx: the API answered, but not
		// with a run.
		e.Reason = ReasonBadResponse
	}
	return e
}

// transportError classifies an error that happened before or while reading
// the response. If the caller's own context ended, its error is returned
// unclassified: a shutdown is not an API failure.
func (c *Client) transportError(parent context.Context, err error, code int) error {
	if parent.Err() != nil {
		return parent.Err()
	}
	e := &Error{Reason: ReasonNetwork, StatusCode: code, Err: err}
	var netErr net.Error
	var certInvalid x509.CertificateInvalidError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		e.Reason = ReasonTimeout
		e.Err = fmt.Errorf("no complete answer within api.timeout (%s)", c.timeout)
	case errors.As(err, &verify), errors.As(err, &certInvalid), errors.As(err, &unknownAuthority),
		errors.As(err, &hostname), errors.As(err, &record), errors.As(err, &alert):
		e.Reason = ReasonTLS
	}
	return e
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
// Missing, negative, past or unparsable values give 0 (no server-requested
// pause); values beyond MaxRetryAfter are capped.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, MaxRetryAfter)
}
