package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binDir holds the exporter binary built once for all tests. It is
// world-readable so that a test can run the binary as another user.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wre-deploy-test-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// exporterBinary builds the real exporter from the repository (once per
// test binary) and returns its path.
func exporterBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "workflow_runs_exporter")
	buildOnce.Do(func() {
		build := exec.Command("go", "build", "-o", bin, "./cmd/workflow_runs_exporter")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building the exporter: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}
