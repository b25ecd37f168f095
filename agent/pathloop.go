package agent

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/agent/path"
	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/agent/publicip"
)

// pathSources are where the path loop gathers the facts agent/path decides
// on. New fills them from the tunnel and the port mapper; in-process tests
// replace them (no relay or router needed).
type pathSources struct {
	// relay reports the tunnel; nil when no relay is configured.
	relay func() (connected bool, relayIP netip.Addr)
	// router reports the port mapper; nil when the direct path is off.
	router func() portmap.Status
	// repair has the router make every mapping again (portmap.Client.Repair).
	repair func()
	// probe asks the relay to connect to addr from outside as service.
	probe func(ctx context.Context, addr netip.AddrPort, service string) (ok bool, reason string, err error)
	// probeUDP is probe for the WireGuard port (a UDP probe); nil: as probe.
	probeUDP func(ctx context.Context, addr netip.AddrPort, service string) (ok bool, reason string, err error)
	now      func() time.Time
	// directOffWhy says why router is nil when the config enables the
	// direct path (-once); "" = the config disables it.
	directOffWhy string
	// reverify: how often the relay re-verifies a direct path (0 = 30 s);
	// retryFailed: when a failed one is tried again (0 = 1 min).
	reverify, retryFailed time.Duration
	// reasonBurst, reasonEvery rate-limit the log line for path changes.
	reasonBurst int
	reasonEvery time.Duration
}

// defaultPathSources wires the sources to the agent's tunnel and port mapper.
func (a *Agent) defaultPathSources() pathSources {
	s := pathSources{now: time.Now, reverify: path.DefaultReverifyAfter, retryFailed: path.DefaultRetryFailed,
		reasonBurst: 5, reasonEvery: 30 * time.Second}
	if a.tun != nil {
		tun := a.tun
		s.relay = func() (bool, netip.Addr) {
			ts := tun.Status()
			ip := ts.Session.RelayPublicIP
			if !ip.IsValid() && ts.Session.RelayAddr.IsValid() {
				ip = ts.Session.RelayAddr.Addr().Unmap()
			}
			return ts.Connected, ip
		}
		s.probe = func(ctx context.Context, addr netip.AddrPort, service string) (bool, string, error) {
			r, err := tun.Probe(ctx, addr, service)
			if err != nil {
				return false, "", err
			}
			return r.OK, r.Reason, nil
		}
		s.probeUDP = func(ctx context.Context, addr netip.AddrPort, service string) (bool, string, error) {
			r, err := tun.ProbeUDP(ctx, addr, service)
			if err != nil {
				return false, "", err
			}
			return r.OK, r.Reason, nil
		}
	}
	if a.pm != nil {
		s.router, s.repair = a.pm.Status, a.pm.Repair
	}
	return s
}

// pathState is what the path loop remembers between passes. It belongs to
// the goroutine running the loop (or Once).
type pathState struct {
	detected  bool
	res       publicip.Result
	detectErr error
	probes    map[string]path.Probe
	prev      path.Decision
}

func newPathState() *pathState { return &pathState{probes: map[string]path.Probe{}} }

// pathLoop re-checks the public address and the path on an interval (jittered),
// at once when the tunnel reconnects or sees a new address, when a local address
// changes, or when the router's mappings change; then it brings DNS in line.
// While the path is direct, the relay re-verifies it every reverify (a probe
// only, no address detection), so a failure sends DNS back to the relay quickly.
func (a *Agent) pathLoop(ctx context.Context, localChange <-chan struct{}) error {
	interval := a.ac.PublicIP.Interval
	if interval <= 0 {
		interval = 5 * time.Minute
	}
	st := newPathState()
	detect := true
	var nextDetect time.Time
	for {
		rep := a.pass(ctx, st, detect)
		now := time.Now()
		if detect {
			wait := interval/2 + rand.N(interval) // [0.5, 1.5) interval, mean interval
			if !rep.ok {
				wait = min(wait, 30*time.Second)
			}
			nextDetect = now.Add(wait)
		}
		a.saveStatus()
		if a.onPass != nil {
			a.onPass(rep)
		}
		wake := nextDetect
		if rep.recheckIn > 0 {
			wake = earliest(wake, now.Add(rep.recheckIn))
		}
		if !rep.retryAt.IsZero() {
			// A deferred write (minimum interval, backoff) is due then, not a
			// whole interval later.
			wake = earliest(wake, rep.retryAt)
		}
		t := time.NewTimer(max(time.Until(wake), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
			detect = !time.Now().Before(nextDetect)
		case <-a.kick:
			t.Stop()
			detect = true
		case <-localChange:
			t.Stop()
			detect = true
			a.log.Info("local address changed; re-checking the public address")
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

type passReport struct {
	ok        bool // no error (a write waiting for its time is not one)
	dnsRight  bool // DNS holds what the path wants (updated or unchanged)
	detected  bool // this pass detected the public address (else it re-verified only)
	probes    int  // relay probes run in this pass
	path      path.Kind
	action    string
	reason    string
	target    ddns.Records
	retryAt   time.Time     // when a deferred write may go ahead; zero if none
	recheckIn time.Duration // when the path wants to be decided again; zero: regular interval
}

// pass is one detect-decide-publish cycle; with detect false it reuses the
// last detection (a re-verification).
func (a *Agent) pass(ctx context.Context, st *pathState, detect bool) passReport {
	var rep passReport
	if detect || !st.detected {
		res, err := a.det.Detect(ctx)
		st.detected, st.res, st.detectErr = true, res, err
		rep.detected = true
		a.mu.Lock()
		a.status.PublicV4, a.status.PublicV6 = addrString(res.V4), addrString(res.V6)
		a.status.NAT = res.NAT.String()
		a.mu.Unlock()
	}
	d := a.decide(ctx, st, &rep)
	if ctx.Err() != nil {
		return rep // shutting down: a probe cut short says nothing about the path
	}
	rep.path, rep.recheckIn = d.Path, d.RecheckIn
	var want ddns.Records
	switch d.Path {
	case path.Home:
		want = ddns.Records{V4: d.Target, V6: d.TargetV6}
	case path.Direct, path.Relay:
		if d.Target.IsValid() {
			want = a.onlyFamily(d.Target)
		}
	}
	if want.IsZero() {
		rep.reason = d.Reason
		a.setPath(d.Path, d.Reason, "")
		return rep
	}
	out, err := a.updater.Update(ctx, want)
	a.setPath(d.Path, d.Reason, want.String())
	a.mu.Lock()
	a.status.DNSAction = string(out.Action) + ": " + out.Reason
	a.mu.Unlock()
	rep.action, rep.reason, rep.target, rep.retryAt = string(out.Action), out.Reason, want, out.RetryAt
	rep.dnsRight = out.Action == ddns.ActionUpdated || out.Action == ddns.ActionUnchanged
	if err != nil {
		rep.reason = err.Error()
		return rep
	}
	rep.ok = true
	return rep
}

// decide gathers the facts, runs the probes agent/path asks for, and
// returns its decision.
func (a *Agent) decide(ctx context.Context, st *pathState, rep *passReport) path.Decision {
	src := a.paths
	f := path.Facts{
		Now:             src.now(),
		RelayConfigured: src.relay != nil,
		Home:            st.res.V4,
		HomeV6:          st.res.V6,
		NATBlocks:       st.res.NAT == publicip.NATCGNAT || st.res.NAT == publicip.NATDouble,
		DirectEnabled:   src.router != nil,
		DirectOffWhy:    src.directOffWhy,
		Probes:          st.probes,
		Previous:        st.prev,
		ReverifyAfter:   src.reverify,
		RetryFailed:     src.retryFailed,
	}
	if st.detectErr != nil {
		f.DetectErr = st.detectErr.Error()
	}
	if f.NATBlocks {
		f.NATWhy = st.res.NAT.Explain()
	}
	if src.relay != nil {
		f.Connected, f.RelayIP = src.relay()
	}
	if src.router != nil {
		ps := src.router()
		f.RouterProblem = ps.Problem
		if !f.Home.IsValid() && f.RelayConfigured {
			f.Home = ps.ExternalAddr
		}
		for _, m := range ps.Mappings {
			f.Mappings = append(f.Mappings, path.Mapping{Port: m.ExternalPort, UDP: m.Proto == "udp", Name: m.Mapping.String(), Active: m.Active, Since: m.Since})
		}
	}
	for _, s := range a.ac.Services {
		f.Services = append(f.Services, path.Service{Name: s.Name, Port: s.Port})
	}
	if p := a.cfg.WireGuardPort; p != 0 {
		f.Services = append(f.Services, path.Service{Name: WireGuardService, Port: p, UDP: true})
	}
	d := path.Decide(f)
	if len(d.Probe) > 0 {
		for _, s := range d.Probe {
			p := a.probe(ctx, f.Home, s)
			if ctx.Err() != nil {
				return st.prev
			}
			st.probes[s.Name] = p
			rep.probes++
		}
		f.Now = src.now()
		d = path.Decide(f)
	}
	if st.prev.Path == path.Direct && d.Path != path.Direct && d.Path != "" {
		a.log.Warn("direct path lost; DNS goes back to the relay", "reason", d.Reason)
	}
	if d.RepairMappings && src.repair != nil {
		a.log.Info("the relay could not reach a mapped port; asking the router to make the mappings again")
		src.repair()
	}
	st.prev = d
	return d
}

// probe asks the relay to reach one service at home from outside.
func (a *Agent) probe(ctx context.Context, home netip.Addr, s path.Service) path.Probe {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	probe := a.paths.probe
	if s.UDP && a.paths.probeUDP != nil {
		probe = a.paths.probeUDP
	}
	ok, reason, err := probe(pctx, netip.AddrPortFrom(home, s.Port), s.Name)
	p := path.Probe{At: a.paths.now(), Home: home, OK: ok && err == nil, Reason: reason}
	if err != nil {
		p.Err = err.Error()
	}
	return p
}

// setPath records the path and logs every change of path or reason, so the
// log says why DNS points where it does. A flapping reason is rate-limited
// (a burst, then one line per reasonEvery); the lines skipped are counted
// in the next one, and the state it settles in is logged once allowed.
func (a *Agent) setPath(p path.Kind, why, dns string) {
	now := a.paths.now()
	a.mu.Lock()
	prevPath := a.status.Path
	a.status.Path, a.status.PathWhy = string(p), why
	if dns != "" {
		a.status.DNS = dns
	}
	rl := &a.pathLog
	line := string(p) + "\x00" + why
	logIt := false
	var skipped int
	if line != rl.logged {
		if rl.allow(now, a.paths.reasonBurst, a.paths.reasonEvery) {
			logIt, skipped = true, rl.skipped
			rl.logged, rl.skipped = line, 0
		} else if line != rl.last {
			rl.skipped++
		}
	}
	rl.last = line
	a.mu.Unlock()
	if !logIt {
		return
	}
	attrs := []any{"path", string(p), "reason", why}
	if skipped > 0 {
		attrs = append(attrs, "changes_not_logged", skipped)
	}
	if prevPath == string(path.Direct) && p != path.Direct {
		a.log.Warn("path", attrs...)
		return
	}
	a.log.Info("path", attrs...)
}

// reasonLimiter is a token bucket for the path log line.
type reasonLimiter struct {
	logged  string // path and reason last logged
	last    string // path and reason last set
	skipped int    // changes not logged since
	tokens  float64
	at      time.Time
	started bool
}

func (r *reasonLimiter) allow(now time.Time, burst int, every time.Duration) bool {
	if !r.started {
		r.started, r.tokens, r.at = true, float64(burst), now
	}
	if every > 0 && now.After(r.at) {
		r.tokens = min(float64(burst), r.tokens+float64(now.Sub(r.at))/float64(every))
	}
	r.at = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
