package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logBuf collects a Manager's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// checkModes fails the test if anything under dir is readable by others.
func checkModes(t *testing.T, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".lock") {
			return nil // certmagic's lock files (0644, a timestamp, deleted when released)
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, info.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Errorf("only %d entries under %s", n, dir)
	}
}

func TestSelfSignedStableAndPrivate(t *testing.T) {
	state := t.TempDir()
	// A certs directory left too open (by hand, by an older version) is tightened.
	if err := os.MkdirAll(filepath.Join(state, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	cfg := Config{Hostnames: []string{"home.example.com"}, StateDir: state, Logger: logs.logger()}
	m1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := m1.Status()
	if st.Source != SourceSelfSigned || len(st.Fingerprint) != 32*3-1 || st.LastError != "" || !st.NextRenewal.IsZero() {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(logs.String(), "SELF-SIGNED") || !strings.Contains(logs.String(), st.Fingerprint) ||
		!strings.Contains(logs.String(), "tls.acme_email") {
		t.Errorf("no loud warning with the fingerprint and the fix: %s", logs.String())
	}
	checkModes(t, filepath.Join(state, "certs"))

	c, err := m1.TLSConfig().GetCertificate(&tls.ClientHelloInfo{ServerName: "home.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Leaf.DNSNames, []string{"home.example.com", "localhost"}) {
		t.Errorf("SANs %v", c.Leaf.DNSNames)
	}
	if k, ok := c.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", c.PrivateKey)
	}
	if life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); life < 364*24*time.Hour || life > 367*24*time.Hour {
		t.Errorf("lifetime %v", life)
	}

	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fp := m2.Status().Fingerprint; fp != st.Fingerprint {
		t.Errorf("fingerprint changed across restarts: %s then %s", st.Fingerprint, fp)
	}
	// Another hostname: the old certificate doesn't cover it.
	cfg.Hostnames = []string{"other.example.com"}
	m3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m3.Status().Fingerprint == st.Fingerprint {
		t.Error("certificate kept although the hostname changed")
	}
	// Close to expiry: replaced.
	cfg.Now = func() time.Time { return time.Now().Add(340 * 24 * time.Hour) }
	m4, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m4.Status().Fingerprint == m3.Status().Fingerprint {
		t.Error("certificate kept although it expires within 30 days")
	}
	checkModes(t, filepath.Join(state, "certs"))
}

// writePair writes a self-signed certificate for name to dir.
func writePair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile
}

func TestCertFileLoadedAndReloaded(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writePair(t, dir, "one.example.com")
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m, err := New(Config{StateDir: t.TempDir(), CertFile: certFile, KeyFile: keyFile, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	if st.Source != SourceFile || !strings.Contains(st.Subject, "one.example.com") {
		t.Fatalf("status %+v", st)
	}
	writePair(t, dir, "two.example.com")
	os.Chtimes(certFile, now.Add(time.Minute), now.Add(time.Minute)) // a new mtime, whatever the fs granularity
	if s := m.Status(); s.Fingerprint != st.Fingerprint {
		t.Error("reloaded before the check interval")
	}
	mu.Lock()
	now = now.Add(fileCheckEvery + time.Second)
	mu.Unlock()
	if s := m.Status(); !strings.Contains(s.Subject, "two.example.com") {
		t.Errorf("after the file changed: %+v", s)
	}

	if _, err := New(Config{StateDir: t.TempDir(), CertFile: certFile}); err == nil {
		t.Error("cert_file without key_file accepted")
	}
	if _, err := New(Config{StateDir: t.TempDir(), CertFile: filepath.Join(dir, "none"), KeyFile: keyFile}); err == nil {
		t.Error("missing cert_file accepted")
	}
}

func TestACMEFailureKeepsServing(t *testing.T) {
	var logs logBuf
	var hooked atomic.Int32
	m, err := New(Config{Hostnames: []string{"home.example.com"}, StateDir: t.TempDir(), Email: "me@example.com",
		CA: "https://127.0.0.1:1/directory", Logger: logs.logger(), OnFailure: func(error) { hooked.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	self := m.Status()
	if self.Source != SourceSelfSigned {
		t.Fatalf("before ACME: %+v", self)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, 60*time.Second, "the failure in Status", func() bool { return m.Status().LastError != "" })
	st := m.Status()
	if st.Source != SourceSelfSigned || st.Fingerprint != self.Fingerprint {
		t.Errorf("after the failure: %+v", st)
	}
	c, err := m.TLSConfig().GetCertificate(&tls.ClientHelloInfo{ServerName: "home.example.com"})
	if err != nil || fingerprint(c.Leaf) != self.Fingerprint {
		t.Errorf("serving %v, %v", c, err)
	}
	// A retry failing again adds no line.
	m.failed(errors.New("again"))
	if n := strings.Count(logs.String(), "could not obtain a certificate"); n != 1 {
		t.Errorf("%d failure lines, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "fix=") {
		t.Errorf("the failure line says nothing to do: %s", logs.String())
	}
	if n := hooked.Load(); n != 1 {
		t.Errorf("OnFailure called %d times, want once per run of failures", n)
	}
}

// waitFor polls cond until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) { // polling a condition with a deadline
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
