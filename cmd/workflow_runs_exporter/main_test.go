package main

import (
	"fmt"
	"os"
	"testing"
)

// buildDir holds the binaries the tests and benchmarks build, removed when
// they end.
var buildDir string

func TestMain(m *testing.M) {
	if spec := os.Getenv(simEnv); spec != "" {
		serveSimAPI(spec) // a benchmark's child process
		return
	}
	dir, err := os.MkdirTemp("", "wre-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
