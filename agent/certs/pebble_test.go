package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/test/dnsserver"
)

func TestMain(m *testing.M) {
	// Pebble reads these when its VA and WFE are built: validate at once
	// (no random sleep) and never reject a good nonce on purpose.
	os.Setenv("PEBBLE_VA_NOSLEEP", "1")
	os.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	os.Exit(m.Run())
}

// requireKnot skips ACME tests where Knot, which Pebble resolves names
// with, is not installed. CI installs it.
func requireKnot(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("knotd"); err == nil {
		return
	}
	for _, p := range []string{"/usr/sbin/knotd", "/sbin/knotd"} {
		if _, err := os.Stat(p); err == nil {
			return
		}
	}
	t.Skip("ACME TEST SKIPPED: knotd not installed (apt-get install knot)")
}

// pebbleCA is an in-process Pebble: its ACME directory and its root.
type pebbleCA struct {
	dir   string         // ACME directory URL
	https *x509.CertPool // trusts the directory's HTTPS server
	root  *x509.CertPool // trusts the certificates it issues
	srv   *httptest.Server
}

// startPebble runs Pebble with its DNS lookups at resolver and its
// TLS-ALPN-01 checks to tlsPort (0: unused).
func startPebble(t *testing.T, resolver string, tlsPort int) *pebbleCA {
	t.Helper()
	logger := log.New(io.Discard, "pebble ", 0)
	if testing.Verbose() {
		logger = log.New(os.Stderr, "pebble ", log.Lmicroseconds)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, 0, tlsPort, false, resolver, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)
	mgmt := httptest.NewTLSServer(front.ManagementHandler())
	t.Cleanup(mgmt.Close)

	p := &pebbleCA{dir: srv.URL + wfe.DirectoryPath, https: x509.NewCertPool(), root: x509.NewCertPool(), srv: srv}
	p.https.AddCert(srv.Certificate())
	// The root as a client gets it: from the management interface.
	resp, err := mgmt.Client().Get(mgmt.URL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !p.root.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %q", b)
	}
	return p
}

// verifyIssued checks that m serves a Pebble-issued certificate for host
// that verifies against Pebble's root, and that its files are private.
func verifyIssued(t *testing.T, m *Manager, p *pebbleCA, host string) {
	t.Helper()
	st := m.Status()
	if st.Source != SourceACME || st.LastError != "" || st.NextRenewal.IsZero() || !st.NextRenewal.Before(st.NotAfter) {
		t.Errorf("status %+v", st)
	}
	c, err := m.TLSConfig().GetCertificate(&tls.ClientHelloInfo{ServerName: host})
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: p.root, Intermediates: inter}); err != nil {
		t.Errorf("issued chain does not verify against Pebble's root: %v", err)
	}
	if fingerprint(leaf) != st.Fingerprint {
		t.Error("Status describes another certificate than the one served")
	}
	checkModes(t, m.dir)
}

func TestACMEDNS01Knot(t *testing.T) {
	requireKnot(t)
	s := dnsserver.Start(t, "example.com")
	p := startPebble(t, s.Addr, 0)
	dnsProv, err := ddns.NewACMEDNSProvider(ddns.ProviderConfig{Type: "rfc2136", Server: s.Addr, Zone: s.Zone,
		KeyName: s.KeyName, KeyAlg: s.KeyAlg, Key: s.Key}, ddns.ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	cfg := Config{Hostnames: []string{"home.example.com"}, StateDir: t.TempDir(), Email: "me@example.com",
		CA: p.dir, CARoot: p.https, DNS: dnsProv, DNSResolvers: []string{s.Addr}, Logger: logs.logger()}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := runManager(t, m)
	waitFor(t, 90*time.Second, "a certificate by DNS-01", func() bool { return m.Status().Source == SourceACME })
	verifyIssued(t, m, p, "home.example.com")
	if strings.Contains(logs.String(), "could not obtain") || !strings.Contains(logs.String(), "certificate obtained") {
		t.Errorf("log of a clean issuance:\n%s", logs.String())
	}
	issued := m.Status().Fingerprint
	stop()

	// Restarted with the CA gone: the stored certificate is served, nothing breaks.
	p.srv.Close()
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runManager(t, m2)
	waitFor(t, 30*time.Second, "the stored certificate", func() bool { return m2.Status().Source == SourceACME })
	if st := m2.Status(); st.Fingerprint != issued {
		t.Errorf("after restart: %+v, want the stored certificate %s", st, issued)
	}
	if t.Failed() {
		t.Log(logs.String())
	}
}

// runManager runs m until the test ends, or until the returned stop.
func runManager(t *testing.T, m *Manager) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestACMETLSALPN01ThroughGateway(t *testing.T) {
	requireKnot(t)
	s := dnsserver.StartWith(t, "example.com", dnsserver.Options{Records: []string{"home 300 IN A 127.0.0.1"}})
	// The gateway's port first: Pebble's TLS-ALPN-01 checks go there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	p := startPebble(t, s.Addr, port)
	m, err := New(Config{Hostnames: []string{"home.example.com"}, StateDir: t.TempDir(), Email: "me@example.com",
		CA: p.dir, CARoot: p.https, AltTLSALPNPort: port})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := gateway.ParsePolicy([]string{"any"})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Listen(gateway.Config{Service: "cam", Listener: ln, TLS: m.TLSConfig(), Policy: policy,
		Dial: func(context.Context, netip.AddrPort) (gateway.Conn, error) {
			return nil, errors.New("no backend in this test")
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { gw.Serve(ctx); close(served) }()
	t.Cleanup(func() {
		cancel()
		<-served
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		gw.Shutdown(sctx)
	})

	runManager(t, m)
	waitFor(t, 90*time.Second, "a certificate by TLS-ALPN-01", func() bool { return m.Status().Source == SourceACME })
	verifyIssued(t, m, p, "home.example.com")

	// A viewer now gets it through the gateway.
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "home.example.com", RootCAs: p.root})
	if err != nil {
		t.Fatalf("viewer handshake with the issued certificate: %v", err)
	}
	c.Close()
	if gw.Stats().TLSFailed != 0 {
		t.Errorf("failed handshakes: %+v", gw.Stats())
	}
}
