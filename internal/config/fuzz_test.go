package config

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary YAML to the config parser: it returns a config
// or an error, never panics, and an accepted config is fully valid.
func FuzzParse(f *testing.F) {
	f.Add([]byte("api: {url: https://api.example.com}\nruns: {ids: [" + id1 + "]}\n"))
	f.Add([]byte("api:\n  url: http://x\n  timeout: 1m\n  authorization: {type: Bearer, credentials: abc}\nruns:\n  ids: [" + id1 + ", " + id2 + "]\npoll: {interval: 5s, concurrency: 2, max_requests_per_second: 0.5}\n"))
	f.Add([]byte("api: {url: 'https://u:p@x'}\nruns: {ids: [x]}\npoll: {interval: -1s}"))
	dir := f.TempDir() // relative paths resolve here; it stays empty
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, dir)
		if err != nil {
			if strings.Contains(err.Error(), "SENTINEL") {
				t.Fatalf("error echoes a credential: %v", err)
			}
			return
		}
		if cfg.API.Timeout.Duration <= 0 || cfg.Poll.Interval.Duration <= 0 || cfg.Poll.Concurrency < 1 || cfg.API.URL == "" {
			t.Fatalf("accepted an invalid config: %+v", cfg)
		}
		seen := map[string]bool{}
		for _, id := range cfg.Runs.IDs {
			if !IsRunID(id) || id != strings.ToLower(id) || seen[id] {
				t.Fatalf("accepted run ID %q (in %q)", id, cfg.Runs.IDs)
			}
			seen[id] = true
		}
	})
}
