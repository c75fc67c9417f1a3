package deploy

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestExporterReadsTokenAsContainerUser runs the real binary as the
// container's user (uid 65532, gid 65532) against a token file laid out as
// the kubelet lays out a Secret volume: root-owned, mode 0440, group =
// the pod's fsGroup when one is set, root without. With the fsGroup
// layout the exporter reads the token and sends it to the API; with the
// old layout (no fsGroup) it fails with "permission denied". With the
// fsGroup layout it also opens its state store on a volume laid out the
// same way.
func TestExporterReadsTokenAsContainerUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatalf("this test must run as root (CI does): it lays out root-owned files and starts the exporter as uid %d; euid is %d", containerUser, os.Geteuid())
	}
	bin := exporterBinary(t)
	const token = "token-of-the-container-user-test"
	var authorized atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"detail":"Not authenticated"}`, http.StatusUnauthorized)
			return
		}
		authorized.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"workflow_id":"w","status":"completed","progress":100,"created_at":"2025-01-01T00:00:00Z",`+
			`"finished_at":"2025-01-01T00:01:00Z","workflow":{"id":"w","name":"n","type":"flow"}}`, runA)
	}))
	defer api.Close()

	for _, tc := range []struct {
		name     string
		fileGID  int      // the token file's group
		groups   []uint32 // the process's supplementary groups
		readable bool
	}{
		// fsGroup 65532: the kubelet chowns the file to group 65532 and
		// the container runtime adds 65532 to the process's groups.
		{"fsGroup layout", containerUser, []uint32{containerUser}, true},
		// No fsGroup: root:root 0440, as the pod that could not start had.
		{"old layout without fsGroup", 0, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// t.TempDir's directories are 0700 and root's.
			for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			tokenFile := filepath.Join(dir, "token")
			if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o440); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(tokenFile, 0, tc.fileGID); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tokenFile, 0o440); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(dir, "config.yml")
			cfgText := fmt.Sprintf("api:\n  url: %s\n  authorization:\n    type: Bearer\n    credentials_file: %s\nruns:\n  ids: [%s]\npoll:\n  interval: 1s\n",
				api.URL, tokenFile, runA)
			if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
				t.Fatal(err)
			}
			attr := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: containerUser, Gid: containerUser, Groups: tc.groups}}

			// --config.check reads the credentials file as the exporter
			// does at start.
			check := exec.Command(bin, "--config.check", "--config.file="+cfg)
			check.SysProcAttr = attr
			var stderr bytes.Buffer
			check.Stderr = &stderr
			err := check.Run()
			switch {
			case tc.readable && err != nil:
				t.Fatalf("--config.check as uid %d: %v\n%s", containerUser, err, stderr.String())
			case !tc.readable && err == nil:
				t.Fatalf("--config.check as uid %d succeeded with a token file it cannot read", containerUser)
			case !tc.readable && !strings.Contains(stderr.String(), "permission denied"):
				t.Fatalf("--config.check failed without saying permission denied:\n%s", stderr.String())
			}
			if !tc.readable {
				return
			}

			// The exporter itself, as uid 65532, sends the token it read,
			// with its store on a volume as the kubelet lays it out with
			// fsGroup: the directory root:65532, group-writable, setgid.
			state := filepath.Join(dir, "state")
			if err := os.Mkdir(state, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(state, 0, containerUser); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(state, 0o770|os.ModeSetgid); err != nil {
				t.Fatal(err)
			}
			before := authorized.Load()
			ctx, cancel := context.WithCancel(context.Background())
			exp := exec.CommandContext(ctx, bin, "--config.file="+cfg, "--web.listen-address="+freeAddr(t), "--storage.path="+state)
			exp.SysProcAttr = attr
			var out bytes.Buffer
			exp.Stdout, exp.Stderr = &out, &out
			if err := exp.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); exp.Wait() }()
			deadline := time.Now().Add(20 * time.Second)
			for authorized.Load() == before {
				if time.Now().After(deadline) {
					cancel()
					exp.Wait()
					t.Fatalf("the exporter running as uid %d sent no request with the token:\n%s", containerUser, out.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			entries, err := os.ReadDir(state)
			if err != nil || len(entries) == 0 {
				t.Errorf("the exporter created nothing in its state directory (%v)", err)
			}
		})
	}
}
