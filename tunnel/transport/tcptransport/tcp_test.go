package tcptransport_test

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/tcptransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

// recordingListener hands out the raw TCP conns it accepted, so a test can
// kill one without the close frame.
type recordingListener struct {
	net.Listener
	conns chan net.Conn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.conns <- c
	}
	return c, err
}

func listen(t *testing.T, cfg tcptransport.ListenConfig) (transport.Listener, *recordingListener) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: raw, conns: make(chan net.Conn, 100)}
	cfg.Listener = rl
	if cfg.TLSConfig == nil {
		_, cfg.TLSConfig = transporttest.TLSConfigs(t)
	}
	ln, err := tcptransport.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, rl
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

// A relay process that dies takes its TCP connection with it: without a close
// frame the agent hears ErrPeerRestarted, for a FIN (clean exit of the socket)
// and for a reset alike.
func TestPeerGoneIsPeerRestarted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset bool
	}{{"FIN", false}, {"RST", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cl, sl := transporttest.TLSConfigs(t)
			ln, rl := listen(t, tcptransport.ListenConfig{TLSConfig: sl})
			client, err := tcptransport.Dial(context.Background(), ln.Addr().String(), cl, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer client.CloseWithError(0, "")
			server, err := ln.Accept(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer server.CloseWithError(0, "")
			raw := <-rl.conns
			if tc.reset {
				raw.(*net.TCPConn).SetLinger(0)
			}
			raw.Close()
			cause := waitDone(t, client)
			if !errors.Is(cause, transport.ErrPeerRestarted) {
				t.Fatalf("cause %v, want ErrPeerRestarted", cause)
			}
			if tc.reset && !errors.Is(cause, syscall.ECONNRESET) {
				t.Errorf("the reset is not in the chain: %v", cause)
			}
		})
	}
}

// A TCP client that never speaks TLS is dropped after HandshakeTimeout; beyond
// MaxHandshakes silent clients are dropped at once.
func TestPreAuthLimits(t *testing.T) {
	cl, sl := transporttest.TLSConfigs(t)
	ln, _ := listen(t, tcptransport.ListenConfig{
		TLSConfig:     sl,
		MaxHandshakes: 2,
		Options:       tcptransport.Options{HandshakeTimeout: 300 * time.Millisecond},
	})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closedWithin := func(c net.Conn, d time.Duration) (time.Duration, bool) {
		start := time.Now()
		c.SetReadDeadline(start.Add(d))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return time.Since(start), false
		}
		return time.Since(start), true
	}
	a, b := dial(), dial()
	// Let the listener take both into handshakes before the third arrives.
	var wg sync.WaitGroup
	wg.Go(func() {
		if d, ok := closedWithin(a, 5*time.Second); !ok || d < 200*time.Millisecond {
			t.Errorf("silent client 1 closed after %v (closed %v), want about 300 ms", d, ok)
		}
	})
	wg.Go(func() {
		if d, ok := closedWithin(b, 5*time.Second); !ok || d < 200*time.Millisecond {
			t.Errorf("silent client 2 closed after %v (closed %v), want about 300 ms", d, ok)
		}
	})
	// The third, over the cap, is closed at once. The first two may not be
	// in their handshake yet when it connects: retry until one is refused.
	refused := false
	for i := 0; i < 20 && !refused; i++ {
		c := dial()
		if d, ok := closedWithin(c, 150*time.Millisecond); ok && d < 150*time.Millisecond {
			refused = true
		}
	}
	if !refused {
		t.Error("no connection over MaxHandshakes was closed at once")
	}
	wg.Wait()
	// Slots free up as the silent ones time out: a real client gets in
	// (retrying while the last of the probes above still hold slots).
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := tcptransport.Dial(context.Background(), ln.Addr().String(), cl, nil)
		if err == nil {
			c.CloseWithError(0, "")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial after the flood: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
}

// Datagrams sent faster than anyone reads are dropped, never block.
func TestDatagramQueueDrops(t *testing.T) {
	client, server := newPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100000 {
			if err := client.SendDatagram(make([]byte, 1000)); err != nil {
				t.Errorf("send: %v", err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("SendDatagram blocked")
	}
	// Some arrived; the connection still works.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := server.ReceiveDatagram(ctx); err != nil {
		t.Fatal(err)
	}
}

// A stream aborted before the peer accepted it is still seen as aborted.
func TestAbortBeforeAccept(t *testing.T) {
	client, server := newPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := server.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("x"))
	s.Abort(9)
	// Make sure the abort frame was processed before accepting: a second
	// stream's data arrives after it.
	s2, err := server.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s2.Write([]byte("y"))
	s2.CloseWrite()
	a, err := client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := client.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(a2); err != nil || string(b) != "y" {
		t.Fatalf("second stream: %q %v", b, err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(a)
	var se *transport.StreamError
	if !errors.As(err, &se) || se.Code != 9 || !se.Remote {
		t.Fatalf("read of a stream aborted before accept: %v, want remote StreamError 9", err)
	}
}

// A server that accepts TCP and never speaks TLS: the dial gives up after
// HandshakeTimeout and leaves nothing running.
func TestFailedDialLeavesNothing(t *testing.T) {
	ctls, _ := transporttest.TLSConfigs(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := raw.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	before := runtime.NumGoroutine()
	for range 3 {
		start := time.Now()
		_, err := tcptransport.Dial(context.Background(), raw.Addr().String(), ctls, &tcptransport.Options{HandshakeTimeout: 100 * time.Millisecond})
		if err == nil {
			t.Fatal("dial succeeded")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("dial took %v", d)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// CloseWithError has written the close frame when it returns: an agent that
// exits right after still tells the relay why.
func TestCloseFrameWrittenOnReturn(t *testing.T) {
	cl, sl := transporttest.TLSConfigs(t)
	ln, _ := listen(t, tcptransport.ListenConfig{TLSConfig: sl})
	raws := make(chan net.Conn, 1)
	opts := &tcptransport.Options{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			raws <- c
		}
		return c, err
	}}
	for range 20 {
		client, err := tcptransport.Dial(context.Background(), ln.Addr().String(), cl, opts)
		if err != nil {
			t.Fatal(err)
		}
		server, err := ln.Accept(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		raw := <-raws
		client.CloseWithError(7, "agent exiting")
		raw.Close() // the process exits
		var ce *transport.CloseError
		if cause := waitDone(t, server); !errors.As(cause, &ce) || ce.Code != 7 {
			t.Fatalf("relay saw %v, want the close frame's code 7", cause)
		}
	}
}

// A stream the peer aborts as soon as it accepts it (a refused viewer): the
// opener reads the abort, even when it arrives before OpenStream has returned
// (yamux announces the stream inside OpenStream). The abort was dropped then,
// and the read waited forever.
func TestAbortRightAfterAccept(t *testing.T) {
	client, server := newPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		for {
			s, err := client.AcceptStream(ctx)
			if err != nil {
				return
			}
			s.Abort(7)
		}
	}()
	for i := range 50 {
		s, err := server.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(s)
		var se *transport.StreamError
		if !errors.As(err, &se) || se.Code != 7 || !se.Remote {
			t.Fatalf("stream %d: read: %v, want remote StreamError 7", i, err)
		}
		s.Close()
	}
}

// The peer may keep at most MaxIncomingStreams of its streams open here: the
// one beyond is aborted with CodeTooManyStreams (its opener reads that), and
// once an accepted stream is finished a new one is accepted again.
func TestMaxIncomingStreams(t *testing.T) {
	ctls, stls := transporttest.TLSConfigs(t)
	ln, _ := listen(t, tcptransport.ListenConfig{TLSConfig: stls})
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(context.Background())
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err := tcptransport.Dial(context.Background(), ln.Addr().String(), ctls, &tcptransport.Options{MaxIncomingStreams: 2})
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() {
		client.CloseWithError(0, "")
		server.CloseWithError(0, "")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(msg string) transport.Stream {
		t.Helper()
		s, err := server.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The stream beyond the cap may be aborted before this write.
		if _, err := s.Write([]byte(msg)); err != nil && msg != "3" {
			t.Fatal(err)
		}
		return s
	}
	type acc struct {
		s   transport.Stream
		msg string
		err error
	}
	accepts := make(chan acc, 4)
	go func() {
		for {
			s, err := client.AcceptStream(ctx)
			if err != nil {
				accepts <- acc{err: err}
				return
			}
			b := make([]byte, 1)
			_, err = io.ReadFull(s, b)
			accepts <- acc{s, string(b), err}
		}
	}()
	next := func() acc {
		t.Helper()
		select {
		case a := <-accepts:
			if a.err != nil {
				t.Fatal(a.err)
			}
			return a
		case <-ctx.Done():
			t.Fatal("no stream accepted")
			return acc{}
		}
	}
	open("1")
	open("2")
	a1, a2 := next(), next()
	if a1.msg != "1" || a2.msg != "2" {
		t.Fatalf("accepted %q, %q", a1.msg, a2.msg)
	}
	s3 := open("3")
	s3.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(s3)
	var se *transport.StreamError
	if !errors.As(err, &se) || se.Code != tcptransport.CodeTooManyStreams || !se.Remote {
		t.Fatalf("read of the stream beyond the cap: %v, want remote StreamError %#x", err, tcptransport.CodeTooManyStreams)
	}
	a1.s.Close() // finished both ways here: no longer counted
	open("4")
	if a4 := next(); a4.msg != "4" {
		t.Fatalf("after one closed, accepted %q, want the stream opened next (4)", a4.msg)
	}
	a2.s.Close()
}
