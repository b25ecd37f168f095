package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/relay"
	"github.com/porthole-dev/porthole/test/framework"
	"github.com/porthole-dev/porthole/tunnel"
)

// freeUDPPort returns a UDP port free on 127.0.0.1 now, from below the
// ephemeral range (so no outgoing socket takes it while the test runs).
func freeUDPPort(t testing.TB) uint16 {
	t.Helper()
	return uint16(framework.Port(t, "udp"))
}

// udpRelay runs a relay whose agents are given by agents (name -> config); mod
// adjusts the relay's Config.
func udpRelay(t testing.TB, agents map[string]config.RelayAgent, mod func(*relay.Config)) *relay.Server {
	t.Helper()
	rc := &config.Relay{Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(), Agents: agents}
	cfg := relay.Config{Relay: rc}
	if tt, ok := t.(*testing.T); ok {
		cfg.Logger = logger(tt)
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// wgAgent is a fake agent: a tunnel.Client whose WireGuard is an echo (or
// silence), counting the datagrams and flows it sees.
type wgAgent struct {
	c        *tunnel.Client
	sess     tunnel.Session
	stop     func()
	received atomic.Int64
	mu       sync.Mutex
	flows    map[uint32]bool
}

// startWGAgent connects agent name with services; echo makes it answer every
// datagram with the same payload on the same flow.
func startWGAgent(t testing.TB, s *relay.Server, name, token string, echo bool, services ...tunnel.Service) *wgAgent {
	t.Helper()
	return startWGAgentOver(t, s, "", name, token, echo, services...)
}

// startWGAgentOver is startWGAgent over transport ("" = auto, "quic", "tcp").
func startWGAgentOver(t testing.TB, s *relay.Server, transport, name, token string, echo bool, services ...tunnel.Service) *wgAgent {
	t.Helper()
	a := &wgAgent{flows: map[uint32]bool{}}
	connected := make(chan tunnel.Session, 1)
	var c *tunnel.Client
	c, err := tunnel.New(tunnel.Config{
		Address: s.Addr().String(), Name: name, Token: token, Transport: transport,
		Services:  services,
		Handler:   tunnel.ForwardTo(nil),
		OnConnect: func(s tunnel.Session) { connected <- s },
		OnDatagram: func(h proto.DatagramHeader, p []byte) {
			a.received.Add(1)
			a.mu.Lock()
			a.flows[h.Flow] = true
			a.mu.Unlock()
			if echo {
				c.SendDatagram(h, p)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	a.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	a.stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(a.stop)
	select {
	case a.sess = <-connected:
	case <-time.After(10 * time.Second):
		t.Fatalf("agent %s did not connect: %+v", name, c.Status())
	}
	return a
}

func (a *wgAgent) flowCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.flows)
}

// phone is a UDP socket on a loopback address sending to the relay's port.
func phone(t testing.TB, from string, port uint16) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		t.Skipf("no %s on this machine: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends pkt and waits for the same bytes back, resending (UDP may
// lose a packet, and the relay's port may open a moment after registration).
func exchange(t *testing.T, c *net.UDPConn, pkt []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		c.Write(pkt) // may fail with an ICMP error until the relay's port opens
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:n], pkt) {
			return
		}
	}
	t.Fatalf("no echo of a %d-byte packet from %s", len(pkt), c.LocalAddr())
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func agentStatus(s *relay.Server, name string) relay.AgentStatus {
	for _, a := range s.Status().Agents {
		if a.Name == name {
			return a
		}
	}
	return relay.AgentStatus{}
}

func wgService(port uint16) tunnel.Service {
	return tunnel.Service{Name: "wireguard", Port: port, Proto: "udp", Allow: []string{"any"}}
}

// TestUDPForwarding: phones' packets reach the agent as datagrams, one flow per
// phone address, and the agent's answers go back to the right phone; packets
// up to the tunnel's limit pass, bigger ones are counted and dropped; the
// registration refuses UDP ports outside udp_ports.
func TestUDPForwarding(t *testing.T) {
	tok := config.NewToken()
	wg := freeUDPPort(t)
	s := udpRelay(t, map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: 10000, Hi: 10000},
		UDPPorts: config.PortRange{Lo: wg, Hi: wg}}}, nil)
	a := startWGAgent(t, s, "home", tok, true, wgService(wg),
		tunnel.Service{Name: "other", Port: wg + 1, Proto: "udp", Allow: []string{"any"}},
		tunnel.Service{Name: "sctp", Port: 10000, Proto: "sctp", Allow: []string{"any"}})
	want := map[string]string{"wireguard": "", "other": "outside this agent's udp_ports", "sctp": `protocol "sctp" not supported`}
	for _, r := range a.sess.Results {
		if w := want[r.Name]; r.Accepted != (w == "") || !strings.Contains(r.Reason, w) {
			t.Errorf("service %s: accepted %v reason %q, want %q", r.Name, r.Accepted, r.Reason, w)
		}
	}

	p1, p2 := phone(t, "127.0.0.1", wg), phone(t, "127.0.0.2", wg)
	exchange(t, p1, []byte("one"))
	exchange(t, p2, []byte("two"))
	exchange(t, p1, bytes.Repeat([]byte{1}, 1280))
	exchange(t, p2, bytes.Repeat([]byte{2}, tunnel.MaxDatagramPayload))
	if n := a.flowCount(); n != 2 {
		t.Errorf("agent saw %d flow ids, want 2 (one per phone)", n)
	}
	// One byte over the limit is dropped and counted, the flow stays.
	p1.Write(bytes.Repeat([]byte{3}, tunnel.MaxDatagramPayload+1))
	waitFor(t, "the oversize packet counted", func() bool {
		u := agentStatus(s, "home").UDP
		return u != nil && u.Dropped["too_big"] == 1
	})
	exchange(t, p1, []byte("still there"))

	// The relay counts a packet just after sending it: the echo may be
	// back at the phone before either direction's count.
	waitFor(t, "the last packet and its echo counted", func() bool {
		u := agentStatus(s, "home").UDP
		return u.PacketsIn >= 5 && u.PacketsOut >= 5
	})
	u := agentStatus(s, "home").UDP
	if u.Flows != 2 || u.PacketsIn < 5 || u.BytesIn < 1280+tunnel.MaxDatagramPayload || len(u.Ports) != 1 || u.Ports[0] != wg {
		t.Errorf("status %+v", u)
	}
	if st := agentStatus(s, "home"); st.UDPPorts != fmt.Sprint(wg) {
		t.Errorf("udp_ports shown as %q", st.UDPPorts)
	}
	page := fmt.Sprintf("%+v", relay.StatusPage(s.Status()))
	if !strings.Contains(page, fmt.Sprintf("WireGuard :%d", wg)) || !strings.Contains(page, "2 flows now") {
		t.Errorf("status page lacks the WireGuard row: %s", page)
	}
}

// TestUDPGarbageAndFloods: a source the agent never answers is held to the
// unanswered rate; new flows per source address and flows per agent are capped;
// the agent's answers to an unknown flow are dropped.
func TestUDPGarbageAndFloods(t *testing.T) {
	tok := config.NewToken()
	wg := freeUDPPort(t)
	s := udpRelay(t, map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: 10000, Hi: 10000},
		UDPPorts: config.PortRange{Lo: wg, Hi: wg}}}, func(c *relay.Config) {
		c.UDPUnansweredPPS = 10
		c.UDPNewFlowsPerSec = 1 // burst 20
		c.MaxUDPFlows = 30
	})
	a := startWGAgent(t, s, "home", tok, false, wgService(wg))

	// Garbage from one address and port: at most burst + rate x time reach the agent.
	g := phone(t, "127.0.0.3", wg)
	start := time.Now()
	const sent = 2000
	for range sent {
		g.Write([]byte("garbage, not WireGuard"))
	}
	waitFor(t, "the garbage counted", func() bool {
		u := agentStatus(s, "home").UDP
		return u != nil && u.PacketsIn+u.Dropped["rate"] >= sent*9/10 // a few may be lost on loopback
	})
	limit := 10 + 10*time.Since(start).Seconds() + 1
	if got := agentStatus(s, "home").UDP.PacketsIn; float64(got) > limit {
		t.Errorf("%d garbage packets reached the agent, want at most %.0f", got, limit)
	}

	// New flows from one address (many source ports): the burst of 20, then 1/s.
	for range 60 {
		c := phone(t, "127.0.0.4", wg)
		c.Write([]byte("hello"))
	}
	waitFor(t, "the new flows counted", func() bool {
		u := agentStatus(s, "home").UDP
		return u.Dropped["new_flow_rate"] > 0 && u.FlowsTotal >= 21 &&
			u.PacketsIn+u.Dropped["rate"]+u.Dropped["new_flow_rate"] >= sent+54
	})
	u := agentStatus(s, "home").UDP
	if u.FlowsTotal > 21+uint64(time.Since(start).Seconds())+1 {
		t.Errorf("one address opened %d flows", u.FlowsTotal)
	}
	// Its many flows share the address's budget for unanswered packets.
	if limit := 2 * (10 + 10*time.Since(start).Seconds() + 1); float64(u.PacketsIn) > limit {
		t.Errorf("%d packets of unanswered flows from two addresses reached the agent, want at most %.0f", u.PacketsIn, limit)
	}
	// Other addresses fill the agent's table up to MaxUDPFlows.
	for i := range 20 {
		c := phone(t, fmt.Sprintf("127.0.1.%d", i+1), wg)
		c.Write([]byte("hello"))
	}
	waitFor(t, "the flow cap", func() bool {
		u := agentStatus(s, "home").UDP
		return u.Dropped["flow_limit"] > 0 && u.Flows == 30
	})
	// The agent answering a flow that doesn't exist: dropped, counted.
	a.c.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: 0}, []byte("to nobody"))
	waitFor(t, "the unknown flow counted", func() bool { return agentStatus(s, "home").UDP.Dropped["unknown_flow"] > 0 })
}

// TestUDPAgentGoneAndBack: the relay's UDP port closes when the agent goes and
// opens again with the next session; flows expire when idle.
func TestUDPAgentGoneAndBack(t *testing.T) {
	tok := config.NewToken()
	wg := freeUDPPort(t)
	s := udpRelay(t, map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: 10000, Hi: 10000},
		UDPPorts: config.PortRange{Lo: wg, Hi: wg}}}, func(c *relay.Config) { c.UDPFlowIdle = 300 * time.Millisecond })
	a := startWGAgent(t, s, "home", tok, true, wgService(wg))
	p := phone(t, "127.0.0.1", wg)
	exchange(t, p, []byte("before"))
	waitFor(t, "the idle flow to expire", func() bool { return agentStatus(s, "home").UDP.Flows == 0 })
	exchange(t, p, []byte("after expiry: a new flow"))

	start := time.Now()
	a.stop()
	waitFor(t, "the relay's UDP port to close", func() bool {
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", wg))
		if err == nil {
			pc.Close()
		}
		return err == nil
	})
	t.Logf("UDP port closed %s after the agent stopped", time.Since(start).Round(time.Millisecond))
	startWGAgent(t, s, "home", tok, true, wgService(wg))
	exchange(t, p, []byte("next session"))
}

// TestUDPTwoAgents: each agent gets its own port and flows; one agent cannot
// send to another's phones.
func TestUDPTwoAgents(t *testing.T) {
	tokA, tokB := config.NewToken(), config.NewToken()
	wgA, wgB := freeUDPPort(t), freeUDPPort(t)
	s := udpRelay(t, map[string]config.RelayAgent{
		"home":  {Token: tokA, Ports: config.PortRange{Lo: 10000, Hi: 10000}, UDPPorts: config.PortRange{Lo: wgA, Hi: wgA}},
		"cabin": {Token: tokB, Ports: config.PortRange{Lo: 10001, Hi: 10001}, UDPPorts: config.PortRange{Lo: wgB, Hi: wgB}},
	}, nil)
	a := startWGAgent(t, s, "home", tokA, true, wgService(wgA))
	b := startWGAgent(t, s, "cabin", tokB, true, wgService(wgB), wgService(wgA))
	if r := b.sess.Results; len(r) != 2 || !r[0].Accepted || r[1].Accepted {
		t.Fatalf("cabin's registration: %+v", r)
	}
	pa, pb := phone(t, "127.0.0.5", wgA), phone(t, "127.0.0.5", wgB)
	exchange(t, pa, []byte("to home"))
	exchange(t, pb, []byte("to cabin"))
	if a.flowCount() != 1 || b.flowCount() != 1 {
		t.Fatalf("flows: home %d cabin %d", a.flowCount(), b.flowCount())
	}
	// cabin sends on home's flow id: its own table doesn't have it.
	a.mu.Lock()
	var homeFlow uint32
	for f := range a.flows {
		homeFlow = f
	}
	a.mu.Unlock()
	b.mu.Lock()
	shared := b.flows[homeFlow]
	b.mu.Unlock()
	if !shared {
		b.c.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: homeFlow}, []byte("cross"))
		waitFor(t, "cabin's stray datagram counted", func() bool { return agentStatus(s, "cabin").UDP.Dropped["unknown_flow"] > 0 })
	}
	pa.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := pa.Read(make([]byte, 64)); err == nil {
		t.Fatalf("home's phone got %d bytes from cabin", n)
	}
}

// TestUDPProbeOfMappedPort: the agent asks the relay to verify its WireGuard
// port's mapping; the relay probes only the agent's address inside udp_ports.
func TestUDPProbeOfMappedPort(t *testing.T) {
	tok := config.NewToken()
	mapped, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer mapped.Close()
	go func() { // the agent's WireGuard socket, as D2's Bind answers probes
		buf := make([]byte, 2048)
		for {
			n, from, err := mapped.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r, ok := proto.UDPProbeReply(buf[:n]); ok {
				mapped.WriteToUDPAddrPort(r, from)
			}
		}
	}()
	mp := uint16(mapped.LocalAddr().(*net.UDPAddr).Port)
	s := udpRelay(t, map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: 10000, Hi: 10000},
		UDPPorts: config.PortRange{Lo: mp, Hi: mp}}}, nil)
	a := startWGAgent(t, s, "home", tok, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := a.c.ProbeUDP(ctx, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), mp), "wireguard")
	if err != nil || !r.OK {
		t.Fatalf("probe: %+v %v", r, err)
	}
	for _, tc := range []struct{ addr, want string }{
		{fmt.Sprintf("192.0.2.1:%d", mp), "not the agent's address"},
		{"127.0.0.1:10000", "outside this agent's udp_ports"},
	} {
		r, err := a.c.ProbeUDP(ctx, netip.MustParseAddrPort(tc.addr), "wireguard")
		if err != nil || r.OK || !strings.Contains(r.Reason, tc.want) {
			t.Errorf("probe %s: %+v %v, want a refusal containing %q", tc.addr, r, err, tc.want)
		}
	}
}

// BenchmarkUDPRoundTrip: one 1280-byte packet from a phone through the relay to
// an echoing agent (QUIC on loopback) and back, one at a time.
func BenchmarkUDPRoundTrip(b *testing.B) {
	tok := config.NewToken()
	wg := freeUDPPort(b)
	s := udpRelay(b, map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: 10000, Hi: 10000},
		UDPPorts: config.PortRange{Lo: wg, Hi: wg}}}, nil)
	startWGAgent(b, s, "home", tok, true, wgService(wg))
	ph := phone(b, "127.0.0.1", wg)
	pkt, buf := bytes.Repeat([]byte{7}, 1280), make([]byte, 2048)
	lost := 0
	b.SetBytes(2 * 1280)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ph.Write(pkt)
		ph.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := ph.Read(buf); err != nil {
			lost++
		}
	}
	b.ReportMetric(float64(lost), "lost")
}

// TestUDPOverTCPFallback: WireGuard packets cross an agent's TLS-over-TCP
// tunnel (datagrams as frames) with the same size limit.
func TestUDPOverTCPFallback(t *testing.T) {
	tok := config.NewToken()
	wg := freeUDPPort(t)
	s := udpRelay(t, map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: 10000, Hi: 10000},
		UDPPorts: config.PortRange{Lo: wg, Hi: wg}}}, nil)
	a := startWGAgentOver(t, s, tunnel.TransportTCP, "home", tok, true, wgService(wg))
	if a.sess.Transport != tunnel.TransportTCP {
		t.Fatalf("transport %s", a.sess.Transport)
	}
	p := phone(t, "127.0.0.1", wg)
	exchange(t, p, bytes.Repeat([]byte{9}, tunnel.MaxDatagramPayload))
	p.Write(bytes.Repeat([]byte{9}, tunnel.MaxDatagramPayload+1))
	waitFor(t, "the oversize packet counted", func() bool { return agentStatus(s, "home").UDP.Dropped["too_big"] == 1 })
}

// TestUDPAllowRule: a UDP service's allow rule holds at the relay: packets
// from other addresses never reach the agent.
func TestUDPAllowRule(t *testing.T) {
	tok := config.NewToken()
	wg := freeUDPPort(t)
	s := udpRelay(t, map[string]config.RelayAgent{"home": {Token: tok, Ports: config.PortRange{Lo: 10000, Hi: 10000},
		UDPPorts: config.PortRange{Lo: wg, Hi: wg}}}, nil)
	a := startWGAgent(t, s, "home", tok, true, tunnel.Service{Name: "wireguard", Port: wg, Proto: "udp", Allow: []string{"127.0.0.6/32"}})
	exchange(t, phone(t, "127.0.0.6", wg), []byte("allowed"))
	phone(t, "127.0.0.7", wg).Write([]byte("not allowed"))
	waitFor(t, "the stranger's packet dropped", func() bool { return agentStatus(s, "home").UDP.Dropped["not_allowed"] == 1 })
	if n := a.flowCount(); n != 1 {
		t.Errorf("the agent saw %d flows, want only the allowed phone's", n)
	}
}
