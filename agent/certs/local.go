package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Self-signed certificate: where it is kept and how long it lives.
const (
	selfCertFile = "self-signed.crt"
	selfKeyFile  = "self-signed.key"
	selfLifetime = 365 * 24 * time.Hour
	// selfRenewBefore: a certificate this close to expiry is replaced (a
	// new fingerprint, once a year) rather than left to expire.
	selfRenewBefore = 30 * 24 * time.Hour
	// fileCheckEvery bounds how often CertFile's mtime is looked at.
	fileCheckEvery = 10 * time.Second
)

// selfSigned loads the self-signed certificate from the state directory if
// it still covers the hostnames for long enough, else makes and stores a new
// one (ECDSA P-256, one year, SANs: the hostnames and localhost). Keeping it
// keeps its fingerprint, which viewers may have been told to check.
func (m *Manager) selfSigned() (*tls.Certificate, error) {
	names := append(slices.Clone(m.cfg.Hostnames), "localhost")
	certPath, keyPath := filepath.Join(m.dir, selfCertFile), filepath.Join(m.dir, selfKeyFile)
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && c.Leaf != nil &&
		m.cfg.Now().Add(selfRenewBefore).Before(c.Leaf.NotAfter) && covers(c.Leaf, names) {
		return &c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed serial: %w", err)
	}
	now := m.cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"Porthole agent (self-signed)"}},
		DNSNames:              names,
		NotBefore:             now.Add(-time.Hour), // clocks of viewers differ
		NotAfter:              now.Add(selfLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed key: %w", err)
	}
	// Key first: a certificate without its key would be loaded by nobody.
	if err := writeFile0600(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, err
	}
	if err := writeFile0600(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// covers reports whether leaf is valid for every name.
func covers(leaf *x509.Certificate, names []string) bool {
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

// writeFile0600 replaces path atomically with data, mode 0600.
func writeFile0600(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// loadFile loads CertFile/KeyFile; a failure is an error at start.
func (m *Manager) loadFile() error {
	c, mod, err := m.readFile()
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.file, m.fileMod, m.fileCheck = c, mod, m.cfg.Now()
	m.mu.Unlock()
	return nil
}

func (m *Manager) readFile() (*tls.Certificate, time.Time, error) {
	info, err := os.Stat(m.cfg.CertFile)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("certs: tls.cert_file: %w", err)
	}
	c, err := tls.LoadX509KeyPair(m.cfg.CertFile, m.cfg.KeyFile)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("certs: tls.cert_file %s / tls.key_file %s: %w", m.cfg.CertFile, m.cfg.KeyFile, err)
	}
	return &c, info.ModTime(), nil
}

// fileCert is the certificate from CertFile, reloaded when the file has
// changed (a renewal by some other tool); a reload that fails keeps the old
// one and sets LastError. Nil without CertFile.
func (m *Manager) fileCert() *tls.Certificate {
	if m.cfg.CertFile == "" {
		return nil
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.fileCheck) < fileCheckEvery {
		return m.file
	}
	m.fileCheck = now
	info, err := os.Stat(m.cfg.CertFile)
	if err != nil || info.ModTime().Equal(m.fileMod) {
		return m.file
	}
	c, mod, err := m.readFile()
	if err != nil {
		// Perhaps half-written: try again next time, keep serving the old one.
		if m.lastErr != err.Error() {
			m.log.Warn("TLS: could not reload the certificate file; keeping the previous one", "err", err)
		}
		m.lastErr = err.Error()
		return m.file
	}
	m.file, m.fileMod, m.lastErr = c, mod, ""
	m.log.Info("TLS: certificate file reloaded", "file", m.cfg.CertFile, "not_after", c.Leaf.NotAfter)
	return m.file
}
