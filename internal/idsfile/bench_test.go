package idsfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
)

// benchFile is a file of n run IDs, one per line, as a sync job writes it.
func benchFile(n int) []byte {
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "%08x-0d44-4b50-8888-%012x\n", i, i)
	}
	return []byte(sb.String())
}

// BenchmarkParse: a changed file of 100k IDs, parsed.
func BenchmarkParse(b *testing.B) {
	data := benchFile(100_000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if l := Parse("ids", data, nil); len(l.IDs) != 100_000 {
			b.Fatal(len(l.IDs))
		}
	}
}

// BenchmarkCheckUnchanged: what every check costs (every 5 s) while a file
// of 100k IDs does not change: a read and a comparison, no parse.
func BenchmarkCheckUnchanged(b *testing.B) {
	path := filepath.Join(b.TempDir(), "ids")
	if err := os.WriteFile(path, benchFile(100_000), 0o600); err != nil {
		b.Fatal(err)
	}
	w := New(Options{Logger: log.NewNopLogger(), Path: path, Metrics: NewMetrics(prometheus.NewRegistry())}, Load(path, nil))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, changed := w.Check(now); changed {
			b.Fatal("changed")
		}
	}
}
