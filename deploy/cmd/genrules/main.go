// Command genrules writes the copies of the alert rules that the Helm chart
// and the Kubernetes manifests need, from prometheus/alerts.yml:
//
//	cd deploy && go run ./cmd/genrules          # rewrite the copies
//	cd deploy && go run ./cmd/genrules -check   # exit 1 if a copy is out of date
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/deploy/internal/rulecopies"
)

func main() {
	dir := flag.String("dir", ".", "the deploy directory")
	check := flag.Bool("check", false, "only report copies that differ from what would be written; exit 1 if any does")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "genrules:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	source, err := os.ReadFile(filepath.Join(dir, rulecopies.Source))
	if err != nil {
		return fmt.Errorf("%w (run it in deploy/ or pass -dir)", err)
	}
	files, err := rulecopies.Render(source)
	if err != nil {
		return err
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	stale := 0
	for _, p := range paths {
		full := filepath.Join(dir, p)
		if check {
			if have, _ := os.ReadFile(full); !bytes.Equal(have, files[p]) {
				fmt.Fprintf(os.Stderr, "%s is out of date with %s\n", p, rulecopies.Source)
				stale++
			}
			continue
		}
		if err := os.WriteFile(full, files[p], 0o644); err != nil {
			return err
		}
	}
	if stale > 0 {
		return fmt.Errorf("%d copies out of date; run: cd deploy && go run ./cmd/genrules", stale)
	}
	return nil
}
