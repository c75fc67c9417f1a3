// Package config loads and validates the exporter's YAML configuration file.
// Every error names the offending field, so `--config.check` output can be
// acted on without reading the source.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"
)

// Config is the whole configuration file.
type Config struct {
	API   API   `yaml:"api"`
	Runs  Runs  `yaml:"runs"`
	Poll  Poll  `yaml:"poll"`
	Probe Probe `yaml:"probe"`
}

// API describes how to reach the platform.
type API struct {
	URL              string   `yaml:"url"`
	Timeout          Duration `yaml:"timeout"`
	MaxResponseBytes int64    `yaml:"max_response_bytes"`
	ProgressMax      float64  `yaml:"progress_max"`
	// HTTP is Prometheus' own HTTP client configuration (authorization, TLS,
	// proxy, redirects), inline as in a Prometheus scrape config. Its secrets
	// marshal as <secret>.
	HTTP promconfig.HTTPClientConfig `yaml:",inline"`
}

// Runs lists the run IDs to watch and how long to keep what is known of
// them.
type Runs struct {
	// IDs are validated and lower-cased by Parse: a bad one is a config
	// error.
	IDs []string `yaml:"ids"`
	// IDsFile is only a path to the config: the file is data that other
	// programs write, read by package idsfile, and its problems are never
	// config errors (DESIGN §5).
	IDsFile string `yaml:"ids_file"`
	// FinishedRetention > 0 drops a finished run's series this long after
	// it was first seen finished; 0 keeps them as long as it is listed.
	FinishedRetention Duration `yaml:"finished_retention"`
	// NotFoundGrace is how long a run that was fetched before and now
	// answers 404 keeps its last values.
	NotFoundGrace Duration `yaml:"not_found_grace"`
	// CountWindow: a run first seen already finished is counted only if it
	// finished at most this long before; 0 counts only runs seen
	// unfinished (DESIGN §8).
	CountWindow Duration `yaml:"count_window"`
}

// Probe bounds what /probe keeps.
type Probe struct {
	// MaxRuns caps the probe-only runs (probed, not listed) kept in
	// memory; the least recently probed go first.
	MaxRuns int `yaml:"max_runs"`
}

// Poll sets the polling pace.
type Poll struct {
	Interval             Duration `yaml:"interval"`
	Concurrency          int      `yaml:"concurrency"`
	MaxRequestsPerSecond float64  `yaml:"max_requests_per_second"`
}

// Duration is a Prometheus duration ("30s", "1m30s"). The text is kept
// while the YAML is decoded and parsed in validation, because the YAML
// decoder reports a custom type's error without the key, and every config
// error must name its field.
type Duration struct {
	time.Duration
	text string
}

// UnmarshalYAML keeps the text for validation.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	return unmarshal(&d.text)
}

// MarshalYAML writes the duration back in Prometheus' form.
func (d Duration) MarshalYAML() (any, error) { return model.Duration(d.Duration).String(), nil }

func (d *Duration) parse(field string) error {
	if d.text == "" {
		return nil
	}
	v, err := model.ParseDuration(d.text)
	if err != nil {
		return fmt.Errorf("%s: %q is not a duration such as 10s or 1m", field, d.text)
	}
	d.Duration = time.Duration(v)
	return nil
}

func durationOf(v time.Duration) Duration { return Duration{Duration: v} }

// Default returns a configuration with every default of DESIGN.md §5 set.
func Default() Config {
	return Config{
		API: API{
			Timeout:          durationOf(10 * time.Second),
			MaxResponseBytes: 1 << 20,
			ProgressMax:      100,
			HTTP:             promconfig.DefaultHTTPClientConfig,
		},
		Runs: Runs{
			NotFoundGrace: durationOf(15 * time.Minute),
			CountWindow:   durationOf(time.Hour),
		},
		Probe: Probe{MaxRuns: 50000},
		Poll: Poll{
			Interval:             durationOf(30 * time.Second),
			Concurrency:          4,
			MaxRequestsPerSecond: 10,
		},
	}
}

// LoadFile reads, parses and validates a configuration file. Relative paths
// inside it are resolved against the file's directory, as Prometheus does.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse parses and validates a configuration document; dir is the base for
// relative paths.
func Parse(data []byte, dir string) (*Config, error) {
	cfg := Default()
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, hideValues(err)
	}
	cfg.API.HTTP.SetDirectory(dir)
	cfg.Runs.IDsFile = promconfig.JoinDir(dir, cfg.Runs.IDsFile)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// quotedValue matches the values the YAML decoder quotes in its type errors.
var quotedValue = regexp.MustCompile("`[^`]*`")

// hideValues drops the offending values from YAML type errors, keeping the
// line and the expected type: a token pasted under the wrong key must not
// end up in a log line or an HTTP error body.
func hideValues(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = quotedValue.ReplaceAllString(m, "(value hidden)")
	}
	return errors.New("yaml: " + strings.Join(msgs, "; "))
}

func (c *Config) validate() error {
	for field, d := range map[string]*Duration{
		"api.timeout":             &c.API.Timeout,
		"poll.interval":           &c.Poll.Interval,
		"runs.finished_retention": &c.Runs.FinishedRetention,
		"runs.not_found_grace":    &c.Runs.NotFoundGrace,
		"runs.count_window":       &c.Runs.CountWindow,
	} {
		if err := d.parse(field); err != nil {
			return err
		}
	}
	if err := validateURL(c.API.URL); err != nil {
		return err
	}
	if c.API.Timeout.Duration <= 0 {
		return errors.New("api.timeout: must be greater than 0")
	}
	if c.API.MaxResponseBytes <= 0 {
		return errors.New("api.max_response_bytes: must be greater than 0")
	}
	if !(c.API.ProgressMax > 0) || math.IsInf(c.API.ProgressMax, 0) {
		return errors.New("api.progress_max: must be a finite number greater than 0")
	}
	// Inline fields bypass HTTPClientConfig's own UnmarshalYAML, so its
	// validation (and bearer_token normalisation) is called here.
	if err := c.API.HTTP.Validate(); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if err := checkSecretFiles(&c.API.HTTP); err != nil {
		return err
	}
	if err := refuseSecretRefs(&c.API.HTTP); err != nil {
		return err
	}
	// No higher floor: max_requests_per_second already protects the API.
	if c.Poll.Interval.Duration <= 0 {
		return errors.New("poll.interval: must be greater than 0")
	}
	if c.Poll.Concurrency < 1 {
		return errors.New("poll.concurrency: must be at least 1")
	}
	if !(c.Poll.MaxRequestsPerSecond > 0) || math.IsInf(c.Poll.MaxRequestsPerSecond, 0) {
		return errors.New("poll.max_requests_per_second: must be a finite number greater than 0")
	}
	if c.Probe.MaxRuns < 1 {
		return errors.New("probe.max_runs: must be at least 1")
	}
	// No runs at all is allowed: the exporter then answers /probe only.
	first := make(map[string]int, len(c.Runs.IDs))
	for i, id := range c.Runs.IDs {
		if !IsRunID(id) {
			return fmt.Errorf("runs.ids[%d]: %q is not a UUID", i, id)
		}
		id = strings.ToLower(id)
		if j, dup := first[id]; dup {
			return fmt.Errorf("runs.ids[%d]: run ID %s is listed more than once (first as runs.ids[%d])", i, id, j)
		}
		first[id] = i
		c.Runs.IDs[i] = id
	}
	return nil
}

func validateURL(raw string) error {
	if raw == "" {
		return errors.New("api.url: required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the input; it cannot hold credentials we keep,
		// because those are rejected below only once parsed. Keep the
		// message generic so a pasted token never reaches a log.
		return errors.New("api.url: not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("api.url: scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("api.url: host is missing")
	}
	if u.User != nil {
		return errors.New("api.url: must not contain credentials; use basic_auth or authorization")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("api.url: must not have a query or fragment")
	}
	return nil
}

// checkSecretFiles makes a missing, unreadable or empty secret file a
// config error now, rather than a 401 on every request later.
// prometheus/common reads these files lazily, on every request (so that a
// rotated token needs no restart), and offers no up-front check. The
// fields are found by their YAML names ending in "_file" under the secret
// settings, so a file field the library adds is checked without a change
// here. TLS files are read, and checked, when the client is built.
func checkSecretFiles(h *promconfig.HTTPClientConfig) error {
	var err error
	walkFields(reflect.ValueOf(h).Elem(), "api", "_file", func(field, path string) {
		if err != nil || path == "" || strings.Contains(field, "tls_config") {
			return
		}
		data, readErr := os.ReadFile(path)
		switch {
		case readErr != nil:
			err = fmt.Errorf("%s: %w", field, readErr)
		case len(bytes.TrimSpace(data)) == 0:
			err = fmt.Errorf("%s: file %s is empty", field, path)
		}
	})
	return err
}

// refuseSecretRefs rejects the *_ref secret fields: they name secrets in a
// secret manager, and the exporter has none.
func refuseSecretRefs(h *promconfig.HTTPClientConfig) error {
	var err error
	walkFields(reflect.ValueOf(h).Elem(), "api", "_ref", func(field, value string) {
		if err == nil && value != "" {
			err = fmt.Errorf("%s: secret refs are not supported; use the _file or inline field", field)
		}
	})
	return err
}

// walkFields calls visit with the dotted YAML name and value of every
// string field whose name ends in suffix, descending into structs and
// pointers.
func walkFields(v reflect.Value, prefix, suffix string, visit func(field, value string)) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			walkFields(v.Elem(), prefix, suffix, visit)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			path := prefix
			if name != "" {
				path += "." + name
			}
			if f.Type.Kind() == reflect.String && strings.HasSuffix(name, suffix) {
				visit(path, v.Field(i).String())
				continue
			}
			walkFields(v.Field(i), path, suffix, visit)
		}
	}
}

// IsRunID reports whether s has the UUID form the API uses for run IDs:
// 8-4-4-4-12 hexadecimal digits. (Checked by hand rather than with a
// regular expression: an ids_file of 100,000 lines is checked every few
// seconds.)
func IsRunID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// Demo returns the configuration --demo runs with: the simulated API at url,
// its token inline, a short poll interval so changes show quickly.
func Demo(url, token string, ids []string) *Config {
	cfg := Default()
	cfg.API.URL = url
	cfg.API.HTTP.Authorization = &promconfig.Authorization{Type: "Bearer", Credentials: promconfig.Secret(token)}
	cfg.Runs.IDs = ids
	cfg.Poll.Interval = durationOf(5 * time.Second)
	cfg.Poll.MaxRequestsPerSecond = 50
	return &cfg
}
