package api

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	promconfig "github.com/prometheus/common/config"

	"github.com/workflow-runs-exporter/workflow_runs_exporter/internal/simapi"
)

// BenchmarkDecodeRun decodes and converts one run response: the short
// documented example, and the simulated API's full document (nested
// workflow, definitions, tags), as a real response looks.
func BenchmarkDecodeRun(b *testing.B) {
	r := simapi.LoadRuns(1, 0, time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC))[0]
	full, err := json.Marshal(simapi.Document(&r, r.At(r.CreatedAt.Add(time.Hour))))
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		body []byte
		id   string
	}{{"documented", []byte(validBody), runID}, {"simulated", full, r.ID}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				if _, _, err := DecodeRun(tc.body, tc.id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCredentialsFile reads a token file as prometheus/common does on
// every request with authorization.credentials_file: what reading secrets
// per request costs, rather than caching them.
func BenchmarkCredentialsFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(path, []byte(sentinel+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	secret := promconfig.NewFileSecret(path)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := secret.Fetch(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
