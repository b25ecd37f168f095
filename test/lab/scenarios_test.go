//go:build linux

package lab_test

// Direct-path scenarios (issue 4) on the real binaries: porthole-relay in
// WAN, porthole-agent and a camera stand-in (the greeter) in LAN, miniupnpd
// as the home router, and a fake dyndns2 server that the agent reaches
// inside WAN, so the test reads which address DNS got.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/path"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/fakedyndns"
	"github.com/porthole-dev/porthole/test/lab"
	"github.com/porthole-dev/porthole/tunnel"
)

const (
	scCamPort  = 8554  // the greeter ("camera") on the LAN host
	scSvcPort  = 10554 // the service's one public port, relay and router
	scHostname = "home.example.com"
	scDynUser  = "porthole"
	scBanner   = "camera"
	// the relay's Prometheus listener, in WAN
	scMetricsPort = 9466
)

var (
	scHome  = netip.MustParseAddr(lab.PublicAddr) // DNS in direct mode
	scRelay = netip.MustParseAddr(lab.WANAddr)    // DNS in relayed mode
)

// scenario is one lab with the product running in it.
type scenario struct {
	t        *testing.T
	l        *lab.Lab
	relay    *lab.Proc
	agent    *lab.Proc
	dns      *fakedyndns.Server
	agentBin string
	agentCfg string // absolute path of agent.yaml
}

// scenarioOpts are what differs between scenarios.
type scenarioOpts struct {
	lab       lab.Options
	protocols []string // direct.protocols; nil = the default (all)
}

// startScenario builds the lab and starts the camera, the DNS server, the
// relay and the agent. It returns once the relay listens; the agent's own
// progress is for the scenario to wait for.
func startScenario(t *testing.T, o scenarioOpts) *scenario {
	t.Helper()
	relayBin := lab.Build(t, "relay/cmd/porthole-relay")
	agentBin := lab.Build(t, "agent/cmd/porthole-agent")
	l := lab.Up(t, o.lab)
	s := &scenario{t: t, l: l, agentBin: agentBin}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cam := l.Start(t, lab.LAN, "camera", lab.Helper(t, "greeter"),
		"-listen", fmt.Sprintf("%s:%d", lab.AgentAddr, scCamPort), "-banner", scBanner)
	if err := cam.WaitListening(ctx, "tcp", scCamPort); err != nil {
		t.Fatal(err)
	}

	dynPass := config.NewToken()
	s.dns = fakedyndns.New(t, scDynUser, dynPass, scHostname)
	dynURL := s.serveDNSInWAN(t)

	token := config.NewToken()
	relayCfg := fmt.Sprintf(`listen: %[1]s:7443
viewer_bind: %[1]s
public_ip: %[1]s
state_dir: %[2]s
agents:
  home:
    token_file: home.token
    ports: 10000-10999
admin: %[1]s:%[3]d
`, lab.WANAddr, filepath.Join(l.Dir(), "relay-state"), scMetricsPort)
	s.relay = l.StartSpec(t, lab.WAN, "relay", lab.Spec{
		Path:  relayBin,
		Args:  []string{"-v", "-config", "relay.yaml"},
		Files: map[string][]byte{"relay.yaml": []byte(relayCfg), "home.token": []byte(token + "\n")},
	})
	if err := s.relay.WaitListening(ctx, "udp", 7443); err != nil {
		t.Fatal(err)
	}

	protocols := ""
	if o.protocols != nil {
		protocols = "  protocols: [" + strings.Join(o.protocols, ", ") + "]\n"
	}
	agentCfg := fmt.Sprintf(`name: home
state_dir: %[1]s
relay:
  address: %[2]s:7443
  token_file: agent.token
services:
  - name: cam
    target: %[3]s:%[4]d
    port: %[5]d
    allow: [any]
direct:
  enabled: true
  listen: %[3]s
%[6]spublicip:
  sources: [relay, router]
  accept: [203.0.113.0/24]   # a documentation range: only in the lab
  min_agree: 2
  interval: 30s
  ipv6: false
ddns:
  hostname: %[7]s
  ttl: 60s
  min_interval: 1ms
  provider:
    type: dyndns2
    base_url: %[8]s
    username: %[9]s
    password_file: dyn.pass
`, filepath.Join(l.Dir(), "agent-state"), lab.WANAddr, lab.AgentAddr, scCamPort, scSvcPort,
		protocols, scHostname, dynURL, scDynUser)
	s.agent = l.StartSpec(t, lab.LAN, "agent", lab.Spec{
		Path: agentBin,
		Args: []string{"-v", "-config", "agent.yaml"},
		Files: map[string][]byte{
			"agent.yaml":  []byte(agentCfg),
			"agent.token": []byte(token + "\n"),
			"dyn.pass":    []byte(dynPass + "\n"),
		},
	})
	s.agentCfg = filepath.Join(s.agent.Dir, "agent.yaml")
	if err := s.agent.WaitOutput(ctx, "agent running"); err != nil {
		t.Fatal(err)
	}
	return s
}

// serveDNSInWAN puts the fake dyndns2 server (TLS on the test's loopback)
// behind a plain-HTTP reverse proxy listening inside WAN, where the agent
// can reach it, and returns the proxy's URL.
func (s *scenario) serveDNSInWAN(t *testing.T) string {
	t.Helper()
	ln, err := s.l.Listen(lab.WAN, "tcp", lab.WANAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(s.dns.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: &httputil.ReverseProxy{
			Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
			Transport: s.dns.Client().Transport,
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// waitFor polls cond until it holds or ctx ends; what describes the wait
// and last says why cond last failed.
func (s *scenario) waitFor(ctx context.Context, what string, cond func() (ok bool, last string)) {
	s.t.Helper()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		ok, last := cond()
		if ok {
			s.t.Logf("%s after %.1fs", what, time.Since(start).Seconds())
			return
		}
		select {
		case <-ctx.Done():
			s.t.Fatalf("waiting for %s: %v (last: %s)", what, ctx.Err(), last)
		case <-s.agent.Done():
			s.t.Fatalf("waiting for %s: the agent exited: %v", what, s.agent.Err())
		case <-tick.C:
		}
	}
}

// waitDNS waits until the DNS server holds want for the hostname.
func (s *scenario) waitDNS(ctx context.Context, want netip.Addr) {
	s.t.Helper()
	s.waitFor(ctx, "DNS -> "+want.String(), func() (bool, string) {
		v4, _ := s.dns.Published(scHostname)
		return v4 == want, "published " + v4.String()
	})
}

// mappings lists the router's forwarding rules.
func (s *scenario) mappings() []string {
	s.t.Helper()
	m, err := s.l.Mappings()
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

// view connects as a viewer on the internet (ViewerAddr in WAN: not the
// relay's address) to addr:scSvcPort and returns the camera's line.
func (s *scenario) view(ctx context.Context, addr netip.Addr) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := s.l.DialFrom(ctx, lab.WAN, lab.ViewerAddr, "tcp", netip.AddrPortFrom(addr, scSvcPort).String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, scBanner+" peer=") {
		return line, fmt.Errorf("unexpected line %q", line)
	}
	return line, nil
}

// mustView is view that fails the test.
func (s *scenario) mustView(ctx context.Context, addr netip.Addr) {
	s.t.Helper()
	if line, err := s.view(ctx, addr); err != nil {
		s.t.Fatalf("viewer -> %s:%d: %v", addr, scSvcPort, err)
	} else {
		s.t.Logf("viewer -> %s:%d: %q", addr, scSvcPort, line)
	}
}

// viewerLogged reports whether out (a gateway's log: the relay's, or the
// agent's direct listener) has a finished connection from ViewerAddr.
func viewerLogged(out string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `msg="viewer connection ended"`) && strings.Contains(line, " viewer="+lab.ViewerAddr+":") {
			return true
		}
	}
	return false
}

// relayMetric sums the relay's samples of a metric for the scenario's
// service (0 if there are none), read from its /metrics inside WAN.
func (s *scenario) relayMetric(ctx context.Context, name string) float64 {
	s.t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return s.l.DialContext(ctx, lab.WAN, network, addr)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s:%d/metrics", lab.WANAddr, scMetricsPort), nil)
	if err != nil {
		s.t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		s.t.Fatalf("relay metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, `service="cam"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			s.t.Fatalf("relay metrics: %q: %v", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		s.t.Fatalf("relay metrics: %v", err)
	}
	return sum
}

// status runs `porthole-agent status` in LAN and returns its output.
func (s *scenario) status() string {
	s.t.Helper()
	out, err := s.l.Exec(lab.LAN, s.agentBin, "-config", s.agentCfg, "status")
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// waitStatus waits until `porthole-agent status` shows every want.
func (s *scenario) waitStatus(ctx context.Context, want ...string) string {
	s.t.Helper()
	var out string
	s.waitFor(ctx, "status showing "+strings.Join(want, ", "), func() (bool, string) {
		out = s.status()
		for _, w := range want {
			if !strings.Contains(out, w) {
				return false, out
			}
		}
		return true, ""
	})
	s.t.Logf("porthole-agent status:\n%s", out)
	return out
}

// wantDirect runs the direct-path checks of scenarios 1 and 2: a mapping on
// the router, DNS -> home, a viewer through the router, the relay carrying
// none of it, and status naming the path and protocol.
func wantDirect(t *testing.T, o scenarioOpts, protocol string) *scenario {
	s := startScenario(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	s.waitDNS(ctx, scHome)
	if m := s.mappings(); len(m) != 1 || !strings.Contains(m[0], fmt.Sprintf("dport %d dnat ip to %s:%d", scSvcPort, lab.AgentAddr, scSvcPort)) {
		t.Fatalf("router mappings %q, want one for port %d to the agent", m, scSvcPort)
	}
	if !strings.Contains(s.relay.Output(), "direct path verified") {
		t.Errorf("relay log has no verified probe")
	}
	s.mustView(ctx, scHome)
	// the agent's direct gateway carried it, and the relay saw no viewer
	if err := s.agent.WaitOutput(ctx, " viewer="+lab.ViewerAddr+":"); err != nil || !viewerLogged(s.agent.Output()) {
		t.Errorf("agent log: no direct viewer connection (%v)", err)
	}
	if viewerLogged(s.relay.Output()) {
		t.Errorf("relay log shows the viewer's connection: the bytes went through the relay")
	}
	for _, m := range []string{"porthole_relay_viewer_connections_total", "porthole_relay_bytes_total"} {
		if v := s.relayMetric(ctx, m); v != 0 {
			t.Errorf("relay %s = %v after a direct view, want 0", m, v)
		}
	}
	s.waitStatus(ctx, "path:     direct", "protocol "+protocol, "dns:      A="+lab.PublicAddr)
	return s
}

// wantRelayed runs the checks of scenarios 3-5: DNS -> relay, no direct
// path, a viewer gets through the relay.
func wantRelayed(t *testing.T, o scenarioOpts, why string) *scenario {
	s := startScenario(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	s.waitDNS(ctx, scRelay)
	s.mustView(ctx, scRelay)
	if err := s.relay.WaitOutput(ctx, " viewer="+lab.ViewerAddr+":"); err != nil || !viewerLogged(s.relay.Output()) {
		t.Errorf("relay log: no viewer connection (%v)", err)
	}
	if v := s.relayMetric(ctx, "porthole_relay_viewer_connections_total"); v < 1 {
		t.Errorf("relay viewer_connections_total = %v, want the viewer counted", v)
	}
	s.waitStatus(ctx, "path:     relay", why, "dns:      A="+lab.WANAddr)
	if _, err := s.view(ctx, scHome); err == nil {
		t.Errorf("a viewer reached the home's public address directly; want no direct path in this scenario")
	}
	return s
}

// Scenario 1: a working router. UPnP maps the port, the relay's probe
// passes, DNS points home and viewers come through the router.
func TestScenarioWorkingRouterUPnP(t *testing.T) {
	t.Parallel()
	wantDirect(t, scenarioOpts{protocols: []string{"upnp"}}, "upnp")
}

// Scenario 2: NAT-PMP only, and PCP only (UPnP off on the router).
func TestScenarioNATPMPOnly(t *testing.T) {
	t.Parallel()
	wantDirect(t, scenarioOpts{lab: lab.Options{NoUPnP: true}, protocols: []string{"natpmp"}}, "natpmp")
}

func TestScenarioPCPOnly(t *testing.T) {
	t.Parallel()
	wantDirect(t, scenarioOpts{lab: lab.Options{NoUPnP: true}, protocols: []string{"pcp"}}, "pcp")
}

// Scenario 3: the router refuses every mapping: relayed.
func TestScenarioRouterRefuses(t *testing.T) {
	t.Parallel()
	s := wantRelayed(t, scenarioOpts{lab: lab.Options{NoSTUN: true}}, "router refuses mappings")
	if m := s.mappings(); len(m) != 0 {
		t.Errorf("router mappings %q, want none", m)
	}
}

// Scenario 4: carrier-grade NAT, honest router (it refuses): relayed.
func TestScenarioCGNAT(t *testing.T) {
	t.Parallel()
	s := wantRelayed(t, scenarioOpts{lab: lab.Options{CGNAT: true, NoSTUN: true}}, "router refuses mappings")
	if m := s.mappings(); len(m) != 0 {
		t.Errorf("router mappings %q, want none", m)
	}
}

// Scenario 5: a lying router behind CGNAT grants a mapping nothing can
// reach; the relay's probe fails and DNS stays on the relay.
func TestScenarioLyingRouter(t *testing.T) {
	t.Parallel()
	s := wantRelayed(t, scenarioOpts{lab: lab.Options{CGNAT: true}}, "relay could not reach cam directly")
	if m := s.mappings(); len(m) != 1 {
		t.Errorf("router mappings %q, want the (useless) one the router granted", m)
	}
	if !strings.Contains(s.relay.Output(), "direct path probe failed") {
		t.Errorf("relay log has no failed probe")
	}
}

// Scenario 6: the router reboots and forgets the mapping, with each
// protocol. The relay keeps serving viewers meanwhile; the agent notices
// (UPnP: the mapping check or the moved control URL; NAT-PMP and PCP: the
// epoch going back, or the mapping re-requested on the periodic check) and
// maps again within a minute, and DNS is back on the direct path after the
// relay verified it. For PCP all three protocols are enabled, as in the
// report where PCP was chosen and the reboot went unnoticed for 150 s.
func TestScenarioRouterReboot(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		proto     string
		protocols []string
	}{
		{"upnp", []string{"upnp"}},
		{"natpmp", []string{"natpmp"}},
		{"pcp", nil}, // all enabled; the agent prefers PCP
	} {
		t.Run(tc.proto, func(t *testing.T) {
			t.Parallel()
			routerReboot(t, tc.proto, tc.protocols)
		})
	}
}

func routerReboot(t *testing.T, proto string, protocols []string) {
	s := wantDirect(t, scenarioOpts{protocols: protocols}, proto)
	s.l.RestartRouter(t)
	if m := s.mappings(); len(m) != 0 {
		t.Fatalf("router mappings %q after the reboot, want none", m)
	}
	rebooted := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	before := len(s.dns.Requests())
	views := 0
	var toRelay time.Duration // when DNS went to the relay
	s.waitFor(ctx, "a mapping again after the router reboot", func() (bool, string) {
		if v4, _ := s.dns.Published(scHostname); v4 == scRelay && toRelay == 0 {
			toRelay = time.Since(rebooted)
		}
		if time.Since(rebooted) > time.Duration(views)*5*time.Second {
			views++
			if _, err := s.view(ctx, scRelay); err != nil {
				s.t.Fatalf("viewer through the relay during the router reboot: %v", err)
			}
		}
		m := s.mappings()
		return len(m) == 1, fmt.Sprintf("%q", m)
	})
	remapped := time.Since(rebooted)
	t.Logf("%s: mapped again %.1fs after the reboot; %d viewers went through the relay meanwhile", proto, remapped.Seconds(), views)
	if remapped > time.Minute {
		t.Errorf("%s: mapped again %.1fs after the reboot, want within 60 s", proto, remapped.Seconds())
	}
	// While the mapping was gone the home address reached nothing: DNS must
	// have gone to the relay unless the mapping was back before the relay's
	// next re-verification could fail: agent/path promises "within
	// ReverifyAfter plus one probe of the failure" (30 s and the relay's 5 s
	// probe timeout; a probe under way when the mapping returns succeeds).
	relayed := false
	for _, r := range s.dns.Requests()[before:] {
		relayed = relayed || r.MyIP == lab.WANAddr
	}
	switch {
	case relayed:
		t.Logf("%s: DNS went to the relay %.1fs after the reboot", proto, toRelay.Seconds())
	case remapped > path.DefaultReverifyAfter+tunnel.DefaultProbeTimeout:
		t.Errorf("%s: DNS never went to the relay while the mapping was gone for %.1fs; updates: %+v", proto, remapped.Seconds(), s.dns.Requests()[before:])
	default:
		t.Logf("%s: mapped again before DNS had to move", proto)
	}
	// The log says so when the epoch or the moved control URL shows the
	// restart. Here miniupnpd's epoch often does not show it (a restart soon
	// after the previous reply stays within RFC 6887's tolerance): the
	// periodic re-request, or the repair after the relay's failed probe,
	// makes the mapping again. The old epoch-only check missed these for
	// good.
	if out := s.agent.Output(); strings.Contains(out, "router restarted or lost our mappings") ||
		strings.Contains(out, "router stopped answering") {
		t.Logf("%s: the agent logged the restart", proto)
	} else {
		t.Logf("%s: the epoch did not show the restart; made again by the re-request or the repair", proto)
	}
	s.waitFor(ctx, "the direct path again", func() (bool, string) {
		_, err := s.view(ctx, scHome)
		return err == nil, fmt.Sprint(err)
	})
	s.waitDNS(ctx, scHome)
	s.waitStatus(ctx, "path:     direct", "protocol "+proto)
}

// Scenario 6b: the router's firewall is reloaded and our rules are gone,
// while miniupnpd runs on (its NAT-PMP/PCP epoch shows nothing). The agent's
// periodic check maps again within a minute, with each protocol.
func TestScenarioRouterRulesFlushed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		proto     string
		protocols []string
	}{
		{"upnp", []string{"upnp"}},
		{"natpmp", []string{"natpmp"}},
		{"pcp", nil},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			t.Parallel()
			s := wantDirect(t, scenarioOpts{protocols: tc.protocols}, tc.proto)
			s.l.FlushRouterRules(t)
			if m := s.mappings(); len(m) != 0 {
				t.Fatalf("router mappings %q after the flush, want none", m)
			}
			flushed := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
			defer cancel()
			s.waitFor(ctx, "a mapping again after the rules were flushed", func() (bool, string) {
				m := s.mappings()
				return len(m) == 1, fmt.Sprintf("%q", m)
			})
			if took := time.Since(flushed); took > time.Minute {
				t.Errorf("%s: mapped again %.1fs after the flush, want within 60 s", tc.proto, took.Seconds())
			}
			s.waitFor(ctx, "the direct path again", func() (bool, string) {
				_, err := s.view(ctx, scHome)
				return err == nil, fmt.Sprint(err)
			})
			s.waitStatus(ctx, "path:     direct", "protocol "+tc.proto)
		})
	}
}

// Scenario 7: a clean stop (SIGTERM) leaves no mapping on the router, with
// each protocol.
func TestScenarioCleanStop(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{"upnp", "natpmp", "pcp"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			cleanStop(t, proto)
		})
	}
}

func cleanStop(t *testing.T, proto string) {
	s := startScenario(t, scenarioOpts{protocols: []string{proto}})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	s.waitFor(ctx, "a mapping", func() (bool, string) {
		m := s.mappings()
		return len(m) == 1, fmt.Sprintf("%q", m)
	})
	s.waitStatus(ctx, "protocol "+proto)
	if err := s.agent.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.agent.Done():
	case <-ctx.Done():
		t.Fatal("the agent did not exit after SIGTERM")
	}
	if err := s.agent.Err(); err != nil {
		t.Errorf("agent exit: %v, want a clean exit", err)
	}
	if m := s.mappings(); len(m) != 0 {
		t.Errorf("router mappings %q after a clean stop, want none", m)
	}
	// and the saved state leaves the next run nothing to clean up
	b, err := os.ReadFile(filepath.Join(s.l.Dir(), "agent-state", "portmap-state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		Mappings []json.RawMessage `json:"mappings"`
	}
	if err := json.Unmarshal(b, &state); err != nil {
		t.Fatalf("portmap state %s: %v", b, err)
	}
	if len(state.Mappings) != 0 {
		t.Errorf("portmap state after a clean stop lists mappings: %s", b)
	}
}
