package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestPolicy(t *testing.T) {
	p, err := ParsePolicy([]string{"192.0.2.0/24", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"192.0.2.7", true}, {"::ffff:192.0.2.7", true}, {"192.0.3.1", false},
		{"2001:db8::1", true}, {"2001:db8::2", false},
	} {
		if got := p.Allows(netip.MustParseAddr(c.addr)); got != c.ok {
			t.Errorf("%s: %v, want %v", c.addr, got, c.ok)
		}
	}
	if _, err := ParsePolicy(nil); err == nil {
		t.Error("empty rule accepted")
	}
	if _, err := ParsePolicy([]string{"any", "10.0.0.0/8"}); err == nil {
		t.Error("any mixed with CIDR accepted")
	}
	if _, err := ParsePolicy([]string{"nonsense"}); err == nil {
		t.Error("garbage accepted")
	}
	any, _ := ParsePolicy([]string{"any"})
	if !any.Allows(netip.MustParseAddr("198.51.100.1")) || (Policy{}).Allows(netip.MustParseAddr("127.0.0.1")) {
		t.Error("any/zero policy wrong")
	}
}

// echoUpper serves one connection: reads everything, then writes it back and closes.
// It only answers after the viewer half-closes, so it proves half-close works.
func echoAfterEOF(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(b)
			}()
		}
	}()
	return ln.Addr().String()
}

func tcpDial(target string) DialFunc {
	return func(ctx context.Context, _ netip.AddrPort) (Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
}

// pipeConn hides *net.TCPConn so Splice takes the pooled-buffer path, as with QUIC streams.
type pipeConn struct{ *net.TCPConn }

func serve(t *testing.T, cfg Config) *Listener {
	cfg.Addr = "127.0.0.1:0"
	l, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Serve(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		sctx, c := context.WithTimeout(context.Background(), time.Second)
		defer c()
		l.Shutdown(sctx)
	})
	return l
}

func TestSpliceHalfClose(t *testing.T) {
	target := echoAfterEOF(t)
	for _, wrap := range []bool{false, true} {
		dial := tcpDial(target)
		if wrap {
			inner := dial
			dial = func(ctx context.Context, v netip.AddrPort) (Conn, error) {
				c, err := inner(ctx, v)
				if err != nil {
					return nil, err
				}
				return pipeConn{c.(*net.TCPConn)}, nil
			}
		}
		any, _ := ParsePolicy([]string{"any"})
		l := serve(t, Config{Service: "echo", Policy: any, Dial: dial})
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 3<<20)
		rand.Read(data)
		go func() {
			c.Write(data)
			c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("wrap=%v: got %d bytes (err %v), want %d identical", wrap, len(got), err, len(data))
		}
	}
}

func TestDeniedViewerNeverDialed(t *testing.T) {
	dialed := make(chan struct{}, 1)
	p, _ := ParsePolicy([]string{"192.0.2.0/24"})
	l := serve(t, Config{Service: "cam", Policy: p, Dial: func(context.Context, netip.AddrPort) (Conn, error) {
		dialed <- struct{}{}
		return nil, io.EOF
	}})
	// The gateway resets a refused viewer at once: either the dial or the read fails.
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || n > 0 || os.IsTimeout(err) {
			t.Fatalf("denied viewer read %d bytes, err %v", n, err)
		}
		c.Close()
	}
	select {
	case <-dialed:
		t.Fatal("backend dialed for a denied viewer")
	default:
	}
	if s := l.Stats(); s.Denied != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestShutdownClosesLingeringConns(t *testing.T) {
	target := echoAfterEOF(t) // never answers until EOF: the conn lingers
	any, _ := ParsePolicy([]string{"any"})
	l, err := Listen(Config{Service: "echo", Addr: "127.0.0.1:0", Policy: any, Dial: tcpDial(target)})
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve(context.Background())
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	// The kernel completes the dial before Serve accepts; wait until the gateway holds it.
	for l.Stats().Active == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil although a connection was still open")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("viewer not closed cleanly: %v", err)
	}
}

// TestInterceptReplay: bytes an Intercept read before declining reach the backend
// first, then the rest of the viewer's stream; a handled connection is never dialed.
func TestInterceptReplay(t *testing.T) {
	target := echoAfterEOF(t)
	any, _ := ParsePolicy([]string{"any"})
	var dials atomic.Int64
	dial := tcpDial(target)
	l := serve(t, Config{Service: "echo", Policy: any,
		Dial: func(ctx context.Context, v netip.AddrPort) (Conn, error) {
			dials.Add(1)
			return dial(ctx, v)
		},
		Intercept: func(c net.Conn, _ netip.AddrPort) (bool, []byte) {
			b := make([]byte, 6)
			if _, err := io.ReadFull(c, b); err != nil {
				return true, nil
			}
			if string(b) == "PROBE!" {
				c.Write([]byte("answered"))
				c.Close()
				return true, nil
			}
			return false, b
		}})
	for _, tc := range []struct{ send, want string }{
		{"hello world", "hello world"},
		{"PROBE!", "answered"},
	} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(tc.send))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != tc.want {
			t.Errorf("sent %q: got %q (%v), want %q", tc.send, got, err, tc.want)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("backend dialed %d times, want once (for the viewer, not the probe)", n)
	}
}
