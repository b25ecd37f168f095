package e2e

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/test/framework"
)

// TestPortalBinary: the real agent with a camera (http, mjpeg:, snapshot:)
// and a phone page (kind portal, no target) behind the relay. The page lists
// the camera; its snapshot comes through the page's own port; the bytes
// are alice's in status.json (per service: the page's); her daily cap
// answers 429; after SIGTERM usage.json holds today's figure.
func TestPortalBinary(t *testing.T) {
	hashes, err := viewerHashes()
	if err != nil {
		t.Fatal(err)
	}
	cam := framework.StartCamera(t, camsim.Config{FPS: 10, Width: 160, Height: 120})
	ps, lo, hi := servicePorts(t, 2)
	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	e.startRelay()
	w := &webEnv{t: t, ports: map[string]int{"cam": ps[0], "phone": ps[1]}}
	w.stateDir = filepath.Join(e.dir, "agent-state")
	ac := framework.AgentConfig{Name: "home", StateDir: w.stateDir, Relay: framework.Addr(e.udp), Token: tok,
		Extra: fmt.Sprintf("admin: off\nviewers:\n  alice: {password_hash: %q, daily_cap: 300kB}\n  bob: {password_hash: %q}\n"+
			"publicip:\n  sources: [relay]\n  min_agree: 1\n", hashes[0], hashes[1]),
		Services: []framework.Service{
			{Name: "cam", Kind: "http", Target: cam.HTTPAddr, Port: ps[0],
				Extra: "mjpeg: /stream.mjpg\nsnapshot: /snapshot.jpg\nlive_timeout: 10m\n"},
			{Name: "phone", Kind: "portal", Port: ps[1]},
		}}
	cfg := writeFile(t, e.dir, "agent.yaml", ac.YAML())
	agent := e.startAgent("agent", cfg)
	agent.WaitLog("tunnel up", 10*time.Second)
	caFile := filepath.Join(w.stateDir, "certs", "self-signed.crt")
	eventually(t, 10*time.Second, func() bool { return fileExists(caFile) }, "no %s", caFile)
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	w.roots = x509.NewCertPool()
	w.roots.AppendCertsFromPEM(pem)
	c := w.client("127.0.0.1", "127.0.0.1")
	eventually(t, 10*time.Second, func() bool {
		resp, err := c.get(w.url("phone", "/"), nil)
		return err == nil && resp.StatusCode == http.StatusUnauthorized
	}, "the phone page does not answer through the relay")

	resp, page := readBody(t, c, w.url("phone", "/"), basic("alice", alicePass))
	if resp.StatusCode != 200 || !strings.Contains(page, `data-mjpeg="/cam/cam/mjpeg"`) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("the phone page: %d, CSP %q\n%s", resp.StatusCode, resp.Header.Get("Content-Security-Policy"), page)
	}
	var got int
	for got < 300_000 {
		resp, body := readBody(t, c, w.url("phone", "/cam/cam/snapshot.jpg?width=160"), basic("alice", alicePass))
		if resp.StatusCode == http.StatusTooManyRequests {
			break
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("snapshot through the phone page: %d %q", resp.StatusCode, body)
		}
		got += len(body)
	}
	resp, body := readBody(t, c, w.url("phone", "/cam/cam/snapshot.jpg"), basic("alice", alicePass))
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "starts again at") {
		t.Errorf("over the cap: %d %q", resp.StatusCode, body)
	}
	// bob has no cap; his figures are his own.
	if resp, body := readBody(t, c, w.url("phone", "/cam/cam/snapshot.jpg"), basic("bob", bobPass)); resp.StatusCode != 200 {
		t.Errorf("bob: %d %q", resp.StatusCode, body)
	}

	// status.json (saved every 10 s with admin: off) has the figures.
	type usage struct {
		Viewer   string `json:"viewer"`
		BytesOut int64  `json:"bytes_out"`
		Today    int64  `json:"today"`
		Cap      int64  `json:"daily_cap"`
		Services []struct {
			Service string `json:"service"`
		} `json:"services"`
	}
	var alice usage
	eventually(t, 30*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(w.stateDir, "status.json"))
		if err != nil {
			return false
		}
		var st struct {
			Viewers []usage `json:"viewers"`
		}
		if json.Unmarshal(b, &st) != nil {
			return false
		}
		for _, v := range st.Viewers {
			if v.Viewer == "alice" {
				alice = v
			}
		}
		return alice.Today >= 300_000
	}, "alice's figures in status.json: %+v", alice)
	if alice.Cap != 300_000 || alice.BytesOut < int64(got) || len(alice.Services) != 1 || alice.Services[0].Service != "phone" {
		t.Errorf("alice's figures %+v", alice)
	}
	agent.Signal(sigterm)
	<-agent.Done()
	b, err := os.ReadFile(filepath.Join(w.stateDir, "usage.json"))
	if err != nil || !strings.Contains(string(b), `"alice":`) {
		t.Errorf("usage.json after SIGTERM: %s (%v)", b, err)
	}
}
