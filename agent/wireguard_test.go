package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/porthole-dev/porthole/agent/wg"
	"github.com/porthole-dev/porthole/agent/wg/invite"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/framework"
)

// TestWireGuardAgent: an agent with WireGuard serves its tcp service at the
// tunnel address to a phone, shows the peer in status, and a revocation from
// the invite store's Watch locks the phone out.
func TestWireGuardAgent(t *testing.T) {
	echo := framework.StartBackend(t, framework.Echo)
	agentKey, _ := wg.NewPrivateKey()
	phoneKey, _ := wg.NewPrivateKey()
	tunnelAddr := netip.MustParsePrefix("10.77.0.1/24")
	phoneIP := netip.MustParseAddr("10.77.0.2")
	peer := wg.Peer{Name: "alice-phone", PublicKey: phoneKey.PublicKey(), AllowedIP: phoneIP, Viewer: "alice"}
	changes := make(chan []wg.Peer)
	ac := &config.Agent{Name: "home", StateDir: t.TempDir(),
		Services: []config.Service{{Name: "cam", Target: echo.Addr(), Port: 10022, AllowAny: true}}}
	a, err := New(Config{Agent: ac, Logger: slog.New(slog.DiscardHandler), WireGuard: &WireGuardConfig{
		PrivateKey: agentKey, Address: tunnelAddr, Peers: []wg.Peer{peer},
		Watch: func(ctx context.Context, fn func([]wg.Peer)) error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case p := <-changes:
					fn(p)
				}
			}
		}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	framework.Eventually(t, 30*time.Second, func() bool { return a.Status().WireGuard != nil }, "no WireGuard in status")
	port := a.Status().WireGuard.Port

	tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{phoneIP}, nil, wg.MTU)
	if err != nil {
		t.Fatal(err)
	}
	pd := device.NewDevice(tdev, conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	defer pd.Close()
	pub := agentKey.PublicKey()
	priv := phoneKey
	if err := pd.IpcSet(fmt.Sprintf("private_key=%x\npublic_key=%x\nendpoint=127.0.0.1:%d\nallowed_ip=10.77.0.0/24\n", priv[:], pub[:], port)); err != nil {
		t.Fatal(err)
	}
	pd.Up()
	echoOnce := func(d time.Duration) error {
		ctx, c := context.WithTimeout(context.Background(), d)
		defer c()
		nc, err := tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(tunnelAddr.Addr(), 10022))
		if err != nil {
			return err
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(d))
		nc.Write([]byte("hi"))
		_, err = io.ReadFull(nc, make([]byte, 2))
		return err
	}
	if err := echoOnce(30 * time.Second); err != nil {
		t.Fatalf("phone to the tcp service inside the tunnel: %v", err)
	}
	st := a.Status()
	if len(st.WireGuard.Peers) != 1 || st.WireGuard.Peers[0].Path != "direct" || st.WireGuard.Peers[0].Viewer != "alice" {
		t.Fatalf("status: %+v", st.WireGuard)
	}
	if cs := st.Services[0]; cs.Connections == 0 {
		t.Fatalf("the service's counters missed the tunnel viewer: %+v", cs)
	}
	changes <- nil // revoked
	framework.Eventually(t, 30*time.Second, func() bool { return len(a.Status().WireGuard.Peers) == 0 }, "peer not revoked")
	if err := echoOnce(3 * time.Second); err == nil {
		t.Fatal("revoked phone still reaches the service")
	}
}

// TestWireGuardFromConfig: the wireguard: section alone starts the device:
// the agent's key is made in state_dir, the port is the one registered with
// the relay, and invite / invite -revoke in the store reach the running
// agent without a restart; a phone of a viewer who is gone is refused.
func TestWireGuardFromConfig(t *testing.T) {
	port := uint16(framework.Port(t, "udp"))
	addr := netip.MustParsePrefix("10.77.0.1/24")
	ac := &config.Agent{Name: "home", StateDir: t.TempDir(), Viewers: map[string]config.Viewer{"alice": {}},
		WireGuard: &config.WireGuard{Port: 51820, ListenPort: port, Address: addr}}
	logs := &framework.LogBuffer{}
	a, err := New(Config{Agent: ac, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if a.cfg.WireGuardPort != 51820 || a.cfg.WireGuard.Port != port {
		t.Fatalf("WireGuardPort %d, want wireguard.port 51820; WireGuard.Port %d, want listen_port %d", a.cfg.WireGuardPort, a.cfg.WireGuard.Port, port)
	}
	store, err := invite.New(invite.Config{StateDir: ac.StateDir, Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := store.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if wg.Key(pub) != a.cfg.WireGuard.PrivateKey.PublicKey() {
		t.Fatal("the agent's key is not the invite store's")
	}
	if _, _, err := store.Add("pixel", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Add("old", "bob"); err != nil { // bob is not a viewer
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	peers := func() []wg.PeerStatus {
		if w := a.Status().WireGuard; w != nil {
			return w.Peers
		}
		return nil
	}
	framework.Eventually(t, 30*time.Second, func() bool { return len(peers()) == 1 }, "the invited phone never reached the device")
	if p := peers()[0]; p.Name != "pixel" || p.Viewer != "alice" || a.Status().WireGuard.Port != port {
		t.Fatalf("status: %+v", a.Status().WireGuard)
	}
	if !strings.Contains(logs.String(), "porthole-agent invite -revoke old") {
		t.Errorf("no warning naming the phone of the unknown viewer:\n%s", logs.String())
	}
	if _, _, err := store.Add("tablet", "alice"); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, func() bool { return len(peers()) == 2 }, "a new invite did not reach the running agent")
	if _, err := store.Revoke("pixel"); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, func() bool { p := peers(); return len(p) == 1 && p[0].Name == "tablet" }, "a revoke did not reach the running agent")
}

// TestPrintStatusWireGuard: status shows the WireGuard port, the relay's
// refusal of it, the tunnel's TCP counters and each phone.
func TestPrintStatusWireGuard(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := Status{Name: "home", WireGuard: &WireGuardStatus{
		Stats: wg.Stats{Port: 51820, RelayReceived: 7, Garbage: 2, Stack: wg.StackStats{TCPSegmentsSent: 900, TCPRetransmits: 40, TCPTimeouts: 3}, Peers: []wg.PeerStatus{
			{Name: "pixel", Viewer: "alice", Address: "10.77.0.2", LastHandshake: now.Add(-time.Minute), Path: "relay", RxBytes: 10, TxBytes: 20}}},
		Relay: "refused", RelayReason: "udp port 51820 outside the agent's udp_ports"}}
	var b strings.Builder
	PrintStatus(&b, st, now)
	for _, want := range []string{"wireguard: UDP port 51820, 1 phones", "relay:   refused: udp port 51820 outside the agent's udp_ports",
		"2 garbage", "tcp:     900 segments sent, 40 retransmitted, 3 timeouts", "pixel (alice, 10.77.0.2): handshake 1m0s ago, via relay, 10 bytes in / 20 out"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
