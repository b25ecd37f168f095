package quictransport_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/porthole-dev/porthole/test/framework"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// dialListener connects a client to cfg's listener and returns both ends.
func dialListener(t *testing.T, cfg quictransport.ListenConfig, qconf *quic.Config) (transport.Listener, transport.Conn, transport.Conn) {
	t.Helper()
	ctls, stls := transporttest.TLSConfigs(t)
	cfg.TLSConfig = stls
	if cfg.PacketConn == nil && cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	ln, err := quictransport.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, _ := ln.Accept(context.Background())
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := quictransport.Dial(ctx, nil, ln.Addr().(*net.UDPAddr), ctls, qconf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CloseWithError(0, "") })
	return ln, client, <-accepted
}

func waitDone(t *testing.T, c transport.Conn) error {
	t.Helper()
	select {
	case <-c.Context().Done():
		return context.Cause(c.Context())
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed within 10 s")
		return nil
	}
}

// A relay that restarts with the same stateless-reset key tells the agent at
// once: the agent sees ErrPeerRestarted instead of waiting for the idle timeout.
func TestStatelessResetIsPeerRestarted(t *testing.T) {
	var key quic.StatelessResetKey
	rand.Read(key[:])
	// A port from below the kernel's ephemeral range, so that no other
	// socket is given it while it is free between the two listeners.
	port, err := framework.FreePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	addr := framework.Addr(port)
	ln, client, _ := dialListener(t, quictransport.ListenConfig{Addr: addr, StatelessResetKey: &key}, nil)
	ln.Close() // drops state without telling the client, like a crash

	_, stls := transporttest.TLSConfigs(t)
	// The second Listen failed with "address already in use" in one
	// fresh-clone CI run in five. The closed listener's port is not always
	// bindable at once: in a loop of
	// Listen, Close and a plain bind of the same port, 19 binds in 300 failed
	// with "address already in use" and succeeded about 100 µs later (the
	// steered socket pair with quic-go's Transport; either alone frees the
	// port at once). Bind again until it is free, as a restarted relay
	// process would find it.
	var ln2 transport.Listener
	framework.Eventually(t, 5*time.Second, func() bool {
		ln2, err = quictransport.Listen(quictransport.ListenConfig{Addr: addr, TLSConfig: stls, StatelessResetKey: &key})
		return err == nil || !errors.Is(err, syscall.EADDRINUSE)
	}, "port %s still in use", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	s, err := client.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// quic-go answers only packets over 42 bytes with a reset (a smaller one
	// could itself be a reset): 64 bytes of stream data make sure.
	s.Write(make([]byte, 64))
	cause := waitDone(t, client)
	if !errors.Is(cause, transport.ErrPeerRestarted) {
		t.Fatalf("cause %v, want ErrPeerRestarted", cause)
	}
	var orig *quic.StatelessResetError
	if !errors.As(cause, &orig) || !errors.Is(cause, net.ErrClosed) {
		t.Errorf("quic-go's error is not kept in the chain: %v", cause)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, transport.ErrPeerRestarted) {
		t.Errorf("stream read: %v, want ErrPeerRestarted", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	conf := quictransport.DefaultClientConfig()
	conf.MaxIdleTimeout = 300 * time.Millisecond
	conf.KeepAlivePeriod = 0
	ln, client, _ := dialListener(t, quictransport.ListenConfig{}, conf)
	ln.Close() // the server goes silent
	cause := waitDone(t, client)
	if !errors.Is(cause, transport.ErrIdleTimeout) {
		t.Fatalf("cause %v, want ErrIdleTimeout", cause)
	}
	var orig *quic.IdleTimeoutError
	if !errors.As(cause, &orig) {
		t.Errorf("quic-go's error is not kept: %v", cause)
	}
}

func TestRequireRetry(t *testing.T) {
	var asked atomic.Int32
	_, client, server := dialListener(t, quictransport.ListenConfig{
		RequireRetry: func() bool { asked.Add(1); return true },
	}, nil)
	if asked.Load() == 0 {
		t.Fatal("RequireRetry was not consulted")
	}
	// The Retry round trip must not break the connection.
	a, err := client.ExportKeyingMaterial("x", nil, 16)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := server.ExportKeyingMaterial("x", nil, 16)
	if string(a) != string(b) {
		t.Fatal("exporters differ after Retry")
	}
}

// MaxPending refuses handshakes beyond the cap; accepted ones free the slot.
func TestMaxPending(t *testing.T) {
	ctls, stls := transporttest.TLSConfigs(t)
	qconf := quictransport.DefaultServerConfig()
	qconf.HandshakeIdleTimeout = time.Second
	ln, err := quictransport.Listen(quictransport.ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls, MaxPending: 1, QUICConfig: qconf})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ql := ln.(*quictransport.Listener)
	raddr := ln.Addr().(*net.UDPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// First: completes its handshake and waits in the accept queue (pending).
	c1, err := quictransport.Dial(ctx, nil, raddr, ctls, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.CloseWithError(0, "")
	if n := ql.Pending(); n != 1 {
		t.Fatalf("Pending %d, want 1", n)
	}
	_, err = quictransport.Dial(ctx, nil, raddr, ctls, nil)
	if err == nil {
		t.Fatal("second handshake accepted beyond MaxPending")
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("second dial: %v, want CONNECTION_REFUSED", err)
	}
	if _, err := ln.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	// The refused client's ClientHello spans two Initial packets (post-quantum
	// key share): the second may start a half handshake that holds the slot
	// until HandshakeIdleTimeout, and it may be read from the socket only
	// after Pending was seen at 0 (then a dial is refused once more). Either
	// way the slot comes back: a dial succeeds before the deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		for ql.Pending() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("Pending %d 10 s after Accept, want 0", ql.Pending())
			}
			time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
		}
		c3, err := quictransport.Dial(ctx, nil, raddr, ctls, nil)
		if err == nil {
			c3.CloseWithError(0, "")
			return
		}
		if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused || time.Now().After(deadline) {
			t.Fatalf("dial after the slot freed: %v", err)
		}
		t.Logf("dial refused once more after Pending was 0 (a stray Initial of the refused client took the slot): %v", err)
	}
}

func TestBufferWarningWords(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	w := quictransport.CheckBuffers(pc)
	// Root may force any size, so whether there is a warning depends on who
	// runs the test; when there is one it must say how to fix it.
	if w != "" && !strings.Contains(w, "sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000") {
		t.Fatalf("warning without the fix: %q", w)
	}
	t.Logf("CheckBuffers: %q", w)
}

// With the default configs a full-size datagram fits from the first packet,
// without waiting for path MTU discovery (which a busy CPU can make fail).
func TestFullDatagramAtOnce(t *testing.T) {
	qconf := quictransport.DefaultClientConfig()
	qconf.DisablePathMTUDiscovery = true
	_, client, server := dialListener(t, quictransport.ListenConfig{}, qconf)
	for _, c := range []transport.Conn{client, server} {
		if err := c.SendDatagram(make([]byte, transport.MaxDatagram)); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// The agent redials often while QUIC is blocked: a failed dial leaves nothing
// running.
func TestFailedDialLeavesNothing(t *testing.T) {
	ctls, _ := transporttest.TLSConfigs(t)
	// A UDP port that drops everything.
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	before := runtime.NumGoroutine()
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := quictransport.Dial(ctx, nil, sink.LocalAddr().(*net.UDPAddr), ctls, nil)
		cancel()
		if err == nil {
			t.Fatal("dial to a sink succeeded")
		}
	}
	waitGoroutines(t, before)
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before", runtime.NumGoroutine(), want)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// Connections dialed one after another, and at once, from the same socket
// share its reader.
func TestDialsShareASocket(t *testing.T) {
	ctls, stls := transporttest.TLSConfigs(t)
	ln, err := quictransport.Listen(quictransport.ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				for {
					s, err := c.AcceptStream(context.Background())
					if err != nil {
						return
					}
					go func() { io.Copy(s, s); s.CloseWrite() }()
				}
			}()
		}
	}()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	echo := func(c transport.Conn) {
		s, err := c.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte("hi"))
		s.CloseWrite()
		if b, err := io.ReadAll(s); err != nil || string(b) != "hi" {
			t.Fatalf("echo %q %v", b, err)
		}
	}
	var prev transport.Conn
	for range 3 {
		c, err := quictransport.Dial(ctx, pc, ln.Addr().(*net.UDPAddr), ctls, nil)
		if err != nil {
			t.Fatal(err)
		}
		echo(c)
		if prev != nil {
			echo(prev) // the older connection still works beside the new one
			prev.CloseWithError(0, "")
		}
		prev = c
	}
	prev.CloseWithError(0, "")
	waitGoroutines(t, before)
	// The socket is still the caller's and usable.
	if _, err := pc.WriteTo([]byte("x"), ln.Addr()); err != nil {
		t.Fatal(err)
	}
}
