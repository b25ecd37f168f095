package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// refuserConn is a net.Conn with Refuse, as the agent's tunnel streams are.
type refuserConn struct {
	net.Conn
	refused chan struct{}
}

func (c *refuserConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }
func (c *refuserConn) Refuse()           { close(c.refused); c.Conn.Close() }

// TestServeConnRefuses: a conn handed to ServeConn that a limit or the access
// rule refuses is refused with its Refuse (a tunnel stream aborts with
// StreamRefused), not closed as if its stream had ended.
func TestServeConnRefuses(t *testing.T) {
	p, _ := ParsePolicy([]string{"192.0.2.0/24"})
	l, err := New(Config{Service: "cam", Policy: p, MaxConns: 1, Dial: tcpDial(echoAfterEOF(t))})
	if err != nil {
		t.Fatal(err)
	}
	conn := func() *refuserConn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &refuserConn{Conn: a, refused: make(chan struct{})}
	}
	// The access rule.
	c := conn()
	if err := l.ServeConn(context.Background(), c, netip.MustParseAddrPort("127.0.0.1:1")); !errors.Is(err, ErrDenied) {
		t.Fatalf("ServeConn: %v, want ErrDenied", err)
	}
	select {
	case <-c.refused:
	default:
		t.Fatal("denied conn not refused")
	}
	// A limit: the service's one slot is taken.
	any, _ := ParsePolicy([]string{"any"})
	l, err = New(Config{Service: "cam", Policy: any, MaxConns: 1, Dial: tcpDial(echoAfterEOF(t))})
	if err != nil {
		t.Fatal(err)
	}
	first := conn()
	done := make(chan error, 1)
	go func() { done <- l.ServeConn(context.Background(), first, netip.MustParseAddrPort("192.0.2.1:1")) }()
	for deadline := time.Now().Add(5 * time.Second); l.Stats().Active != 1; {
		if time.Now().After(deadline) {
			t.Fatal("first conn not admitted")
		}
		select {
		case err := <-done:
			t.Fatalf("first conn ended: %v", err)
		case <-time.After(time.Millisecond): // polling a condition
		}
	}
	c = conn()
	var lerr *LimitError
	if err := l.ServeConn(context.Background(), c, netip.MustParseAddrPort("192.0.2.2:1")); !errors.As(err, &lerr) {
		t.Fatalf("ServeConn over the cap: %v, want a *LimitError", err)
	}
	select {
	case <-c.refused:
	default:
		t.Fatal("conn over the cap not refused")
	}
	first.Close()
	<-done
}

// TestUnreachableBackendResets: a viewer whose backend can't be dialed gets a
// reset, not a clean end of stream that looks like the end of the video.
// Before, the gateway closed it with a FIN.
func TestUnreachableBackendResets(t *testing.T) {
	any, _ := ParsePolicy([]string{"any"})
	l := serve(t, Config{Service: "cam", Policy: any, Dial: func(context.Context, netip.AddrPort) (Conn, error) {
		return nil, errors.New("camera off")
	}})
	c, err := net.Dial("tcp", l.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return // on loopback the reset can beat connect's own check
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("viewer of an unreachable backend: read ended with %v, want a reset", err)
	}
}
