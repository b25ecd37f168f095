package quictransport_test

import (
	"context"
	"net"
	"testing"

	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

func newPair(t *testing.T) (client, server transport.Conn) { return pair(t) }

func pair(t testing.TB) (client, server transport.Conn) {
	t.Helper()
	ctls, stls := transporttest.TLSConfigs(t)
	ln, err := quictransport.Listen(quictransport.ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(context.Background())
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = quictransport.Dial(context.Background(), nil, ln.Addr().(*net.UDPAddr), ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() {
		client.CloseWithError(0, "")
		server.CloseWithError(0, "")
	})
	return client, server
}

func TestConformance(t *testing.T) { transporttest.Run(t, newPair) }

func BenchmarkThroughput(b *testing.B) {
	client, server := pair(b)
	transporttest.Throughput(b, client, server)
}

// TestIdleMemory logs what an idle connection costs (both ends together).
func TestIdleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	ctls, stls := transporttest.TLSConfigs(t)
	ln, err := quictransport.Listen(quictransport.ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	connect := func() (transport.Conn, transport.Conn) {
		c, err := quictransport.Dial(context.Background(), nil, ln.Addr().(*net.UDPAddr), ctls, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c, s
	}
	t.Logf("idle connection, client and server together: %d KiB", transporttest.IdleMemory(t, 100, connect)>>10)
}
