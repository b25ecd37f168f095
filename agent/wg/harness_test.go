package wg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/porthole-dev/porthole/agent/wg/invite"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/test/framework"
)

// Addresses of the tests' tunnel. camLAN is a made-up camera address: it
// exists only inside the agent's userspace stack, no packet to it leaves the
// process.
var (
	tunnelNet = netip.MustParsePrefix("10.77.0.1/24")
	camLAN    = netip.MustParseAddrPort("192.0.2.20:554")
)

// Public ports of the tests' services.
const (
	portWeb  = 10443 // http backend, tcp kind
	portEcho = 10022 // echo backend; also at camLAN
	portWho  = 10080 // answers the viewer the gateway saw
	portSink = 10099 // reads to the viewer's FIN, answers "<bytes> <sha256>" (framework.ReadAll)
)

func mustKey(t testing.TB) Key {
	t.Helper()
	k, err := NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// agentRig is an agent device with three services and a fake relay.
type agentRig struct {
	dev   *Device
	priv  Key
	relay *fakeRelay
	web   *httptest.Server
	log   *framework.LogBuffer
}

// whoHandler answers "viewer=<v.Authenticated> addr=<v.Addr>\n".
type whoHandler struct{}

func (whoHandler) Serve(ctx context.Context, v *gateway.Viewer) error {
	_, err := fmt.Fprintf(v.Conn, "viewer=%s addr=%s\n", v.Authenticated, v.Addr)
	return err
}

func gatewayServe(t testing.TB, name string, h gateway.Handler, target string) ServeFunc {
	t.Helper()
	pol, err := gateway.NewPolicy(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	l, err := gateway.New(gateway.Config{Service: name, Policy: pol, Handler: h,
		Dial: func(ctx context.Context, _ netip.AddrPort) (gateway.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				return nil, err
			}
			return c.(*net.TCPConn), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, c net.Conn, viewer netip.AddrPort) { l.ServeConn(ctx, c, viewer) }
}

func newAgentRig(t testing.TB, peers []Peer) *agentRig {
	t.Helper()
	r := &agentRig{priv: mustKey(t)}
	r.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/big" {
			w.Write(make([]byte, 1<<20))
			return
		}
		io.WriteString(w, "camera page")
	}))
	t.Cleanup(r.web.Close)
	echo := framework.StartBackend(t, framework.Echo)
	sink := framework.StartBackend(t, framework.ReadAll)
	r.relay = newFakeRelay(t)
	var log *slog.Logger
	log, r.log = testLogger(t)
	cfg := Config{
		PrivateKey: r.priv, Address: tunnelNet, Peers: peers, Relay: r.relay,
		Services: []Service{
			{Name: "web", Port: portWeb, Serve: gatewayServe(t, "web", gateway.TCP{}, r.web.Listener.Addr().String())},
			{Name: "echo", Port: portEcho, Serve: gatewayServe(t, "echo", gateway.TCP{}, echo.Addr()),
				LAN: camLAN, ServeLAN: gatewayServe(t, "echo-lan", gateway.TCP{}, echo.Addr()), Viewers: []string{"alice"}},
			{Name: "who", Port: portWho, Serve: gatewayServe(t, "who", whoHandler{}, echo.Addr())},
			{Name: "sink", Port: portSink, Serve: gatewayServe(t, "sink", gateway.TCP{}, sink.Addr())},
		},
		Logger: log,
	}
	dev, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.dev = dev
	r.relay.dev.Store(dev)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dev.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// leg is one of the agent's two ways in: the path's name and where a phone
// sends.
type leg struct {
	path string
	ep   func() netip.AddrPort
}

// legs are the direct leg and the relay leg, for tests run on each.
func (r *agentRig) legs() []leg { return []leg{{pathDirect, r.direct}, {pathRelay, r.relay.addr}} }

// direct is the agent's UDP leg.
func (r *agentRig) direct() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), r.dev.Port())
}

// phone is a WireGuard peer as a phone's app is: wireguard-go with its own
// userspace stack, talking UDP to endpoint.
type phone struct {
	dev  *device.Device
	tnet *Netstack
	key  Key
	ip   netip.Addr
}

func newPhone(t testing.TB, key Key, ip netip.Addr, agent Key, endpoint netip.AddrPort) *phone {
	t.Helper()
	tnet, err := NewNetstack([]netip.Addr{ip}, MTU)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tnet, conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=%s\n", key.hex(), agent.PublicKey().hex(), endpoint, tunnelNet.Masked())
	for _, p := range invite.AllowedIPs(tunnelNet, []netip.Addr{camLAN.Addr()})[1:] {
		uapi += "allowed_ip=" + p.String() + "\n"
	}
	if err := dev.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	return &phone{dev: dev, tnet: tnet, key: key, ip: ip}
}

// setEndpoint points the phone at another address (DNS moved).
func (p *phone) setEndpoint(t testing.TB, agent Key, ep netip.AddrPort) {
	t.Helper()
	if err := p.dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=%s\n", agent.PublicKey().hex(), ep)); err != nil {
		t.Fatal(err)
	}
}

func (p *phone) dial(ctx context.Context, port uint16) (net.Conn, error) {
	return p.tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(tunnelNet.Addr(), port))
}

// get fetches path of the web service through the tunnel.
func (p *phone) get(ctx context.Context, path string) (string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return p.dial(ctx, portWeb) }}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d%s", tunnelNet.Addr(), portWeb, path), nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// who asks the who service which viewer the gateway saw.
func (p *phone) who(ctx context.Context) (string, error) {
	c, err := p.dial(ctx, portWho)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// echo sends msg to a echo service at addr and reads it back.
func (p *phone) echo(ctx context.Context, addr netip.AddrPort, msg string) error {
	c, err := p.tnet.DialContextTCPAddrPort(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("echo: got %q, want %q", b, msg)
	}
	return nil
}

// fakeRelay is the relay's UDP forwarder on loopback: each phone address
// becomes a flow, its packets go to Device.DeliverRelay, and SendDatagram
// sends back to the flow's address. down drops both ways (the tunnel is
// gone); renumber gives the phones new flow numbers (a new session).
type fakeRelay struct {
	pc   *net.UDPConn
	dev  atomic.Pointer[Device]
	down atomic.Bool
	// dropped counts packets from phones dropped while down.
	dropped atomic.Int64

	mu     sync.Mutex // guards the fields below
	flows  map[netip.AddrPort]uint32
	addrs  map[uint32]netip.AddrPort
	next   uint32
	record [][]byte // datagrams from phones, for replays
}

func newFakeRelay(t testing.TB) *fakeRelay {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadBuffer(4 << 20) // as a relay's UDP port has (bench udp-buffers): bulk tests drop nothing here
	r := &fakeRelay{pc: pc, flows: map[netip.AddrPort]uint32{}, addrs: map[uint32]netip.AddrPort{}, next: 7}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			dev := r.dev.Load()
			if r.down.Load() || dev == nil {
				r.dropped.Add(1)
				continue
			}
			r.mu.Lock()
			f, ok := r.flows[from]
			if !ok {
				f = r.next
				r.next++
				r.flows[from], r.addrs[f] = f, from
			}
			if len(r.record) < 1000 {
				r.record = append(r.record, append([]byte(nil), buf[:n]...))
			}
			r.mu.Unlock()
			dev.DeliverRelay(f, buf[:n])
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return r
}

func (r *fakeRelay) addr() netip.AddrPort {
	return r.pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (r *fakeRelay) SendDatagram(flow uint32, pkt []byte) error {
	if r.down.Load() {
		return errors.New("fake relay: no session")
	}
	r.mu.Lock()
	to, ok := r.addrs[flow]
	r.mu.Unlock()
	if !ok {
		return errors.New("fake relay: unknown flow")
	}
	_, err := r.pc.WriteToUDPAddrPort(pkt, to)
	return err
}

func (r *fakeRelay) renumber() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next += 100
	r.flows, r.addrs = map[netip.AddrPort]uint32{}, map[uint32]netip.AddrPort{}
}

func (r *fakeRelay) recorded() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.record...)
}

func testLogger(t testing.TB) (*slog.Logger, *framework.LogBuffer) {
	lb := &framework.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", lb)
		}
	})
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

func peerStats(d *Device, key Key) PeerStatus {
	for _, p := range d.Stats().Peers {
		if p.PublicKey == key.PublicKey().String() {
			return p
		}
	}
	return PeerStatus{}
}
