package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
)

func TestIsLocalAddr(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1": true, "127.0.0.2": true, "::1": true, "::ffff:127.0.0.1": true, "192.0.2.1": false, "2001:db8::1": false} {
		if got := isLocalAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("isLocalAddr(%s) = %v", addr, got)
		}
	}
	for addr, want := range map[string]bool{"127.0.0.1:7443": true, "[::1]:7443": true, "localhost:7443": true, "192.0.2.1:7443": false, "garbage": false} {
		if got := relayIsLocal(context.Background(), addr); got != want {
			t.Errorf("relayIsLocal(%s) = %v", addr, got)
		}
	}
}

// oneBoxAgent is an agent with direct listeners on 127.0.0.1 and a relay at
// relayAddr; its NAT-PMP goes to 127.0.0.1 (nothing answers).
func oneBoxAgent(t *testing.T, relayAddr, token string, port uint16, logs *syncBuffer) *Agent {
	t.Helper()
	ac := &config.Agent{
		Name: "home", StateDir: t.TempDir(),
		Relay:    &config.AgentRelay{Address: relayAddr, Token: token},
		Services: []config.Service{{Name: "frontdoor", Target: camera(t), Port: port, AllowAny: true}},
		Direct: config.Direct{Enabled: true, Listen: "127.0.0.1", Gateway: netip.MustParseAddr("127.0.0.1"),
			Protocols: []string{"natpmp"}},
	}
	a, err := New(Config{Agent: ac, Logger: slog.New(slog.NewTextHandler(logs, nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestOneBoxRelayFirst: the relay on this machine already holds the service
// port (a listener stands in for it): the agent's start fails with what to do,
// not only "address already in use".
func TestOneBoxRelayFirst(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := uint16(held.Addr().(*net.TCPAddr).Port)
	var logs syncBuffer
	a := oneBoxAgent(t, "127.0.0.1:"+strconv.Itoa(int(freePort(t))), config.NewToken(), port, &logs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "most likely by porthole-relay on this machine") ||
		!strings.Contains(err.Error(), "direct: {enabled: false}") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run: %v", err)
	}
}

// TestOneBoxAgentFirst: the agent's direct listener holds the port when the
// relay on this machine starts; the relay refuses the service, and the agent
// says once why and what to do.
func TestOneBoxAgentFirst(t *testing.T) {
	token := config.NewToken()
	port := freePort(t)
	relayPort := freePort(t)
	relayAddr := "127.0.0.1:" + strconv.Itoa(int(relayPort))
	var logs syncBuffer
	a := oneBoxAgent(t, relayAddr, token, port, &logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the direct listener", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(port)))
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	rc := &config.Relay{
		Listen: relayAddr, ViewerBind: "127.0.0.1", StateDir: t.TempDir(), Admin: "127.0.0.1:0",
		Agents: map[string]config.RelayAgent{"home": {Token: token, Ports: config.PortRange{Lo: port, Hi: port}}},
	}
	rs, err := relay.New(relay.Config{Relay: rc})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { rs.Run(rctx); close(rdone) }()
	defer func() { rcancel(); <-rdone }()

	waitFor(t, "the one-box hint", func() bool {
		return strings.Contains(logs.String(), "this agent's direct listener holds it")
	})
	if !strings.Contains(logs.String(), "direct: {enabled: false}") {
		t.Errorf("no fix in %s", logs.String())
	}
	if want := "service=frontdoor addr=127.0.0.1:" + strconv.Itoa(int(port)); !strings.Contains(logs.String(), want) {
		t.Errorf("the start logged no viewer address %q", want)
	}
	a.oneBoxRefusals(a.tun.Status().Session) // a reconnect: said once is enough
	if n := strings.Count(logs.String(), "this agent's direct listener holds it"); n != 1 {
		t.Errorf("hint logged %d times", n)
	}
	if s := a.Status().Services[0]; s.Relay != "refused" || !strings.Contains(s.RelayReason, "address already in use") {
		t.Errorf("status says relay %q: %q", s.Relay, s.RelayReason)
	}
}

// TestViewerURLsAtStart: the start logs one line per service with what a
// viewer opens (ServiceStatus.URL's form).
func TestViewerURLsAtStart(t *testing.T) {
	var logs syncBuffer
	ac := &config.Agent{
		Name: "home", StateDir: t.TempDir(),
		Relay: &config.AgentRelay{Address: "relay.example.com:7443", Token: config.NewToken()},
		Services: []config.Service{
			{Name: "web", Kind: config.KindHTTP, TLS: true, Target: camera(t), Port: 10443, AllowAny: true},
			{Name: "frontdoor", Kind: config.KindRTSP, TLS: true, Path: "/live", Target: camera(t), Port: 10322, AllowAny: true},
			{Name: "onvif", Target: camera(t), Port: 10080, AllowAny: true},
		},
		Viewers: map[string]config.Viewer{},
	}
	a, err := New(Config{Agent: ac, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	a.logViewerURLs()
	for _, want := range []string{
		"service=web url=https://relay.example.com:10443/",
		"service=frontdoor url=rtsps://relay.example.com:10322/frontdoor",
		"service=onvif addr=relay.example.com:10080",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in\n%s", want, logs.String())
		}
	}
}
