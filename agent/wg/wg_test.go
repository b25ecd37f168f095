package wg

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/test/framework"
)

// failBound bounds what must succeed; the negative checks (gets nothing)
// wait shorter: a handshake that would succeed takes milliseconds here.
const (
	failBound    = 30 * time.Second
	nothingBound = 3 * time.Second
)

var (
	aliceIP = netip.MustParseAddr("10.77.0.2")
	bobIP   = netip.MustParseAddr("10.77.0.3")
)

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestPaths: a phone reaches every kind of service over the direct leg and
// over the relay leg, known as its viewer, and status shows the path.
func TestPaths(t *testing.T) {
	alice := mustKey(t)
	r := newAgentRig(t, []Peer{{Name: "alice-phone", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"}})
	for _, tc := range r.legs() {
		t.Run(tc.path, func(t *testing.T) {
			p := newPhone(t, alice, aliceIP, r.priv, tc.ep())
			ctx := ctxFor(t, failBound)
			body, err := p.get(ctx, "/")
			if err != nil || body != "camera page" {
				t.Fatalf("GET / through the tunnel: %q, %v", body, err)
			}
			if err := p.echo(ctx, netip.AddrPortFrom(tunnelNet.Addr(), portEcho), "hello tcp"); err != nil {
				t.Fatalf("tcp service: %v", err)
			}
			if err := p.echo(ctx, camLAN, "hello camera"); err != nil {
				t.Fatalf("camera's LAN address inside the tunnel: %v", err)
			}
			who, err := p.who(ctx)
			if want := "viewer=alice addr=" + aliceIP.String() + ":"; err != nil || !strings.HasPrefix(who, want) {
				t.Fatalf("who: %q, %v; want %q...", who, err, want)
			}
			ps := peerStats(r.dev, alice)
			if ps.Path != tc.path || ps.LastHandshake.IsZero() || ps.RxBytes == 0 || ps.TxBytes == 0 || ps.Viewer != "alice" || ps.Name != "alice-phone" {
				t.Fatalf("peer status: %+v; want path %s, a handshake and bytes", ps, tc.path)
			}
			p.dev.Close()
		})
	}
	st := r.dev.Stats()
	if st.DirectReceived == 0 || st.RelayReceived == 0 || st.RelaySent == 0 || st.DirectSent == 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestOnlyConfiguredLAN: at the camera's LAN address only its port answers,
// other LAN addresses are not routed, and the LAN address is only for the
// service's viewers.
func TestOnlyConfiguredLAN(t *testing.T) {
	alice, bob := mustKey(t), mustKey(t)
	r := newAgentRig(t, []Peer{
		{Name: "a", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"},
		{Name: "b", PublicKey: bob.PublicKey(), AllowedIP: bobIP, Viewer: "bob"},
	})
	pa := newPhone(t, alice, aliceIP, r.priv, r.direct())
	ctx := ctxFor(t, failBound)
	if err := pa.echo(ctx, camLAN, "x"); err != nil {
		t.Fatalf("camera port: %v", err)
	}
	// Another port of the camera's address: refused by the agent's stack.
	c, err := pa.tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(camLAN.Addr(), 80))
	if err == nil {
		c.Close()
		t.Fatal("camera's port 80 answered inside the tunnel; only the target's port may")
	}
	// Bob's phone (not among the echo service's viewers) reaches the tunnel
	// address but the LAN address refuses him.
	pb := newPhone(t, bob, bobIP, r.priv, r.direct())
	if err := pb.echo(ctx, netip.AddrPortFrom(tunnelNet.Addr(), portEcho), "y"); err != nil {
		t.Fatalf("bob at the tunnel address: %v", err)
	}
	before := r.dev.Stats().Refused
	if err := pb.echo(ctxFor(t, nothingBound), camLAN, "z"); err == nil {
		t.Fatal("bob reached the camera's LAN address; he is not among its viewers")
	}
	if got := r.dev.Stats().Refused; got <= before {
		t.Fatalf("refused count %d, want > %d", got, before)
	}
}

// TestRevokeAndWrongKey: a revoked phone loses its connections at once and
// gets nothing after; a phone with an unknown key gets nothing; the other
// phone is unaffected.
func TestRevokeAndWrongKey(t *testing.T) {
	alice, bob, stranger := mustKey(t), mustKey(t), mustKey(t)
	peerA := Peer{Name: "a", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"}
	peerB := Peer{Name: "b", PublicKey: bob.PublicKey(), AllowedIP: bobIP, Viewer: "bob"}
	r := newAgentRig(t, []Peer{peerA, peerB})
	pa := newPhone(t, alice, aliceIP, r.priv, r.direct())
	pb := newPhone(t, bob, bobIP, r.priv, r.relay.addr())
	ctx := ctxFor(t, failBound)
	open, err := pa.dial(ctx, portEcho)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := open.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := open.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.SetPeers([]Peer{peerB}); err != nil {
		t.Fatal(err)
	}
	// The open connection ends (the agent closed it; the FIN may not get
	// through, so a read deadline stands for it).
	open.SetReadDeadline(time.Now().Add(nothingBound))
	if n, err := open.Read(make([]byte, 1)); err == nil {
		t.Fatalf("revoked phone's open connection still reads (%d bytes)", n)
	}
	if _, err := pa.get(ctxFor(t, nothingBound), "/"); err == nil {
		t.Fatal("revoked phone still fetches")
	}
	ps := newPhone(t, stranger, netip.MustParseAddr("10.77.0.9"), r.priv, r.direct())
	if _, err := ps.get(ctxFor(t, nothingBound), "/"); err == nil {
		t.Fatal("unknown key fetches")
	}
	if body, err := pb.get(ctx, "/"); err != nil || body != "camera page" {
		t.Fatalf("other phone: %q, %v", body, err)
	}
	for _, p := range r.dev.Stats().Peers {
		if p.Name != "b" {
			t.Fatalf("status lists peer %q after revocation", p.Name)
		}
	}
	// A re-invited key works again.
	if err := r.dev.SetPeers([]Peer{peerA, peerB}); err != nil {
		t.Fatal(err)
	}
	if body, err := pa.get(ctx, "/"); err != nil || body != "camera page" {
		t.Fatalf("re-added phone: %q, %v", body, err)
	}
}

// TestSetPeersErrors: bad peer lists are refused whole, naming the peer.
func TestSetPeersErrors(t *testing.T) {
	r := newAgentRig(t, nil)
	k := mustKey(t).PublicKey()
	for _, tc := range []struct {
		peers []Peer
		want  string
	}{
		{[]Peer{{Name: "x", AllowedIP: aliceIP}}, "no public key"},
		{[]Peer{{Name: "x", PublicKey: k, AllowedIP: netip.MustParseAddr("10.78.0.2")}}, "not a free address"},
		{[]Peer{{Name: "x", PublicKey: k, AllowedIP: tunnelNet.Addr()}}, "not a free address"},
		{[]Peer{{Name: "x", PublicKey: k, AllowedIP: aliceIP}, {Name: "y", PublicKey: k, AllowedIP: bobIP}}, "listed twice"},
		{[]Peer{{Name: "x", PublicKey: k, AllowedIP: aliceIP}, {Name: "y", PublicKey: mustKey(t), AllowedIP: aliceIP}}, "same address"},
	} {
		if err := r.dev.SetPeers(tc.peers); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetPeers(%+v) = %v, want %q", tc.peers, err, tc.want)
		}
	}
}

// TestGarbageReplayOversize: packets that are not WireGuard, replayed
// packets and oversized ones are dropped and counted, logged once, and the
// phone's session goes on.
func TestGarbageReplayOversize(t *testing.T) {
	alice := mustKey(t)
	r := newAgentRig(t, []Peer{{Name: "a", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"}})
	p := newPhone(t, alice, aliceIP, r.priv, r.relay.addr())
	ctx := ctxFor(t, failBound)
	if _, err := p.get(ctx, "/"); err != nil {
		t.Fatal(err)
	}
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.direct()))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	junk := make([]byte, 200)
	for i := range 50 {
		rand.Read(junk)
		junk[0] = byte(5 + i%200) // no WireGuard type
		u.Write(junk[:1+i])
		r.dev.DeliverRelay(99, junk[:1+i])
	}
	big := make([]byte, 3000)
	binary.LittleEndian.PutUint32(big, 4) // a transport message, too big for the relay
	r.dev.DeliverRelay(99, big)
	u.Write(big) // the UDP leg: wireguard-go finds no session for it
	// Replays: every datagram the phone sent, again, on both legs.
	for _, pkt := range r.relay.recorded() {
		r.dev.DeliverRelay(1234, pkt)
		u.Write(pkt)
	}
	framework.Eventually(t, failBound, func() bool { return r.dev.Stats().Garbage >= 100 }, "garbage counted: %+v", r.dev.Stats())
	st := r.dev.Stats()
	if st.Oversize != 1 {
		t.Fatalf("oversize %d, want 1", st.Oversize)
	}
	if body, err := p.get(ctx, "/"); err != nil || body != "camera page" {
		t.Fatalf("after garbage: %q, %v", body, err)
	}
	if ps := peerStats(r.dev, alice); ps.Path != pathRelay {
		t.Fatalf("replayed packets moved the peer's path: %+v", ps)
	}
	if n := strings.Count(r.log.String(), "not WireGuard"); n != 1 {
		t.Fatalf("garbage logged %d times, want once:\n%s", n, r.log)
	}
}

// TestRelayDropsAndReturns: the relay leg goes away mid-session (and comes
// back with new flow numbers, as after a new tunnel session); an open TCP
// connection inside the tunnel survives, and the phone moving to the direct
// path meanwhile takes its replies with it.
func TestRelayDropsAndReturns(t *testing.T) {
	alice := mustKey(t)
	r := newAgentRig(t, []Peer{{Name: "a", PublicKey: alice.PublicKey(), AllowedIP: aliceIP, Viewer: "alice"}})
	p := newPhone(t, alice, aliceIP, r.priv, r.relay.addr())
	ctx := ctxFor(t, failBound)
	c, err := p.dial(ctx, portEcho)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(failBound))
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
			t.Fatalf("echo %q: %q, %v", msg, b, err)
		}
	}
	roundTrip("before")
	r.relay.down.Store(true)
	if _, err := c.Write([]byte("during")); err != nil { // lost for now; TCP retransmits
		t.Fatal(err)
	}
	framework.Eventually(t, failBound, func() bool { return r.relay.dropped.Load() > 0 }, "the relay dropped nothing while down")
	r.relay.renumber()
	r.relay.down.Store(false)
	b := make([]byte, len("during"))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "during" {
		t.Fatalf("after the relay returned: %q, %v", b, err)
	}
	roundTrip("after")
	if ps := peerStats(r.dev, alice); ps.Path != pathRelay || !strings.HasPrefix(ps.Endpoint, relayPrefix) {
		t.Fatalf("peer: %+v", ps)
	}
	// DNS moves home: the phone's packets now come direct, and so do replies.
	p.setEndpoint(t, r.priv, r.direct())
	roundTrip("direct now")
	if ps := peerStats(r.dev, alice); ps.Path != pathDirect {
		t.Fatalf("peer after moving: %+v", ps)
	}
}

// TestUDPProbe: the relay's probe of the direct path is answered on the UDP
// leg and never reaches WireGuard.
func TestUDPProbe(t *testing.T) {
	r := newAgentRig(t, nil)
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.direct()))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	nonce := make([]byte, proto.ProbeNonceLen)
	rand.Read(nonce)
	b := make([]byte, 256)
	framework.Eventually(t, failBound, func() bool {
		u.Write(proto.UDPProbe(nonce))
		u.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := u.Read(b)
		return err == nil && proto.IsUDPProbeReply(b[:n], nonce)
	}, "no probe reply")
	if st := r.dev.Stats(); st.Probes == 0 || st.Garbage != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestKeys: keys parse and print as WireGuard's tools do.
func TestKeys(t *testing.T) {
	// wg genkey | tee /dev/stderr | wg pubkey
	priv, err := ParseKey("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=")
	if err != nil {
		t.Fatal(err)
	}
	if got := priv.PublicKey().String(); got != "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=" {
		t.Fatalf("public key %s", got)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 43) + "="[:0] + "!"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}
