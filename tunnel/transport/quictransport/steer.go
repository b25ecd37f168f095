package quictransport

import (
	"context"
	"net"
	"sync"
)

// Steering bare datagrams past quic-go.
//
// quic-go hands packets that are not QUIC to Transport.ReadNonQUICPacket
// through a queue of 32 and drops the rest. At a few hundred Mbit/s of
// WireGuard that queue overflowed whenever the reading goroutine was not
// scheduled for a millisecond: 8% of the bare datagrams were lost, and TCP
// inside WireGuard slowed to match. On Linux, sockets made by [ListenUDP] carry
// a classic BPF program in their SO_REUSEPORT group that sends each packet
// whose first byte is below 0x40 (never QUIC: every QUIC packet has bit 0x40 or
// 0x80 set) to a sibling socket bound to the same address. That sibling is read
// in batches straight into the connections' queues, and quic-go reads only
// QUIC. Elsewhere, or on a socket the caller made, bare datagrams take
// quic-go's path and its queue.

// steered records the sockets ListenUDP made, which accept a sibling.
var steered sync.Map // net.PacketConn -> its network ("udp", "udp4", "udp6")

// ListenUDP opens a UDP socket for Dial or Listen on address (network "udp",
// "udp4" or "udp6"; as for net.ListenPacket) whose bare datagrams, on Linux, bypass quic-go (see the
// comment above). SO_REUSEPORT is set on it, so another process of the same
// user could bind the same port too; the steering program decides which
// socket gets a packet, so such a process would get only bare packets that
// WireGuard then rejects. Where steering can't be set up, ListenUDP returns a
// plain socket.
func ListenUDP(network, address string) (*net.UDPConn, error) {
	if c, err := listenSteered(network, address); err == nil {
		steered.Store(net.PacketConn(c), network)
		return c, nil
	}
	pc, err := net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// forget drops pc from the registry when it closes.
func forget(pc net.PacketConn) { steered.Delete(pc) }

// sibling opens the socket that receives pc's bare datagrams, or returns nil
// when pc is not ListenUDP's.
func sibling(pc net.PacketConn) *net.UDPConn {
	network, ok := steered.Load(pc)
	if !ok {
		return nil
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil
	}
	s, err := listenSibling(context.Background(), network.(string), uc)
	if err != nil {
		return nil
	}
	return s
}
