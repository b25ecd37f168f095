package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// streamLikeConn behaves as a tunnel stream does (quictransport): what is
// written is sent for good only by CloseWrite (FIN); Close before that
// resets the stream, and the peer gets none of the unsent answer.
type streamLikeConn struct {
	in *strings.Reader

	mu        sync.Mutex
	pending   bytes.Buffer // written, not yet delivered
	delivered bytes.Buffer // what the peer gets
	finSent   bool
}

func (c *streamLikeConn) Read(b []byte) (int, error) { return c.in.Read(b) }
func (c *streamLikeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finSent {
		return 0, io.ErrClosedPipe
	}
	return c.pending.Write(b)
}

func (c *streamLikeConn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delivered.Write(c.pending.Bytes())
	c.pending.Reset()
	c.finSent = true
	return nil
}

func (c *streamLikeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending.Reset() // reset: unsent bytes are gone
	return nil
}

func (c *streamLikeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *streamLikeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *streamLikeConn) SetDeadline(time.Time) error      { return nil }
func (c *streamLikeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamLikeConn) SetWriteDeadline(time.Time) error { return nil }

// TestPlainAnswerReachesStreamViewer: the answer to a plain HTTP request on a
// TLS service (the redirect to https) is sent with a FIN before the
// connection is closed, so a relayed viewer (a tunnel stream, whose Close
// resets what is unsent) gets it. It failed with a bare Close: through the
// relay, plain http:// got a connection reset instead of the 308.
func TestPlainAnswerReachesStreamViewer(t *testing.T) {
	cert, _ := testCert(t, "cam.example.com")
	l, err := New(Config{Service: "cam", Handler: &tlsHandler{t: t}, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Plain: RedirectHTTPS})
	if err != nil {
		t.Fatal(err)
	}
	c := &streamLikeConn{in: strings.NewReader("GET /x HTTP/1.1\r\nHost: home.example.com:10443\r\n\r\n")}
	l.ServeConn(context.Background(), c, netip.MustParseAddrPort("192.0.2.1:1"))
	c.mu.Lock()
	got := c.delivered.String()
	c.mu.Unlock()
	if !strings.HasPrefix(got, "HTTP/1.1 308 ") || !strings.Contains(got, "Location: https://home.example.com:10443/x\r\n") {
		t.Fatalf("the viewer got %q, want the 308 to https", got)
	}
}

// closeOrderConn is a TCP conn that records whether Close came without a
// CloseWrite before it: on a tunnel stream that Close is a reset, and the
// last bytes written are lost.
type closeOrderConn struct {
	*net.TCPConn
	mu                sync.Mutex
	wroteFIN, aborted bool
}

func (c *closeOrderConn) CloseWrite() error {
	c.mu.Lock()
	c.wroteFIN = true
	c.mu.Unlock()
	return c.TCPConn.CloseWrite()
}

func (c *closeOrderConn) Close() error {
	c.mu.Lock()
	if !c.wroteFIN {
		c.aborted = true
	}
	c.mu.Unlock()
	return c.TCPConn.Close()
}

// answerAndClose writes one line on the viewer's (TLS) conn and closes it, as
// an http.Server does after a Connection: close response.
type answerAndClose struct{}

func (answerAndClose) Serve(_ context.Context, v *Viewer) error {
	io.WriteString(v.Conn, "last words\n")
	return v.Conn.Close()
}

// TestTLSCloseEndsWithFIN: a handler closing its *tls.Conn half-closes the
// connection under it before closing it, so that its last records reach a
// relayed viewer; a tunnel stream's Close without that resets them. It
// failed before: through the relay, a response with Connection: close was
// lost about one time in three.
func TestTLSCloseEndsWithFIN(t *testing.T) {
	cert, pool := testCert(t, "cam.example.com")
	l, err := New(Config{Service: "cam", Handler: answerAndClose{}, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw := make(chan *closeOrderConn, 1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		oc := &closeOrderConn{TCPConn: c.(*net.TCPConn)}
		raw <- oc
		l.ServeConn(context.Background(), oc, netip.MustParseAddrPort("192.0.2.1:1"))
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "cam.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != "last words\n" || err != nil {
		t.Errorf("viewer read %q, %v", b, err)
	}
	<-served
	oc := <-raw
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.aborted {
		t.Error("the conn under TLS was closed without a CloseWrite first: a tunnel stream resets the last records")
	}
}

// blockingConn's Write blocks until Close; it records whether CloseWrite ran.
type blockingConn struct {
	net.Conn
	writing  chan struct{}
	closed   chan struct{}
	finished atomic.Bool
}

func (c *blockingConn) Write(b []byte) (int, error) {
	close(c.writing)
	<-c.closed
	return 0, net.ErrClosed
}
func (c *blockingConn) CloseWrite() error { c.finished.Store(true); return nil }
func (c *blockingConn) Close() error      { close(c.closed); return nil }

// A Close that interrupts a Write is an abort: a FIN there would make a cut
// answer look complete to a relayed viewer.
func TestCloseDuringWriteIsNoFIN(t *testing.T) {
	bc := &blockingConn{writing: make(chan struct{}), closed: make(chan struct{})}
	pc := &prefixConn{Conn: bc}
	done := make(chan struct{})
	go func() { pc.Write([]byte("frame")); close(done) }()
	<-bc.writing
	pc.Close()
	<-done
	if bc.finished.Load() {
		t.Error("Close during a Write sent a FIN (CloseWrite)")
	}
	idle := &blockingConn{writing: make(chan struct{}), closed: make(chan struct{})}
	(&prefixConn{Conn: idle}).Close()
	if !idle.finished.Load() {
		t.Error("Close without a Write in flight did not end the stream first")
	}
}
