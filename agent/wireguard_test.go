package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/porthole-dev/porthole/agent/wg"
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
