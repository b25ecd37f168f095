package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/test/acmeserver"
	"github.com/porthole-dev/porthole/test/dnsserver"
	"github.com/porthole-dev/porthole/test/framework"
)

// TestACMEThroughRelay: an agent with tls.acme_email gets a certificate from
// an ACME CA (Pebble, in this process) by TLS-ALPN-01, with the CA's
// validation connection arriving at the relay's public port and answered by
// the agent through the tunnel (relay only, no direct listener); the
// service then serves a chain that verifies against the CA's root for the
// ddns hostname, status.json says certificate.source "acme", and a viewer
// logs in over it. The hostname resolves (for Pebble) through Knot.
func TestACMEThroughRelay(t *testing.T) {
	t.Parallel()
	for _, ch := range []string{"tls-alpn-01", "dns-01"} {
		t.Run(ch, func(t *testing.T) {
			t.Parallel()
			testACME(t, ch)
		})
	}
}

func testACME(t *testing.T, challenge string) {
	if !haveKnot() {
		t.Skip("ACME E2E TEST SKIPPED: knotd not installed (apt-get install knot)")
	}
	hashes, err := viewerHashes()
	if err != nil {
		t.Fatal(err)
	}
	cam := framework.StartCamera(t, camsim.Config{FPS: 20, Width: 160, Height: 120})
	ps, lo, hi := servicePorts(t, 1)
	port := ps[0]
	dns := dnsserver.StartWith(t, "example.com", dnsserver.Options{Records: []string{"home 300 IN A 127.0.0.1"}})
	pebble := acmeserver.Start(t, dns.Addr, port)

	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	e.startRelay()
	caRoot := writeFile(t, e.dir, "acme-ca.pem", string(pebble.DirectoryCertPEM))
	admin := framework.Addr(freePort(t, "tcp"))
	stateDir := filepath.Join(e.dir, "agent-state")
	ac := framework.AgentConfig{Name: "home", StateDir: stateDir, Relay: framework.Addr(e.udp), Token: tok,
		Extra: fmt.Sprintf("admin: %s\nviewers:\n  alice: {password_hash: %q}\n"+
			"publicip:\n  sources: [relay]\n  min_agree: 1\n"+
			"ddns:\n  hostname: home.example.com\n  provider: {type: rfc2136, server: %q, zone: example.com, key_name: %q, key_alg: %s, key: %q}\n"+
			"tls:\n  acme_email: me@example.com\n  acme_ca: %s\n  acme_ca_root: %s\n  challenge: %s\n",
			admin, hashes[0], dns.Addr, dns.KeyName, dns.KeyAlg, dns.Key, pebble.Directory, caRoot, challenge),
		Services: []framework.Service{{Name: "cam", Kind: "http", Target: cam.HTTPAddr, Port: port}}}
	agent := e.startAgent("agent", writeFile(t, e.dir, "agent.yaml", ac.YAML()))
	agent.WaitLog("tunnel up", 10*time.Second)

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pebble.RootPEM) {
		t.Fatal("no Pebble root")
	}
	var lastErr error
	served := func() bool {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", framework.Addr(port),
			&tls.Config{RootCAs: roots, ServerName: "home.example.com"})
		if err != nil {
			lastErr = err
			return false
		}
		c.Close()
		return true
	}
	if !poll(60*time.Second, served) {
		t.Fatalf("no certificate from the ACME CA on the relay's port after 60 s: %v", lastErr)
	}

	var st struct {
		Certificate *struct {
			Source, Issuer string
			LastError      string `json:"last_error"`
		} `json:"certificate"`
	}
	eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + admin + "/status.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Certificate != nil && st.Certificate.Source == "acme"
	}, "status.json: certificate %+v, want source acme", st.Certificate)

	// A viewer over the issued certificate, verified by name.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, framework.Addr(port))
		}}
	defer tr.CloseIdleConnections()
	c := &viewerClient{Client: &http.Client{Transport: tr, Timeout: 15 * time.Second}}
	if err := c.mjpeg("https://home.example.com:"+strconv.Itoa(port)+"/stream.mjpg", basic("alice", alicePass)); err != nil {
		t.Error(err)
	}
	if fi, err := os.Stat(filepath.Join(stateDir, "certs")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state_dir/certs: %v %v, want a 0700 directory", fi.Mode(), err)
	}
}

func haveKnot() bool {
	if _, err := exec.LookPath("knotd"); err == nil {
		return true
	}
	for _, p := range []string{"/usr/sbin/knotd", "/sbin/knotd"} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}
