package quictransport_test

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// blackholePC drops every packet it is asked to send once cut is set: the
// path is gone, no ACK comes back, the sender's congestion window stays full.
type blackholePC struct {
	net.PacketConn
	cut atomic.Bool
}

func (p *blackholePC) WriteTo(b []byte, addr net.Addr) (int, error) {
	if p.cut.Load() {
		return len(b), nil
	}
	return p.PacketConn.WriteTo(b, addr)
}

// TestWriteQueuesWithinWindow checks that a stream's Write of small records
// (an RTSP viewer's TLS records, one RTP packet each) returns as soon as flow
// control lets the record in, without waiting for the connection's send loop
// to pack the previous one: with the path cut, nothing can be sent, yet 256
// KiB (half the initial stream window) of 1400-byte writes must all return.
// quic-go's own Write blocks there after the congestion window's worth, and
// so did ours: 20 RTSP viewers through the relay fell seconds behind on a
// busy machine with both daemons mostly idle (issue #9's bench).
func TestWriteQueuesWithinWindow(t *testing.T) {
	ctls, stls := transporttest.TLSConfigs(t)
	ln, err := quictransport.Listen(quictransport.ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	pc := &blackholePC{PacketConn: udp}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err == nil {
			defer c.CloseWithError(0, "")
			var s interface{ Read([]byte) (int, error) }
			if s, err = c.AcceptStream(ctx); err == nil {
				_, err = io.ReadFull(s, make([]byte, 5))
			}
			<-ctx.Done()
		}
		accepted <- err
	}()
	client, err := quictransport.Dial(ctx, pc, ln.Addr().(*net.UDPAddr), ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseWithError(0, "")
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	pc.cut.Store(true)
	// The bound only ends a Write that hangs (the bug); a fixed one returns at once.
	st.SetWriteDeadline(time.Now().Add(10 * time.Second))
	rec := make([]byte, 1400)
	for n := 0; n < 256<<10; n += len(rec) {
		if _, err := st.Write(rec); err != nil {
			t.Fatalf("write after %d bytes with the path cut: %v (want it queued within the stream window)", n, err)
		}
	}
	// Past the write deadline, the fast path fails as the slow one does.
	st.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := st.Write(rec); err == nil {
		t.Error("write past the deadline succeeded")
	}
	cancel()
	if err := <-accepted; err != nil && ctx.Err() == nil {
		t.Error(err)
	}
}
