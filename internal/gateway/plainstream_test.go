package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// abortingConn behaves like a tunnel stream: Close without CloseWrite first
// aborts it, and whatever was written may never arrive.
type abortingConn struct {
	net.Conn
	ended, aborted atomic.Bool
}

func (c *abortingConn) CloseWrite() error { c.ended.Store(true); return nil }
func (c *abortingConn) Close() error {
	if !c.ended.Load() {
		c.aborted.Store(true)
	}
	return c.Conn.Close()
}

// TestPlainAnswerEndsStream: the redirect a plain request gets on a relayed
// stream is ended (CloseWrite) before the stream is closed; a bare Close
// aborted the stream and the relay reset the viewer before the 308 arrived.
func TestPlainAnswerEndsStream(t *testing.T) {
	cert, _ := testCert(t, "cam.example.com")
	l, err := New(Config{Service: "cam", Handler: &tlsHandler{t: t}, Policy: allowAll(t), Dial: tcpDial(echoAfterEOF(t)),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, Plain: RedirectHTTPS})
	if err != nil {
		t.Fatal(err)
	}
	v, g := net.Pipe()
	defer v.Close()
	stream := &abortingConn{Conn: g}
	done := make(chan error, 1)
	go func() { done <- l.ServeConn(context.Background(), stream, netip.MustParseAddrPort("192.0.2.7:50000")) }()
	v.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(v, "GET /x HTTP/1.1\r\nHost: home.example.com:10443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(v), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Fatalf("plain request: %s, want 308", resp.Status)
	}
	<-done
	if stream.aborted.Load() {
		t.Error("the stream was closed without CloseWrite: through the tunnel the answer is lost")
	}
}
