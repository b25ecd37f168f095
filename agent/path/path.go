// Package path decides where the agent's DNS name points: straight at the
// home (the direct path), at the relay, or, without a relay, at whatever
// public address the home has. Decide is a pure function of Facts the agent
// gathers (tunnel, NAT kind, router, probe results, time); it does no I/O.
// When it needs fresh evidence it says so (Decision.Probe) and the agent asks
// the relay to probe those services and calls Decide again.
//
// # Decision rules, in order (the first that applies wins)
//
//  1. No relay configured: the record follows the home's detected public
//     addresses ("home"). If none was detected, the path is "unknown" and DNS
//     is left alone.
//  2. Relay configured but its address is not known yet (the tunnel never
//     connected): "relay", DNS left alone.
//  3. The tunnel is down: "relay". The direct path can only be published
//     after the relay verified it, so it can't stay published unverified.
//  4. Direct disabled in the config, or not tried (-once): "relay".
//  5. The NAT blocks inbound connections (carrier-grade or double NAT):
//     "relay", with the NAT's own explanation.
//  6. The router reports a problem (no router, refused mapping, no external
//     address): "relay", "router: " and the problem.
//  7. No public address or no mapping yet, or a mapping not active: "relay".
//  8. Every service needs a probe result that is (a) younger than
//     ReverifyAfter (90% of it, so a timer set to ReverifyAfter finds it
//     stale), (b) for the current home address and (c) newer than the
//     mapping it went through (a mapping made again after a router reboot
//     must be verified again). If any is missing, Decide asks for those
//     probes (Decision.Probe) and keeps the previous path meanwhile.
//  9. A probe that could not run or that failed: "relay", saying which
//     service and why; re-checked after RetryFailed. The first failed probe
//     of a run also asks for the mappings to be made again
//     (RepairMappings): a router may report a mapping whose forwarding
//     rule is gone (miniupnpd after a firewall reload).
//  10. Otherwise "direct" to the home address, re-verified when the oldest
//     probe is ReverifyAfter old (RecheckIn): the relay probes again, and a
//     failure sends DNS back to the relay at once, so within ReverifyAfter
//     plus one probe of the failure.
//
// The agent logs every change of path or reason (rate-limited), so a log
// reader learns why the path stays on the relay, not only that it does.
package path

import (
	"fmt"
	"net/netip"
	"time"
)

// Kind is where DNS points.
type Kind string

// The paths.
const (
	// Unknown: nothing can be published yet.
	Unknown Kind = "unknown"
	// Home: no relay is configured; DNS follows the home's public address.
	Home Kind = "home"
	// Relay: DNS points at the relay, which forwards through the tunnel.
	Relay Kind = "relay"
	// Direct: DNS points at the home; the router forwards to the agent.
	Direct Kind = "direct"
)

// Default timings (see Facts).
const (
	DefaultReverifyAfter = 30 * time.Second
	DefaultRetryFailed   = time.Minute
)

// Service is one exposed service: its name and its one public port.
type Service struct {
	Name string
	Port uint16
	// UDP marks the WireGuard port (a UDP mapping and probe); false is TCP.
	UDP bool
}

// Mapping is the router's state for one public port.
type Mapping struct {
	Port   uint16
	UDP    bool   // a UDP mapping (the WireGuard port); false is TCP
	Name   string // as the agent shows it, e.g. "tcp/10554"
	Active bool
	// Since is when the router last (re)made it; a probe older than this
	// verified an earlier mapping.
	Since time.Time
}

// Probe is the relay's last answer for one service.
type Probe struct {
	At   time.Time
	Home netip.Addr // the address the relay tried
	OK   bool
	// Reason is the relay's reason for a failure.
	Reason string
	// Err says why the probe could not run at all (tunnel down, timeout).
	Err string
}

// Facts is everything Decide looks at. The zero value of each field means
// "not known" or "no".
type Facts struct {
	Now time.Time

	// RelayConfigured: the agent has a relay section.
	RelayConfigured bool
	// Connected: the tunnel to the relay is up.
	Connected bool
	// RelayIP is the address DNS gets in relayed mode; zero until known.
	RelayIP netip.Addr

	// Home, HomeV6 are the home's detected public addresses; Home falls
	// back to the router's external address when detection found none.
	Home, HomeV6 netip.Addr
	// DetectErr is why detection failed ("" if it did not).
	DetectErr string
	// NATBlocks: the NAT kind makes inbound connections impossible;
	// NATWhy explains it to the user.
	NATBlocks bool
	NATWhy    string

	// DirectEnabled: direct.enabled and a port mapper runs. DirectOffWhy
	// says why not; "" = the config turned it off.
	DirectEnabled bool
	DirectOffWhy  string
	// RouterProblem is the port mapper's user-facing problem, "" if none.
	RouterProblem string
	// Mappings are the wanted router mappings.
	Mappings []Mapping

	// Services are the exposed services, each probed through its port.
	Services []Service
	// Probes are the last probe results by service name.
	Probes map[string]Probe

	// Previous is the last decision (zero at start).
	Previous Decision

	// ReverifyAfter is how long a successful probe stays valid; zero =
	// DefaultReverifyAfter. RetryFailed is when a failed direct path is
	// tried again; zero = DefaultRetryFailed.
	ReverifyAfter, RetryFailed time.Duration
}

// Decision is what Decide concluded.
type Decision struct {
	Path   Kind
	Reason string
	// Target is where DNS should point: the relay's address, or the home's
	// (for Home, its IPv4 address). Zero: leave DNS as it is.
	Target netip.Addr
	// TargetV6 is the home's IPv6 address (Home only).
	TargetV6 netip.Addr
	// Probe lists services to probe now (the relay tries Probe.Home at each
	// service's port); Decide must then be called again with the results.
	// Path and Reason are then the previous ones, Target zero.
	Probe []Service
	// RecheckIn is when to decide again even if nothing changes (the next
	// re-verification); zero = at the agent's regular interval.
	RecheckIn time.Duration
	// ProbeFailed: the relay could not reach a service although the router
	// reports every mapping active.
	ProbeFailed bool
	// RepairMappings asks the agent to have the router make every mapping
	// again: set on the first failed probe of a run of them, since some
	// routers (miniupnpd after a firewall reload) report mappings whose
	// forwarding rules are gone.
	RepairMappings bool
}

// Decide applies the package's rules to f.
func Decide(f Facts) Decision {
	reverify := f.ReverifyAfter
	if reverify <= 0 {
		reverify = DefaultReverifyAfter
	}
	retry := f.RetryFailed
	if retry <= 0 {
		retry = DefaultRetryFailed
	}
	if !f.RelayConfigured {
		if f.DetectErr != "" && !f.Home.IsValid() {
			return Decision{Path: Unknown, Reason: "public address not detected: " + f.DetectErr}
		}
		return Decision{Path: Home, Reason: "no relay configured: the record follows the home's address",
			Target: f.Home, TargetV6: f.HomeV6}
	}
	relay := func(why string) Decision { return Decision{Path: Relay, Reason: why, Target: f.RelayIP} }
	switch {
	case !f.RelayIP.IsValid():
		return Decision{Path: Relay, Reason: "tunnel not connected yet; relay address unknown"}
	case !f.Connected:
		return relay("tunnel to the relay is down, so the direct path can't be verified")
	case !f.DirectEnabled && f.DirectOffWhy != "":
		return relay(f.DirectOffWhy)
	case !f.DirectEnabled:
		return relay("direct path disabled (direct.enabled: false)")
	case f.NATBlocks:
		return relay(f.NATWhy)
	case f.RouterProblem != "":
		return relay("router: " + f.RouterProblem)
	case !f.Home.IsValid() || len(f.Mappings) == 0:
		return relay("no verified public address or mapping yet")
	}
	type portKey struct {
		port uint16
		udp  bool
	}
	since := map[portKey]time.Time{}
	for _, m := range f.Mappings {
		if !m.Active {
			return relay("mapping " + m.Name + " not active")
		}
		since[portKey{m.Port, m.UDP}] = m.Since
	}

	var stale []Service
	for _, s := range f.Services {
		p, ok := f.Probes[s.Name]
		if !ok || p.Home != f.Home || p.At.Before(since[portKey{s.Port, s.UDP}]) ||
			f.Now.Sub(p.At) >= reverify*9/10 || p.At.After(f.Now) {
			stale = append(stale, s)
		}
	}
	if len(stale) > 0 {
		d := f.Previous
		d.Probe, d.Target, d.RecheckIn, d.RepairMappings = stale, netip.Addr{}, 0, false
		if d.Path == "" {
			d.Path, d.Reason = Relay, "verifying the direct path"
		}
		return d
	}
	for _, s := range f.Services {
		p := f.Probes[s.Name]
		if p.Err != "" {
			d := relay("probe could not run: " + p.Err)
			d.RecheckIn = retry
			return d
		}
		if !p.OK {
			d := relay(fmt.Sprintf("relay could not reach %s directly: %s", s.Name, p.Reason))
			d.RecheckIn, d.ProbeFailed = retry, true
			d.RepairMappings = !f.Previous.ProbeFailed
			return d
		}
	}
	// Re-verify when the oldest result is reverify old, not reverify after
	// this decision: a decision in between (a new address, a poke) must not
	// push the next probe out.
	oldest := f.Now
	for _, s := range f.Services {
		if at := f.Probes[s.Name].At; at.Before(oldest) {
			oldest = at
		}
	}
	return Decision{Path: Direct, Target: f.Home, RecheckIn: max(oldest.Add(reverify).Sub(f.Now), time.Second),
		Reason: "the relay reached every service at " + f.Home.String() + " from outside"}
}
