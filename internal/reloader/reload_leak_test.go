package reloader

import (
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestReloadsLeaveNoConnectionsBehind: every reload builds a new API
// client, and the one it replaced must close its pooled connections once
// its last request is over. Otherwise each reload leaves up to
// poll.concurrency connections open, with their file descriptors and
// goroutines, for as long as the API keeps them: thousands of reloads
// exhausted the process's file descriptors.
func TestReloadsLeaveNoConnectionsBehind(t *testing.T) {
	const reloads = 200
	var requests atomic.Int64
	f := newFixture(t, 12, "", func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			next.ServeHTTP(w, r)
		})
	})
	f.writeConfig(f.sim.IDs(), "  concurrency: 2\n")
	f.start()
	// Requests of the client in force, made after n requests in all: more
	// than concurrency further requests, so at least one is its own.
	requestsAfter := func(n int64) func() bool {
		return func() bool { return requests.Load() > n+2 }
	}
	f.waitFor("requests of the first client", requestsAfter(requests.Load()))
	fds, goroutines := openFDs(t), runtime.NumGoroutine()

	for range reloads {
		if err := f.reloader.Reload(); err != nil {
			t.Fatal(err)
		}
		f.waitFor("requests of the new client", requestsAfter(requests.Load()))
	}

	// Closed connections end their goroutines asynchronously. The client in
	// force, then and now, holds up to poll.concurrency connections, each
	// with a file descriptor at both ends and three goroutines.
	const fdMargin, goroutineMargin = 8, 24
	deadline := time.Now().Add(20 * time.Second)
	for {
		nowFDs, nowGoroutines := openFDs(t), runtime.NumGoroutine()
		if nowFDs <= fds+fdMargin && nowGoroutines <= goroutines+goroutineMargin {
			t.Logf("after %d reloads: %d open files (%d before), %d goroutines (%d before)", reloads, nowFDs, fds, nowGoroutines, goroutines)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after %d reloads: %d open files (%d before), %d goroutines (%d before); connections of replaced clients stay open",
				reloads, nowFDs, fds, nowGoroutines, goroutines)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting open files: %v", err)
	}
	return len(entries)
}
