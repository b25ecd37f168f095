//go:build linux

package lab_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/porthole-dev/porthole/agent/wg/invite"
	"github.com/porthole-dev/porthole/test/lab"
)

// The tunnel of these tests: the agent at .1, the WireGuard port mapped by
// the router from the public address to the agent.
const (
	wgPort    = 51820
	homeReply = "hello from home over WireGuard"
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

// homePeer stands in for the agent: a wireguard-go device on a netstack TUN
// at 10.77.0.1, its UDP socket in the LAN namespace on wgPort, an HTTP
// server inside the tunnel, and its peers taken from the invite store by
// Store.Watch, as the agent does.
type homePeer struct {
	dev *device.Device
}

// startHomePeer starts the stand-in and follows store until the test ends.
//
// TODO(agent/wg): replace startHomePeer with the real agent once agent/wg is
// merged: lab.Build(t, "./agent/cmd/porthole-agent"), started in lab.LAN with
// state_dir = the store's directory and a wireguard: section (port wgPort,
// address wgSubnet); homePeer.hasPeer then reads the agent's status instead.
func startHomePeer(t *testing.T, l *lab.Lab, store *invite.Store) *homePeer {
	t.Helper()
	key, err := store.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	tun, tnet, err := netstack.CreateNetTUN([]netip.Addr{wgSubnet.Addr()}, nil, 1420)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tun, &nsBind{Bind: conn.NewStdNetBind(), l: l, r: lab.LAN}, device.NewLogger(device.LogLevelError, "home: "))
	t.Cleanup(dev.Close)
	if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(key[:]), wgPort)); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatalf("home peer up: %v", err)
	}
	ln, err := tnet.ListenTCP(&net.TCPAddr{Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, homeReply) })}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		// The difference only, as Watch asks: replace_peers would drop
		// every phone's session at each invite.
		had := map[wgtypes.Key]bool{}
		done <- store.Watch(ctx, func(peers []invite.Peer) {
			var b strings.Builder
			now := map[wgtypes.Key]bool{}
			for _, p := range peers {
				now[p.PublicKey] = true
				fmt.Fprintf(&b, "public_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n", hex.EncodeToString(p.PublicKey[:]), netip.PrefixFrom(p.Address, 32))
			}
			for k := range had {
				if !now[k] {
					fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hex.EncodeToString(k[:]))
				}
			}
			had = now
			if err := dev.IpcSet(b.String()); err != nil {
				t.Errorf("home peer: set peers: %v", err)
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &homePeer{dev: dev}
}

// nsBind opens its sockets in a lab namespace, whichever goroutine asks:
// the device opens them at Up, which the netstack TUN's up event triggers
// too, on a goroutine of its own.
type nsBind struct {
	conn.Bind
	l *lab.Lab
	r lab.Role
}

func (b *nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = b.l.Do(b.r, func() error {
		var oerr error
		fns, actual, oerr = b.Bind.Open(port)
		return oerr
	})
	return fns, actual, err
}

// hasPeer reports whether the home peer has the phone's key configured.
func (h *homePeer) hasPeer(t *testing.T, pub wgtypes.Key) bool {
	t.Helper()
	s, err := h.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(s, "public_key="+hex.EncodeToString(pub[:])+"\n")
}

// waitPeer waits until the home peer has (or, want false, no longer has) the key.
func (h *homePeer) waitPeer(t *testing.T, pub wgtypes.Key, want bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.hasPeer(t, pub) != want {
		if time.Now().After(deadline) {
			t.Fatalf("home peer: key configured = %v after 30s, want %v", !want, want)
		}
		time.Sleep(10 * time.Millisecond) // polls a condition, with the deadline above
	}
}

// phone is wireguard-go and wg in the Phone namespace, configured from the
// invite's text the way wg-quick does it.
type phone struct {
	l     *lab.Lab
	iface string
	proc  *lab.Proc
}

// startPhone brings up a WireGuard interface in the Phone namespace from a
// wg-quick config: wg setconf with the wg-quick-only lines stripped, then
// Address, MTU and a route per AllowedIPs with ip.
func startPhone(t *testing.T, l *lab.Lab, name, config string) *phone {
	t.Helper()
	iface := "wg" + l.ID // wg + ph + 6 hex: under IFNAMSIZ, and unique: the UAPI socket is /var/run/wireguard/IFACE.sock on the host
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

// handshakes is wg's latest-handshakes: 0 when none ever completed.
func (p *phone) handshake(t *testing.T) string {
	t.Helper()
	out, err := p.l.Exec(lab.Phone, "wg", "show", p.iface, "latest-handshakes")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("wg show latest-handshakes: %q", out)
	}
	return f[1]
}

// get fetches the home peer's page from the phone through the tunnel.
func (p *phone) get(ctx context.Context) (string, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.l.DialContext(ctx, lab.Phone, network, addr)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+wgSubnet.Addr().String()+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// wantReach fetches the page, retrying until the handshake is done.
func (p *phone) wantReach(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		body, err := p.get(ctx)
		cancel()
		if err == nil && body == homeReply {
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
// from an invite's text, reaches home through the router's mapping of the
// WireGuard port (the direct path); a config with a key that was never
// invited gets nothing, and neither does a revoked one.
func TestLabWireGuardPhone(t *testing.T) {
	requireWGTools(t)
	l := lab.Up(t, lab.Options{Phone: true})
	store, err := invite.New(invite.Config{StateDir: t.TempDir(), Address: wgSubnet, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	home := startHomePeer(t, l, store)
	// What the agent's port mapping does for the WireGuard port.
	if out, err := l.Exec(lab.LAN, "upnpc", "-i", "-u", lab.RootDescURL,
		"-a", lab.AgentAddr, fmt.Sprint(wgPort), fmt.Sprint(wgPort), "UDP"); err != nil {
		t.Fatalf("upnpc -a UDP: %v\n%s", err, out)
	}
	agentKey, err := store.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	peer, priv, err := store.Add("pixel", "alice")
	if err != nil {
		t.Fatal(err)
	}
	config := func(priv wgtypes.Key) string {
		return invite.Phone{Name: "pixel", PrivateKey: priv, Address: peer.Address, AgentKey: agentKey,
			Endpoint:   fmt.Sprintf("%s:%d", lab.PublicAddr, wgPort), // the DDNS name's address in direct mode
			AllowedIPs: invite.AllowedIPs(wgSubnet, nil)}.Config()
	}
	home.waitPeer(t, peer.PublicKey, true)

	start := time.Now()
	ph := startPhone(t, l, "invited", config(priv))
	configured := time.Now()
	ph.wantReach(t)
	t.Logf("phone: wireguard-go started and configured in %v, handshake and first page %v later",
		configured.Sub(start).Round(time.Millisecond), time.Since(configured).Round(time.Millisecond))
	if hs := ph.handshake(t); hs == "0" {
		t.Errorf("page fetched, yet wg shows no handshake")
	}
	ph.stop(t)

	t.Run("wrong key", func(t *testing.T) {
		wrong, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		ph := startPhone(t, l, "wrongkey", config(wrong))
		ph.wantNothing(t)
		ph.stop(t)
	})

	t.Run("revoked", func(t *testing.T) {
		if _, err := store.Revoke("pixel"); err != nil {
			t.Fatal(err)
		}
		home.waitPeer(t, peer.PublicKey, false)
		ph := startPhone(t, l, "revoked", config(priv))
		ph.wantNothing(t)
		ph.stop(t)
	})
}
