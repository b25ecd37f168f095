package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/test/framework"
	"github.com/porthole-dev/porthole/tunnel"
)

// TestWireGuardThroughRelayBinary: the real relay forwards a phone's UDP packets
// at the agent's udp_ports to the agent's tunnel and back. The agent is a
// tunnel.Client echoing datagrams (the agent binary's WireGuard comes with
// agent/wg); the phones are UDP sockets on 127.0.0.x.
func TestWireGuardThroughRelayBinary(t *testing.T) {
	t.Parallel()
	tok := strongToken()
	dir := t.TempDir()
	udp, wg, admin := freePort(t, "both"), freePort(t, "udp"), freePort(t, "tcp")
	_, lo, hi := servicePorts(t, 1)
	rc := framework.RelayConfig{Listen: framework.Addr(udp), StateDir: filepath.Join(dir, "relay-state"),
		Extra:  fmt.Sprintf("admin: 127.0.0.1:%d\n", admin),
		Agents: []framework.RelayAgent{{Name: "home", Token: tok, Lo: lo, Hi: hi, Extra: fmt.Sprintf("udp_ports: %d\n", wg)}}}
	relay := startProcess(t, "relay", bins.relay, "-config", writeFile(t, dir, "relay.yaml", rc.YAML()))
	relay.WaitLog("relay listening", 10*time.Second)

	up := make(chan tunnel.Session, 1)
	var cl *tunnel.Client
	cl, err := tunnel.New(tunnel.Config{
		Address: framework.Addr(udp), Name: "home", Token: tok,
		Services:   []tunnel.Service{{Name: "wireguard", Port: uint16(wg), Proto: "udp", Allow: []string{"any"}}},
		Handler:    tunnel.ForwardTo(nil),
		OnConnect:  func(s tunnel.Session) { up <- s },
		OnDatagram: func(h proto.DatagramHeader, p []byte) { cl.SendDatagram(h, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case s := <-up:
		if len(s.Results) != 1 || !s.Results[0].Accepted {
			t.Fatalf("registration: %+v", s.Results)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("agent did not connect: %+v", cl.Status())
	}
	relay.WaitLog("WireGuard port forwarded", 10*time.Second)

	for i, from := range []string{"127.0.0.1", "127.0.0.2"} {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: wg})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, size := range []int{1, 148, 1280} {
			pkt := bytes.Repeat([]byte{byte(i + 1)}, size)
			got := make([]byte, 2048)
			ok := false
			for try := 0; try < 20 && !ok; try++ { // UDP may lose one
				c.Write(pkt)
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, err := c.Read(got)
				ok = err == nil && bytes.Equal(got[:n], pkt)
			}
			if !ok {
				t.Fatalf("phone %s: no echo of %d bytes", from, size)
			}
		}
	}
	var metrics string
	eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin))
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
		return strings.Contains(metrics, `porthole_relay_udp_flows{agent="home"} 2`) &&
			!strings.Contains(metrics, `porthole_relay_udp_packets_total{agent="home",direction="out"} 0`)
	}, "relay metrics without two flows and packets out")
	// The port closes with the agent's session.
	cancel()
	<-done
	done <- nil // for the deferred wait
	eventually(t, 10*time.Second, func() bool {
		pc, err := net.ListenPacket("udp", framework.Addr(wg))
		if err == nil {
			pc.Close()
		}
		return err == nil
	}, "the relay's UDP port %d still open after the agent left", wg)
}
