package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/relay"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/transporttest"
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// startTestRelay runs a relay for agent "home" on ports; mod adjusts its config.
func startTestRelay(t *testing.T, token string, ports config.PortRange, mod func(*config.Relay)) *relay.Server {
	t.Helper()
	rc := &config.Relay{
		Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(),
		Agents: map[string]config.RelayAgent{"home": {Token: token, Ports: ports}},
	}
	if mod != nil {
		mod(rc)
	}
	rs, err := relay.New(relay.Config{Relay: rc, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rs.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return rs
}

// startTestAgent runs a relay-only agent at relayAddr and waits until the
// relay accepted all its services.
func startTestAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	cfg.Agent.Name, cfg.Agent.StateDir = "home", t.TempDir()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the relay to accept every service", func() bool {
		st := a.Status()
		for _, s := range st.Services {
			if s.Relay != "accepted" {
				return false
			}
		}
		return st.Tunnel.Connected
	})
	return a
}

// endless is a camera that sends an endless stream to every connection.
func endless(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
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
	return l.Addr().String()
}

// TestRelayedBytesInStatus: a relayed viewer's bytes show in the agent's
// per-service status while its connection runs. Before, the agent spliced
// tunnel streams itself and counted nothing: the per-service figures covered
// direct viewers only.
func TestRelayedBytesInStatus(t *testing.T) {
	token := config.NewToken()
	port := freePort(t)
	rs := startTestRelay(t, token, config.PortRange{Lo: port, Hi: port}, nil)
	a := startTestAgent(t, Config{Agent: &config.Agent{
		Relay:    &config.AgentRelay{Address: rs.Addr().String(), Token: token},
		Services: []config.Service{{Name: "cam", Target: endless(t), Port: port, AllowAny: true}},
	}})

	v, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	io.WriteString(v, "hello camera")
	stop := make(chan struct{})
	read := make(chan struct{})
	go func() { // keep reading, so that the camera keeps sending
		defer close(read)
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := v.Read(buf); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); v.Close(); <-read }()

	var s ServiceStatus
	waitFor(t, "the relayed viewer's bytes in the status", func() bool {
		s = a.Status().Services[0]
		return s.BytesOut > 4<<20 && s.BytesIn == int64(len("hello camera"))
	})
	if s.Viewers != 1 || s.Relayed.Viewers != 1 || s.Relayed.BytesOut != s.BytesOut || s.Direct != (PathStats{}) || s.Connections != 1 {
		t.Errorf("service status %+v", s)
	}
	var out strings.Builder
	PrintStatus(&out, a.Status(), time.Now())
	if !strings.Contains(out.String(), "viewers: 1 now, 1 connections, 0 refused;") || strings.Contains(out.String(), "0 B to viewers") {
		t.Errorf("status output:\n%s", out.String())
	}
	bodies := adminBodies(t, a.AdminConfig())
	for _, want := range []string{`porthole_agent_viewer_connections_active_by_path{path="relayed",service="cam"} 1`,
		`porthole_agent_viewer_connections_active{service="cam"} 1`} {
		if !strings.Contains(bodies["/metrics"], want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if !strings.Contains(bodies["/"], "1 now (1 relayed, 0 direct)") {
		t.Errorf("page lacks the relayed viewer:\n%s", bodies["/"])
	}
}

// holdOpen is a camera that accepts and keeps every connection open, sending
// nothing: what an idle viewer holds at the far end.
func holdOpen(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

// smallStreamBudget dials QUIC like the agent does, with a budget of n viewer
// streams instead of 4096: the finding's flood, scaled down.
func smallStreamBudget(n int64) tunnel.DialFunc {
	return func(ctx context.Context, addr string) (transport.Conn, error) {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, err
		}
		qc := quictransport.DefaultClientConfig()
		qc.MaxIncomingStreams = n
		return quictransport.Dial(ctx, nil, ua, tunnel.ClientTLS(), qc)
	}
}

// TestRelayedIdleFloodSparesOtherService is the finding "4200 idle connections
// from one address took all of an agent's streams: a viewer of a different
// service got a reset", through a real relay and agent, scaled to a budget of
// 256 tunnel streams and a flood of 500 idle viewers on service A. The relay
// runs without limits of its own (as a relay configured with limits: -1, or an
// older one), so only the agent's limits stand between the flood and the
// stream budget: from one address the per-source cap, from many the cap per
// service. A viewer of service B is served throughout. Before, the agent
// served every relayed stream without limits and the flood took all 256.
func TestRelayedIdleFloodSparesOtherService(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sources int
	}{{"one address", 1}, {"many addresses", 50}} {
		t.Run(tc.name, func(t *testing.T) {
			token := config.NewToken()
			pa, pb := freePort(t), freePort(t)
			rs := startTestRelay(t, token, config.PortRange{Lo: min(pa, pb), Hi: max(pa, pb)}, func(rc *config.Relay) {
				rc.Limits = config.Limits{MaxConns: -1, MaxConnsPerSource: -1, MaxPendingPerSource: -1, MaxConnsPerService: -1}
			})
			a := startTestAgent(t, Config{
				Agent: &config.Agent{
					Relay: &config.AgentRelay{Address: rs.Addr().String(), Token: token, Transport: tunnel.TransportQUIC},
					Services: []config.Service{
						{Name: "a", Target: holdOpen(t), Port: pa, AllowAny: true},
						{Name: "b", Target: camera(t), Port: pb, AllowAny: true},
					},
					// A quarter of the (scaled) stream budget per service, as
					// the defaults give 1024 of 4096.
					Limits: config.Limits{MaxConnsPerService: 64},
				},
				DialRelayQUIC: smallStreamBudget(256),
			})

			var idle []net.Conn
			defer func() {
				for _, c := range idle {
					c.Close()
				}
			}()
			for i := range 500 {
				src := net.IPv4(127, 0, 1, byte(2+i%tc.sources))
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
				c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(pa)))
				if err != nil {
					continue // a refusal may beat connect's return
				}
				idle = append(idle, c)
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, 1)}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(pb)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Served at once; 5 s leaves room for a loaded CI machine. Before,
			// the viewer waited for a stream until the relay gave up (10 s).
			start := time.Now()
			c.SetDeadline(start.Add(5 * time.Second))
			msg := []byte("still served")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
				t.Fatalf("viewer of service b not served during the flood on a: %v", err)
			}
			t.Logf("%d of 500 flood viewers connected; viewer of b served in %s", len(idle), time.Since(start).Round(time.Millisecond))
			// The agent's limits did it: a holds at most its cap, and the
			// rest were refused by a limit.
			if s := a.Status().Services[0]; s.Viewers > 64 || s.Refused == 0 || s.Relayed.Refused != s.Refused {
				t.Errorf("service a during the flood: %+v", s)
			}
		})
	}
}

// TestRelayedViewerDeniedIsReset: a stream for a viewer the service's allow
// rule refuses is aborted with proto.StreamRefused (so the relay resets the
// viewer; a clean end would look like the end of the video), the camera is not
// dialed, and the refusal counts in the service's status. The relay checks the
// same rule, so a relay of our own (the tunnel's server half) sends the stream.
// Before, the agent aborted the stream but counted nothing.
func TestRelayedViewerDeniedIsReset(t *testing.T) {
	token := config.NewToken()
	sessions := make(chan *tunnel.ServerSession, 4)
	srv, err := tunnel.NewServer(tunnel.ServerConfig{
		Token:     func(name string) ([]byte, bool) { return []byte(token), name == "home" },
		OnConnect: func(ss *tunnel.ServerSession) error { sessions <- ss; return nil },
		Register: func(_ *tunnel.ServerSession, svcs []proto.Service) []proto.ServiceResult {
			var res []proto.ServiceResult
			for _, s := range svcs {
				res = append(res, proto.ServiceResult{Name: s.Name, Port: s.Port, Accepted: true})
			}
			return res
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, stls := transporttest.TLSConfigs(t)
	stls.NextProtos = []string{proto.ALPN}
	ln, err := quictransport.Listen(quictransport.ListenConfig{Addr: "127.0.0.1:0", TLSConfig: stls})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(served) }()
	defer func() { cancel(); ln.Close(); <-served }()

	a := startTestAgent(t, Config{Agent: &config.Agent{
		Relay:    &config.AgentRelay{Address: ln.Addr().String(), Token: token, Transport: tunnel.TransportQUIC},
		Services: []config.Service{{Name: "cam", Target: camera(t), Port: 10000, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}},
	}})
	var ss *tunnel.ServerSession
	select {
	case ss = <-sessions:
	case <-time.After(10 * time.Second):
		t.Fatal("no session")
	}

	open := func(viewer string) transport.Stream {
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		defer ocancel()
		st, err := ss.OpenStream(octx, proto.StreamHeader{Kind: proto.StreamViewer, Service: "cam", Viewer: viewer})
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(5 * time.Second))
		return st
	}

	denied := open("127.0.0.3:5555")
	defer denied.Close()
	denied.Write([]byte("let me in"))
	_, err = io.ReadAll(denied)
	var se *transport.StreamError
	if !errors.As(err, &se) || se.Code != uint64(proto.StreamRefused) {
		t.Fatalf("denied viewer's stream ended with %v, want an abort with StreamRefused (%d)", err, proto.StreamRefused)
	}
	if s := a.Status().Services[0]; s.Denied != 1 || s.Relayed.Denied != 1 || !s.Camera.Last.IsZero() {
		t.Errorf("after the denied viewer: %+v", s)
	}

	// The allowed viewer is served, with half-close: the echo ends cleanly.
	ok := open("127.0.0.2:5555")
	defer ok.Close()
	msg := "hello camera"
	ok.Write([]byte(msg))
	ok.CloseWrite()
	got, err := io.ReadAll(ok)
	if err != nil || string(got) != msg {
		t.Fatalf("allowed viewer got %q, %v", got, err)
	}
	waitFor(t, "the allowed viewer counted", func() bool {
		s := a.Status().Services[0]
		return s.Connections == 2 && s.BytesIn == int64(len(msg)) && s.BytesOut == int64(len(msg)) && s.Viewers == 0
	})
}

// TestStreamConn: the adapter gives the gateway what a socket would: the
// viewer's address, a refusal that is an abort with StreamRefused, and the
// stream's own Close and CloseWrite.
func TestStreamConn(t *testing.T) {
	st := &fakeStream{}
	c := newStreamConn(st, netip.MustParseAddrPort("127.0.0.9:4242"))
	if c.RemoteAddr().String() != "127.0.0.9:4242" || c.LocalAddr() == nil {
		t.Errorf("addresses %v %v", c.RemoteAddr(), c.LocalAddr())
	}
	var nc net.Conn = c
	if _, ok := nc.(gateway.Conn); !ok {
		t.Error("not a gateway.Conn: half-close would be lost")
	}
	c.Refuse()
	c.CloseWrite()
	c.Close()
	if fmt.Sprint(st.calls) != fmt.Sprintf("[abort %d closewrite close]", proto.StreamRefused) {
		t.Errorf("calls %v", st.calls)
	}
}

type fakeStream struct {
	transport.Stream
	calls []string
}

func (s *fakeStream) Abort(code uint64) { s.calls = append(s.calls, fmt.Sprintf("abort %d", code)) }
func (s *fakeStream) CloseWrite() error { s.calls = append(s.calls, "closewrite"); return nil }
func (s *fakeStream) Close() error      { s.calls = append(s.calls, "close"); return nil }

// TestPrintStatusPaths: status shows refusals by limits and, when both paths
// have served viewers, the split by path.
func TestPrintStatusPaths(t *testing.T) {
	s := ServiceStatus{Name: "cam", Port: 10554, Target: "192.168.1.20:554",
		Relayed: PathStats{Viewers: 2, Connections: 5, Refused: 3, BytesOut: 2_000_000},
		Direct:  PathStats{Viewers: 1, Connections: 1, Denied: 1, BytesOut: 1_000_000}}
	s.Viewers, s.Connections, s.Denied, s.Refused, s.BytesOut = 3, 6, 1, 3, 3_000_000
	var out strings.Builder
	PrintStatus(&out, Status{Name: "home", Services: []ServiceStatus{s}}, time.Now())
	for _, want := range []string{
		"viewers: 3 now, 6 connections, 4 refused (3 by limits); 3.0 MB to viewers",
		"relayed 2 now, 2.0 MB to viewers; direct 1 now, 1.0 MB to viewers",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStreamConnNoAllocs: the adapter adds no allocation to the splice's
// buffered copy (stream to camera and back).
func TestStreamConnNoAllocs(t *testing.T) {
	var c gateway.Conn = newStreamConn(&fakeStream{}, netip.MustParseAddrPort("127.0.0.9:4242"))
	buf := make([]byte, 64<<10)
	if n := testing.AllocsPerRun(100, func() { c.Read(buf); c.Write(buf) }); n != 0 {
		t.Errorf("%v allocations per Read+Write", n)
	}
}

func (s *fakeStream) Read(b []byte) (int, error)  { return len(b), nil }
func (s *fakeStream) Write(b []byte) (int, error) { return len(b), nil }
