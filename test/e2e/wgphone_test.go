package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/test/framework"
)

// wgStatus is the wireguard part of the agent's status.json.
type wgStatus struct {
	Port        int    `json:"port"`
	Relay       string `json:"relay"`
	RelayReason string `json:"relay_reason"`
	Peers       []struct {
		Name, Viewer, Path string
	} `json:"peers"`
}

// TestWireGuardPhoneBinaries: the real relay and agent binaries on
// loopback, a phone made in process from the text of `porthole-agent invite`
// (wireguard-go + netstack). A relay without udp_ports refuses the WireGuard
// port, and the agent's status says so; with udp_ports the phone fetches
// the camera's http service inside the tunnel through the relay; the relay
// is killed mid-session and started again, and the phone gets through again
// without being touched; then the phone on the direct path (the agent's own
// UDP port).
func TestWireGuardPhoneBinaries(t *testing.T) {
	t.Parallel()
	hashes, err := viewerHashes()
	if err != nil {
		t.Fatal(err)
	}
	cam := framework.StartCamera(t, camsim.Config{FPS: 5, Width: 160, Height: 120})
	tok := strongToken()
	dir := t.TempDir()
	udp, wgPort, listenPort, admin := freePort(t, "both"), freePort(t, "udp"), freePort(t, "udp"), freePort(t, "tcp")
	ps, lo, hi := servicePorts(t, 1)
	relayCfg := func(udpPorts bool) string {
		ra := framework.RelayAgent{Name: "home", Token: tok, Lo: lo, Hi: hi}
		if udpPorts {
			ra.Extra = fmt.Sprintf("udp_ports: %d\n", wgPort)
		}
		rc := framework.RelayConfig{Listen: framework.Addr(udp), StateDir: filepath.Join(dir, "relay-state"), Agents: []framework.RelayAgent{ra}}
		return writeFile(t, dir, "relay.yaml", rc.YAML())
	}
	startRelay := func(name string, udpPorts bool) *Process {
		p := startProcess(t, name, bins.relay, "-config", relayCfg(udpPorts))
		p.WaitLog("relay listening", 10*time.Second)
		return p
	}
	relay := startRelay("relay-no-udp", false)

	// The relay and the agent share the host: the agent's own UDP socket is
	// listen_port, the relay forwards port.
	ac := framework.AgentConfig{Name: "home", StateDir: filepath.Join(dir, "agent-state"), Relay: framework.Addr(udp), Token: tok,
		Extra: fmt.Sprintf("admin: 127.0.0.1:%d\nviewers:\n  alice: {password_hash: %q}\n"+
			"wireguard:\n  port: %d\n  listen_port: %d\n  address: 10.77.0.1/24\n  endpoint: 127.0.0.1:%d\n",
			admin, hashes[0], wgPort, listenPort, wgPort),
		Services: []framework.Service{{Name: "cam", Kind: "http", Target: cam.HTTPAddr, Port: ps[0]}}}
	cfg := writeFile(t, dir, "agent.yaml", ac.YAML())
	if code, out := runCmd(t, bins.agent, "-config", cfg, "-check"); code != 0 {
		t.Fatalf("-check: exit %d\n%s", code, out)
	}
	agent := startProcess(t, "agent", bins.agent, "-config", cfg)
	agent.WaitLog("tunnel up", 10*time.Second)

	status := func() (wgStatus, bool) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/status.json", admin))
		if err != nil {
			return wgStatus{}, false
		}
		defer resp.Body.Close()
		var st struct {
			WireGuard *wgStatus `json:"wireguard"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil || st.WireGuard == nil {
			return wgStatus{}, false
		}
		return *st.WireGuard, true
	}
	var st wgStatus
	if !poll(30*time.Second, func() bool { st, _ = status(); return st.Relay == "refused" }) {
		t.Fatalf("status does not show the relay refusing the WireGuard port: %+v", st)
	}
	if st.RelayReason == "" || st.Port != listenPort {
		t.Errorf("refused without a reason, or on the wrong port: %+v", st)
	}
	t.Logf("relay without udp_ports: status says %s: %s", st.Relay, st.RelayReason)

	// The invite command beside the running agent, as a user does it.
	code, out := runCmd(t, bins.agent, "-config", cfg, "invite", "pixel", "-viewer", "alice")
	if code != 0 {
		t.Fatalf("invite: exit %d\n%s", code, out)
	}
	if !poll(30*time.Second, func() bool { st, _ = status(); return len(st.Peers) == 1 }) {
		t.Fatalf("the running agent did not take the invite: %+v", st)
	}

	relay.Signal(syscall.SIGKILL)
	relay.Wait(10 * time.Second)
	relay = startRelay("relay", true)
	relay.WaitLog("WireGuard port forwarded", 60*time.Second)
	if !poll(30*time.Second, func() bool { st, _ = status(); return st.Relay == "accepted" }) {
		t.Fatalf("WireGuard port not accepted: %+v", st)
	}

	phone := framework.StartWGPhone(t, out, "")
	page := fmt.Sprintf("http://10.77.0.1:%d/snapshot.jpg", ps[0])
	fetch := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", page, nil)
		resp, err := phone.HTTPClient().Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != 200 || len(b) == 0) {
			err = fmt.Errorf("%s: %d bytes", resp.Status, len(b))
		}
		return err
	}
	var last error
	if !poll(60*time.Second, func() bool { last = fetch(); return last == nil }) {
		t.Fatalf("the phone gets no snapshot through the relay: %v", last)
	}
	st, _ = status()
	if len(st.Peers) != 1 || st.Peers[0].Path != "relay" || st.Peers[0].Viewer != "alice" {
		t.Errorf("status: %+v", st)
	}

	// The tunnel drops mid-session and comes back.
	relay.Signal(syscall.SIGKILL)
	relay.Wait(10 * time.Second)
	if err := fetch(); err == nil {
		t.Fatal("a snapshot without the relay: the phone's packets did not go through it")
	}
	start := time.Now()
	startRelay("relay-again", true)
	if !poll(90*time.Second, func() bool { last = fetch(); return last == nil }) {
		t.Fatalf("the phone did not recover after the relay came back: %v", last)
	}
	t.Logf("the phone got through again %v after the relay restarted", time.Since(start).Round(100*time.Millisecond))
	if !strings.Contains(agent.Log(), "tunnel up") {
		t.Error("agent log lacks tunnel up")
	}

	// The same phone on the direct path: straight to the agent's own socket.
	phone.Close()
	phone = framework.StartWGPhone(t, out, framework.Addr(listenPort))
	if !poll(60*time.Second, func() bool { last = fetch(); return last == nil }) {
		t.Fatalf("the phone gets no snapshot at the agent's UDP port: %v", last)
	}
	if !poll(30*time.Second, func() bool { st, _ = status(); return len(st.Peers) == 1 && st.Peers[0].Path == "direct" }) {
		t.Errorf("status after the direct path: %+v", st)
	}
}
