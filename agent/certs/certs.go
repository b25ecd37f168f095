// Package certs gives the agent's TLS services (http, rtsp) their certificate:
// from ACME (certmagic: TLS-ALPN-01 on the agent's own TLS port, or DNS-01
// through the DDNS provider), from files the user supplies, or, failing both,
// a self-signed one kept in the state directory so its fingerprint stays the
// same across restarts. The relay never holds any of these: TLS terminates
// at the agent.
package certs

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"go.uber.org/zap"
)

// Certificate sources, as Status.Source names them.
const (
	SourceACME       = "acme"
	SourceFile       = "file"
	SourceSelfSigned = "self-signed"
)

// LetsEncrypt is the production ACME directory of Let's Encrypt, the CA a
// caller passes as Config.CA when the user gave an e-mail but no CA.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// ALPNACME is the ALPN protocol of TLS-ALPN-01 challenges.
const ALPNACME = "acme-tls/1"

// DNSProvider writes and removes the TXT records of DNS-01 challenges: a
// libdns provider (agent/ddns.NewACMEDNSProvider builds one from the DDNS
// provider's settings).
type DNSProvider interface {
	libdns.RecordAppender
	libdns.RecordDeleter
}

var _ certmagic.DNSProvider = DNSProvider(nil)

// Config configures a Manager.
type Config struct {
	// Hostnames the certificate is for: the DDNS hostname. Required for
	// ACME; the self-signed certificate covers them and "localhost". The
	// first is served to viewers that send no SNI (an IP address).
	Hostnames []string
	// StateDir is the agent's state directory; certificates, keys and the
	// ACME account live in StateDir/certs (directories 0700, files 0600).
	// Required.
	StateDir string
	// Email is the ACME account's contact; empty = an account without one.
	Email string
	// CA is the ACME directory URL (LetsEncrypt for production). Empty
	// means no ACME: CertFile/KeyFile if set, else self-signed.
	CA string
	// CARoot, or the PEM file CARootFile, is the pool that verifies the
	// CA's HTTPS server; nil and "" = the system roots. (Tests: Pebble's.)
	CARoot     *x509.CertPool
	CARootFile string
	// DNS, if set, solves DNS-01 challenges by writing TXT records; nil =
	// TLS-ALPN-01, which needs the hostname's port 443 to reach a gateway
	// serving TLSConfig.
	DNS DNSProvider
	// DNSResolvers are host:port resolvers DNS-01 uses to find the zone
	// and to see the TXT record propagated; empty = the system's, and the
	// zone's authoritative servers for the propagation check.
	DNSResolvers []string
	// AltTLSALPNPort is the local port that the CA's TLS-ALPN-01 connection
	// (to the hostname's port 443) arrives at: a gateway listener serving
	// TLSConfig, started before Run. Zero = 443. certmagic finds the port
	// in use and leaves the answer to TLSConfig's GetCertificate.
	AltTLSALPNPort int
	// CertFile and KeyFile are a PEM certificate chain and key the user
	// supplies; both or neither. Set, they are used instead of ACME, and
	// reloaded when CertFile changes (checked at most every 10 s).
	CertFile, KeyFile string
	// Logger receives the warnings a user must act on; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// OnFailure, if set, is called with the first failure of a run of ACME
	// failures to obtain or renew (when it is logged); it must not block.
	OnFailure func(error)
}

// Status describes the certificate viewers get now.
type Status struct {
	// Source is SourceACME, SourceFile or SourceSelfSigned.
	Source string
	// Subject and Issuer are the leaf's distinguished names.
	Subject, Issuer string
	// NotAfter is when the leaf expires.
	NotAfter time.Time
	// Fingerprint is the SHA-256 of the leaf (DER), upper-case hex pairs
	// separated by colons, as browsers show it.
	Fingerprint string
	// LastError is the last failure to obtain or renew (ACME) or to load
	// (files); empty after a success.
	LastError string
	// NextRenewal is when certmagic will renew the ACME certificate
	// (when a third of its lifetime is left; an ACME renewal-info window
	// may move it earlier); zero for other sources.
	NextRenewal time.Time
}

// Manager obtains, renews and serves the certificate.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	dir  string // StateDir/certs
	self *tls.Certificate

	acme  bool           // ACME is configured
	roots *x509.CertPool // verify the CA's server; nil: system roots
	// run is certmagic while Run runs (nil before): its cache starts a
	// goroutine, so it exists only between Run's start and end.
	run atomic.Pointer[acmeRun]

	mu        sync.Mutex // guards the fields below
	file      *tls.Certificate
	fileMod   time.Time
	fileCheck time.Time
	lastErr   string
	errLogged bool // the current failure has had its log line
	running   bool
}

// New checks cfg, loads or creates the self-signed certificate and prepares
// ACME; Run obtains and renews.
func New(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("certs: StateDir is required")
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("certs: tls.cert_file and tls.key_file go together")
	}
	if cfg.CA != "" && cfg.CertFile == "" && len(cfg.Hostnames) == 0 {
		return nil, errors.New("certs: ACME needs a hostname (ddns.hostname)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	hosts := make([]string, 0, len(cfg.Hostnames))
	for _, h := range cfg.Hostnames {
		hosts = append(hosts, strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), ".")))
	}
	cfg.Hostnames = hosts
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, log: log, dir: filepath.Join(cfg.StateDir, "certs")}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if err := enforceModes(m.dir); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}

	if cfg.CertFile != "" {
		if err := m.loadFile(); err != nil {
			return nil, err
		}
		return m, nil
	}

	self, err := m.selfSigned()
	if err != nil {
		return nil, err
	}
	m.self = self
	if cfg.CA == "" {
		log.Warn("TLS: serving a SELF-SIGNED certificate: viewers will see a certificate warning; "+
			"check that the fingerprint they are shown matches",
			"fingerprint", fingerprint(self.Leaf), "fix", "configure tls.acme_email (ACME) or tls.cert_file/tls.key_file")
		return m, nil
	}
	m.acme, m.roots = true, cfg.CARoot
	if cfg.CARootFile != "" {
		pem, err := os.ReadFile(cfg.CARootFile)
		if err != nil {
			return nil, fmt.Errorf("certs: CA root: %w", err)
		}
		m.roots = x509.NewCertPool()
		if !m.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("certs: CA root %s: no PEM certificate in it", cfg.CARootFile)
		}
	}
	log.Info("TLS: serving the self-signed certificate until ACME has obtained one",
		"fingerprint", fingerprint(self.Leaf), "ca", cfg.CA)
	return m, nil
}

// acmeRun is certmagic's state for one Run.
type acmeRun struct {
	magic *certmagic.Config
	cache *certmagic.Cache
}

// startACME builds the certmagic config, its cache and the ACME issuer.
func (m *Manager) startACME() *acmeRun {
	cfg := m.cfg
	// certmagic logs through zap; its lines would repeat every retry.
	// The Manager logs the ones a user must act on (see onEvent).
	quiet := zap.NewNop()
	var magic *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           quiet,
	})
	magic = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: m.dir},
		Logger:  quiet,
		OnEvent: m.onEvent,
	})
	issuer := certmagic.ACMEIssuer{
		CA:                   cfg.CA,
		TestCA:               cfg.CA, // certmagic's default would be LE staging
		Email:                cfg.Email,
		Agreed:               true,
		TrustedRoots:         m.roots,
		DisableHTTPChallenge: true, // the agent serves no port 80
		AltTLSALPNPort:       cfg.AltTLSALPNPort,
		Logger:               quiet,
	}
	if cfg.DNS != nil {
		issuer.DisableTLSALPNChallenge = true
		issuer.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider: cfg.DNS,
			Resolvers:   cfg.DNSResolvers,
			Logger:      quiet,
		}}
	}
	magic.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(magic, issuer)}
	return &acmeRun{magic: magic, cache: cache}
}

// Run obtains the ACME certificate (in the background, retried with
// certmagic's backoff: 1 min, 2 min, ... up to 1 h between tries, for 30
// days) and renews it until ctx ends. Viewers get the self-signed or the
// previous certificate meanwhile. The ACME certificate (loaded from StateDir
// at once when one is stored) is served only while Run runs: New starts no
// goroutine. Without ACME Run only waits for ctx.
func (m *Manager) Run(ctx context.Context) error {
	if !m.acme {
		<-ctx.Done()
		return nil
	}
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("certs: Run called twice")
	}
	m.running = true
	m.mu.Unlock()
	run := m.startACME()
	m.run.Store(run)
	defer func() {
		m.run.Store(nil)
		run.cache.Stop()
	}()
	if err := run.magic.ManageAsync(ctx, m.cfg.Hostnames); err != nil {
		m.failed(err)
	}
	<-ctx.Done()
	return nil
}

// onEvent turns certmagic's events into Status and log lines.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		enforceModes(m.dir)
		m.mu.Lock()
		recovered := m.lastErr != ""
		m.lastErr, m.errLogged = "", false
		m.mu.Unlock()
		renewal, _ := data["renewal"].(bool)
		m.log.Info("TLS: certificate obtained from ACME", "identifier", data["identifier"], "renewal", renewal,
			"after_failures", recovered)
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = fmt.Errorf("%v", data["error"])
		}
		m.failed(err)
	}
	return nil
}

// failed records an obtain or renewal failure and logs the first one of a
// run of failures: certmagic retries on its own, and the same line every
// retry would bury everything else.
func (m *Manager) failed(err error) {
	m.mu.Lock()
	m.lastErr = err.Error()
	first := !m.errLogged
	m.errLogged = true
	m.mu.Unlock()
	if !first {
		return
	}
	if m.cfg.OnFailure != nil {
		m.cfg.OnFailure(err)
	}
	how := "check that " + m.cfg.CA + " is reachable, and that " + strings.Join(m.cfg.Hostnames, ", ") +
		" resolves to this agent and its port 443 reaches the agent's TLS port (TLS-ALPN-01)"
	if m.cfg.DNS != nil {
		how = "check that " + m.cfg.CA + " is reachable and that the DNS provider's credentials may write TXT records in the zone (DNS-01)"
	}
	m.log.Warn("TLS: could not obtain a certificate from ACME; viewers keep getting the current one "+
		"and it is retried with backoff (1 min, 2 min, ... hourly); Status shows the latest error",
		"ca", m.cfg.CA, "err", err, "fix", how)
}

// TLSConfig is the tls.Config for the gateway's TLS services: the current
// certificate by SNI, TLS-ALPN-01 challenge answers, ALPN http/1.1.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1", ALPNACME},
		GetCertificate: m.getCertificate,
	}
}

func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if run := m.run.Load(); run != nil {
		if slices.Contains(hello.SupportedProtos, ALPNACME) {
			return run.magic.GetCertificate(hello)
		}
		if c := m.acmeCert(run, hello.ServerName); c != nil {
			return c, nil
		}
	}
	if c := m.fileCert(); c != nil {
		return c, nil
	}
	if m.self == nil {
		return nil, errors.New("certs: no certificate")
	}
	return m.self, nil
}

// acmeCert is the newest unexpired managed certificate for name (an
// unknown name or none: the first hostname's), nil before one is obtained.
func (m *Manager) acmeCert(run *acmeRun, name string) *tls.Certificate {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if !slices.Contains(m.cfg.Hostnames, name) {
		name = m.cfg.Hostnames[0]
	}
	now := m.cfg.Now()
	var best *tls.Certificate
	for _, c := range run.cache.AllMatchingCertificates(name) {
		if c.Leaf == nil || now.After(c.Leaf.NotAfter) {
			continue
		}
		if best == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best = &c.Certificate
		}
	}
	return best
}

// Status reports the certificate served to a viewer that asks for the
// first hostname.
func (m *Manager) Status() Status {
	var st Status
	var c *tls.Certificate
	if run := m.run.Load(); run != nil {
		if c = m.acmeCert(run, ""); c != nil {
			st.Source = SourceACME
			life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
			st.NextRenewal = c.Leaf.NotAfter.Add(-time.Duration(float64(life) * certmagic.DefaultRenewalWindowRatio))
		}
	}
	if c == nil {
		if c = m.fileCert(); c != nil {
			st.Source = SourceFile
		}
	}
	if c == nil && m.self != nil {
		c, st.Source = m.self, SourceSelfSigned
	}
	if c != nil && c.Leaf != nil {
		st.Subject, st.Issuer = c.Leaf.Subject.String(), c.Leaf.Issuer.String()
		st.NotAfter, st.Fingerprint = c.Leaf.NotAfter, fingerprint(c.Leaf)
	}
	m.mu.Lock()
	st.LastError = m.lastErr
	m.mu.Unlock()
	return st
}

// fingerprint is the SHA-256 of cert's DER as colon-separated hex pairs.
func fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	for i, x := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", x)
	}
	return b.String()
}

// enforceModes makes every directory under dir 0700 and every file 0600:
// keys and the ACME account key live there, and certmagic creates its lock
// files 0644.
func enforceModes(dir string) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // a lock file gone meanwhile
			}
			return err
		}
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if info.Mode().Perm() != want {
			if err := os.Chmod(p, want); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
}
