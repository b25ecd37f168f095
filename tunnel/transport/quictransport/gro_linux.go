package quictransport

import (
	"encoding/binary"
	"net"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Receiving with UDP GRO.
//
// quic-go sends with UDP GSO: one write of up to 64 KB that the kernel cuts
// into packets. A receiving socket without UDP_GRO gets each packet as a
// datagram of its own (on loopback the kernel cuts the write up on the
// receiving side), and quic-go reads at most 8 per system call. With
// UDP_GRO the kernel hands over a run of same-sized packets of one flow as
// one buffer (on loopback, a GSO write arrives whole) with their size in a
// control message; quic-go does not ask for that, so groConn does: it reads
// into large buffers and cuts them into quic-go's messages itself. quic-go
// reads through a connection's ReadBatch when it has one.

// groBatch and groBufSize size groConn's reads: a GRO buffer holds at most
// 64 KB of one flow's packets.
const (
	groBatch   = 4
	groBufSize = 64 << 10
)

// groConn is a UDP socket with UDP_GRO on, as quic-go's connection: reads
// go through ReadBatch, everything else to the socket.
type groConn struct {
	*net.UDPConn
	pc   *ipv4.PacketConn
	msgs []ipv4.Message

	// pend are the packets of the last read not yet handed out.
	pend []groPacket
	// oobs hold each message's control data without the GRO message.
	oobs [groBatch][]byte

	coalesced atomic.Uint64 // reads that carried several packets (tests)
}

// groPacket is one packet cut from a read.
type groPacket struct {
	b    []byte
	addr net.Addr
	oob  []byte
}

// withGRO returns pc as quic-go should read it: a groConn when pc is a UDP
// socket that takes UDP_GRO, else pc itself.
func withGRO(pc net.PacketConn) net.PacketConn {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return pc
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return pc
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return pc
	}
	c := &groConn{UDPConn: uc, pc: ipv4.NewPacketConn(uc), msgs: make([]ipv4.Message, groBatch)}
	for i := range c.msgs {
		c.msgs[i].Buffers = [][]byte{make([]byte, groBufSize)}
		c.msgs[i].OOB = make([]byte, 128)
		c.oobs[i] = make([]byte, 0, 128)
	}
	return c
}

// ReadBatch fills ms with the next packets, reading the socket when none
// are left from the last read. A packet larger than its message's buffer is
// dropped, as the kernel drops what a socket's buffer can't hold.
func (c *groConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	for len(c.pend) == 0 {
		n, err := c.pc.ReadBatch(c.msgs, flags)
		if err != nil {
			return 0, err
		}
		c.cut(c.msgs[:n])
	}
	k := 0
	for k < len(ms) && len(c.pend) > 0 {
		p := c.pend[0]
		c.pend = c.pend[1:]
		m := &ms[k]
		if len(m.Buffers) == 0 || len(p.b) > len(m.Buffers[0]) {
			continue
		}
		m.N = copy(m.Buffers[0], p.b)
		m.NN = copy(m.OOB, p.oob)
		m.Addr = p.addr
		m.Flags = 0
		k++
	}
	if k == 0 {
		return c.ReadBatch(ms, flags) // all dropped: read on
	}
	return k, nil
}

// cut splits each message of a read into its packets.
func (c *groConn) cut(msgs []ipv4.Message) {
	c.pend = c.pend[:0]
	for i, m := range msgs {
		size, oob := groSize(m.OOB[:m.NN], c.oobs[i][:0])
		c.oobs[i] = oob
		b := m.Buffers[0][:m.N]
		if size <= 0 || size >= len(b) {
			c.pend = append(c.pend, groPacket{b: b, addr: m.Addr, oob: oob})
			continue
		}
		c.coalesced.Add(1)
		for len(b) > 0 {
			n := min(size, len(b))
			c.pend = append(c.pend, groPacket{b: b[:n], addr: m.Addr, oob: oob})
			b = b[n:]
		}
	}
}

// groSize returns the packet size of a GRO read (0 when the read is one
// packet) and appends the other control messages to rest.
func groSize(oob, rest []byte) (int, []byte) {
	size := 0
	for len(oob) > 0 {
		hdr, body, remainder, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		if hdr.Level == unix.SOL_UDP && hdr.Type == unix.UDP_GRO && len(body) >= 4 {
			size = int(binary.NativeEndian.Uint32(body))
		} else {
			rest = append(rest, oob[:len(oob)-len(remainder)]...)
		}
		oob = remainder
	}
	return size, rest
}

// udpConn returns the socket under a connection withGRO made.
func udpConn(pc net.PacketConn) net.PacketConn {
	if g, ok := pc.(*groConn); ok {
		return g.UDPConn
	}
	return pc
}
