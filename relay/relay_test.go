package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
	"github.com/porthole-dev/porthole/test/framework"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// freePort returns a TCP port free on 127.0.0.1 now, from below the
// ephemeral range: one the kernel handed out (":0") was at times taken by an
// outgoing connection (another test's flood) before the relay bound it.
func freePort(t *testing.T) uint16 {
	t.Helper()
	return uint16(framework.Port(t, "tcp"))
}

func echoServer(t *testing.T) string {
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
			go func() { io.Copy(c, c); c.(*net.TCPConn).CloseWrite(); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return nil
}

type env struct {
	relay    *relay.Server
	port     uint16
	stopRly  context.CancelFunc
	rlyDone  chan struct{}
	token    string
	relayCfg *config.Relay
}

func startRelay(t *testing.T, port uint16, token string) *env {
	rc := &config.Relay{
		Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(), Metrics: "127.0.0.1:0",
		Agents: map[string]config.RelayAgent{"home": {Token: token, Ports: config.PortRange{Lo: port, Hi: port}}},
	}
	s, err := relay.New(relay.Config{Relay: rc, Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{relay: s, port: port, stopRly: cancel, rlyDone: make(chan struct{}), token: token, relayCfg: rc}
	go func() { s.Run(ctx); close(e.rlyDone) }()
	t.Cleanup(func() { cancel(); <-e.rlyDone })
	return e
}

func startAgent(t *testing.T, addr string, token string, svcPort uint16, target string, allow []string) *tunnel.Client {
	connected := make(chan tunnel.Session, 1)
	c, err := tunnel.New(tunnel.Config{
		Address: addr, Name: "home", Token: token, Logger: logger(t),
		Services:  []tunnel.Service{{Name: "cam", Port: svcPort, Allow: allow}},
		Handler:   tunnel.ForwardTo(map[string]string{"cam": target}),
		OnConnect: func(s tunnel.Session) { connected <- s },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case s := <-connected:
		for _, r := range s.Results {
			if !r.Accepted {
				t.Logf("service refused: %s", r.Reason)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("agent did not connect: %+v", c.Status())
	}
	return c
}

func roundTrip(t *testing.T, port uint16, size int) {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, size)
	rand.Read(data)
	go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip: got %d bytes (err %v), want %d identical", len(got), err, size)
	}
}

func TestViewerThroughTunnel(t *testing.T) {
	tok := config.NewToken()
	port := freePort(t)
	e := startRelay(t, port, tok)
	startAgent(t, e.relay.Addr().String(), tok, port, echoServer(t), []string{"any"})
	roundTrip(t, port, 4<<20)
	roundTrip(t, port, 1)

	// Bytes are counted when the relay finishes a connection, which can be a
	// moment after the viewer saw EOF: wait until none is active.
	var body []byte
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp, err := http.Get("http://" + e.relay.MetricsAddr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `porthole_relay_viewer_connections_active{agent="home",service="cam"} 0`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{
		"porthole_relay_agents_connected 1",
		`porthole_relay_viewer_connections_total{agent="home",service="cam"} 2`,
		`porthole_relay_bytes_total{agent="home",direction="in",service="cam"} 4.194305e+06`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestWrongTokenRefused(t *testing.T) {
	port := freePort(t)
	e := startRelay(t, port, config.NewToken())
	failed := make(chan error, 1)
	c, _ := tunnel.New(tunnel.Config{Address: e.relay.Addr().String(), Name: "home", Token: config.NewToken(),
		Services: []tunnel.Service{{Name: "cam", Port: port, Allow: []string{"any"}}},
		Handler:  tunnel.ForwardTo(map[string]string{"cam": "127.0.0.1:1"}),
		OnRetry: func(err error, _ time.Duration) {
			select {
			case failed <- err:
			default:
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	var err error
	select {
	case err = <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("no failed attempt within 10s")
	}
	cancel()
	<-done
	if !errors.Is(err, tunnel.ErrAuth) {
		t.Fatalf("attempt failed with %v, want an authentication error", err)
	}
	if c.Status().Connected {
		t.Fatal("connected with a wrong token")
	}
	if _, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(port))); err == nil {
		t.Fatal("service port open although the agent was refused")
	}
}

// TestProbeOnlyAgentsOwnAddress: an agent can't make the relay dial arbitrary places.
func TestProbeOnlyAgentsOwnAddress(t *testing.T) {
	tok := config.NewToken()
	port := freePort(t)
	e := startRelay(t, port, tok)
	c := startAgent(t, e.relay.Addr().String(), tok, port, echoServer(t), []string{"any"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		addr string
		want string
	}{
		{"192.0.2.1:" + strconv.Itoa(int(port)), "not the agent's address"},
		{"127.0.0.1:22", "outside this agent's range"},
	} {
		r, err := c.Probe(ctx, netip.MustParseAddrPort(tc.addr), "cam")
		if err != nil {
			t.Fatal(err)
		}
		if r.OK || !strings.Contains(r.Reason, tc.want) {
			t.Errorf("probe %s: %+v, want refusal containing %q", tc.addr, r, tc.want)
		}
	}
}

// TestViewerOverTCPWhenUDPBlocked: an agent whose UDP never reaches the relay
// falls back to TLS over TCP on the same port number, and viewers are served
// through it within 5s of the agent's start.
func TestViewerOverTCPWhenUDPBlocked(t *testing.T) {
	tok := config.NewToken()
	port := freePort(t)
	e := startRelay(t, port, tok)
	if e.relay.TCPAddr().(*net.TCPAddr).Port != e.relay.Addr().(*net.UDPAddr).Port {
		t.Fatalf("TCP %s and UDP %s differ in port", e.relay.TCPAddr(), e.relay.Addr())
	}
	connected := make(chan tunnel.Session, 1)
	start := time.Now()
	c, err := tunnel.New(tunnel.Config{
		Address: e.relay.Addr().String(), Name: "home", Token: tok, Logger: logger(t),
		Services: []tunnel.Service{{Name: "cam", Port: port, Allow: []string{"any"}}},
		Handler:  tunnel.ForwardTo(map[string]string{"cam": echoServer(t)}),
		DialQUIC: func(ctx context.Context, addr string) (transport.Conn, error) {
			<-ctx.Done() // UDP blocked: nothing ever answers
			return nil, ctx.Err()
		},
		OnConnect: func(s tunnel.Session) { connected <- s },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case s := <-connected:
		if s.Transport != "tcp" {
			t.Fatalf("transport %s (%s)", s.Transport, s.TransportWhy)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("agent did not connect: %+v", c.Status())
	}
	roundTrip(t, port, 1<<20)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("first viewer served %s after the agent's start", took)
	}
	t.Logf("viewer served over TCP %s after the agent's start (%s)", time.Since(start).Round(time.Millisecond), c.Status().TransportWhy)
}
