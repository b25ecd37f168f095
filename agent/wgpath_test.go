package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/path"
	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/internal/config"
)

// TestPathVerifiesWireGuardPort: with a WireGuard port the direct path needs
// the relay's UDP probe of it too (through probeUDP, at the mapped port), and
// a failed UDP probe keeps DNS on the relay, saying so.
func TestPathVerifiesWireGuardPort(t *testing.T) {
	const wgPort = 51820
	tcp, udp := &fakeRelay{ok: true}, &fakeRelay{reason: "no answer to the UDP probe"}
	mappedAt := time.Now().Add(-time.Hour)
	h := startAgent(t, harnessOpts{
		addr:        newAddr,
		minInterval: time.Millisecond,
		configure: func(ac *config.Agent) {
			ac.Relay = &config.AgentRelay{Address: closedLoopbackPort(t), Token: config.NewToken()}
			ac.Services = []config.Service{{Name: "cam", Target: "127.0.0.1:9", Port: 10554, AllowAny: true}}
		},
		setup: func(a *Agent) {
			a.cfg.WireGuardPort = wgPort
			a.paths.relay = func() (bool, netip.Addr) { return true, fakeRelayIP }
			a.paths.probe, a.paths.probeUDP = tcp.probe, udp.probe
			a.paths.router = func() portmap.Status {
				return portmap.Status{Protocol: "pcp", Mappings: []portmap.MappingStatus{
					{Mapping: portmap.Mapping{Proto: "tcp", ExternalPort: 10554, InternalPort: 10554}, Active: true, Since: mappedAt},
					{Mapping: portmap.Mapping{Proto: "udp", ExternalPort: wgPort, InternalPort: wgPort}, Active: true, Since: mappedAt},
				}}
			}
			a.paths.repair = func() {}
			a.paths.reverify, a.paths.retryFailed = 150*time.Millisecond, 150*time.Millisecond
		},
	})
	r := h.passUntil("a failed WireGuard probe", func(r passReport) bool { return r.probes > 0 && r.path == path.Relay })
	if !strings.Contains(r.reason, "wireguard") && !strings.Contains(h.a.Status().PathWhy, "wireguard") {
		t.Errorf("path reason %q / %q does not name the WireGuard port", r.reason, h.a.Status().PathWhy)
	}
	udp.mu.Lock()
	got := slices.Clone(udp.probes)
	udp.mu.Unlock()
	if len(got) == 0 || got[0] != netip.AddrPortFrom(newAddr, wgPort) {
		t.Fatalf("UDP probes %v, want %s:%d", got, newAddr, wgPort)
	}
	tcp.mu.Lock()
	for _, p := range tcp.probes {
		if p.Port() == wgPort {
			t.Errorf("the WireGuard port was probed over TCP: %v", tcp.probes)
		}
	}
	tcp.mu.Unlock()

	udp.set(true, "")
	h.passUntil("the direct path", func(r passReport) bool { return r.path == path.Direct })
}

// TestWireGuardPortRegisteredAndMapped: the agent registers its WireGuard port
// as a UDP service, and maps ports at the router for it even without a TCP
// service.
func TestWireGuardPortRegisteredAndMapped(t *testing.T) {
	ac := &config.Agent{Name: "home", StateDir: t.TempDir(),
		Relay:    &config.AgentRelay{Address: "127.0.0.1:1", Token: config.NewToken()},
		Services: []config.Service{{Name: "cam", Target: "127.0.0.1:9", Port: 10554, AllowAny: true}}}
	a, err := New(Config{Agent: ac, WireGuardPort: 51820})
	if err != nil {
		t.Fatal(err)
	}
	svcs, _, err := a.relayServices()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 2 || svcs[1].Name != WireGuardService || svcs[1].Port != 51820 || svcs[1].Proto != "udp" || svcs[0].Proto != "" {
		t.Fatalf("registered %+v", svcs)
	}
	ac2 := &config.Agent{Name: "home", StateDir: t.TempDir(), Direct: config.Direct{Enabled: true}}
	a, err = New(Config{Agent: ac2, WireGuardPort: 51820})
	if err != nil {
		t.Fatal(err)
	}
	if a.pm == nil {
		t.Fatal("no port mapping for an agent with only a WireGuard port")
	}
}
