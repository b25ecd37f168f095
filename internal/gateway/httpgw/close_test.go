package httpgw

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
)

// streamLike is a viewer's connection as a relayed viewer's tunnel stream
// behaves: Close without CloseWrite before it aborts the stream, and the
// viewer loses what was not delivered yet.
type streamLike struct {
	net.Conn
	finSent, aborted, closed atomic.Bool
}

func (s *streamLike) CloseWrite() error { s.finSent.Store(true); return nil }

func (s *streamLike) Close() error {
	if !s.finSent.Load() {
		s.aborted.Store(true)
	}
	s.closed.Store(true)
	return s.Conn.Close()
}

// A "Connection: close" request's answer is the connection's last: the
// handler must end the stream's write side before closing it, or a relayed
// viewer gets a reset instead of the answer (found by the bench: logins of
// clients without keep-alive failed through the relay).
func TestConnectionCloseEndsStreamGracefully(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name := "plain"
		if withTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			h, err := New(Config{Service: "cam", Target: "127.0.0.1:9", Auth: newFakeAuth(), PlainHTTP: !withTLS})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			anyRule, _ := gateway.ParsePolicy([]string{"any"})
			cfg := gateway.Config{Service: "cam", Handler: h, Policy: anyRule, Addr: "127.0.0.1:0",
				Dial: func(context.Context, netip.AddrPort) (gateway.Conn, error) { return nil, errors.New("no camera here") }}
			var clientTLS *tls.Config
			if withTLS {
				ts := httptest.NewTLSServer(http.NotFoundHandler())
				cfg.TLS = &tls.Config{Certificates: ts.TLS.Certificates}
				clientTLS = ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
				clientTLS.ServerName = "example.com" // one of httptest's certificate's names
				ts.Close()
			}
			l, err := gateway.Listen(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Shutdown(context.Background())
			a, b := net.Pipe()
			s := &streamLike{Conn: a}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go l.ServeConn(ctx, s, netip.MustParseAddrPort("192.0.2.1:1234"))
			var c net.Conn = b
			if withTLS {
				c = tls.Client(b, clientTLS)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: cam.example\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", resp.StatusCode)
			}
			io.Copy(io.Discard, c) // to the end: the server closes
			for deadline := time.Now().Add(10 * time.Second); !s.closed.Load(); {
				if time.Now().After(deadline) {
					t.Fatal("the handler never closed the connection")
				}
				time.Sleep(time.Millisecond)
			}
			if s.aborted.Load() {
				t.Error("the connection was closed without CloseWrite first: a tunnel stream would be aborted and the answer lost")
			}
		})
	}
}
