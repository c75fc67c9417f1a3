package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
)

const id1 = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
const id2 = "7d1e2f3a-0d44-4b50-8888-8dd25736052b"

// writeFiles creates files in a fresh directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadFileDefaultsAndRelativePaths(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"token":   "secret-token\n",
		"ids.txt": "# watched runs\n" + id2 + "  # nightly\n\n",
		"c.yml": `
api:
  url: https://api.example.com
  authorization:
    credentials_file: token
runs:
  ids: [` + id1 + `]
  ids_file: ids.txt
`,
	})
	cfg, err := LoadFile(filepath.Join(dir, "c.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.API.Timeout.Duration; got != 10*time.Second {
		t.Errorf("api.timeout = %s, want 10s", got)
	}
	if cfg.API.MaxResponseBytes != 1<<20 || cfg.API.ProgressMax != 100 {
		t.Errorf("api defaults = %d, %v", cfg.API.MaxResponseBytes, cfg.API.ProgressMax)
	}
	if cfg.Poll.Interval.Duration != 30*time.Second || cfg.Poll.Concurrency != 4 || cfg.Poll.MaxRequestsPerSecond != 10 {
		t.Errorf("poll defaults = %+v", cfg.Poll)
	}
	if cfg.Runs.NotFoundGrace.Duration != 15*time.Minute || cfg.Runs.FinishedRetention.Duration != 0 || cfg.Runs.CountWindow.Duration != time.Hour || cfg.Probe.MaxRuns != 50000 {
		t.Errorf("runs defaults = %+v", cfg.Runs)
	}
	if cfg.API.HTTP.Authorization.Type != "Bearer" {
		t.Errorf("authorization.type = %q, want the default Bearer", cfg.API.HTTP.Authorization.Type)
	}
	if want := filepath.Join(dir, "token"); cfg.API.HTTP.Authorization.CredentialsFile != want {
		t.Errorf("credentials_file = %q, want %q (relative to the config file)", cfg.API.HTTP.Authorization.CredentialsFile, want)
	}
	if want := filepath.Join(dir, "ids.txt"); cfg.Runs.IDsFile != want {
		t.Errorf("runs.ids_file = %q, want %q (relative to the config file)", cfg.Runs.IDsFile, want)
	}
	if strings.Join(cfg.Runs.IDs, ",") != id1 {
		t.Errorf("runs.ids = %q, want only %s: the ids_file is read by package idsfile", cfg.Runs.IDs, id1)
	}
}

func TestBadConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
		files            map[string]string
	}{
		{"unknown key", "api: {url: https://x, urll: y}\nruns: {ids: [" + id1 + "]}", "field urll not found", nil},
		{"unknown top-level key", "api: {url: https://x}\nrunz: {}", "field runz not found", nil},
		{"wrong type", "api: {url: https://x}\nruns: {ids: [" + id1 + "]}\npoll: {concurrency: many}", "line 3: cannot unmarshal !!str (value hidden) into int", nil},
		{"bad duration", "api: {url: https://x, timeout: 10 parsecs}\nruns: {ids: [" + id1 + "]}", `api.timeout: "10 parsecs" is not a duration`, nil},
		{"bad interval", "api: {url: https://x}\nruns: {ids: [" + id1 + "]}\npoll: {interval: soon}", `poll.interval: "soon" is not a duration`, nil},
		{"zero interval", "api: {url: https://x}\nruns: {ids: [" + id1 + "]}\npoll: {interval: 0s}", "poll.interval: must be greater than 0", nil},
		{"missing url", "runs: {ids: [" + id1 + "]}", "api.url: required", nil},
		{"url without scheme", "api: {url: api.example.com}\nruns: {ids: [" + id1 + "]}", "api.url: scheme", nil},
		{"url with credentials", "api: {url: 'https://user:hunter2@x'}\nruns: {ids: [" + id1 + "]}", "api.url: must not contain credentials", nil},
		{"zero timeout", "api: {url: https://x, timeout: 0s}\nruns: {ids: [" + id1 + "]}", "api.timeout", nil},
		{"negative max bytes", "api: {url: https://x, max_response_bytes: -1}\nruns: {ids: [" + id1 + "]}", "api.max_response_bytes", nil},
		{"zero progress_max", "api: {url: https://x, progress_max: 0}\nruns: {ids: [" + id1 + "]}", "api.progress_max", nil},
		{"zero concurrency", "api: {url: https://x}\nruns: {ids: [" + id1 + "]}\npoll: {concurrency: 0}", "poll.concurrency", nil},
		{"zero rate", "api: {url: https://x}\nruns: {ids: [" + id1 + "]}\npoll: {max_requests_per_second: 0}", "poll.max_requests_per_second", nil},
		{"bad retention", "api: {url: https://x}\nruns: {finished_retention: a week}", `runs.finished_retention: "a week" is not a duration`, nil},
		{"negative grace", "api: {url: https://x}\nruns: {not_found_grace: -1m}", `runs.not_found_grace: "-1m" is not a duration`, nil},
		{"bad count window", "api: {url: https://x}\nruns: {count_window: -1h}", `runs.count_window: "-1h" is not a duration`, nil},
		{"no probe runs", "api: {url: https://x}\nprobe: {max_runs: 0}", `probe.max_runs: must be at least 1`, nil},
		{"unknown probe key", "api: {url: https://x}\nprobe: {max: 3}", `field max not found`, nil},
		{"missing basic auth password file", "api: {url: https://x, basic_auth: {username: u, password_file: nowhere}}",
			"api.basic_auth.password_file: open", nil},
		{"secret ref", "api: {url: https://x, authorization: {credentials_ref: vault/token}}",
			"api.authorization.credentials_ref: secret refs are not supported", nil},
		{"empty oauth2 secret file", "api: {url: https://x, oauth2: {client_id: c, client_secret_file: s, token_url: 'https://x/t'}}",
			"api.oauth2.client_secret_file: file", map[string]string{"s": " \n"}},
		{"malformed run ID", "api: {url: https://x}\nruns: {ids: [" + id1 + ", not-a-uuid]}", `runs.ids[1]: "not-a-uuid" is not a UUID`, nil},
		{"duplicate run ID", "api: {url: https://x}\nruns: {ids: [" + id2 + ", " + id1 + ", " + strings.ToUpper(id1) + "]}",
			"runs.ids[2]: run ID " + id1 + " is listed more than once (first as runs.ids[1])", nil},
		{"missing credentials file", "api: {url: https://x, authorization: {credentials_file: nowhere}}\nruns: {ids: [" + id1 + "]}",
			"api.authorization.credentials_file: open", nil},
		{"empty credentials file", "api: {url: https://x, authorization: {credentials_file: token}}\nruns: {ids: [" + id1 + "]}",
			"api.authorization.credentials_file: file", map[string]string{"token": "\n"}},
		{"credentials and credentials_file", "api: {url: https://x, authorization: {credentials: a, credentials_file: token}}\nruns: {ids: [" + id1 + "]}",
			"api: at most one of authorization credentials & credentials_file", map[string]string{"token": "t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"c.yml": tc.yaml}
			for k, v := range tc.files {
				files[k] = v
			}
			dir := writeFiles(t, files)
			_, err := LoadFile(filepath.Join(dir, "c.yml"))
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks a secret: %q", err)
			}
		})
	}
}

func TestSecretsAreHiddenInConfigDumps(t *testing.T) {
	const sentinel = "SENTINEL-TOKEN-0f1e2d3c"
	cfg, err := Parse([]byte(`
api:
  url: https://api.example.com
  authorization:
    credentials: `+sentinel+`
runs:
  ids: [`+id1+`]
`), ".")
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), sentinel) {
		t.Fatalf("config dump shows the token:\n%s", out)
	}
	if !strings.Contains(string(out), "<secret>") {
		t.Errorf("config dump has no <secret> placeholder:\n%s", out)
	}
}

func TestMisplacedTokenIsNotEchoed(t *testing.T) {
	const sentinel = "SENTINEL-TOKEN-0f1e2d3c"
	for _, doc := range []string{
		"api: {url: https://x, max_response_bytes: " + sentinel + "}\nruns: {ids: [" + id1 + "]}",
		"api: {url: https://x}\nruns: {ids: [" + id1 + "]}\npoll: {concurrency: " + sentinel + "}",
		"api: {url: https://x, authorization: " + sentinel + "}\nruns: {ids: [" + id1 + "]}",
	} {
		_, err := Parse([]byte(doc), ".")
		if err == nil {
			t.Fatalf("parsed %q", doc)
		}
		if strings.Contains(err.Error(), sentinel) {
			t.Errorf("error echoes the token: %v", err)
		}
		if !strings.Contains(err.Error(), "line ") {
			t.Errorf("error does not say where: %v", err)
		}
	}
}

// TestNoRunsIsProbeOnly: a configuration without run IDs is valid; the
// exporter then answers /probe only.
func TestNoRunsIsProbeOnly(t *testing.T) {
	cfg, err := Parse([]byte("api: {url: https://x}"), ".")
	if err != nil {
		t.Fatal(err)
	}
	if ids := cfg.Runs.IDs; len(ids) != 0 {
		t.Errorf("run IDs = %q; want none", ids)
	}
}

func TestRunIDsAreLowerCase(t *testing.T) {
	cfg, err := Parse([]byte("api: {url: https://x}\nruns: {ids: ["+strings.ToUpper(id1)+", "+id2+"]}"), ".")
	if err != nil {
		t.Fatal(err)
	}
	if ids := cfg.Runs.IDs; strings.Join(ids, ",") != id1+","+id2 {
		t.Errorf("run IDs = %q, want lower case", ids)
	}
}

// TestIDsFileIsNotConfig: whatever state runs.ids_file is in, the
// configuration loads; the file is data, read by package idsfile.
func TestIDsFileIsNotConfig(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"missing":            nil,
		"invalid line":       {"ids": id1 + "\nnope\n"},
		"duplicate of ids":   {"ids": id2 + "\n"},
		"empty":              {"ids": ""},
		"a directory's name": {"ids/x": ""},
	} {
		t.Run(name, func(t *testing.T) {
			f := map[string]string{"c.yml": "api: {url: https://x}\nruns: {ids: [" + id2 + "], ids_file: ids}"}
			for k, v := range files {
				f[k] = v
			}
			dir := writeFiles(t, f)
			if _, err := LoadFile(filepath.Join(dir, "c.yml")); err != nil {
				t.Errorf("LoadFile: %v, want no error", err)
			}
		})
	}
}

func TestIsRunID(t *testing.T) {
	for s, want := range map[string]bool{
		id1:                                     true,
		strings.ToUpper(id1):                    true,
		"00000000-0000-0000-0000-000000000000":  true,
		"":                                      false,
		"3c90c3cc-0d44-4b50-8888-8dd25736052":   false, // short
		"3c90c3cc-0d44-4b50-8888-8dd25736052aa": false,
		"3c90c3cc_0d44-4b50-8888-8dd25736052a":  false,
		"3c90c3cc-0d44-4b50-8888-8dd25736052g":  false,
		"3c90c3cc-0d44-4b50-88888dd25736052a-":  false,
		"../../../../../../../../../etc/passwd": false,
		"3c90c3cc-0d44-4b50-8888-8dd2573605é":   false,
	} {
		if got := IsRunID(s); got != want {
			t.Errorf("IsRunID(%q) = %v, want %v", s, got, want)
		}
	}
}
