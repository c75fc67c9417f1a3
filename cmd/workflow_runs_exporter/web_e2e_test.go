package main

// End-to-end tests of the exporter's own endpoints: TLS, client
// certificates and basic auth through --web.config.file, and resistance
// to slow clients.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

type certs struct {
	dir        string
	pool       *x509.CertPool
	clientCert tls.Certificate
}

// newCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into a temporary directory.
func newCerts(t *testing.T) *certs {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER)

	issue := func(name string, serial int64, usage x509.ExtKeyUsage) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		writePEM(t, filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(dir, name+".key"), "EC PRIVATE KEY", keyDER)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	issue("server", 2, x509.ExtKeyUsageServerAuth)
	c := &certs{dir: dir, pool: x509.NewCertPool(), clientCert: issue("client", 3, x509.ExtKeyUsageClientAuth)}
	c.pool.AddCert(ca)
	return c
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (p *process) waitListening() {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", p.addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("exporter not listening; log:\n%s", p.logs.String())
}

func TestWebConfigBasicAuthOverTLS(t *testing.T) {
	c := newCerts(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(c.dir, "web.yml")
	os.WriteFile(webConfig, []byte("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: "+string(hash)+"\n"), 0o600)

	p := startExporter(t, "--demo", "--web.config.file="+webConfig)
	p.waitListening()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.pool}}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	get := func(user, pass string, auth bool) (int, string) {
		req, _ := http.NewRequest("GET", "https://"+p.addr+"/metrics", nil)
		if auth {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, okBody := get("alice", "correct horse", true)
	if code != 200 || !strings.Contains(okBody, "workflow_runs_exporter_build_info") {
		t.Fatalf("right credentials: %d", code)
	}
	var bodies []string
	for _, tc := range []struct {
		name, user, pass string
		auth             bool
	}{
		{"no credentials", "", "", false},
		{"wrong password", "alice", "wrong", true},
		{"unknown user", "mallory", "correct horse", true},
	} {
		code, body := get(tc.user, tc.pass, tc.auth)
		if code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", tc.name, code)
		}
		bodies = append(bodies, body)
	}
	if bodies[0] != bodies[1] || bodies[1] != bodies[2] {
		t.Errorf("401 bodies differ, revealing which part was wrong: %q", bodies)
	}

	// Plain HTTP to a TLS listener gets no metrics.
	if resp, err := http.Get("http://" + p.addr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "workflow_run") {
			t.Error("metrics served over plain HTTP")
		}
	}
}

func TestWebConfigClientCertificates(t *testing.T) {
	c := newCerts(t)
	webConfig := filepath.Join(c.dir, "web.yml")
	os.WriteFile(webConfig, []byte("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"), 0o600)
	p := startExporter(t, "--demo", "--web.config.file="+webConfig)
	p.waitListening()

	without := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.pool}}, Timeout: 10 * time.Second}
	if resp, err := without.Get("https://" + p.addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("client without a certificate got %s, want a TLS handshake failure", resp.Status)
	}
	with := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.pool, Certificates: []tls.Certificate{c.clientCert}}}, Timeout: 10 * time.Second}
	resp, err := with.Get("https://" + p.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("client with a certificate: %s", resp.Status)
	}
	with.CloseIdleConnections()
	without.CloseIdleConnections()
}

func TestBadWebConfigExits(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"bad bcrypt hash":  "basic_auth_users:\n  alice: not-a-bcrypt-hash\n",
		"unknown key":      "tls_server_config:\n  cert_fle: x\n",
		"missing key file": "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: nowhere.key\n",
	} {
		t.Run(name, func(t *testing.T) {
			webConfig := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yml")
			os.WriteFile(webConfig, []byte(content), 0o600)
			for _, extra := range [][]string{{"--config.check"}, {}} {
				cmd := exec.Command(buildBinary(t), append([]string{"--demo", "--web.config.file=" + webConfig, "--web.listen-address=" + freePort(t)}, extra...)...)
				done := make(chan struct{})
				var out []byte
				go func() { out, _ = cmd.CombinedOutput(); close(done) }()
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					cmd.Process.Kill()
					<-done
					t.Fatalf("%v: still running with a bad web config", extra)
				}
				if code := cmd.ProcessState.ExitCode(); code != 1 {
					t.Errorf("%v: exit code %d, want 1\n%s", extra, code, out)
				}
				if !strings.Contains(string(out), "web.config.file") {
					t.Errorf("%v: message does not name --web.config.file:\n%s", extra, out)
				}
			}
		})
	}
}
