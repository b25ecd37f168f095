package quictransport

import (
	"bytes"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// groPair is a plain sending socket and a receiving one made by withGRO.
func groPair(t *testing.T) (*net.UDPConn, *groConn) {
	t.Helper()
	send, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { send.Close() })
	recv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	g, ok := withGRO(recv).(*groConn)
	if !ok {
		t.Fatal("withGRO did not turn UDP_GRO on")
	}
	rc, _ := recv.SyscallConn()
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1) })
	recv.SetReadDeadline(time.Now().Add(5 * time.Second))
	return send, g
}

// quicMessages are messages as quic-go hands them to ReadBatch.
func quicMessages(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

// segmented writes packets as one UDP GSO write of size-byte segments.
func segmented(t *testing.T, send *net.UDPConn, to net.Addr, packets [][]byte, size int) {
	t.Helper()
	oob := append(gsoOOB(size), tosOOB(0x02)...)
	if _, _, err := send.WriteMsgUDP(bytes.Join(packets, nil), oob, to.(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
}

func tosOOB(tos byte) []byte {
	oob := make([]byte, unix.CmsgSpace(1))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	h.SetLen(unix.CmsgLen(1))
	oob[unix.CmsgLen(0)] = tos
	return oob
}

// TestGROCutsCoalescedReads: a GSO write of 11 packets reaches a withGRO
// socket as one coalesced read (the kernel kept it whole), and ReadBatch
// hands quic-go each packet whole, in order, with the sender's address and
// the packet's TOS byte (ECN), and without the GRO control message.
func TestGROCutsCoalescedReads(t *testing.T) {
	send, g := groPair(t)
	var packets [][]byte
	for i := range 10 {
		packets = append(packets, bytes.Repeat([]byte{byte(0x40 + i)}, 1200))
	}
	packets = append(packets, bytes.Repeat([]byte{0x7f}, 500)) // a shorter one ends the run
	segmented(t, send, g.LocalAddr(), packets, 1200)

	var got [][]byte
	for len(got) < len(packets) {
		ms := quicMessages(8, 1452)
		n, err := g.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d packets: %v", len(got), err)
		}
		for _, m := range ms[:n] {
			got = append(got, append([]byte(nil), m.Buffers[0][:m.N]...))
			if m.Addr.String() != send.LocalAddr().String() {
				t.Errorf("packet from %v, want %v", m.Addr, send.LocalAddr())
			}
			tos, sawGRO := -1, false
			for oob := m.OOB[:m.NN]; len(oob) > 0; {
				h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
				if err != nil {
					t.Fatal(err)
				}
				if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS {
					tos = int(body[0])
				}
				sawGRO = sawGRO || (h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO)
				oob = rest
			}
			if tos != 0x02 || sawGRO {
				t.Errorf("control data: TOS %#x (want 0x2), GRO message passed on: %v", tos, sawGRO)
			}
		}
	}
	for i := range packets {
		if !bytes.Equal(got[i], packets[i]) {
			t.Fatalf("packet %d: %d bytes starting %#x, want %d starting %#x", i, len(got[i]), got[i][0], len(packets[i]), packets[i][0])
		}
	}
	if g.coalesced.Load() == 0 {
		t.Error("no read carried several packets: the kernel did not coalesce (UDP_GRO off?)")
	}
}

// TestGRODropsOversize: a packet larger than quic-go's buffer is dropped, not
// cut short, and the next one is returned.
func TestGRODropsOversize(t *testing.T) {
	send, g := groPair(t)
	segmented(t, send, g.LocalAddr(), [][]byte{bytes.Repeat([]byte{1}, 1400), bytes.Repeat([]byte{2}, 1400)}, 1400)
	if _, err := send.WriteToUDP([]byte("small"), g.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	ms := quicMessages(8, 1000)
	n, err := g.ReadBatch(ms, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || string(ms[0].Buffers[0][:ms[0].N]) != "small" {
		t.Fatalf("got %d messages, the first %q; want only \"small\"", n, ms[0].Buffers[0][:ms[0].N])
	}
}
