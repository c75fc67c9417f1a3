package api

import "testing"

// BenchmarkDecodeRun decodes and converts one documented run response.
func BenchmarkDecodeRun(b *testing.B) {
	body := []byte(validBody)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := DecodeRun(body, runID); err != nil {
			b.Fatal(err)
		}
	}
}
