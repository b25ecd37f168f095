package quictransport

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// TestSendDatagramsSegmented: a burst of mixed sizes sent with SendDatagrams
// between two steered sockets arrives whole and in order, runs of equal sizes
// going out as segmented writes (UDP GSO), which this kernel takes.
func TestSendDatagramsSegmented(t *testing.T) {
	ctls, stls := transporttest.TLSConfigs(t)
	ln, err := Listen(ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := Dial(ctx, nil, ln.(*Listener).tr.Conn.LocalAddr().(*net.UDPAddr), ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseWithError(0, "")
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.CloseWithError(0, "")
	client, server := cc.(*Conn), sc.(*Conn)
	server.EnableBareDatagrams()
	client.EnableBareDatagrams()

	var bufs [][]byte
	add := func(n, size int) {
		for range n {
			b := bytes.Repeat([]byte{byte(len(bufs))}, size)
			b[0] = 0x11 // a bare datagram's first byte is below 0x40
			b[1] = byte(len(bufs))
			bufs = append(bufs, b)
		}
	}
	add(50, 1300) // a run, one segmented write
	add(1, 700)   // ends it
	add(1, 9)
	add(60, 200) // another run
	add(3, transport.MaxDatagram)
	n, err := client.SendDatagrams(bufs)
	if err != nil || n != len(bufs) {
		t.Fatalf("SendDatagrams: %d of %d sent, %v", n, len(bufs), err)
	}
	if client.noGSO.Load() {
		t.Error("segmented writes were refused on loopback")
	}
	for i, want := range bufs {
		got, err := server.ReceiveDatagram(ctx)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("datagram %d: %s", i, describe(got, want))
		}
	}
}

func describe(got, want []byte) string {
	if len(got) < 2 {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	return fmt.Sprintf("%d bytes numbered %d, want %d bytes numbered %d", len(got), got[1], len(want), want[1])
}
