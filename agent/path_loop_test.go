package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/path"
	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/internal/config"
)

// In-process tests of the path loop: the tunnel and the router are fakes
// behind the agent's path sources, DNS is the fake Cloudflare.

var fakeRelayIP = netip.MustParseAddr("198.51.100.7") // only ever DNS data

// fakeRelay stands in for the tunnel: connected, and answering probes as
// the test says.
type fakeRelay struct {
	mu      sync.Mutex // guards the fields below
	ok      bool
	reason  string
	probes  []netip.AddrPort
	repairs int // the router asked to make its mappings again
}

func (f *fakeRelay) repair() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.repairs++
}

func (f *fakeRelay) repaired() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.repairs
}

func (f *fakeRelay) set(ok bool, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ok, f.reason = ok, reason
}

func (f *fakeRelay) probe(_ context.Context, addr netip.AddrPort, _ string) (bool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes = append(f.probes, addr)
	return f.ok, f.reason, nil
}

func (f *fakeRelay) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.probes)
}

// relayAgent is a harness for an agent with a relay and one service, whose
// router has mapped the service's port.
func relayAgent(t *testing.T, relay *fakeRelay, reverify time.Duration) *harness {
	t.Helper()
	mappedAt := time.Now().Add(-time.Hour)
	return startAgent(t, harnessOpts{
		addr:        newAddr,
		minInterval: time.Millisecond, // DNS follows each decision at once
		configure: func(ac *config.Agent) {
			ac.Relay = &config.AgentRelay{Address: closedLoopbackPort(t), Token: config.NewToken()}
			ac.Services = []config.Service{{Name: "cam", Target: "127.0.0.1:9", Port: 10554, AllowAny: true}}
		},
		setup: func(a *Agent) {
			a.paths.relay = func() (bool, netip.Addr) { return true, fakeRelayIP }
			a.paths.probe = relay.probe
			a.paths.router = func() portmap.Status {
				return portmap.Status{Protocol: "pcp", Mappings: []portmap.MappingStatus{{
					Mapping: portmap.Mapping{Proto: "tcp", ExternalPort: 10554, InternalPort: 10554},
					Active:  true, Since: mappedAt,
				}}}
			}
			a.paths.repair = relay.repair
			a.paths.reverify, a.paths.retryFailed = reverify, reverify
		},
	})
}

// closedLoopbackPort is a loopback UDP address nothing listens on, for the
// relay address the (unused) tunnel client dials.
func closedLoopbackPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// passUntil waits for a pass that satisfies ok.
func (h *harness) passUntil(what string, ok func(passReport) bool) passReport {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r := h.pass(); ok(r) {
			return r
		}
	}
	h.t.Fatalf("no pass with %s within 10s; log:\n%s", what, h.logs.String())
	return passReport{}
}

// While the path is direct the relay re-verifies it on its own schedule
// (not once per public-address interval, which is 1 h here), each time with
// a probe only; a failure sends DNS to the relay at the next re-verification.
// Before: the path was re-verified only at the public-address interval, so
// no pass came within the test's 10 s.
func TestPathReverifiesDirectAndFallsBack(t *testing.T) {
	const reverify = 150 * time.Millisecond
	relay := &fakeRelay{ok: true}
	h := relayAgent(t, relay, reverify)
	r := h.passUntil("the direct path", func(r passReport) bool { return r.path == path.Direct })
	if got := h.published(); !slices.Equal(got, []string{newAddr.String()}) {
		t.Fatalf("A records = %v after %+v, want the home %s", got, r, newAddr)
	}
	// Three re-verifications without any poke: a probe each, no address
	// detection. (A full pass may come between them if the host's local
	// addresses change: the watcher sees the real host.)
	for reverified := 0; reverified < 3; {
		r := h.pass()
		if r.path != path.Direct || !r.detected && r.probes != 1 {
			t.Fatalf("re-verification %d: %+v, want one probe, still direct", reverified, r)
		}
		if !r.detected {
			reverified++
		}
	}
	relay.set(false, "connection timed out")
	failed := time.Now()
	h.passUntil("the relay path", func(r passReport) bool { return r.path == path.Relay && r.dnsRight })
	took := time.Since(failed)
	if got := h.published(); !slices.Equal(got, []string{fakeRelayIP.String()}) {
		t.Fatalf("A records = %v, want the relay %s", got, fakeRelayIP)
	}
	// Scaled: the default 30 s re-verification gives DNS on the relay within
	// 60 s; here within two re-verifications plus scheduling.
	if took > 2*reverify+5*time.Second {
		t.Errorf("DNS went to the relay %v after the direct path failed (re-verify every %v)", took, reverify)
	}
	t.Logf("direct path failed -> DNS on the relay in %v (re-verify every %v)", took, reverify)
	logs := h.logs.String()
	if !strings.Contains(logs, "direct path lost") || !strings.Contains(logs, "connection timed out") {
		t.Errorf("log does not say the direct path was lost and why:\n%s", logs)
	}
	// And back once the relay gets through again.
	relay.set(true, "")
	h.passUntil("the direct path again", func(r passReport) bool { return r.path == path.Direct && r.dnsRight })
	if got := h.published(); !slices.Equal(got, []string{newAddr.String()}) {
		t.Fatalf("A records = %v, want the home %s", got, newAddr)
	}
}

// When the relay's probe fails for a new reason and the path stays "relay",
// the log says so (before: only a change of path was logged, so the log
// never said why the path stayed on the relay).
func TestPathReasonChangeLogged(t *testing.T) {
	relay := &fakeRelay{reason: "connection refused"}
	h := relayAgent(t, relay, 100*time.Millisecond)
	h.passUntil("the relay path", func(r passReport) bool { return r.path == path.Relay && r.probes > 0 })
	relay.set(false, "no route to host")
	h.passUntil("the new reason", func(r passReport) bool {
		return strings.Contains(h.a.Status().PathWhy, "no route to host")
	})
	// A run of failed probes asks the router once to make the mappings
	// again (a router may report mappings whose rules are gone).
	if n := relay.repaired(); n != 1 {
		t.Errorf("router asked to repair %d times in one run of failed probes, want 1", n)
	}
	logs := h.logs.String()
	for _, want := range []string{"connection refused", "no route to host"} {
		if !strings.Contains(logs, "reason=\"relay could not reach cam directly: "+want) {
			t.Errorf("log lacks the path reason %q:\n%s", want, logs)
		}
	}
}

// A flapping reason is rate-limited, the lines skipped are counted, and the
// reason it settles on is logged once the limit allows.
func TestSetPathRateLimit(t *testing.T) {
	logs := &syncBuffer{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := &Agent{log: slog.New(slog.NewTextHandler(logs, nil)),
		paths: pathSources{now: func() time.Time { return now }, reasonBurst: 3, reasonEvery: time.Minute}}
	for i := range 50 {
		a.setPath(path.Relay, []string{"reason A", "reason B"}[i%2], "")
		now = now.Add(time.Second)
	}
	if n := strings.Count(logs.String(), "msg=path"); n > 3 {
		t.Errorf("%d path lines for 50 flaps within 50 s, want at most the burst of 3:\n%s", n, logs)
	}
	a.setPath(path.Relay, "settled", "")
	now = now.Add(time.Minute)
	a.setPath(path.Relay, "settled", "") // the next pass, once allowed
	a.setPath(path.Relay, "settled", "")
	out := logs.String()
	if strings.Count(out, "reason=settled") != 1 {
		t.Errorf("the settled reason is not logged exactly once:\n%s", out)
	}
	if !strings.Contains(out, "changes_not_logged=") {
		t.Errorf("skipped changes are not counted:\n%s", out)
	}
	a.mu.Lock()
	got := a.status.PathWhy
	a.mu.Unlock()
	if got != "settled" {
		t.Errorf("status reason %q", got)
	}
}
