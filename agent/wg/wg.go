package wg

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// MTU is the MTU inside the tunnel: what phones are told to use, and what fits
// a relay datagram with its headers.
const MTU = 1280

// Relay is the relay leg: the agent's tunnel to the relay. The agent feeds what
// the relay sends with Device.DeliverRelay.
type Relay interface {
	// SendDatagram sends one WireGuard packet to the phone's flow at the
	// relay. It must not block (drop instead, as UDP would).
	SendDatagram(flow uint32, pkt []byte) error
}

// Peer is a phone allowed in: its public key, its one address inside the
// tunnel, and the Porthole viewer it belongs to.
type Peer struct {
	// Name names the peer (the invite) in status and logs.
	Name      string
	PublicKey Key
	// AllowedIP is the peer's address inside the tunnel; packets from it
	// with any other source are dropped, so the address names the peer.
	AllowedIP netip.Addr
	// Viewer is the Porthole viewer this peer's connections belong to.
	Viewer string
}

// ServeFunc serves one connection inside the tunnel: c knows its viewer (it is
// a gateway.Authenticator), viewer is the peer's tunnel address and port.
type ServeFunc func(ctx context.Context, c net.Conn, viewer netip.AddrPort)

// Service is one of the agent's services as the tunnel serves it.
type Service struct {
	// Name names the service in logs.
	Name string
	// Port is the service's public port: it answers at Config.Address's
	// address and this port. Required.
	Port uint16
	// Serve serves the connections at Address:Port (the service's gateway
	// pipeline, plain). Required.
	Serve ServeFunc
	// LAN is the camera's LAN address and port (the target); with ServeLAN it
	// answers inside the tunnel too. Zero: not reachable.
	LAN netip.AddrPort
	// ServeLAN serves connections to LAN (bytes as they are, to the camera).
	// Nil: LAN is not reachable inside the tunnel.
	ServeLAN ServeFunc
	// Viewers may reach LAN; nil = every viewer. (At Address:Port the
	// service's own handler applies its viewers list.)
	Viewers []string
}

// Config configures a Device.
type Config struct {
	// PrivateKey is the agent's key. Required; secret.
	PrivateKey Key
	// ListenPort is the UDP port of the direct leg on every address; zero
	// picks a free one (tests: see Device.Port).
	ListenPort uint16
	// Address is the agent inside the tunnel, with the tunnel's subnet
	// (10.77.0.1/24). Required.
	Address netip.Prefix
	// Peers are the phones allowed in; SetPeers replaces them live.
	Peers []Peer
	// Relay is the relay leg; nil = direct only (DeliverRelay drops).
	Relay Relay
	// Services answer inside the tunnel.
	Services []Service
	// Logger; nil discards.
	Logger *slog.Logger
}

// Device is the agent's WireGuard endpoint.
type Device struct {
	cfg  Config
	log  *slog.Logger
	dev  *device.Device
	tnet *Netstack
	bind *bind
	port uint16
	lns  []*listener

	ctr counters

	garbageLog logOnce
	hsLimit    *handshakeLimiter
	floodLog   logOnce

	closeOnce sync.Once
	ctx       context.Context // ends at Close: the connections' context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // accept loops and connections

	mu    sync.Mutex           // guards the fields below
	peers map[Key]Peer         // by key
	byIP  map[netip.Addr]Peer  // by tunnel address
	conns map[*peerConn]string // open connections inside the tunnel -> peer's viewer
}

// counters are the device's own counts; wireguard-go counts bytes per peer.
type counters struct {
	directReceived, directSent atomic.Uint64
	relayReceived, relaySent   atomic.Uint64
	relayDropped               atomic.Uint64 // the relay queue was full
	relaySendErrors            atomic.Uint64
	garbage                    atomic.Uint64 // not a WireGuard message
	oversize                   atomic.Uint64 // relay packets over maxRelayPacket
	handshakesDropped          atomic.Uint64 // over a source's handshake rate while under load
	probes                     atomic.Uint64 // relay probes answered
	refused                    atomic.Uint64 // connections inside from no known peer, or not allowed
}

// New starts a device on cfg: the UDP port is bound and the services listen
// inside the tunnel when it returns; Run serves them.
func New(cfg Config) (*Device, error) {
	switch {
	case cfg.PrivateKey.IsZero():
		return nil, errors.New("wg: PrivateKey is required")
	case !cfg.Address.IsValid():
		return nil, errors.New("wg: Address is required (the agent's address and subnet inside the tunnel, e.g. 10.77.0.1/24)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{cfg: cfg, log: log, hsLimit: newHandshakeLimiter(), peers: map[Key]Peer{}, byIP: map[netip.Addr]Peer{}, conns: map[*peerConn]string{}}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	locals := []netip.Addr{cfg.Address.Addr()}
	for _, s := range cfg.Services {
		if s.ServeLAN != nil && s.LAN.IsValid() && !contains(locals, s.LAN.Addr().Unmap()) {
			locals = append(locals, s.LAN.Addr().Unmap())
		}
	}
	tnet, err := NewNetstack(locals, MTU)
	if err != nil {
		return nil, fmt.Errorf("wg: netstack: %w", err)
	}
	d.tnet = tnet
	d.bind = newBind(d)
	d.dev = device.NewDevice(tnet, d.bind, wgLogger(log))
	fail := func(err error) (*Device, error) {
		d.Close()
		return nil, err
	}
	uapi := "private_key=" + cfg.PrivateKey.hex() + "\nlisten_port=" + strconv.Itoa(int(cfg.ListenPort)) + "\n"
	if err := d.dev.IpcSet(uapi); err != nil {
		return fail(fmt.Errorf("wg: configure: %w", err))
	}
	if err := d.SetPeers(cfg.Peers); err != nil {
		return fail(err)
	}
	if err := d.dev.Up(); err != nil {
		return fail(fmt.Errorf("wg: UDP port %d: %w (is another WireGuard using it?)", cfg.ListenPort, err))
	}
	if d.port, err = d.listenPort(); err != nil {
		return fail(err)
	}
	if err := d.listen(); err != nil {
		return fail(err)
	}
	return d, nil
}

func contains(as []netip.Addr, a netip.Addr) bool {
	for _, b := range as {
		if a == b {
			return true
		}
	}
	return false
}

// Port is the bound UDP port of the direct leg.
func (d *Device) Port() uint16 { return d.port }

// Run serves the services inside the tunnel until ctx ends, then closes the
// device.
func (d *Device) Run(ctx context.Context) error {
	for _, l := range d.lns {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			l.acceptLoop(d.ctx)
		}()
	}
	select {
	case <-ctx.Done():
	case <-d.ctx.Done():
	}
	return d.Close()
}

// Close stops the device: the port is closed, connections inside the tunnel
// end. It waits for the goroutines of Run.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.cancel()
		for _, l := range d.lns {
			l.ln.Close()
		}
		d.mu.Lock()
		for c := range d.conns {
			c.Close()
		}
		d.mu.Unlock()
		d.dev.Close()
	})
	d.wg.Wait()
	return nil
}

// DeliverRelay hands the device one WireGuard packet the relay received from
// the phone's flow. It copies pkt and never blocks: with the queue full the
// packet is dropped and counted.
func (d *Device) DeliverRelay(flow uint32, pkt []byte) {
	if len(pkt) > maxRelayPacket {
		d.ctr.oversize.Add(1)
		d.garbageLog.log(d.log, "oversized packet from the relay dropped", "len", len(pkt), "max", maxRelayPacket)
		return
	}
	if !d.wellFormed(pkt, pathRelay) || !d.admitHandshake(pkt, relayEndpoint(flow).DstIP(), pathRelay) {
		return
	}
	if !d.bind.deliver(flow, pkt) {
		d.ctr.relayDropped.Add(1)
		return
	}
	d.ctr.relayReceived.Add(1)
}

// Paths a peer's packets take.
const (
	pathDirect = "direct"
	pathRelay  = "relay"
)

// wellFormed reports whether pkt can be a WireGuard message (type and
// length); others are counted and logged at most once a minute.
func (d *Device) wellFormed(pkt []byte, path string) bool {
	ok := false
	if len(pkt) >= 4 && pkt[1]|pkt[2]|pkt[3] == 0 {
		switch binary.LittleEndian.Uint32(pkt) {
		case device.MessageInitiationType:
			ok = len(pkt) == device.MessageInitiationSize
		case device.MessageResponseType:
			ok = len(pkt) == device.MessageResponseSize
		case device.MessageCookieReplyType:
			ok = len(pkt) == device.MessageCookieReplySize
		case device.MessageTransportType:
			ok = len(pkt) >= device.MessageTransportSize
		}
	}
	if !ok {
		d.ctr.garbage.Add(1)
		d.garbageLog.log(d.log, "packets that are not WireGuard dropped at the WireGuard port (a scanner, or something else sending to it)",
			"path", path, "len", len(pkt))
	}
	return ok
}

// admitHandshake applies the per-source handshake rate while wireguard-go is
// under load (see handshakeLimiter); pkt is well formed.
func (d *Device) admitHandshake(pkt []byte, src netip.Addr, path string) bool {
	if t := pkt[0]; t != device.MessageInitiationType && t != device.MessageResponseType || !d.dev.IsUnderLoad() {
		return true
	}
	if d.hsLimit.allow(src, time.Now()) {
		return true
	}
	d.ctr.handshakesDropped.Add(1)
	d.floodLog.log(d.log, "handshake flood: the WireGuard port is under load and one source sends more handshakes than a phone would; its excess is dropped, phones still get in (wireguard-go answers the rest with cookie replies)",
		"path", path, "source", src, "dropped_total", d.ctr.handshakesDropped.Load())
	return false
}

// SetPeers replaces the peers. Removed peers are forgotten at once (their
// sessions end: their packets no longer decrypt, their handshakes fail) and
// their connections inside the tunnel are closed, as are those of a peer
// whose viewer changed.
func (d *Device) SetPeers(peers []Peer) error {
	next := make(map[Key]Peer, len(peers))
	nextIP := make(map[netip.Addr]Peer, len(peers))
	for i, p := range peers {
		switch {
		case p.PublicKey.IsZero():
			return fmt.Errorf("wg: peer %d (%s): no public key", i, p.Name)
		case !p.AllowedIP.IsValid() || !d.cfg.Address.Contains(p.AllowedIP) || p.AllowedIP == d.cfg.Address.Addr():
			return fmt.Errorf("wg: peer %s: address %s is not a free address in the tunnel's subnet %s", p.Name, p.AllowedIP, d.cfg.Address.Masked())
		}
		if _, dup := next[p.PublicKey]; dup {
			return fmt.Errorf("wg: peer %s: public key listed twice", p.Name)
		}
		if q, dup := nextIP[p.AllowedIP]; dup {
			return fmt.Errorf("wg: peers %s and %s have the same address %s", q.Name, p.Name, p.AllowedIP)
		}
		next[p.PublicKey], nextIP[p.AllowedIP] = p, p
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var b strings.Builder
	for k := range d.peers {
		if _, ok := next[k]; !ok {
			b.WriteString("public_key=" + k.hex() + "\nremove=true\n")
		}
	}
	for k, p := range next {
		if old, ok := d.peers[k]; ok && old.AllowedIP == p.AllowedIP {
			continue
		}
		b.WriteString("public_key=" + k.hex() + "\nreplace_allowed_ips=true\nallowed_ip=" + netip.PrefixFrom(p.AllowedIP, p.AllowedIP.BitLen()).String() + "\n")
	}
	if b.Len() > 0 {
		if err := d.dev.IpcSet(b.String()); err != nil {
			return fmt.Errorf("wg: set peers: %w", err)
		}
	}
	d.peers, d.byIP = next, nextIP
	for c, viewer := range d.conns {
		if p, ok := d.byIP[c.peer]; !ok || p.Viewer != viewer {
			c.Close()
		}
	}
	return nil
}

// PeerStatus is one peer as status shows it.
type PeerStatus struct {
	Name      string `json:"name"`
	Viewer    string `json:"viewer"`
	PublicKey string `json:"public_key"`
	Address   string `json:"address"`
	// LastHandshake is zero before the first.
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	// RxBytes came from the phone, TxBytes went to it (WireGuard packets).
	RxBytes uint64 `json:"rx_bytes"`
	TxBytes uint64 `json:"tx_bytes"`
	// Path is the way the peer's last packet came, and replies go: "direct"
	// or "relay"; "" before any.
	Path string `json:"path,omitempty"`
	// Endpoint is the phone's address on the direct path, or the relay's
	// flow number.
	Endpoint string `json:"endpoint,omitempty"`
}

// Stats are the device's counters.
type Stats struct {
	Port uint16 `json:"port"`
	// Packets through each leg, both ways.
	DirectReceived uint64 `json:"direct_received"`
	DirectSent     uint64 `json:"direct_sent"`
	RelayReceived  uint64 `json:"relay_received"`
	RelaySent      uint64 `json:"relay_sent"`
	// RelayDropped: the queue from the relay was full; RelaySendErrors:
	// the tunnel refused a packet (no session, too large).
	RelayDropped    uint64 `json:"relay_dropped"`
	RelaySendErrors uint64 `json:"relay_send_errors"`
	// Garbage are packets that cannot be WireGuard (wrong type or size);
	// Oversize, relay packets over the largest a phone sends.
	Garbage  uint64 `json:"garbage"`
	Oversize uint64 `json:"oversize"`
	// HandshakesDropped are handshake messages over a source's rate while
	// the device was under load (a flood).
	HandshakesDropped uint64 `json:"handshakes_dropped"`
	// Probes are the relay's direct-path probes answered.
	Probes uint64 `json:"probes"`
	// Refused are connections inside the tunnel refused (peer gone, or not
	// among the viewers of a LAN address).
	Refused uint64 `json:"refused"`
	// Stack are the userspace stack's TCP counters.
	Stack StackStats   `json:"stack"`
	Peers []PeerStatus `json:"peers"`
}

// Stats returns the counters and each peer's state, in the order of the peers.
func (d *Device) Stats() Stats {
	s := Stats{Port: d.port, DirectReceived: d.ctr.directReceived.Load(), DirectSent: d.ctr.directSent.Load(),
		RelayReceived: d.ctr.relayReceived.Load(), RelaySent: d.ctr.relaySent.Load(),
		RelayDropped: d.ctr.relayDropped.Load(), RelaySendErrors: d.ctr.relaySendErrors.Load(),
		Garbage: d.ctr.garbage.Load(), Oversize: d.ctr.oversize.Load(), HandshakesDropped: d.ctr.handshakesDropped.Load(), Probes: d.ctr.probes.Load(), Refused: d.ctr.refused.Load(),
		Stack: d.tnet.Stats()}
	live := d.ipcPeers()
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, p := range d.peers {
		ps := live[k]
		ps.Name, ps.Viewer, ps.PublicKey, ps.Address = p.Name, p.Viewer, k.String(), p.AllowedIP.String()
		s.Peers = append(s.Peers, ps)
	}
	sortPeers(s.Peers)
	return s
}

// ipcPeers reads wireguard-go's per-peer state: handshake, bytes, endpoint.
func (d *Device) ipcPeers() map[Key]PeerStatus {
	out := map[Key]PeerStatus{}
	txt, err := d.dev.IpcGet()
	if err != nil {
		return out
	}
	var cur *PeerStatus
	var sec, nsec int64
	flush := func(k Key) {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
	}
	var key Key
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			flush(key)
			if cur != nil {
				out[key] = *cur
			}
			b, _ := hex.DecodeString(v)
			key = Key{}
			copy(key[:], b)
			cur, sec, nsec = &PeerStatus{}, 0, 0
		case "endpoint":
			if cur != nil {
				cur.Endpoint = v
				cur.Path = pathDirect
				if strings.HasPrefix(v, relayPrefix) {
					cur.Path = pathRelay
				}
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		}
	}
	flush(key)
	if cur != nil {
		out[key] = *cur
	}
	return out
}

// listenPort is the port wireguard-go bound.
func (d *Device) listenPort() (uint16, error) {
	txt, err := d.dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("wg: read config: %w", err)
	}
	for line := range strings.SplitSeq(txt, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return 0, fmt.Errorf("wg: listen_port %q: %w", v, err)
			}
			return uint16(p), nil
		}
	}
	return 0, errors.New("wg: no listen_port in the device's config")
}

// logOnce logs a line at most once a minute, with how many were skipped.
type logOnce struct {
	last    atomic.Int64
	skipped atomic.Int64
}

func (l *logOnce) log(log *slog.Logger, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if last != 0 && now-last < int64(time.Minute) || !l.last.CompareAndSwap(last, now) {
		l.skipped.Add(1)
		return
	}
	log.Warn(msg, append(args, "skipped_since_last_line", l.skipped.Swap(0))...)
}

// wgLogger routes wireguard-go's lines to log: its errors (mostly about peers:
// sends that failed, bad packets) at most once a minute as warnings, the rest
// at debug.
func wgLogger(log *slog.Logger) *device.Logger {
	var errs logOnce
	log = log.With("part", "wireguard")
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) {
			errs.log(log, fmt.Sprintf(format, args...))
		},
	}
}
