//go:build linux

package lab_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/porthole-dev/porthole/agent/wg/invite"
	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/test/lab"
)

// The tunnel of these tests: the agent at .1, the WireGuard port mapped by
// the router from the public address to the agent.
const (
	wgPort = 51820
)

var wgSubnet = netip.MustParsePrefix("10.77.0.1/24")

// requireWGTools skips (loudly; fails with PORTHOLE_LAB=require) without the
// real WireGuard userspace tools: the Debian packages wireguard-go and
// wireguard-tools.
func requireWGTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"wireguard-go", "wg"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("%s: %s not installed (apt-get install wireguard-go wireguard-tools)", lab.SkipMessage, strings.Join(missing, ", "))
	if os.Getenv(lab.EnvMode) == "require" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// home is the real product around the phone: porthole-relay in WAN
// (udp_ports: the WireGuard port), porthole-agent in LAN with a wireguard:
// section, the router mapping its UDP port, and the simulated camera on
// the LAN host (its web page, and MJPEG over RTSP at /stream1).
type home struct {
	l        *lab.Lab
	agentBin string
	agentCfg string
	relay    *lab.Proc
	agent    *lab.Proc
}

const (
	wgCamHTTP  = 8080  // the camera's web page on the LAN host
	wgCamRTSP  = 8554  // its RTSP
	wgHTTPPort = 10080 // the services' public ports (and inside the tunnel)
	wgRTSPPort = 10554
)

// startHome starts the camera, the relay and the agent, and waits until the
// agent has the WireGuard port accepted by the relay and mapped on the router.
func startHome(t *testing.T, l *lab.Lab) *home {
	t.Helper()
	relayBin := lab.Build(t, "relay/cmd/porthole-relay")
	agentBin := lab.Build(t, "agent/cmd/porthole-agent")
	h := &home{l: l, agentBin: agentBin}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cam := camsim.New(camsim.Config{FPS: 10, Width: 160, Height: 120})
	httpLn, err := l.Listen(lab.LAN, "tcp", fmt.Sprintf("%s:%d", lab.AgentAddr, wgCamHTTP))
	if err != nil {
		t.Fatal(err)
	}
	rtspLn, err := l.Listen(lab.LAN, "tcp", fmt.Sprintf("%s:%d", lab.AgentAddr, wgCamRTSP))
	if err != nil {
		t.Fatal(err)
	}
	camCtx, camStop := context.WithCancel(context.Background())
	camDone := make(chan struct{})
	go func() {
		defer close(camDone)
		cam.Run(camCtx, httpLn, rtspLn)
	}()
	t.Cleanup(func() {
		camStop()
		<-camDone
		cam.Close()
	})

	token := config.NewToken()
	relayCfg := fmt.Sprintf("listen: %[1]s:7443\nviewer_bind: %[1]s\npublic_ip: %[1]s\nstate_dir: %[2]s\n"+
		"agents:\n  home:\n    token_file: home.token\n    ports: 10000-10999\n    udp_ports: %[3]d\n",
		lab.WANAddr, filepath.Join(l.Dir(), "relay-state"), wgPort)
	h.relay = l.StartSpec(t, lab.WAN, "relay", lab.Spec{
		Path: relayBin, Args: []string{"-v", "-config", "relay.yaml"},
		Files: map[string][]byte{"relay.yaml": []byte(relayCfg), "home.token": []byte(token + "\n")},
	})
	if err := h.relay.WaitListening(ctx, "udp", 7443); err != nil {
		t.Fatal(err)
	}
	hash, err := access.HashPassword("alice-lab-password")
	if err != nil {
		t.Fatal(err)
	}
	agentCfg := fmt.Sprintf(`name: home
state_dir: %[1]s
relay:
  address: %[2]s:7443
  token_file: agent.token
viewers:
  alice: {password_hash: %[3]q}
services:
  - name: cam
    kind: http
    target: %[4]s:%[5]d
    port: %[6]d
    allow: [any]
  - name: live
    kind: rtsp
    target: %[4]s:%[7]d
    path: /stream1
    port: %[8]d
    allow: [any]
direct:
  enabled: true
  listen: %[4]s
wireguard:
  port: %[9]d
  address: %[10]s
  lan_addresses: true     # the camera's own address answers inside the tunnel too
  endpoint: %[11]s:%[9]d   # the DDNS name in direct mode: the home's public address
`, filepath.Join(l.Dir(), "agent-state"), lab.WANAddr, hash, lab.AgentAddr, wgCamHTTP, wgHTTPPort, wgCamRTSP, wgRTSPPort,
		wgPort, wgSubnet, lab.PublicAddr)
	h.agent = l.StartSpec(t, lab.LAN, "agent", lab.Spec{
		Path: agentBin, Args: []string{"-v", "-config", "agent.yaml"},
		Files: map[string][]byte{"agent.yaml": []byte(agentCfg), "agent.token": []byte(token + "\n")},
	})
	h.agentCfg = filepath.Join(h.agent.Dir, "agent.yaml")
	if out, err := l.Exec(lab.LAN, agentBin, "-config", h.agentCfg, "-check"); err != nil {
		t.Fatalf("-check: %v\n%s", err, out)
	}
	if err := h.agent.WaitOutput(ctx, "agent running"); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(t, func(st agentStatus) bool {
		if st.WireGuard == nil || st.WireGuard.Relay != "accepted" {
			return false
		}
		for _, m := range st.Router.Mappings {
			if strings.HasPrefix(m, fmt.Sprintf("udp/%d ", wgPort)) && strings.Contains(m, "active") {
				return true
			}
		}
		return false
	}, "the WireGuard port accepted by the relay and mapped on the router")
	return h
}

// agentStatus is what these tests read of `porthole-agent status -json`.
type agentStatus struct {
	Router struct {
		Mappings []string `json:"mappings"`
	} `json:"router"`
	WireGuard *struct {
		Relay string `json:"relay"`
		Peers []struct {
			Name, Viewer, Path string
			PublicKey          string `json:"public_key"`
		} `json:"peers"`
	} `json:"wireguard"`
}

// waitStatus polls the agent's status until cond holds.
func (h *home) waitStatus(t *testing.T, cond func(agentStatus) bool, what string) agentStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for {
		out, err := h.l.Exec(lab.LAN, h.agentBin, "-config", h.agentCfg, "status", "-json")
		var st agentStatus
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && cond(st) {
			return st
		}
		last = out
		if time.Now().After(deadline) {
			t.Fatalf("agent status: not %s within 60s:\n%s", what, last)
		}
		time.Sleep(100 * time.Millisecond) // polls a condition, with the deadline above
	}
}

// invite runs porthole-agent invite beside the running agent and returns the
// phone's config (the text before the QR code).
func (h *home) invite(t *testing.T, name string) string {
	t.Helper()
	out, err := h.l.Exec(lab.LAN, h.agentBin, "-config", h.agentCfg, "invite", name, "-viewer", "alice")
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	i := strings.Index(out, "[Peer]")
	j := strings.Index(out[max(i, 0):], "\n\n")
	if i < 0 || j < 0 {
		t.Fatalf("invite printed no config:\n%s", out)
	}
	return out[:i+j+1]
}

// waitPeer waits until the agent has (or, want false, no longer has) the phone.
func (h *home) waitPeer(t *testing.T, name string, want bool) {
	t.Helper()
	h.waitStatus(t, func(st agentStatus) bool {
		has := false
		for _, p := range st.WireGuard.Peers {
			has = has || p.Name == name
		}
		return has == want
	}, fmt.Sprintf("phone %s present = %v", name, want))
}

// phone is wireguard-go and wg in the Phone namespace, configured from the
// invite's text the way wg-quick does it.
type phone struct {
	l     *lab.Lab
	iface string
	proc  *lab.Proc
}

// phoneCount numbers the phones' interfaces.
var phoneCount atomic.Int32

// startPhone brings up a WireGuard interface in the Phone namespace from a
// wg-quick config: wg setconf with the wg-quick-only lines stripped, then
// Address, MTU and a route per AllowedIPs with ip.
func startPhone(t *testing.T, l *lab.Lab, name, config string) *phone {
	t.Helper()
	// wg + ph + 6 hex + a count: under IFNAMSIZ, and unique: the UAPI socket
	// is /var/run/wireguard/IFACE.sock on the host, and a stopped phone's
	// wireguard-go must not share (and unlink) the next one's.
	iface := fmt.Sprintf("wg%s%d", l.ID, phoneCount.Add(1)%1000)
	p := &phone{l: l, iface: iface}
	p.proc = l.Start(t, lab.Phone, "wireguard-go-"+name, "wireguard-go", "-f", iface)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := l.Exec(lab.Phone, "wg", "show", iface); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wireguard-go did not come up in 30s")
		}
		time.Sleep(20 * time.Millisecond) // polls a condition, with the deadline above
	}
	conf, addr, mtu, allowed := parseQuick(t, config)
	f, err := os.CreateTemp(t.TempDir(), "wg-*.conf")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(conf)
	f.Close()
	run := func(args ...string) {
		t.Helper()
		if out, err := l.Exec(lab.Phone, args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	run("wg", "setconf", iface, f.Name())
	run("ip", "addr", "add", addr, "dev", iface)
	run("ip", "link", "set", iface, "mtu", mtu, "up")
	for _, a := range allowed {
		run("ip", "route", "add", a, "dev", iface)
	}
	return p
}

// stop ends wireguard-go; its interface goes with it.
func (p *phone) stop(t *testing.T) {
	t.Helper()
	if err := p.proc.Stop(); err != nil {
		t.Fatal(err)
	}
}

// handshake is wg's latest-handshakes: 0 when none ever completed.
func (p *phone) handshake(t *testing.T) string { return p.show(t, "latest-handshakes") }

// endpoint is the address the phone sends to (wg show endpoints).
func (p *phone) endpoint(t *testing.T) string { return p.show(t, "endpoints") }

// show is the value of `wg show IFACE what` for the one peer.
func (p *phone) show(t *testing.T, what string) string {
	t.Helper()
	out, err := p.l.Exec(lab.Phone, "wg", "show", p.iface, what)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("wg show %s: %q", what, out)
	}
	return f[1]
}

// peerPath is the path the agent's status gives the phone name: direct,
// relay, or "" before any packet.
func peerPath(st agentStatus, name string) string {
	for _, p := range st.WireGuard.Peers {
		if p.Name == name {
			return p.Path
		}
	}
	return ""
}

// get fetches the camera's snapshot from the phone through the tunnel, at
// the agent's tunnel address.
func (p *phone) get(ctx context.Context) (string, error) {
	return p.getURL(ctx, fmt.Sprintf("http://%s:%d/snapshot.jpg", wgSubnet.Addr(), wgHTTPPort))
}

// getURL fetches a JPEG from the phone through the tunnel.
func (p *phone) getURL(ctx context.Context, u string) (string, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.l.DialContext(ctx, lab.Phone, network, addr)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && (resp.StatusCode != 200 || !bytes.HasPrefix(b, []byte{0xff, 0xd8})) {
		err = fmt.Errorf("%s, %d bytes: not a JPEG", resp.Status, len(b))
	}
	return string(b), err
}

// play runs ffprobe in the phone on the camera's RTSP stream inside the
// tunnel (plain: WireGuard encrypts) and checks it reads frames.
func (p *phone) play(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	u := fmt.Sprintf("rtsp://%s:%d/live", wgSubnet.Addr(), wgRTSPPort)
	out, err := p.l.ExecContext(ctx, lab.Phone, "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
		"-read_intervals", "%+#10", "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "default=nw=1", u)
	if err != nil || !strings.Contains(out, "codec_name=mjpeg") || !strings.Contains(out, "width=160") || strings.Contains(out, "nb_read_frames=0") {
		t.Fatalf("ffprobe %s inside the tunnel: %v\n%s", u, err, out)
	}
	t.Logf("ffprobe %s inside the tunnel: %s", u, strings.Join(strings.Fields(out), " "))
}

// wantReach fetches the page, retrying until the handshake is done.
func (p *phone) wantReach(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		body, err := p.get(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("phone: no page through the tunnel within 60s: %q, %v", body, err)
		}
	}
}

// wantNothing checks the phone gets no handshake and no page. WireGuard
// answers a valid initiation within milliseconds; 5 s of trying with the
// first initiation sent at once is plenty.
func (p *phone) wantNothing(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if body, err := p.get(ctx); err == nil {
		t.Fatalf("phone reached home: %q", body)
	}
	if hs := p.handshake(t); hs != "0" {
		t.Fatalf("phone completed a handshake (latest %s)", hs)
	}
}

// parseQuick splits a wg-quick config into what wg setconf takes and the
// Address, MTU and AllowedIPs that wg-quick applies itself.
func parseQuick(t *testing.T, config string) (conf, addr, mtu string, allowed []string) {
	t.Helper()
	conf = invite.WGConf(config)
	sc := bufio.NewScanner(strings.NewReader(config))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Address":
			addr = v
		case "MTU":
			mtu = v
		case "AllowedIPs":
			for _, a := range strings.Split(v, ",") {
				allowed = append(allowed, strings.TrimSpace(a))
			}
		}
	}
	if addr == "" || mtu == "" || len(allowed) == 0 {
		t.Fatalf("invite lacks Address, MTU or AllowedIPs:\n%s", config)
	}
	return conf, addr, mtu, allowed
}

// TestLabWireGuardPhone: a phone with the real wireguard-go and wg, set up
// from the text of porthole-agent invite, reaches the real agent through
// the router's mapping of the WireGuard port (the direct path) and through
// the relay (Endpoint = the relay's address, as DNS says in relayed mode):
// the camera's snapshot inside the tunnel and its RTSP stream played by
// ffprobe. A config with a key that was never invited gets nothing, and
// neither does a revoked one.
func TestLabWireGuardPhone(t *testing.T) {
	requireWGTools(t)
	if _, err := exec.LookPath("ffprobe"); err != nil {
		msg := lab.SkipMessage + ": ffprobe not installed (apt-get install ffmpeg)"
		if os.Getenv(lab.EnvMode) == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	l := lab.Up(t, lab.Options{Phone: true})
	h := startHome(t, l)
	text := h.invite(t, "pixel")
	h.waitPeer(t, "pixel", true)
	viaRelay := strings.Replace(text, fmt.Sprintf("Endpoint = %s:%d", lab.PublicAddr, wgPort), fmt.Sprintf("Endpoint = %s:%d", lab.WANAddr, wgPort), 1)
	if viaRelay == text {
		t.Fatalf("invite's Endpoint is not %s:%d:\n%s", lab.PublicAddr, wgPort, text)
	}

	for _, c := range []struct{ path, config string }{{"direct", text}, {"relay", viaRelay}} {
		t.Run(c.path, func(t *testing.T) {
			start := time.Now()
			ph := startPhone(t, l, c.path, c.config)
			configured := time.Now()
			ph.wantReach(t)
			t.Logf("phone via %s: wireguard-go started and configured in %v, handshake and first snapshot %v later", c.path,
				configured.Sub(start).Round(time.Millisecond), time.Since(configured).Round(time.Millisecond))
			if hs := ph.handshake(t); hs == "0" {
				t.Errorf("snapshot fetched, yet wg shows no handshake")
			}
			h.waitStatus(t, func(st agentStatus) bool { return peerPath(st, "pixel") == c.path }, "the phone on the "+c.path+" path")
			ph.play(t)
			// lan_addresses: the camera at its own LAN address, as a vendor
			// app knows it (that nothing else of the LAN is: agent/wg's tests).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := ph.getURL(ctx, fmt.Sprintf("http://%s:%d/snapshot.jpg", lab.AgentAddr, wgCamHTTP)); err != nil {
				t.Errorf("the camera's LAN address inside the tunnel: %v", err)
			}
			ph.stop(t)
		})
	}

	t.Run("wrong key", func(t *testing.T) {
		wrong, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		i := strings.Index(text, "PrivateKey = ")
		j := strings.Index(text[i:], "\n")
		ph := startPhone(t, l, "wrongkey", text[:i]+"PrivateKey = "+wrong.String()+text[i+j:])
		ph.wantNothing(t)
		ph.stop(t)
	})

	t.Run("revoked", func(t *testing.T) {
		if out, err := l.Exec(lab.LAN, h.agentBin, "-config", h.agentCfg, "invite", "-revoke", "pixel"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		h.waitPeer(t, "pixel", false)
		ph := startPhone(t, l, "revoked", text)
		ph.wantNothing(t)
		ph.stop(t)
	})
}

// TestLabWireGuardDNSMove measures what the real WireGuard tools do when DNS
// moves between the relay and home: the phone's config names the endpoint
// by its DNS name (as an invite with ddns does), resolved in the phone
// through its hosts file. wg resolves the name once, when the config is
// set; a later change of the name's address changes nothing (the phone
// keeps its endpoint, and keeps working because both paths stay up: the
// relay forwards in direct mode too) until the tunnel is set up again.
func TestLabWireGuardDNSMove(t *testing.T) {
	requireWGTools(t)
	l := lab.Up(t, lab.Options{Phone: true})
	h := startHome(t, l)
	text := h.invite(t, "pixel")
	h.waitPeer(t, "pixel", true)
	const name = "home.example.com"
	byName := strings.Replace(text, fmt.Sprintf("Endpoint = %s:", lab.PublicAddr), "Endpoint = "+name+":", 1)
	// ip netns exec binds /etc/netns/NS/hosts over /etc/hosts in the phone.
	dir := filepath.Join("/etc/netns", l.NS(lab.Phone))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	resolve := func(addr string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost\n"+addr+" "+name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	home, relay := fmt.Sprintf("%s:%d", lab.PublicAddr, wgPort), fmt.Sprintf("%s:%d", lab.WANAddr, wgPort)

	for _, c := range []struct{ from, to, fromPath, toPath string }{
		{home, relay, "direct", "relay"}, // the direct path is lost: DNS moves to the relay
		{relay, home, "relay", "direct"}, // it is back: DNS moves home
	} {
		t.Run(c.fromPath+" to "+c.toPath, func(t *testing.T) {
			resolve(strings.Split(c.from, ":")[0])
			ph := startPhone(t, l, "dns", byName)
			ph.wantReach(t)
			if ep := ph.endpoint(t); ep != c.from {
				t.Fatalf("endpoint %s, want %s", ep, c.from)
			}
			h.waitStatus(t, func(st agentStatus) bool { return peerPath(st, "pixel") == c.fromPath }, "the phone on the "+c.fromPath+" path")
			resolve(strings.Split(c.to, ":")[0])
			ph.wantReach(t) // a new connection inside the tunnel, after the DNS change
			if ep := ph.endpoint(t); ep != c.from {
				t.Errorf("after the DNS change the endpoint is %s: wg re-resolved (want it kept: %s)", ep, c.from)
			}
			t.Logf("DNS moved to %s: the running tunnel keeps %s and still works", c.to, ph.endpoint(t))
			ph.stop(t)
			ph = startPhone(t, l, "dns-again", byName) // the tunnel switched off and on
			ph.wantReach(t)
			if ep := ph.endpoint(t); ep != c.to {
				t.Errorf("after the tunnel restart the endpoint is %s, want %s", ep, c.to)
			}
			h.waitStatus(t, func(st agentStatus) bool { return peerPath(st, "pixel") == c.toPath }, "the phone on the "+c.toPath+" path")
			ph.stop(t)
		})
	}
}
