package gateway

// Tests for the findings of issue 7. They use only the Config fields that
// existed before the pipeline (Service, Addr, Listener, Policy, Dial), so they
// ran against the old code too, where each of them failed; the defaults must
// be what protects a daemon that sets nothing.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"
)

// wrapListener returns conns that are not *net.TCPConn, as a middleware would.
type wrapListener struct{ net.Listener }

type wrappedConn struct{ net.Conn }

func (w wrapListener) Accept() (net.Conn, error) {
	c, err := w.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wrappedConn{c}, nil
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func serveListener(t *testing.T, cfg Config) *Listener {
	t.Helper()
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

// TestWrappedListener: a TLS or wrapping listener hands the gateway conns that are
// not *net.TCPConn; the old code asserted the type and panicked the daemon.
func TestWrappedListener(t *testing.T) {
	cert := selfSigned(t)
	for _, tc := range []struct {
		name string
		wrap func(net.Listener) net.Listener
		dial func(addr string) (net.Conn, error)
	}{
		{"embedding", func(ln net.Listener) net.Listener { return wrapListener{ln} },
			func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }},
		{"tls", func(ln net.Listener) net.Listener {
			return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
		}, func(addr string) (net.Conn, error) {
			return tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			any, _ := ParsePolicy([]string{"any"})
			l := serveListener(t, Config{Service: "echo", Listener: tc.wrap(ln), Policy: any, Dial: tcpDial(echoAfterEOF(t))})
			c, err := tc.dial(l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			want := "through a wrapped listener"
			if _, err := io.WriteString(c, want); err != nil {
				t.Fatal(err)
			}
			// Half-close where the conn can; otherwise the echo never answers.
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			got, err := io.ReadAll(c)
			if string(got) != want {
				t.Fatalf("got %q (%v), want %q", got, err, want)
			}
		})
	}
}

// streamBudget stands for the agent's tunnel: at most n streams at once, and
// opening one waits for a free one, as quic-go's OpenStreamSync does.
type streamBudget chan struct{}

type budgetConn struct {
	*net.TCPConn
	b    streamBudget
	done chan struct{}
}

func (c *budgetConn) Close() error {
	select {
	case <-c.done:
	default:
		close(c.done)
		<-c.b
	}
	return c.TCPConn.Close()
}

func (b streamBudget) dial(target string) DialFunc {
	return func(ctx context.Context, v netip.AddrPort) (Conn, error) {
		select {
		case b <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c, err := tcpDial(target)(ctx, v)
		if err != nil {
			<-b
			return nil, err
		}
		return &budgetConn{TCPConn: c.(*net.TCPConn), b: b, done: make(chan struct{})}, nil
	}
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t testing.TB, src, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	return c.(*net.TCPConn)
}

// echoOnce writes msg, half-closes and expects msg back within the deadline.
func echoOnce(c *net.TCPConn, msg string, within time.Duration) error {
	c.SetDeadline(time.Now().Add(within))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return errors.New("echo answered " + string(got))
	}
	return nil
}

// TestIdleFloodSparesOtherService is the finding "4200 idle connections from one
// address took all of an agent's streams" scaled to 500 connections and a budget
// of 256 streams: a viewer of another service, from another address, is still
// served at once. The old code dialed a stream for every idle connection.
func TestIdleFloodSparesOtherService(t *testing.T) {
	target := echoAfterEOF(t)
	budget := make(streamBudget, 256)
	any, _ := ParsePolicy([]string{"any"})
	a := serveListener(t, Config{Service: "a", Addr: "127.0.0.1:0", Policy: any, Dial: budget.dial(target)})
	b := serveListener(t, Config{Service: "b", Addr: "127.0.0.1:0", Policy: any, Dial: budget.dial(target)})

	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	refused := 0
	for range 500 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", a.Addr().String())
		if err != nil {
			// A refusal resets the connection, at times before connect returns.
			refused++
			continue
		}
		idle = append(idle, c)
	}
	t.Logf("%d of 500 flood dials failed", refused)
	for _, dst := range []*Listener{b, a} {
		c := dialFrom(t, "127.0.0.3", dst.Addr().String())
		err := echoOnce(c, "still served", 3*time.Second)
		c.Close()
		if err != nil {
			t.Fatalf("viewer of %v from another address not served during the flood: %v", dst.Addr(), err)
		}
	}
}

// infiniteSource serves every connection an endless byte stream.
func infiniteSource(t *testing.T) string {
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
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestCountersMoveMidConnection: Stats show bytes of a connection that is still
// running (the old code counted them when it ended), on the splice path (TCP to
// TCP) and on the buffered path (a wrapped backend, as a tunnel stream).
func TestCountersMoveMidConnection(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		dial := tcpDial(infiniteSource(t))
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
		l := serveListener(t, Config{Service: "cam", Addr: "127.0.0.1:0", Policy: any, Dial: dial})
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "hello camera")
		// Keep reading so the camera keeps sending; stop when the test is done.
		stop := make(chan struct{})
		read := make(chan struct{})
		go func() {
			defer close(read)
			buf := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
		deadline := time.Now().Add(10 * time.Second)
		var s Stats
		for {
			s = l.Stats()
			if s.BytesOut > 4<<20 && s.BytesIn == int64(len("hello camera")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("wrap=%v: counters did not move while the connection ran: %+v", wrap, s)
			}
			time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
		}
		if s.Active != 1 {
			t.Errorf("wrap=%v: %+v, want one active connection", wrap, s)
		}
		close(stop)
		c.Close()
		<-read
	}
}
