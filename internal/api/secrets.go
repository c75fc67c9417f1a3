package api

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	promconfig "github.com/prometheus/common/config"
)

// fileSecrets reads the secret files of the HTTP client configuration
// (authorization.credentials_file, basic_auth.username_file and
// password_file) at most once a second. prometheus/common reads a *_file
// secret on every request, so that a rotated token needs no restart; for
// the exporter, with a request per run, that file open and read was about a
// tenth of its work per run. Handed to the library as *_ref secrets through
// its SecretManager hook, a file is read again when the value read last is
// a second old: a rotated secret, however it was written, is used within a
// second.
type fileSecrets struct {
	mu    sync.Mutex
	files map[string]*secretFile // by ref
}

type secretFile struct {
	path  string
	value string
	read  time.Time // zero until read
}

// secretRecheck is how long a secret read is used before the file is read
// again (a variable for the tests).
var secretRecheck = time.Second

// refPrefix marks the refs fileSecrets made; a credentials_ref from the
// configuration itself is not one and stays unsupported.
const refPrefix = "workflow_runs_exporter/file:"

// useFileSecrets returns cfg with its per-request secret files turned into
// refs served by the returned manager.
func useFileSecrets(cfg promconfig.HTTPClientConfig) (promconfig.HTTPClientConfig, *fileSecrets) {
	m := &fileSecrets{files: map[string]*secretFile{}}
	ref := func(path string) string {
		r := refPrefix + path
		m.files[r] = &secretFile{path: path}
		return r
	}
	if a := cfg.Authorization; a != nil && a.CredentialsFile != "" {
		c := *a
		c.CredentialsRef, c.CredentialsFile = ref(a.CredentialsFile), ""
		cfg.Authorization = &c
	}
	if b := cfg.BasicAuth; b != nil && (b.UsernameFile != "" || b.PasswordFile != "") {
		c := *b
		if c.UsernameFile != "" {
			c.UsernameRef, c.UsernameFile = ref(b.UsernameFile), ""
		}
		if c.PasswordFile != "" {
			c.PasswordRef, c.PasswordFile = ref(b.PasswordFile), ""
		}
		cfg.BasicAuth = &c
	}
	return cfg, m
}

var errUnknownRef = errors.New("secret refs (credentials_ref, password_ref, ...) are not supported; use the *_file or inline fields")

// Fetch implements promconfig.SecretManager.
func (m *fileSecrets) Fetch(_ context.Context, ref string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[ref]
	if f == nil {
		return "", errUnknownRef
	}
	now := time.Now()
	if !f.read.IsZero() && now.Sub(f.read) < secretRecheck {
		return f.value, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return "", fmt.Errorf("unable to read file %s: %w", f.path, err)
	}
	// As prometheus/common's own file secrets.
	f.value, f.read = strings.TrimSpace(string(data)), now
	return f.value, nil
}
