package path

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	t0      = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	home    = netip.MustParseAddr("203.0.113.7")
	home2   = netip.MustParseAddr("203.0.113.8")
	homeV6  = netip.MustParseAddr("2001:db8::7")
	relayIP = netip.MustParseAddr("198.51.100.7")
	cam     = Service{Name: "cam", Port: 10554}
	web     = Service{Name: "web", Port: 10443}
)

// ready are the facts of a home where everything works and both services
// were verified a moment ago.
func ready() Facts {
	return Facts{
		Now:             t0,
		RelayConfigured: true,
		Connected:       true,
		RelayIP:         relayIP,
		Home:            home,
		DirectEnabled:   true,
		Mappings: []Mapping{
			{Port: 10554, Name: "tcp/10554", Active: true, Since: t0.Add(-time.Hour)},
			{Port: 10443, Name: "tcp/10443", Active: true, Since: t0.Add(-time.Hour)},
		},
		Services: []Service{cam, web},
		Probes: map[string]Probe{
			"cam": {At: t0.Add(-time.Second), Home: home, OK: true},
			"web": {At: t0.Add(-time.Second), Home: home, OK: true},
		},
		Previous: Decision{Path: Direct, Reason: "earlier", Target: home},
	}
}

func TestDecide(t *testing.T) {
	direct := Decision{Path: Direct, Target: home, RecheckIn: DefaultReverifyAfter - time.Second, // probed 1 s ago
		Reason: "the relay reached every service at 203.0.113.7 from outside"}
	for _, tc := range []struct {
		name  string
		facts func(f *Facts)
		want  Decision
		// why must appear in Reason when want.Reason is empty
		why string
	}{
		{name: "all verified: direct", facts: func(*Facts) {}, want: direct},
		{name: "no relay: home's addresses", facts: func(f *Facts) {
			*f = Facts{Home: home, HomeV6: homeV6}
		}, want: Decision{Path: Home, Target: home, TargetV6: homeV6, Reason: "no relay configured: the record follows the home's address"}},
		{name: "no relay, nothing detected: unknown, DNS alone", facts: func(f *Facts) {
			*f = Facts{DetectErr: "sources disagree"}
		}, want: Decision{Path: Unknown, Reason: "public address not detected: sources disagree"}},
		{name: "no relay, only IPv6 detected: home", facts: func(f *Facts) {
			*f = Facts{HomeV6: homeV6}
		}, want: Decision{Path: Home, TargetV6: homeV6, Reason: "no relay configured: the record follows the home's address"}},
		{name: "relay address unknown: DNS alone", facts: func(f *Facts) {
			f.RelayIP, f.Connected = netip.Addr{}, false
		}, want: Decision{Path: Relay, Reason: "tunnel not connected yet; relay address unknown"}},
		{name: "tunnel down", facts: func(f *Facts) { f.Connected = false },
			want: Decision{Path: Relay, Target: relayIP}, why: "tunnel to the relay is down"},
		{name: "direct disabled", facts: func(f *Facts) { f.DirectEnabled = false },
			want: Decision{Path: Relay, Target: relayIP}, why: "direct.enabled: false"},
		{name: "direct off for another reason", facts: func(f *Facts) { f.DirectEnabled, f.DirectOffWhy = false, "-once does not try it" },
			want: Decision{Path: Relay, Target: relayIP, Reason: "-once does not try it"}},
		{name: "CGNAT", facts: func(f *Facts) { f.NATBlocks, f.NATWhy = true, "carrier-grade NAT: ask the ISP" },
			want: Decision{Path: Relay, Target: relayIP, Reason: "carrier-grade NAT: ask the ISP"}},
		{name: "router problem", facts: func(f *Facts) { f.RouterProblem = "router refuses mappings (UPnP 501)" },
			want: Decision{Path: Relay, Target: relayIP, Reason: "router: router refuses mappings (UPnP 501)"}},
		{name: "no home address", facts: func(f *Facts) { f.Home = netip.Addr{} },
			want: Decision{Path: Relay, Target: relayIP}, why: "no verified public address or mapping"},
		{name: "no mappings", facts: func(f *Facts) { f.Mappings = nil },
			want: Decision{Path: Relay, Target: relayIP}, why: "no verified public address or mapping"},
		{name: "a mapping lost (router reboot)", facts: func(f *Facts) { f.Mappings[1].Active = false },
			want: Decision{Path: Relay, Target: relayIP, Reason: "mapping tcp/10443 not active"}},
		{name: "probe failed", facts: func(f *Facts) {
			f.Probes["web"] = Probe{At: t0.Add(-time.Second), Home: home, Reason: "connection refused"}
		}, want: Decision{Path: Relay, Target: relayIP, RecheckIn: DefaultRetryFailed, ProbeFailed: true, RepairMappings: true,
			Reason: "relay could not reach web directly: connection refused"}},
		{name: "probe failed again: no second repair", facts: func(f *Facts) {
			f.Probes["web"] = Probe{At: t0.Add(-time.Second), Home: home, Reason: "connection refused"}
			f.Previous = Decision{Path: Relay, ProbeFailed: true, RepairMappings: true}
		}, want: Decision{Path: Relay, Target: relayIP, RecheckIn: DefaultRetryFailed, ProbeFailed: true,
			Reason: "relay could not reach web directly: connection refused"}},
		{name: "probe could not run", facts: func(f *Facts) {
			f.Probes["cam"] = Probe{At: t0.Add(-time.Second), Home: home, Err: "tunnel: not connected"}
		}, want: Decision{Path: Relay, Target: relayIP, RecheckIn: DefaultRetryFailed,
			Reason: "probe could not run: tunnel: not connected"}},
		{name: "custom intervals", facts: func(f *Facts) {
			f.ReverifyAfter, f.RetryFailed = time.Hour, 2*time.Hour
			f.Probes["web"] = Probe{At: t0.Add(-time.Minute), Home: home, Reason: "timeout"}
			f.Probes["cam"] = Probe{At: t0.Add(-time.Minute), Home: home, OK: true}
		}, want: Decision{Path: Relay, Target: relayIP, RecheckIn: 2 * time.Hour, ProbeFailed: true, RepairMappings: true,
			Reason: "relay could not reach web directly: timeout"}},
		{name: "re-verify when the oldest probe is due", facts: func(f *Facts) {
			f.Probes["cam"] = Probe{At: t0.Add(-20 * time.Second), Home: home, OK: true}
		}, want: Decision{Path: Direct, Target: home, RecheckIn: 10 * time.Second,
			Reason: "the relay reached every service at 203.0.113.7 from outside"}},
		// The order of the rules: the first that applies wins.
		{name: "tunnel down beats a router problem", facts: func(f *Facts) {
			f.Connected, f.RouterProblem = false, "x"
		}, want: Decision{Path: Relay, Target: relayIP}, why: "tunnel"},
		{name: "NAT beats router problem", facts: func(f *Facts) {
			f.NATBlocks, f.NATWhy, f.RouterProblem = true, "double NAT", "x"
		}, want: Decision{Path: Relay, Target: relayIP, Reason: "double NAT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ready()
			tc.facts(&f)
			got := Decide(f)
			if tc.why != "" {
				if !strings.Contains(got.Reason, tc.why) {
					t.Errorf("reason %q lacks %q", got.Reason, tc.why)
				}
				got.Reason = ""
			}
			if !equal(got, tc.want) {
				t.Errorf("Decide:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// When evidence is missing or old, Decide asks for probes and keeps the
// previous path meanwhile.
func TestDecideAsksForProbes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		facts func(f *Facts)
		want  []Service
	}{
		{"no results yet", func(f *Facts) { f.Probes = nil }, []Service{cam, web}},
		{"one missing", func(f *Facts) { delete(f.Probes, "web") }, []Service{web}},
		{"re-verification due", func(f *Facts) { f.Now = f.Now.Add(DefaultReverifyAfter) }, []Service{cam, web}},
		{"due a little early (timer slack)", func(f *Facts) {
			f.Now = f.Now.Add(DefaultReverifyAfter*9/10 + time.Second)
		}, []Service{cam, web}},
		{"home address changed", func(f *Facts) { f.Home = home2 }, []Service{cam, web}},
		{"mapping made again after the probe", func(f *Facts) { f.Mappings[0].Since = t0 }, []Service{cam}},
		{"probe from the future (clock stepped back)", func(f *Facts) {
			f.Probes["cam"] = Probe{At: t0.Add(time.Hour), Home: home, OK: true}
		}, []Service{cam}},
		{"failed probe old enough to retry", func(f *Facts) {
			f.Probes["cam"] = Probe{At: t0.Add(-DefaultRetryFailed), Home: home, Reason: "refused"}
		}, []Service{cam}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ready()
			tc.facts(&f)
			d := Decide(f)
			if !slices.Equal(d.Probe, tc.want) {
				t.Fatalf("Probe = %v, want %v (decision %+v)", d.Probe, tc.want, d)
			}
			if d.Path != f.Previous.Path || d.Reason != f.Previous.Reason || d.Target.IsValid() || d.RecheckIn != 0 {
				t.Errorf("while probing: %+v, want the previous path and no target", d)
			}
		})
	}
	// At start there is no previous path.
	f := ready()
	f.Probes, f.Previous = nil, Decision{}
	if d := Decide(f); d.Path != Relay || len(d.Probe) != 2 || d.Target.IsValid() {
		t.Errorf("first decision: %+v", d)
	}
}

// A whole re-verification cycle as the agent runs it: direct, the relay's
// probe fails on the next re-verification, DNS goes to the relay; the router
// maps again and the new mapping is verified before DNS goes home again.
func TestDecideCycle(t *testing.T) {
	f := ready()
	f.Services = []Service{cam}
	f.Mappings = f.Mappings[:1]
	f.Probes = map[string]Probe{}
	f.Previous = Decision{}
	step := func(probe func(Service) Probe) Decision {
		t.Helper()
		d := Decide(f)
		if len(d.Probe) > 0 {
			for _, s := range d.Probe {
				f.Probes[s.Name] = probe(s)
			}
			d = Decide(f)
			if len(d.Probe) > 0 {
				t.Fatalf("fresh results did not settle the decision: %+v", d)
			}
		}
		f.Previous = d
		return d
	}
	ok := func(Service) Probe { return Probe{At: f.Now, Home: f.Home, OK: true} }
	bad := func(Service) Probe { return Probe{At: f.Now, Home: f.Home, Reason: "timeout"} }
	if d := step(ok); d.Path != Direct || d.RecheckIn != DefaultReverifyAfter {
		t.Fatalf("start: %+v", d)
	}
	f.Now = f.Now.Add(DefaultReverifyAfter)
	lost := step(bad)
	if lost.Path != Relay || lost.Target != relayIP {
		t.Fatalf("after a failed re-verification: %+v", lost)
	}
	// The router reboots: mapping inactive, then made again.
	f.Now = f.Now.Add(5 * time.Second)
	f.Mappings[0].Active = false
	if d := step(ok); d.Reason != "mapping tcp/10554 not active" {
		t.Fatalf("mapping lost: %+v", d)
	}
	f.Now = f.Now.Add(time.Second)
	f.Mappings[0].Active, f.Mappings[0].Since = true, f.Now
	probed := false
	d := step(func(s Service) Probe { probed = true; return ok(s) })
	if !probed || d.Path != Direct {
		t.Fatalf("new mapping: probed %v, %+v", probed, d)
	}
}

func equal(a, b Decision) bool {
	return a.Path == b.Path && a.Reason == b.Reason && a.Target == b.Target &&
		a.TargetV6 == b.TargetV6 && a.RecheckIn == b.RecheckIn && slices.Equal(a.Probe, b.Probe) &&
		a.ProbeFailed == b.ProbeFailed && a.RepairMappings == b.RepairMappings
}

// TestDecideUDPMappingOfSamePort: a WireGuard (UDP) mapping on a TCP service's
// port number is its own mapping: remaking it asks for its probe, not the TCP
// service's.
func TestDecideUDPMappingOfSamePort(t *testing.T) {
	f := ready()
	wg := Service{Name: "wireguard", Port: 10554, UDP: true}
	f.Services = append(f.Services, wg)
	f.Mappings = append(f.Mappings, Mapping{Port: 10554, UDP: true, Name: "udp/10554", Active: true, Since: t0.Add(-time.Minute)})
	f.Probes["wireguard"] = Probe{At: t0.Add(-2 * time.Second), Home: home, OK: true}
	if d := Decide(f); d.Path != Direct {
		t.Fatalf("all verified: %+v", d)
	}
	f.Mappings[2].Since = t0 // the router remade the UDP mapping after the probe
	f.Probes["wireguard"] = Probe{At: t0.Add(-time.Second), Home: home, OK: true}
	d := Decide(f)
	if len(d.Probe) != 1 || d.Probe[0] != wg {
		t.Fatalf("probes asked: %+v, want only the WireGuard port", d.Probe)
	}
}
