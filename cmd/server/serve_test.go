package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveWith runs `agentry-server serve ARGS --listen 127.0.0.1:0` in process
// and returns its address; stop stops it and waits for it (it is also
// stopped when the test ends).
func serveWith(t *testing.T, env map[string]string, args ...string) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		_, stderr, err := runCLI(t, ctx, env, func(a net.Addr) { addrc <- a },
			append([]string{"serve", "--listen", "127.0.0.1:0", "--long-poll", "200ms"}, args...)...)
		if err != nil {
			err = &serveError{err, stderr}
		}
		done <- err
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case a := <-addrc:
		return a.String(), stop
	case err := <-done:
		stopped = true
		t.Fatalf("serve stopped: %v", err)
	}
	return "", stop
}

type serveError struct {
	err    error
	stderr string
}

func (e *serveError) Error() string { return e.err.Error() + "; stderr:\n" + e.stderr }

// TestTokenCommands makes, uses, lists and revokes an admin token with the
// CLI, across a restart of the server on the same data folder: the token
// and the server's state are in the database.
func TestTokenCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bootstrapFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(bootstrapFile, []byte("bootstrap-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	addr, stop := serveWith(t, map[string]string{}, "--data", data, "--admin-token-file", bootstrapFile)
	url := "http://" + addr
	run := func(env map[string]string, args ...string) (string, error) {
		t.Helper()
		out, _, err := runCLI(t, ctx, env, nil, append(args, "--server", url)...)
		return out, err
	}
	mustRun := func(env map[string]string, args ...string) string {
		t.Helper()
		out, err := run(env, args...)
		if err != nil {
			t.Fatalf("agentry-server %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	boot := map[string]string{}
	bootArgs := []string{"--admin-token-file", bootstrapFile}

	token := strings.TrimSpace(mustRun(boot, append([]string{"token", "create", "--name", "ci", "--expires", "1h"}, bootArgs...)...))
	if !strings.HasPrefix(token, "agt_") || strings.ContainsAny(token, " \n") {
		t.Fatalf("token create printed %q, want only the token", token)
	}
	ci := map[string]string{envAdminToken: token}
	mustRun(ci, "pool", "create", "default")
	id := strings.TrimSpace(mustRun(ci, "job", "queue", "--pool", "default", "--script", "echo hi"))

	// Restart on the same data folder: pool, job and token are still there.
	stop()
	addr, _ = serveWith(t, map[string]string{}, "--data", data, "--admin-token-file", bootstrapFile)
	url = "http://" + addr
	if out := mustRun(ci, "job", "get", id); field(out, "State") != "queued" {
		t.Errorf("after a restart job get printed:\n%s\nwant the queued job", out)
	}
	list := mustRun(ci, "token", "list")
	if !strings.Contains(list, "ci") || !strings.Contains(list, "active") || strings.Contains(list, token) {
		t.Errorf("token list printed:\n%s\nwant ci, active, and never the secret", list)
	}

	if out := mustRun(boot, append([]string{"token", "revoke", "ci"}, bootArgs...)...); !strings.Contains(out, "revoked") {
		t.Errorf("token revoke printed %q", out)
	}
	if _, err := run(ci, "pool", "list"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a revoked token: got %v, want 401", err)
	}
	if _, err := run(boot, "token", "create"); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("token create without --name: got %v", err)
	}
}

// TestServeTLS serves HTTPS with a certificate from a CA made here; a client
// that trusts the CA queues a job, one that does not is refused.
func TestServeTLS(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTestPKI(t, dir)
	env := map[string]string{envAdminToken: "tls-admin"}
	addr, _ := serveWith(t, env, "--data", filepath.Join(dir, "data"), "--tls-cert", certFile, "--tls-key", keyFile)
	url := "https://" + addr

	run := func(args ...string) (string, error) {
		out, _, err := runCLI(t, ctx, env, nil, append(args, "--server", url)...)
		return out, err
	}
	if _, err := run("pool", "create", "default"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client that does not trust the CA: got %v, want a certificate error", err)
	}
	if _, err := run("pool", "create", "default", "--ca-file", caFile); err != nil {
		t.Fatal(err)
	}
	out, err := run("job", "queue", "--pool", "default", "--script", "echo secure", "--ca-file", caFile)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	if out, err := run("job", "get", id, "--ca-file", caFile); err != nil || field(out, "State") != "queued" {
		t.Errorf("job get over https: %v\n%s", err, out)
	}
	// Plain HTTP to the TLS port gets nowhere.
	if _, _, err := runCLI(t, ctx, env, nil, "pool", "list", "--server", "http://"+addr); err == nil {
		t.Error("plain http to the https port worked")
	}

	for _, tc := range []struct{ name, cert, key, want string }{
		{"cert without key", certFile, "", "go together"},
		{"missing files", filepath.Join(dir, "nope.pem"), keyFile, "certificate"},
	} {
		_, _, err := runCLI(t, ctx, env, nil, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "d2"),
			"--tls-cert", tc.cert, "--tls-key", tc.key)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}

// writeTestPKI writes a CA certificate and a server certificate (for
// 127.0.0.1 and localhost) signed by it, with the server's key.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agentry test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "agentry-server"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", leafDER), write("server-key.pem", "EC PRIVATE KEY", keyDER)
}
