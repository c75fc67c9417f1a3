package api

import (
	"errors"
	"fmt"
	"time"
)

// Reason classifies a failed fetch. The values are the label values of
// workflow_runs_exporter_fetch_errors_total{reason}.
type Reason string

// The reasons a fetch can fail for.
const (
	ReasonTimeout      Reason = "timeout"
	ReasonNetwork      Reason = "network"
	ReasonTLS          Reason = "tls"
	ReasonUnauthorized Reason = "unauthorized"
	ReasonNotFound     Reason = "not_found"
	ReasonRateLimited  Reason = "rate_limited"
	ReasonServerError  Reason = "server_error"
	ReasonBadResponse  Reason = "bad_response"
	ReasonTooLarge     Reason = "too_large"
)

// Reasons lists every reason, so that counters can be initialised to 0 and
// rate() works from the first error on.
var Reasons = []Reason{
	ReasonTimeout, ReasonNetwork, ReasonTLS, ReasonUnauthorized, ReasonNotFound,
	ReasonRateLimited, ReasonServerError, ReasonBadResponse, ReasonTooLarge,
}

// Error is a fetch that failed for a known reason. The poller decides on
// retries and pauses from its fields, never from the message text.
type Error struct {
	Reason     Reason
	StatusCode int           // HTTP status, 0 when no response arrived
	RetryAfter time.Duration // server-requested pause (429, 503), already capped; 0 if none
	Err        error
}

func (e *Error) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("%s (HTTP %d): %v", e.Reason, e.StatusCode, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether trying again later in the same cycle may succeed.
// Authorization failures and bad documents are not retried: repeating them
// only adds load on an API that already said no.
func (e *Error) Retryable() bool {
	switch e.Reason {
	case ReasonTimeout, ReasonNetwork, ReasonServerError, ReasonRateLimited:
		return true
	}
	return false
}

// ReasonOf returns the reason of err, or "" when err is not an *Error (for
// example a cancelled context during shutdown).
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
