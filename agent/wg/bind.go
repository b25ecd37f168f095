package wg

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/porthole-dev/porthole/proto"
)

// maxRelayPacket bounds what DeliverRelay queues: a WireGuard packet of a
// phone with MTU 1280 is 1312 bytes and the tunnel carries at most
// tunnel.MaxDatagramPayload; anything larger is counted as oversize.
const maxRelayPacket = 2048

// relayQueueLen bounds the relay packets waiting for wireguard-go's reader:
// beyond it they are dropped, as a full socket buffer would.
const relayQueueLen = 1024

// relayPacket is one queued datagram from the relay.
type relayPacket struct {
	flow uint32
	n    int
	buf  [maxRelayPacket]byte
}

var relayPackets = sync.Pool{New: func() any { return new(relayPacket) }}

// bind is the device's conn.Bind: wireguard-go's own StdNetBind for the UDP
// leg, wrapped to answer the relay's probes and drop garbage, and the relay
// leg as a queue fed by DeliverRelay and a Relay to send to.
type bind struct {
	d      *Device
	std    conn.Bind
	relayQ chan *relayPacket

	mu     sync.Mutex    // guards the fields below
	closed chan struct{} // closed by Close; nil while not open
}

var _ conn.Bind = (*bind)(nil)

func newBind(d *Device) *bind {
	return &bind{d: d, std: conn.NewStdNetBind(), relayQ: make(chan *relayPacket, relayQueueLen)}
}

// Open opens the UDP leg on port and returns its receivers and the relay's.
func (b *bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	fns, actual, err := b.std.Open(port)
	if err != nil {
		return nil, 0, err
	}
	b.closed = make(chan struct{})
	out := make([]conn.ReceiveFunc, 0, len(fns)+1)
	for _, fn := range fns {
		out = append(out, b.receiveUDP(fn))
	}
	out = append(out, b.receiveRelay(b.closed))
	return out, actual, nil
}

func (b *bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed != nil {
		close(b.closed)
		b.closed = nil
	}
	return b.std.Close()
}

func (b *bind) SetMark(mark uint32) error { return b.std.SetMark(mark) }

func (b *bind) BatchSize() int { return b.std.BatchSize() }

// ParseEndpoint parses a UDP address or "relay:<flow>".
func (b *bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if f, ok := strings.CutPrefix(s, relayPrefix); ok {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, err
		}
		return relayEndpoint(n), nil
	}
	return b.std.ParseEndpoint(s)
}

// Send sends to a relay flow through the tunnel, or to a UDP address.
func (b *bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	re, ok := ep.(relayEndpoint)
	if !ok {
		err := b.std.Send(bufs, ep)
		if err == nil {
			b.d.ctr.directSent.Add(uint64(len(bufs)))
		}
		return err
	}
	r := b.d.cfg.Relay
	if r == nil {
		return net.ErrClosed
	}
	if br, ok := r.(batchRelay); ok && len(bufs) > 1 {
		n, err := br.SendDatagrams(uint32(re), bufs)
		b.d.ctr.relaySent.Add(uint64(n))
		if err != nil {
			b.d.ctr.relaySendErrors.Add(1)
		}
		return err
	}
	for _, pkt := range bufs {
		if err := r.SendDatagram(uint32(re), pkt); err != nil {
			b.d.ctr.relaySendErrors.Add(1)
			return err
		}
		b.d.ctr.relaySent.Add(1)
	}
	return nil
}

// batchRelay is a Relay that sends a burst to one flow at once.
type batchRelay interface {
	SendDatagrams(flow uint32, pkts [][]byte) (int, error)
}

// receiveUDP wraps a UDP receiver: the relay's probes are answered on the
// same socket, garbage is dropped, and neither reaches wireguard-go (a size of
// zero is skipped by its reader).
func (b *bind) receiveUDP(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(packets, sizes, eps)
		for i := range n {
			if sizes[i] == 0 {
				continue
			}
			pkt := packets[i][:sizes[i]]
			if reply, ok := proto.UDPProbeReply(pkt); ok {
				sizes[i] = 0
				b.d.ctr.probes.Add(1) // before the reply: whoever gets it sees the count
				b.std.Send([][]byte{reply}, eps[i])
				continue
			}
			if !b.d.wellFormed(pkt, pathDirect) || !b.d.admitHandshake(pkt, eps[i].DstIP(), pathDirect) {
				sizes[i] = 0
				continue
			}
			b.d.ctr.directReceived.Add(1)
		}
		return n, err
	}
}

// receiveRelay is the relay leg's receiver: it waits for one queued packet,
// then takes what else is queued, up to the batch.
func (b *bind) receiveRelay(closed <-chan struct{}) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var p *relayPacket
		select {
		case p = <-b.relayQ:
		case <-closed:
			return 0, net.ErrClosed
		}
		n := 0
		for {
			sizes[n] = copy(packets[n], p.buf[:p.n])
			eps[n] = relayEndpoint(p.flow)
			relayPackets.Put(p)
			n++
			if n == len(packets) {
				return n, nil
			}
			select {
			case p = <-b.relayQ:
			default:
				return n, nil
			}
		}
	}
}

// deliver queues one packet from the relay; false when the queue is full.
func (b *bind) deliver(flow uint32, pkt []byte) bool {
	p := relayPackets.Get().(*relayPacket)
	p.flow, p.n = flow, copy(p.buf[:], pkt)
	select {
	case b.relayQ <- p:
		return true
	default:
		relayPackets.Put(p)
		return false
	}
}

const relayPrefix = "relay:"

// relayEndpoint is a phone's UDP flow at the relay, as the relay numbered it.
type relayEndpoint uint32

var _ conn.Endpoint = relayEndpoint(0)

func (relayEndpoint) ClearSrc()           {}
func (relayEndpoint) SrcToString() string { return "" }
func (relayEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e relayEndpoint) DstToString() string {
	return relayPrefix + strconv.FormatUint(uint64(e), 10)
}

// DstToBytes binds cookie replies (mac2) to the flow.
func (e relayEndpoint) DstToBytes() []byte {
	return binary.BigEndian.AppendUint32([]byte("relay"), uint32(e))
}

// DstIP is a made-up address (in fd00::/8, never routed) unique to the flow:
// wireguard-go's handshake rate limit under load is kept per address, and
// each phone behind the relay must have its own.
func (e relayEndpoint) DstIP() netip.Addr {
	a := [16]byte{0xfd, 'p', 'o', 'r', 't', 'h', 'o', 'l', 'e'}
	binary.BigEndian.PutUint32(a[12:], uint32(e))
	return netip.AddrFrom16(a)
}
