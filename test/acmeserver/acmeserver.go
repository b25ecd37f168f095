// Package acmeserver runs Pebble, Let's Encrypt's test ACME server, inside
// the test process, for tests that obtain certificates from a real ACME
// protocol peer: its directory over HTTPS (httptest), its validation
// authority resolving names through a given DNS server (test/dnsserver's
// Knot) and checking TLS-ALPN-01 on a given port.
package acmeserver

import (
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// CA is a running Pebble.
type CA struct {
	// Directory is the ACME directory URL (https on 127.0.0.1).
	Directory string
	// DirectoryCertPEM is the certificate of the directory's HTTPS server:
	// an ACME client's trusted root for talking to the CA (acme_ca_root).
	DirectoryCertPEM []byte
	// RootPEM is the root that issued certificates chain to.
	RootPEM []byte
}

// Start runs Pebble until the test ends. resolver is the host:port of the
// DNS server its validation authority asks; tlsALPNPort the port it checks
// TLS-ALPN-01 challenges on (0: 443, unused in tests). Pebble validates at
// once (no random sleep) and never rejects a good nonce on purpose: Start
// sets PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0 in this process's
// environment, which Pebble reads when it is built.
func Start(tb testing.TB, resolver string, tlsALPNPort int) *CA {
	tb.Helper()
	os.Setenv("PEBBLE_VA_NOSLEEP", "1")
	os.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "pebble ", 0)
	if testing.Verbose() {
		logger = log.New(os.Stderr, "pebble ", log.Lmicroseconds)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, 0, tlsALPNPort, false, resolver, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewTLSServer(front.Handler())
	tb.Cleanup(srv.Close)
	mgmt := httptest.NewTLSServer(front.ManagementHandler())
	tb.Cleanup(mgmt.Close)

	c := &CA{Directory: srv.URL + wfe.DirectoryPath,
		DirectoryCertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}
	// The root as a client gets it: from the management interface.
	resp, err := mgmt.Client().Get(mgmt.URL + wfe.RootCertPath + "0")
	if err != nil {
		tb.Fatalf("acmeserver: root: %v", err)
	}
	defer resp.Body.Close()
	if c.RootPEM, err = io.ReadAll(resp.Body); err != nil {
		tb.Fatalf("acmeserver: root: %v", err)
	}
	return c
}
