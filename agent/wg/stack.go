package wg

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Netstack sizes. wireguard-go's tun/netstack hands the stack's packets to
// WireGuard one at a time through an unbuffered channel, from inside gVisor's
// TCP sender (each segment waits for WireGuard's reader): measured
// (BenchmarkThroughput), that kept a bulk transfer at about 90 Mbit/s with the
// CPUs mostly idle, at 41-45 CPU-seconds a GB; taken in batches from the
// NIC's queue, 270-390 Mbit/s at 18-20 on the same loaded machine.
const (
	// nicQueueLen is the packets the stack may queue towards WireGuard;
	// beyond it the stack's write fails and TCP backs off, as on a full
	// interface queue. 1 MiB of 1280-byte packets is 820.
	nicQueueLen = 4096
	// tunBatch is the packets WireGuard takes from the stack at once.
	tunBatch = 128
)

// Netstack is a userspace network for wireguard-go: a gVisor stack whose
// interface is WireGuard (a tun.Device): what the stack sends, WireGuard
// encrypts; what WireGuard decrypts, the stack receives. The Device uses one;
// tests and the bench make their phones with one too (a real phone has its
// kernel's stack instead).
type Netstack struct {
	ep     *linkEndpoint
	stack  *stack.Stack
	events chan tun.Event
	mtu    int

	ctx       context.Context // ends at Close: Read returns
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var _ tun.Device = (*Netstack)(nil)

// NewNetstack makes a stack answering at addrs with the given MTU; give it to
// device.NewDevice, and Close it through the device.
func NewNetstack(addrs []netip.Addr, mtu int) (*Netstack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	// SACK on; gVisor's buffer defaults measured best here
	// (BenchmarkThroughput, 2 cores): letting the buffers grow to 8 MiB, as
	// tailscale's netstack does, halved the throughput (a larger window
	// overflows the queues to WireGuard: more drops and recoveries).
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		s.Close()
		return nil, fmt.Errorf("tcp SACK: %v", err)
	}
	// RACK loss detection off: gVisor's sender (this version and the newest,
	// 2026-09) counts segments that RACK has marked lost as still in
	// flight. When the tail of a flight is lost during a recovery (the
	// phone's UDP buffer overflowing twice in one burst does it), the
	// window stays full, and the hole is repaired two segments per
	// retransmission timeout: the bench saw camera -> phone transfers fall
	// from 300-500 to 1-5 Mbit/s for seconds in about one run in seven;
	// TestStackRecoversFromBurstLoss took 133 timeouts and 27 s for 271
	// lost segments. Without RACK (RFC 6675 SACK recovery, and go-back-N
	// after a timeout) the same loss costs one timeout, under a second.
	rec := tcpip.TCPRecovery(0)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &rec); err != nil {
		s.Close()
		return nil, fmt.Errorf("tcp recovery: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := channel.New(nicQueueLen, uint32(mtu), "")
	// WireGuard authenticated every byte the stack receives: checksums are
	// not checked again (the kernel's WireGuard does the same), and Write's
	// GRO may leave a coalesced packet's IP checksum stale.
	ch.LinkEPCapabilities |= stack.CapabilityRXChecksumOffload
	t := &Netstack{ep: &linkEndpoint{Endpoint: ch}, stack: s, events: make(chan tun.Event, 1), mtu: mtu, ctx: ctx, cancel: cancel}
	fail := func(format string, args ...any) (*Netstack, error) {
		t.Close()
		return nil, fmt.Errorf(format, args...)
	}
	if err := s.CreateNIC(1, t.ep); err != nil {
		return fail("create NIC: %v", err)
	}
	var v4, v6 bool
	for _, a := range addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto, v6 = ipv6.ProtocolNumber, true
		} else {
			v4 = true
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			return fail("address %s: %v", a, err)
		}
	}
	if v4 {
		s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: 1})
	}
	if v6 {
		s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: 1})
	}
	t.events <- tun.EventUp
	return t, nil
}

func (t *Netstack) Name() (string, error) { return "porthole", nil }
func (t *Netstack) File() *os.File        { return nil }
func (t *Netstack) Events() <-chan tun.Event {
	return t.events
}
func (t *Netstack) MTU() (int, error) { return t.mtu, nil }
func (t *Netstack) BatchSize() int    { return tunBatch }

// Read hands WireGuard what the stack sends: it waits for one packet, then
// takes what else is queued, up to the batch.
func (t *Netstack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := t.ep.ReadContext(t.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for {
		view := pkt.ToView()
		pkt.DecRef()
		sizes[n], _ = view.Read(bufs[n][offset:])
		view.Release()
		n++
		if n == len(bufs) {
			return n, nil
		}
		if pkt = t.ep.Read(); pkt == nil {
			return n, nil
		}
	}
}

// linkEndpoint is the stack's interface: a channel endpoint, with the
// stack's dispatcher at hand for Write's GRO.
type linkEndpoint struct {
	*channel.Endpoint

	mu sync.RWMutex // guards d
	d  stack.NetworkDispatcher
}

func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.Endpoint.Attach(d)
	e.mu.Lock()
	e.d = d
	e.mu.Unlock()
}

func (e *linkEndpoint) dispatcher() stack.NetworkDispatcher {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.d
}

// gros are GRO tables for Write: wireguard-go writes each peer's batches from
// a goroutine of its own.
var gros = sync.Pool{New: func() any { g := new(gro.GRO); g.Init(true); return g }}

// Write hands the stack what WireGuard decrypted. A batch's consecutive
// full-sized TCP segments of one connection are coalesced (gVisor's GRO)
// before the stack sees them: one pass through TCP, and one ACK, for up to
// 64 KiB.
func (t *Netstack) Write(bufs [][]byte, offset int) (int, error) {
	d := t.ep.dispatcher()
	if d == nil {
		return len(bufs), nil // closing: dropped, as by the channel endpoint
	}
	g := gros.Get().(*gro.GRO)
	g.Dispatcher = d
	defer func() {
		g.Flush()
		g.Dispatcher = nil
		gros.Put(g)
	}()
	for _, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 {
			continue
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		switch pkt[0] >> 4 {
		case 4:
			pb.NetworkProtocolNumber = header.IPv4ProtocolNumber
		case 6:
			pb.NetworkProtocolNumber = header.IPv6ProtocolNumber
		default:
			pb.DecRef()
			return 0, syscall.EAFNOSUPPORT
		}
		pb.RXChecksumValidated = true
		g.Enqueue(pb)
		pb.DecRef()
	}
	return len(bufs), nil
}

// Close stops the stack; WireGuard's reader returns.
func (t *Netstack) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		t.stack.RemoveNIC(1)
		t.stack.Close()
		t.ep.Close()
		close(t.events)
	})
	return nil
}

// ListenTCPAddrPort listens inside the tunnel at addr.
func (t *Netstack) ListenTCPAddrPort(addr netip.AddrPort) (*gonet.TCPListener, error) {
	fa, pn := fullAddr(addr)
	return gonet.ListenTCP(t.stack, fa, pn)
}

// DialContextTCPAddrPort connects from inside the tunnel to addr.
func (t *Netstack) DialContextTCPAddrPort(ctx context.Context, addr netip.AddrPort) (*gonet.TCPConn, error) {
	fa, pn := fullAddr(addr)
	return gonet.DialContextTCP(ctx, t.stack, fa, pn)
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	pn := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		pn = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, pn
}

// StackStats are the userspace stack's TCP counters, the first place to look
// when a connection inside the tunnel is slow: retransmissions and timeouts
// say packets were lost between the stack and the phone (or before
// WireGuard, QueueDrops: the stack sent faster than WireGuard took them).
type StackStats struct {
	TCPSegmentsSent uint64 `json:"tcp_segments_sent"`
	TCPRetransmits  uint64 `json:"tcp_retransmits"`
	TCPTimeouts     uint64 `json:"tcp_timeouts"` // the retransmission timer fired
	TCPFastRecovery uint64 `json:"tcp_fast_recovery"`
	TCPSACKRecovery uint64 `json:"tcp_sack_recovery"`
	TCPTLPRecovery  uint64 `json:"tcp_tlp_recovery"`
	TCPSendErrors   uint64 `json:"tcp_send_errors"`
	QueueDrops      uint64 `json:"queue_drops"`
}

// Stats reads the stack's counters.
func (t *Netstack) Stats() StackStats {
	s := t.stack.Stats()
	return StackStats{
		TCPSegmentsSent: s.TCP.SegmentsSent.Value(), TCPRetransmits: s.TCP.Retransmits.Value(), TCPTimeouts: s.TCP.Timeouts.Value(),
		TCPFastRecovery: s.TCP.FastRecovery.Value(), TCPSACKRecovery: s.TCP.SACKRecovery.Value(), TCPTLPRecovery: s.TCP.TLPRecovery.Value(),
		TCPSendErrors: s.TCP.SegmentSendErrors.Value(), QueueDrops: s.NICs.TxPacketsDroppedNoBufferSpace.Value(),
	}
}
