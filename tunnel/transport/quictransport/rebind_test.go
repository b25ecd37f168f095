package quictransport_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// natBox is a home router's NAT on loopback: the client sends to front, the
// box forwards from its outside socket to the server and back. rebind gives
// the mapping a new outside port, as a router does after a reboot or when a
// mapping timed out.
type natBox struct {
	front  *net.UDPConn
	server *net.UDPAddr

	mu     sync.Mutex // guards the fields below
	out    *net.UDPConn
	client *net.UDPAddr
}

func newNATBox(t *testing.T, server *net.UDPAddr) *natBox {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := &natBox{front: front, server: server}
	t.Cleanup(func() {
		front.Close()
		b.mu.Lock()
		b.out.Close()
		b.mu.Unlock()
	})
	b.rebind(t)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			b.mu.Lock()
			b.client = from
			out := b.out
			b.mu.Unlock()
			out.WriteToUDP(buf[:n], server)
		}
	}()
	return b
}

// rebind replaces the outside socket; packets the server sends to the old
// port are lost.
func (b *natBox) rebind(t *testing.T) {
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	old := b.out
	b.out = out
	b.mu.Unlock()
	if old != nil {
		old.Close()
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := out.Read(buf)
			if err != nil {
				return
			}
			b.mu.Lock()
			client := b.client
			b.mu.Unlock()
			if client != nil {
				b.front.WriteToUDP(buf[:n], client)
			}
		}
	}()
}

// TestBareDatagramsFollowNATRebinding: after the client's NAT mapping moves
// to a new port (and QUIC follows it), bare datagrams keep flowing both ways:
// first from the client (the server has not sent since), then back.
func TestBareDatagramsFollowNATRebinding(t *testing.T) {
	ctls, stls := transporttest.TLSConfigs(t)
	sock, err := quictransport.ListenUDP("udp", "127.0.0.1:0") // steered, as the relay's
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	ln, err := quictransport.Listen(quictransport.ListenConfig{PacketConn: sock, TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	box := newNATBox(t, sock.LocalAddr().(*net.UDPAddr))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cc, err := quictransport.Dial(ctx, nil, box.front.LocalAddr().(*net.UDPAddr), ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client, server := cc.(*quictransport.Conn), sc.(*quictransport.Conn)
	t.Cleanup(func() {
		client.CloseWithError(0, "")
		server.CloseWithError(0, "")
	})
	server.EnableBareDatagrams()
	client.EnableBareDatagrams()
	if err := client.SendDatagram([]byte("\x11before")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, server); got != "\x11before" {
		t.Fatalf("server got %q", got)
	}
	before := server.QUIC().RemoteAddr().String()

	box.rebind(t)
	// QUIC moves to the new address once the client sends a QUIC packet
	// from it (in the tunnel, a heartbeat); the client's bare datagrams
	// must then reach the server without the server sending first.
	framework.Eventually(t, 10*time.Second, func() bool {
		client.QUIC().SendDatagram([]byte("\x11quic"))
		return server.QUIC().RemoteAddr().String() != before
	}, "QUIC did not follow the NAT rebinding")
	got := make(chan string, 64)
	go func() {
		for {
			b, err := server.ReceiveDatagram(ctx)
			if err != nil {
				return
			}
			got <- string(b)
		}
	}()
	framework.Eventually(t, 10*time.Second, func() bool {
		if err := client.SendDatagram([]byte("\x11after")); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case s := <-got:
				if s == "\x11after" {
					return true
				}
			case <-time.After(50 * time.Millisecond):
				return false
			}
		}
	}, "the client's bare datagrams were dropped after the rebinding")
	if err := server.SendDatagram([]byte("\x11down")); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, client); got != "\x11down" {
		t.Errorf("client got %q", got)
	}
}
