package httpgw

import (
	"net"
	"net/http"
	"strings"
	"testing"
)

// authListener hands out conns whose viewer is already known, as the agent's
// WireGuard endpoint does.
type authListener struct {
	net.Listener
	viewer string
}

type authConn struct {
	net.Conn
	viewer string
}

func (c authConn) AuthenticatedViewer() string { return c.viewer }

func (l authListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return authConn{c, l.viewer}, nil
}

// TestAuthenticatedViewer: a viewer known by how it arrived gets no login
// page, and the service's viewers list still applies to it.
func TestAuthenticatedViewer(t *testing.T) {
	cam, _ := camera(t, hello)
	for _, tc := range []struct {
		viewer string
		want   int
	}{{"alice", http.StatusOK}, {"bob", http.StatusForbidden}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g := startWith(t, Config{PlainHTTP: true, Viewers: []string{"alice"}}, cam, authListener{ln, tc.viewer}, nil)
		g.base = strings.Replace(g.base, "https://", "http://", 1)
		resp, body := g.do(t, g.req(t, http.MethodGet, "/", ""))
		if resp.StatusCode != tc.want {
			t.Fatalf("%s: %d %q, want %d", tc.viewer, resp.StatusCode, body, tc.want)
		}
	}
}
