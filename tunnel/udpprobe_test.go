package tunnel

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
)

// udpResponder answers on a loopback UDP socket with answer(pkt) (nil: silence),
// as the agent's WireGuard socket does with proto.UDPProbeReply.
func udpResponder(t *testing.T, answer func([]byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r := answer(buf[:n]); r != nil {
				pc.WriteToUDPAddrPort(r, from)
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestUDPProbe: the relay verifies a UDP port by proto.UDPProbe; an echo, silence
// and a closed port fail with a reason; a udp service is registered as such and
// never gets streams.
func TestUDPProbe(t *testing.T) {
	regs := make(chan []proto.Service, 4)
	e := startServer(t, func(c *ServerConfig) {
		c.ProbeTimeout = 2 * time.Second
		c.ProbeDialUDP = func(ctx context.Context, s *ServerSession, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		}
		reg := c.Register
		c.Register = func(s *ServerSession, svcs []proto.Service) []proto.ServiceResult {
			regs <- svcs
			return reg(s, svcs)
		}
	})
	c, _ := startClient(t, e, "home", func(c *Config) {
		c.Services = append(c.Services, Service{Name: "wireguard", Port: 51820, Proto: "udp", Allow: []string{"any"}})
	})
	ss := nextSession(t, e)
	registered := <-regs
	if len(registered) != 2 || registered[0].Proto != "tcp" || registered[1].Proto != "udp" {
		t.Fatalf("registered %+v", registered)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	good := udpResponder(t, func(p []byte) []byte { r, _ := proto.UDPProbeReply(p); return r })
	r, err := c.ProbeUDP(ctx, good, "wireguard")
	if err != nil || !r.OK {
		t.Fatalf("probe of the agent's UDP port: %+v %v", r, err)
	}
	echo := udpResponder(t, func(p []byte) []byte { return append([]byte{}, p...) })
	r, err = c.ProbeUDP(ctx, echo, "wireguard")
	if err != nil || r.OK || !strings.Contains(r.Reason, "other packets") {
		t.Fatalf("probe of an echo service: %+v %v", r, err)
	}
	silent := udpResponder(t, func([]byte) []byte { return nil })
	r, err = c.ProbeUDP(ctx, silent, "wireguard")
	if err != nil || r.OK || !strings.Contains(r.Reason, "no answer to the UDP probe") {
		t.Fatalf("probe of a silent port: %+v %v", r, err)
	}
	// A TCP probe of the UDP responder's port finds nothing.
	r, err = c.Probe(ctx, good, "wireguard")
	if err != nil || r.OK {
		t.Fatalf("tcp probe of a udp port: %+v %v", r, err)
	}

	// The udp service gets no viewer streams.
	st, err := ss.OpenStream(ctx, proto.StreamHeader{Kind: proto.StreamViewer, Service: "wireguard", Viewer: "198.51.100.9:5555"})
	if err == nil {
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = st.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("a stream for the udp service was served")
	}
}
