package doctor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
	"github.com/porthole-dev/porthole/test/fakerouter"
	"github.com/porthole-dev/porthole/test/framework"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// startRelay runs a relay in process that knows agent home by token.
func startRelay(t *testing.T, token string) string {
	t.Helper()
	rc := &config.Relay{
		Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(),
		Agents: map[string]config.RelayAgent{"home": {Token: token, Ports: config.PortRange{Lo: 40000, Hi: 40001}}},
	}
	rs, err := relay.New(relay.Config{Relay: rc})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rs.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return rs.Addr().String()
}

// startCamera runs a simulated camera (HTTP behind a digest login, and RTSP).
func startCamera(t *testing.T) *framework.Camera {
	return framework.StartCamera(t, camsim.Config{Auth: "digest", Username: "admin", Password: "cam-pass"})
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string { return framework.Addr(framework.Port(t, "tcp")) }

// clockServer answers with a Date header off by skew.
func clockServer(t *testing.T, skew time.Duration) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/directory"
}

func routerConfig(t *testing.T) portmap.Config {
	r, err := fakerouter.New(fakerouter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return portmap.Config{
		Gateway:     func() (netip.Addr, error) { return loopback, nil },
		LocalAddr:   func(netip.Addr) (netip.Addr, string, error) { return loopback, "eth0", nil },
		Timeout:     500 * time.Millisecond,
		NATPMPPort:  r.PMPAddr().Port(),
		SSDPAddr:    r.SSDPAddr(),
		SSDPPort:    r.SSDPAddr().Port(),
		InContainer: func() bool { return false },
	}
}

func stateDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "links.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func lines(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}

// find returns the result of check (a prefix).
func find(t *testing.T, rs []Result, check string) Result {
	t.Helper()
	for _, r := range rs {
		if strings.HasPrefix(r.Check, check) {
			return r
		}
	}
	t.Fatalf("no %q line in\n%s", check, lines(rs))
	return Result{}
}

func want(t *testing.T, rs []Result, check string, o Outcome, piece string) {
	t.Helper()
	r := find(t, rs, check)
	if r.Outcome != o || !strings.Contains(r.String(), piece) {
		t.Errorf("%s: got %q, want %s with %q", check, r.String(), o, piece)
	}
}

func lookup(addrs ...string) func(context.Context, string) ([]netip.Addr, error) {
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host != "home.example.com" {
			return nil, errors.New("no such host")
		}
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
}

// Everything right: no problem, and each line says what it saw.
func TestDoctorAllGood(t *testing.T) {
	token := config.NewToken()
	cam := startCamera(t)
	ac := &config.Agent{
		Name: "home", StateDir: stateDir(t),
		Relay: &config.AgentRelay{Address: startRelay(t, token), Token: token},
		Services: []config.Service{
			{Name: "web", Kind: config.KindHTTP, Target: cam.HTTPAddr, Port: 40000, AllowAny: true,
				CameraLogin: &config.CameraLogin{Username: "admin", Password: "cam-pass"}, Snapshot: "/snapshot.jpg"},
			{Name: "stream", Kind: config.KindRTSP, Target: cam.RTSPAddr, Port: 40001, AllowAny: true, Path: "/stream1",
				CameraLogin: &config.CameraLogin{Username: "admin", Password: "any"}},
		},
		Direct: config.Direct{Enabled: true},
		DDNS:   &config.DDNS{Hostname: "home.example.com", TTL: time.Minute},
		TLS:    &config.TLS{ACMECA: clockServer(t, 0)},
	}
	rs := Run(context.Background(), Config{Agent: ac, Portmap: routerConfig(t), LookupIP: lookup("203.0.113.2"),
		PublicIP: func(context.Context) (netip.Addr, error) { return netip.MustParseAddr("203.0.113.2"), nil }})
	if Failed(rs) {
		t.Errorf("problems:\n%s", lines(rs))
	}
	want(t, rs, "relay UDP", OK, `the relay accepts the token of agent "home"`)
	want(t, rs, "relay TCP", OK, "TLS handshake over TCP")
	want(t, rs, "clock", OK, "within")
	want(t, rs, "state_dir", OK, "0700")
	want(t, rs, "camera web", OK, "accepts camera_login (status 200)")
	want(t, rs, "camera stream", OK, "accepts camera_login (status 200)")
	want(t, rs, "router", OK, "answers")
	want(t, rs, "DNS home.example.com", OK, "answers 203.0.113.2, as the public address detected now")
	t.Logf("\n%s", lines(rs))
}

// Everything wrong: each line says so, with the fix.
func TestDoctorProblems(t *testing.T) {
	dir := stateDir(t)
	os.WriteFile(filepath.Join(dir, "audit.log"), nil, 0o644)
	ac := &config.Agent{
		Name: "home", StateDir: dir,
		Relay: &config.AgentRelay{Address: startRelay(t, config.NewToken()), Token: config.NewToken()},
		Services: []config.Service{
			{Name: "web", Kind: config.KindHTTP, Target: startCamera(t).HTTPAddr, Port: 40000, AllowAny: true,
				CameraLogin: &config.CameraLogin{Username: "admin", Password: "Wr0ngCamPass"}},
			{Name: "garage", Target: deadAddr(t), Port: 40001, AllowAny: true},
		},
		Direct: config.Direct{Enabled: true},
		DDNS:   &config.DDNS{Hostname: "home.example.com", TTL: time.Minute},
		TLS:    &config.TLS{ACMECA: clockServer(t, -5*time.Minute)},
	}
	pc := routerConfig(t)
	pc.NATPMPPort = uint16(mustPort(t, deadAddr(t))) // nobody answers
	pc.SSDPPort, pc.SSDPAddr = pc.NATPMPPort, netip.AddrPortFrom(loopback, pc.NATPMPPort)
	pc.Timeout = 100 * time.Millisecond
	rs := Run(context.Background(), Config{Agent: ac, Portmap: pc, LookupIP: lookup("198.51.100.7"), Timeout: 2 * time.Second,
		Running:  func(context.Context) (AgentView, error) { return AgentView{}, errors.New("not running") },
		PublicIP: func(context.Context) (netip.Addr, error) { return netip.MustParseAddr("203.0.113.2"), nil }})
	if !Failed(rs) {
		t.Fatalf("no problem found:\n%s", lines(rs))
	}
	want(t, rs, "relay UDP", Problem, "does not accept the token")
	want(t, rs, "clock", Problem, "this clock is 5m")
	want(t, rs, "state_dir", Problem, "audit.log (0644)")
	want(t, rs, "camera web", Problem, "refuses camera_login")
	want(t, rs, "camera garage", Problem, "not reachable")
	want(t, rs, "router", Problem, "fix: turn on UPnP")
	want(t, rs, "DNS home.example.com", Problem, "answers 198.51.100.7, not the public address detected now")
	for _, r := range rs {
		if r.Outcome == Problem && r.Fix == "" {
			t.Errorf("a problem without a fix: %s", r)
		}
	}
	if s := lines(rs); strings.Contains(s, ac.Relay.Token) || strings.Contains(s, "Wr0ngCamPass") {
		t.Errorf("a secret in the output:\n%s", s)
	}

	// No relay at all: UDP and TCP both fail; a running agent's DNS is the reference.
	ac.Relay.Address = deadAddr(t)
	ac.Services, ac.Direct.Enabled, ac.TLS = nil, false, nil
	rs = Run(context.Background(), Config{Agent: ac, LookupIP: lookup("198.51.100.7"), Timeout: 500 * time.Millisecond,
		Running: func(context.Context) (AgentView, error) {
			return AgentView{TunnelConnected: false, DNS: "A=198.51.100.7 AAAA=none"}, nil
		}})
	want(t, rs, "relay UDP", Problem, "no QUIC handshake")
	want(t, rs, "relay TCP", Problem, "let TCP "+strconv.Itoa(mustPort(t, ac.Relay.Address)))
	want(t, rs, "clock", Skipped, "no time source")
	want(t, rs, "DNS home.example.com", OK, "as what the running agent published")
}

func mustPort(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}
