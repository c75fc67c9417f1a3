package simapi

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Demo is the simulated API --demo serves on a loopback port.
type Demo struct {
	URL   string
	Token string // a random bearer token, new for each start
	IDs   []string
	srv   *http.Server
}

// StartDemo serves n sample runs, created around now, on a free loopback
// port.
func StartDemo(n int) (*Demo, error) {
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	d := &Demo{Token: hex.EncodeToString(token)}
	now := time.Now()
	sim := New(d.Token, SampleRuns(n, uint64(now.UnixNano()), now))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d.URL, d.IDs = "http://"+ln.Addr().String(), sim.IDs()
	d.srv = &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go d.srv.Serve(ln)
	return d, nil
}

// Close stops serving.
func (d *Demo) Close() error { return d.srv.Close() }
