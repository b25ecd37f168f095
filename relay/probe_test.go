package relay_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/tunnel"
)

// TestDirectListenerSharedWithRelayAddress: the agent's direct listener answers the
// relay's probe, and viewers whose address is the relay's (a player on the VPS)
// still reach the camera through it, whether they speak first or wait for the
// server. The agent's QUIC socket is on 127.0.0.2 so the relay observes that as its
// public address, while the relay itself (and so its probes) is on 127.0.0.1.
func TestDirectListenerSharedWithRelayAddress(t *testing.T) {
	tok := config.NewToken()
	port := freePort(t)
	e := startRelay(t, port, tok)
	pc, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	any, _ := gateway.ParsePolicy([]string{"any"})
	connected := make(chan struct{}, 1)
	c, err := tunnel.New(tunnel.Config{
		Address: e.relay.Addr().String(), Name: "home", Token: tok, Logger: logger(t), DialQUIC: tunnel.DialQUIC(pc),
		Services:  []tunnel.Service{{Name: "cam", Port: port, Allow: []string{"any"}}},
		Handler:   tunnel.ForwardTo(map[string]string{"cam": echoServer(t)}),
		OnConnect: func(tunnel.Session) { connected <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pc.Close() })
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not connect")
	}

	direct := func(target string) string {
		l, err := gateway.Listen(gateway.Config{Service: "cam", Addr: net.JoinHostPort("127.0.0.2", strconv.Itoa(int(port))),
			Policy: any, Dial: func(ctx context.Context, _ netip.AddrPort) (gateway.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", target)
				if err != nil {
					return nil, err
				}
				return c.(*net.TCPConn), nil
			}, Intercept: c.AnswerProbe, Logger: logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		lctx, stop := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() { l.Serve(lctx); close(served) }()
		t.Cleanup(func() {
			stop()
			<-served
			sctx, c := context.WithTimeout(context.Background(), time.Second)
			defer c()
			l.Shutdown(sctx)
		})
		return l.Addr().String()
	}
	echoAddr := direct(echoServer(t))

	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	r, err := c.Probe(pctx, netip.MustParseAddrPort(echoAddr), "cam")
	if err != nil || !r.OK {
		t.Fatalf("probe of the direct listener: %+v, %v", r, err)
	}

	// A viewer at the relay's address that speaks first.
	v, err := net.Dial("tcp", echoAddr)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.1" {
		t.Fatalf("viewer dialed from %s, not the relay's address; the test proves nothing", got)
	}
	v.Write([]byte("DESCRIBE rtsp://cam/stream1 RTSP/1.0\r\n\r\n"))
	v.(*net.TCPConn).CloseWrite()
	v.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(v)
	v.Close()
	if err != nil || string(got) != "DESCRIBE rtsp://cam/stream1 RTSP/1.0\r\n\r\n" {
		t.Fatalf("viewer at the relay's address got %q, %v", got, err)
	}

	// One that waits for the server to speak first (the relay's port is taken by
	// the first listener's service, so this one gets a fresh port on 127.0.0.2).
	greeter, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer greeter.Close()
	go func() {
		for {
			c, err := greeter.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 camera ready\r\n"))
			c.Close()
		}
	}()
	port = freePort(t)
	greetAddr := direct(greeter.Addr().String())
	v, err = net.Dial("tcp", greetAddr)
	if err != nil {
		t.Fatal(err)
	}
	v.SetReadDeadline(time.Now().Add(tunnel.ProbeSniff + 5*time.Second))
	got, err = io.ReadAll(v)
	v.Close()
	if err != nil || string(got) != "220 camera ready\r\n" {
		t.Fatalf("server-first viewer at the relay's address got %q, %v", got, err)
	}
}
