package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
	"github.com/porthole-dev/porthole/test/framework"
)

// adminBodies fetches every admin endpoint through the handler and returns
// the bodies by path.
func adminBodies(t *testing.T, cfg admin.Config) map[string]string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	s, err := admin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := map[string]string{}
	for _, path := range []string{"/", "/status.json", "/metrics", "/healthz"} {
		r := httptest.NewRequest("GET", path, nil)
		r.Host = "127.0.0.1:7480"
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		if w.Code != 200 {
			t.Errorf("GET %s: %d %s", path, w.Code, w.Body)
		}
		out[path] = w.Body.String()
	}
	return out
}

func noSecrets(t *testing.T, bodies map[string]string, secrets ...string) {
	t.Helper()
	for path, body := range bodies {
		for _, s := range secrets {
			if s != "" && strings.Contains(body, s) {
				t.Errorf("%s shows the secret %q", path, s)
			}
		}
	}
}

// freePort returns a TCP port free on 127.0.0.1 now, from below the
// ephemeral range: one the kernel handed out (":0") was at times taken by an
// outgoing connection (another test's flood) before the relay bound it.
func freePort(t *testing.T) uint16 {
	t.Helper()
	return uint16(framework.Port(t, "tcp"))
}

// camera is a TCP echo server standing in for a camera on the LAN.
func camera(t *testing.T) string {
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
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// TestAdminRelayedAgent runs a relay and a relay-only agent in process and
// checks what the admin endpoint shows per service: the relay's answer, the
// last camera connection, viewers and bytes; and that no token ever shows.
func TestAdminRelayedAgent(t *testing.T) {
	token := config.NewToken()
	okPort, downPort := freePort(t), freePort(t)
	ports := config.PortRange{Lo: min(okPort, downPort), Hi: max(okPort, downPort)}
	outsidePort := ports.Lo - 1 // the relay refuses it for its range, before binding anything
	rc := &config.Relay{
		Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(), Admin: "127.0.0.1:0",
		Agents: map[string]config.RelayAgent{"home": {Token: token, Ports: ports}},
	}
	rs, err := relay.New(relay.Config{Relay: rc})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdone := make(chan struct{})
	go func() { rs.Run(ctx); close(rdone) }()
	defer func() { cancel(); <-rdone }()

	closed := freePort(t) // nothing listens there: a camera that is off
	ac := &config.Agent{
		Name: "home", StateDir: t.TempDir(),
		Relay: &config.AgentRelay{Address: rs.Addr().String(), Token: token},
		Services: []config.Service{
			{Name: "frontdoor", Target: camera(t), Port: okPort, AllowAny: true},
			{Name: "garage", Target: "127.0.0.1:" + strconv.Itoa(int(closed)), Port: downPort, AllowAny: true},
			{Name: "shed", Target: camera(t), Port: outsidePort, AllowAny: true},
		},
	}
	a, err := New(Config{Agent: ac, Logger: slog.New(slog.DiscardHandler), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	adone := make(chan struct{})
	go func() { a.Run(ctx); close(adone) }()
	defer func() { cancel(); <-adone }()
	waitFor(t, "the tunnel and a saved pass", func() bool { st := a.Status(); return st.Tunnel.Connected && !st.Updated.IsZero() })

	// One viewer through the relay to frontdoor, held open; one to garage,
	// whose camera is off.
	v, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(okPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	msg := []byte("hello camera")
	v.Write(msg)
	if _, err := io.ReadFull(v, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	if g, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(downPort))); err == nil {
		g.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, g) // the relay resets it once the agent can't reach the camera
		g.Close()
	}
	// The relay resets the garage viewer as soon as the agent aborts its
	// stream; the agent counts the stream closed a moment later.
	waitFor(t, "the garage camera failure and its stream closed", func() bool {
		st := a.Status()
		return st.Services[1].Camera.Error != "" && st.Tunnel.Streams == 1
	})

	st := a.Status()
	if st.Tunnel.Transport != "quic" || st.Tunnel.Relay != rs.Addr().String() || st.Version != "test" {
		t.Errorf("tunnel %+v version %q", st.Tunnel, st.Version)
	}
	fd, garage, shed := st.Services[0], st.Services[1], st.Services[2]
	if fd.Relay != "accepted" || !fd.Camera.OK || fd.Camera.Last.IsZero() {
		t.Errorf("frontdoor: %+v", fd)
	}
	if garage.Relay != "accepted" || garage.Camera.OK || !strings.Contains(garage.Camera.Error, "refused") {
		t.Errorf("garage: %+v", garage)
	}
	if shed.Relay != "refused" || shed.RelayReason == "" || !shed.Camera.Last.IsZero() {
		t.Errorf("shed: %+v", shed)
	}

	bodies := adminBodies(t, a.AdminConfig())
	noSecrets(t, bodies, token)
	var got Status
	if err := json.Unmarshal([]byte(bodies["/status.json"]), &got); err != nil || got.Name != "home" || len(got.Services) != 3 {
		t.Fatalf("status.json: %v\n%s", err, bodies["/status.json"])
	}
	for _, want := range []string{
		"porthole_agent_tunnel_up 1",
		`porthole_agent_tunnel_transport{transport="quic"} 1`,
		`porthole_agent_service_relay_accepted{service="frontdoor"} 1`,
		`porthole_agent_service_relay_accepted{service="shed"} 0`,
		`porthole_agent_camera_up{service="frontdoor"} 1`,
		`porthole_agent_camera_up{service="garage"} 0`,
		`porthole_agent_viewer_connections_active{service="frontdoor"}`,
		`porthole_agent_bytes_total{direction="out",service="frontdoor"}`,
		"porthole_agent_services 3",
		"porthole_agent_tunnel_reconnects_total 0",
		"porthole_agent_tunnel_streams_active 1",
		`porthole_agent_path{path="unknown"} 1`,
	} {
		if !strings.Contains(bodies["/metrics"], want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, want := range []string{"porthole-agent home", "frontdoor (port", "accepted", "refused", "Tunnel to"} {
		if !strings.Contains(bodies["/"], want) {
			t.Errorf("page lacks %q", want)
		}
	}

	// The relay's admin endpoint: the same agent from the other side, no token either.
	rb := map[string]string{}
	for _, path := range []string{"/", "/status.json", "/metrics", "/healthz"} {
		resp, err := http.Get("http://" + rs.AdminAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("relay %s: %s", path, resp.Status)
		}
		rb[path] = string(b)
	}
	noSecrets(t, rb, token)
	var rst relay.Status
	if err := json.Unmarshal([]byte(rb["/status.json"]), &rst); err != nil || len(rst.Agents) != 1 || !rst.Agents[0].Connected || len(rst.Agents[0].Services) != 2 {
		t.Errorf("relay status.json: %v\n%s", err, rb["/status.json"])
	}
	// The relay says which transport each agent's tunnel uses.
	if len(rst.Agents) == 1 && rst.Agents[0].Transport != "quic" {
		t.Errorf("relay status: transport %q, want quic", rst.Agents[0].Transport)
	}
	if !strings.Contains(rb["/"], "over quic") {
		t.Errorf("relay page lacks the transport:\n%s", rb["/"])
	}
	if !strings.Contains(rb["/metrics"], `porthole_relay_viewer_connections_active{agent="home",service="frontdoor"} 1`) {
		t.Errorf("relay metrics:\n%s", rb["/metrics"])
	}

	var printed strings.Builder
	PrintStatus(&printed, st, time.Now())
	for _, want := range []string{"tunnel:   " + rs.Addr().String() + ": up", "over quic", "frontdoor: public port", "relay:   accepted",
		"camera:  connected", "1 relayed viewer streams open", "garage", "camera:  FAILED", "shed", "relay:   refused: "} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, printed.String())
		}
	}
	if strings.Contains(printed.String(), token) {
		t.Error("status output shows the token")
	}
}

// TestAdminDDNSAgent checks the DNS parts, the health check and that the DNS
// provider's API token never shows.
func TestAdminDDNSAgent(t *testing.T) {
	h := startAgent(t, harnessOpts{addr: netip.MustParseAddr("203.0.113.10")})
	if r := h.pass(); !r.ok {
		t.Fatalf("first pass: %+v", r)
	}
	st := h.a.Status()
	if st.DNSUpdates != 1 || st.DNS == "" || st.Path != "home" || st.Stale(time.Now()) != nil || h.a.Health() != nil {
		t.Errorf("status after the first write: %+v", st)
	}
	bodies := adminBodies(t, h.a.AdminConfig())
	noSecrets(t, bodies, cfToken)
	for _, want := range []string{"porthole_agent_dns_updates_total 1", "porthole_agent_dns_error 0", `porthole_agent_path{path="home"} 1`, "porthole_agent_last_pass_timestamp_seconds"} {
		if !strings.Contains(bodies["/metrics"], want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(bodies["/metrics"], "porthole_agent_tunnel_up") {
		t.Error("tunnel metrics without a relay")
	}
	if r := h.cycle(); !r.ok {
		t.Fatalf("second pass: %+v", r)
	}
	if n := h.a.Status().DNSUpdates; n != 1 {
		t.Errorf("an unchanged pass counted as an update: %d", n)
	}
}

func TestStale(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		st    Status
		stale bool
	}{
		{"fresh", Status{Updated: now.Add(-time.Minute), StaleAfterSeconds: 600}, false},
		{"old", Status{Updated: now.Add(-11 * time.Minute), StaleAfterSeconds: 600}, true},
		{"never passed, just started", Status{Started: now.Add(-time.Minute), StaleAfterSeconds: 600}, false},
		{"never passed, started long ago", Status{Started: now.Add(-time.Hour), StaleAfterSeconds: 600}, true},
		{"no loop to watch", Status{Updated: now.Add(-time.Hour)}, false},
		{"a -once run", Status{Updated: now.Add(-time.Hour), StaleAfterSeconds: 600, Once: true}, false},
	} {
		err := tc.st.Stale(now)
		if (err != nil) != tc.stale {
			t.Errorf("%s: Stale = %v", tc.name, err)
		}
	}
}

func TestCameraLog(t *testing.T) {
	c := newCameraLog()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c.record("192.168.1.20:554", nil, t0)
	c.record("192.168.1.20:554", &net.OpError{Op: "dial", Err: io.ErrUnexpectedEOF}, t0.Add(time.Minute))
	got := c.get("192.168.1.20:554")
	if got.OK || got.Error == "" || !got.Last.Equal(t0.Add(time.Minute)) || !got.LastOK.Equal(t0) {
		t.Errorf("after a failure: %+v", got)
	}
	if line := cameraLine(got, t0.Add(2*time.Minute)); !strings.Contains(line, "FAILED 1m0s ago") || !strings.Contains(line, "last success 2m0s ago") {
		t.Errorf("cameraLine: %q", line)
	}
	if got := c.get("192.168.1.21:554"); !got.Last.IsZero() {
		t.Errorf("untried camera: %+v", got)
	}
}
