//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Role names one of the lab's namespaces; Lab.NS gives its real name.
type Role string

const (
	// WAN is "the internet": the relay (VPS), the STUN server, viewers.
	WAN Role = "wan"
	// ISP is the carrier-grade NAT between router and internet (CGNAT only).
	ISP Role = "isp"
	// Router is the home router: nftables NAT and miniupnpd.
	Router Role = "rtr"
	// LAN is the home host where the agent (and cameras) run.
	LAN Role = "lan"
	// Phone is a phone on mobile data, behind WAN (Options.Phone): it
	// reaches the relay and the home's public address through WAN.
	Phone Role = "phone"
)

// Addresses and ports of the lab (documentation and CGNAT ranges only).
const (
	WANAddr        = "203.0.113.1"   // WAN eth0/24: relay, STUN server, viewers
	ViewerAddr     = "203.0.113.3"   // a second WAN eth0 address: a viewer that isn't the relay (DialFrom)
	PublicAddr     = "203.0.113.2"   // the home's public address (router WAN, or ISP WAN with CGNAT)
	ISPAddr        = "100.64.0.1"    // ISP inside (CGNAT), the router's gateway
	RouterWANCGNAT = "100.64.0.2"    // router WAN/10 behind CGNAT
	RouterLANAddr  = "192.168.77.1"  // router LAN/24, gateway of the LAN host
	AgentAddr      = "192.168.77.10" // the LAN host
	PhoneAddr      = "198.51.100.2"  // the phone's eth0/24 (Options.Phone)
	PhoneGateway   = "198.51.100.1"  // WAN's ph0/24, the phone's default route
	STUNPort       = 3478            // STUN server on WANAddr (udp)
	UPnPHTTPPort   = 5000            // miniupnpd HTTP (rootDesc.xml, SOAP) on RouterLANAddr
	NATPMPPort     = 5351            // miniupnpd NAT-PMP and PCP on RouterLANAddr (udp)
)

// RootDescURL is the router's UPnP device description.
const RootDescURL = "http://192.168.77.1:5000/rootDesc.xml"

// Options choose the lab's variant. The zero value is the "working router":
// plain NAT, STUN on, UPnP IGDv2, NAT-PMP and PCP.
type Options struct {
	// CGNAT puts an ISP namespace between router and internet: the router's
	// WAN is 100.64.0.2/10, the ISP masquerades it to 203.0.113.2 and
	// forwards nothing inbound. With STUN on this is the "lying router":
	// mappings are granted with the right public address, yet unreachable.
	CGNAT bool
	// NoSTUN runs no STUN server. miniupnpd 2.3.1 then refuses every
	// mapping (UPnP 501, NAT-PMP result 3, PCP result 8), because its WAN
	// address is in a reserved range: the "honest refusing router".
	NoSTUN bool
	// IGDv1 makes the router describe itself as IGD:1 / WANIPConnection:1
	// (force_igd_desc_v1=yes) instead of version 2.
	IGDv1 bool
	// NoUPnP turns UPnP IGD off (enable_upnp=no: no SSDP, no HTTP).
	NoUPnP bool
	// NoNATPMP turns NAT-PMP off, and PCP with it (enable_natpmp=no).
	// With NoUPnP too, miniupnpd isn't started at all.
	NoNATPMP bool
	// Phone adds the Phone namespace (PhoneAddr), routed through WAN.
	Phone bool
	// RouterConfig holds extra miniupnpd.conf lines, added before the
	// permission rules (e.g. "clean_ruleset_interval=5").
	RouterConfig []string
}

// Lab is one running lab. Its methods may be called from several goroutines.
type Lab struct {
	ID   string // random "ph" + 6 hex digits; the namespaces are ID-wan, ID-rtr...
	opts Options
	dir  string          // t.TempDir of the test that called Up: configs, logs
	reg  string          // StateRoot/ID
	ns   map[Role]string // the namespaces, set once in Up
	t    testing.TB

	downOnce sync.Once
	downErr  error

	mu     sync.Mutex // guards the fields below
	procs  []*Proc
	router *Proc // the current miniupnpd, nil if none
	isDown bool
}

// Up builds a lab for t and registers its teardown with t.Cleanup. It skips
// t (loudly) when the lab can't run here; see Require.
func Up(t testing.TB, opts Options) *Lab {
	t.Helper()
	Require(t)
	start := time.Now()
	dir := t.TempDir() // before the Down cleanup, so removed after it
	if removed, err := reap(StateRoot, hostNS{}); err != nil {
		t.Logf("lab: cleaning stale labs: %v", err)
	} else if len(removed) > 0 {
		t.Logf("lab: removed stale namespaces of dead test runs: %s", strings.Join(removed, " "))
	}
	stun := ""
	if !opts.NoSTUN {
		stun = Helper(t, "stunserver")
	}

	l := &Lab{ID: newID(), opts: opts, dir: dir, t: t}
	reg, err := register(StateRoot, l.ID)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	l.reg = reg
	l.ns = map[Role]string{WAN: l.ID + "-wan", Router: l.ID + "-rtr", LAN: l.ID + "-lan"}
	if opts.CGNAT {
		l.ns[ISP] = l.ID + "-isp"
	}
	if opts.Phone {
		l.ns[Phone] = l.ID + "-phone"
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("lab: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.build(ctx); err != nil {
		t.Fatalf("lab %s: %v", l.ID, err)
	}
	if stun != "" {
		p := l.StartSpec(t, WAN, "stunserver", Spec{Path: stun, Args: []string{"-listen", fmt.Sprintf("%s:%d", WANAddr, STUNPort)}})
		// miniupnpd gives up ("Performing STUN failed. EXITING") if the
		// server isn't there when it starts
		if err := p.WaitOutput(ctx, "listening on"); err != nil {
			t.Fatalf("lab %s: %v", l.ID, err)
		}
	}
	if err := l.startRouter(ctx, t); err != nil {
		t.Fatalf("lab %s: %v", l.ID, err)
	}
	t.Logf("lab %s up in %.2fs: %s; logs and configs in %s", l.ID, time.Since(start).Seconds(), l.describeVariant(), dir)
	return l
}

func (l *Lab) describeVariant() string {
	var v []string
	if l.opts.CGNAT {
		v = append(v, "CGNAT")
	} else {
		v = append(v, "plain NAT")
	}
	if l.opts.NoSTUN {
		v = append(v, "no STUN (router refuses mappings)")
	} else {
		v = append(v, "STUN")
	}
	if l.opts.NoUPnP {
		v = append(v, "no UPnP")
	} else if l.opts.IGDv1 {
		v = append(v, "IGDv1")
	} else {
		v = append(v, "IGDv2")
	}
	if l.opts.NoNATPMP {
		v = append(v, "no NAT-PMP/PCP")
	} else {
		v = append(v, "NAT-PMP/PCP")
	}
	if l.opts.Phone {
		v = append(v, "phone")
	}
	return strings.Join(v, ", ")
}

// NS returns the real name of a namespace, for `ip netns exec` or `ip -n`.
// It is empty for ISP without CGNAT.
func (l *Lab) NS(r Role) string { return l.ns[r] }

// Dir is the lab's temporary directory (configs, logs); it is removed after
// the test.
func (l *Lab) Dir() string { return l.dir }

// ErrNoNamespace means a Role this lab doesn't have (ISP without CGNAT).
var ErrNoNamespace = errors.New("no such namespace in this lab")

func (l *Lab) nsName(r Role) (string, error) {
	ns, ok := l.ns[r]
	if !ok {
		return "", fmt.Errorf("%q: %w", r, ErrNoNamespace)
	}
	return ns, nil
}

// Exec runs a command inside namespace r, waits for it (at most a minute)
// and returns its combined output; the error includes the output.
func (l *Lab) Exec(r Role, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return l.ExecContext(ctx, r, args...)
}

// ExecContext is Exec with a context.
func (l *Lab) ExecContext(ctx context.Context, r Role, args ...string) (string, error) {
	ns, err := l.nsName(r)
	if err != nil {
		return "", err
	}
	if len(args) == 0 {
		return "", errors.New("exec: no command")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(args, " "), r, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// build creates the namespaces, links, addresses, routes and nftables
// rulesets.
func (l *Lab) build(ctx context.Context) error {
	roles := []Role{WAN, Router, LAN}
	if l.opts.CGNAT {
		roles = []Role{WAN, ISP, Router, LAN}
	}
	if l.opts.Phone {
		roles = append(roles, Phone)
	}
	for _, r := range roles {
		if err := l.addNS(ctx, r); err != nil {
			return err
		}
	}
	// ip ROLE args..., with namespace names filled in for "netns ROLE"
	steps := [][]string{}
	ipn := func(r Role, args ...string) { steps = append(steps, append([]string{"-n", l.ns[r]}, args...)) }
	veth := func(r1 Role, if1, addr1 string, r2 Role, if2, addr2 string) {
		// created directly in the two namespaces: no name ever exists in
		// the host's namespace
		steps = append(steps, []string{"link", "add", if1, "netns", l.ns[r1], "type", "veth", "peer", "name", if2, "netns", l.ns[r2]})
		ipn(r1, "addr", "add", addr1, "dev", if1)
		ipn(r1, "link", "set", if1, "up")
		ipn(r2, "addr", "add", addr2, "dev", if2)
		ipn(r2, "link", "set", if2, "up")
	}
	if l.opts.CGNAT {
		veth(WAN, "eth0", WANAddr+"/24", ISP, "up0", PublicAddr+"/24")
		veth(ISP, "cust0", ISPAddr+"/10", Router, "wan0", RouterWANCGNAT+"/10")
		ipn(ISP, "route", "add", "default", "via", WANAddr)
		ipn(Router, "route", "add", "default", "via", ISPAddr)
	} else {
		veth(WAN, "eth0", WANAddr+"/24", Router, "wan0", PublicAddr+"/24")
		ipn(Router, "route", "add", "default", "via", WANAddr)
	}
	// secondary: WANAddr stays the source of everything that doesn't ask
	ipn(WAN, "addr", "add", ViewerAddr+"/24", "dev", "eth0")
	veth(Router, "lan0", RouterLANAddr+"/24", LAN, "eth0", AgentAddr+"/24")
	// the default route also carries SSDP multicast (239.255.255.250)
	ipn(LAN, "route", "add", "default", "via", RouterLANAddr)
	if l.opts.Phone {
		veth(WAN, "ph0", PhoneGateway+"/24", Phone, "eth0", PhoneAddr+"/24")
		ipn(Phone, "route", "add", "default", "via", PhoneGateway)
	}
	for _, s := range steps {
		if _, err := ipCmd(ctx, s...); err != nil {
			return err
		}
	}
	forward := []Role{Router}
	if l.opts.CGNAT {
		forward = append(forward, ISP)
	}
	if l.opts.Phone {
		forward = append(forward, WAN)
	}
	for _, r := range forward {
		if _, err := l.ExecContext(ctx, r, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
	}
	if err := l.nft(ctx, Router, "router.nft", routerRuleset); err != nil {
		return err
	}
	if l.opts.CGNAT {
		if err := l.nft(ctx, ISP, "isp.nft", ispRuleset); err != nil {
			return err
		}
	}
	return nil
}

// addNS creates one namespace (recorded first, for the reaper) with lo up
// and IPv6 off: the lab is IPv4 only, which keeps miniupnpd, SSDP and IGD on
// IPv4 and avoids DAD and router-solicitation noise.
func (l *Lab) addNS(ctx context.Context, r Role) error {
	ns := l.ns[r]
	if err := recordNamespace(l.reg, ns); err != nil {
		return err
	}
	if _, err := ipCmd(ctx, "netns", "add", ns); err != nil {
		return err
	}
	if _, err := ipCmd(ctx, "-n", ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	_, err := l.ExecContext(ctx, r, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	return err
}

// nft loads a ruleset (kept in the lab dir for reading) into namespace r.
func (l *Lab) nft(ctx context.Context, r Role, name, ruleset string) error {
	path := filepath.Join(l.dir, name)
	if err := os.WriteFile(path, []byte(ruleset), 0o644); err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	_, err := l.ExecContext(ctx, r, "nft", "-f", path)
	return err
}

// Down stops every program the lab started (by pid), kills anything else
// left inside its namespaces and deletes them. Up registers it with
// t.Cleanup; calling it earlier is fine, and it is idempotent.
func (l *Lab) Down() error {
	l.downOnce.Do(func() { l.downErr = l.down() })
	return l.downErr
}

func (l *Lab) down() error {
	l.mu.Lock()
	l.isDown = true
	procs := l.procs
	l.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range []Role{Phone, LAN, Router, ISP, WAN} {
		ns, ok := l.ns[r]
		if !ok || !(hostNS{}).exists(ns) {
			continue
		}
		if pids := killAllIn(ns); len(pids) > 0 {
			l.t.Logf("lab %s: killed leftover processes in %s: %v", l.ID, ns, pids)
		}
		if _, err := ipCmd(context.Background(), "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 && l.reg != "" {
		if err := os.RemoveAll(l.reg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("down %s: %w", l.ID, err)
	}
	return nil
}
