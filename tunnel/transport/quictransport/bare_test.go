package quictransport_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// bareCounter counts the non-QUIC packets (first byte below 0x40) its socket
// reads. It holds the socket as a plain net.PacketConn: given a *net.UDPConn,
// quic-go reads the file descriptor with recvmmsg and never calls ReadFrom.
type bareCounter struct {
	net.PacketConn
	bare atomic.Int64
}

func (c *bareCounter) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if n > 0 && b[0] < 0x40 {
		c.bare.Add(1)
	}
	return n, a, err
}

// barePair is a connected pair whose server socket counts bare packets.
func barePair(t *testing.T) (client, server *quictransport.Conn, srvSock *bareCounter) {
	t.Helper()
	ctls, stls := transporttest.TLSConfigs(t)
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	srvSock = &bareCounter{PacketConn: uc}
	ln, err := quictransport.Listen(quictransport.ListenConfig{PacketConn: srvSock, TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := quictransport.Dial(ctx, nil, uc.LocalAddr().(*net.UDPAddr), ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.CloseWithError(0, "")
		s.CloseWithError(0, "")
	})
	return c.(*quictransport.Conn), s.(*quictransport.Conn), srvSock
}

func receive(t *testing.T, c transport.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := c.ReceiveDatagram(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBareDatagrams: once both sides enable them, datagrams travel as bare
// UDP packets both ways; a stranger's bare packet is not delivered.
func TestBareDatagrams(t *testing.T) {
	client, server, sock := barePair(t)
	server.EnableBareDatagrams()
	client.EnableBareDatagrams()

	stranger, err := net.DialUDP("udp", nil, sock.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stranger.Write([]byte("\x11from a stranger"))
	// The stranger's packet was read before the agent's: ordered on one socket.
	framework.Eventually(t, 10*time.Second, func() bool { return sock.bare.Load() > 0 }, "the stranger's packet was not read")
	if err := client.SendDatagram([]byte("\x11up")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, server); got != "\x11up" {
		t.Errorf("server got %q", got)
	}
	if n := sock.bare.Load(); n != 2 {
		t.Errorf("server socket read %d bare packets, want 2 (the stranger's and the client's)", n)
	}
	if err := server.SendDatagram([]byte("\x11down")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, client); got != "\x11down" {
		t.Errorf("client got %q", got)
	}
	if err := client.SendDatagram(make([]byte, transport.MaxDatagram+1)); err == nil {
		t.Error("an oversize datagram was sent")
	}
}

// TestBareReceiverTakesQUICDatagrams: a side that enabled bare datagrams still
// receives a peer's QUIC DATAGRAM frames (an older peer, or one that has not
// enabled them yet), and a closed connection ends ReceiveDatagram.
func TestBareReceiverTakesQUICDatagrams(t *testing.T) {
	client, server, sock := barePair(t)
	server.EnableBareDatagrams()
	if err := client.SendDatagram([]byte("\x11in quic")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, server); got != "\x11in quic" {
		t.Errorf("server got %q", got)
	}
	if n := sock.bare.Load(); n != 0 {
		t.Errorf("%d bare packets from a client that did not enable them", n)
	}
	client.CloseWithError(0, "bye")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := server.ReceiveDatagram(ctx); err == nil || ctx.Err() != nil {
		t.Errorf("ReceiveDatagram after the peer closed: %v (ctx %v)", err, ctx.Err())
	}
}

// TestBareDatagramsDroppedCounted: a reader that falls behind loses the
// peer's bare datagrams beyond the queue, and they are counted
// (transport.DatagramDropCounter), as a full socket buffer's would be. The
// client keeps sending while nobody reads: packets the kernel or quic-go
// drop first are not ours to count, but once the queue is full every one
// that reaches it is.
func TestBareDatagramsDroppedCounted(t *testing.T) {
	client, server, _ := barePair(t)
	server.EnableBareDatagrams()
	client.EnableBareDatagrams()
	var _ transport.DatagramDropCounter = server
	framework.Eventually(t, 20*time.Second, func() bool {
		for range 100 {
			if err := client.SendDatagram([]byte("\x11unread")); err != nil {
				t.Fatal(err)
			}
		}
		return server.DatagramsDropped() > 0
	}, "no drop counted while nobody read")
	if got := receive(t, server); got != "\x11unread" {
		t.Errorf("server got %q", got)
	}
}
