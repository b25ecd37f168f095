package portmap

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Protocol names, as in Config.Protocols and Status.Protocol.
const (
	ProtoUPnP   = "upnp"
	ProtoNATPMP = "natpmp"
	ProtoPCP    = "pcp"
)

// preference is the order in which working protocols are chosen (see the package doc).
var preference = []string{ProtoPCP, ProtoNATPMP, ProtoUPnP}

// Mapping is one port the router should forward to this host.
type Mapping struct {
	Proto        string // "tcp" or "udp"
	ExternalPort uint16 // the service's public port
	InternalPort uint16 // the agent's listener on this host
	Description  string // shown in the router's UI; default "porthole"
}

func (m Mapping) String() string { return fmt.Sprintf("%s/%d", m.Proto, m.ExternalPort) }

// Config configures a Client. Every field is optional.
type Config struct {
	// Gateway returns the router's address. Nil = the default gateway (jackpal/gateway).
	Gateway func() (netip.Addr, error)
	// LocalAddr returns this host's address towards gw and that interface's
	// name ("" if unknown). Nil = the route's source address (a connected UDP
	// socket, which sends nothing).
	LocalAddr func(gw netip.Addr) (addr netip.Addr, ifName string, err error)
	// Protocols lists the protocols to try: "upnp", "natpmp", "pcp". Nil = all.
	Protocols []string
	// Lease is the lifetime asked for each mapping. Default 2h. The router's
	// grant is used as given; mappings are renewed at half of it.
	Lease time.Duration
	// CheckInterval is how often the router is checked for a reboot, a lost
	// mapping or a new external address. Default 30s, so a lost mapping is
	// made again within a minute. Retries back off up to it.
	CheckInterval time.Duration
	// Timeout bounds one exchange with the router (SSDP search, NAT-PMP or PCP
	// request with retransmissions, SOAP call). Default 2s.
	Timeout time.Duration
	// Logger receives problems (each logged once, not per retry). Nil = discard.
	Logger *slog.Logger
	// Clock drives leases, renewals, checks and backoff. Nil = real time.
	Clock Clock
	// NATPMPPort is the router's NAT-PMP and PCP port. Default 5351.
	NATPMPPort uint16
	// SSDPAddr is where multicast M-SEARCHes go. Default 239.255.255.250:1900.
	SSDPAddr netip.AddrPort
	// SSDPPort is the gateway's port for unicast M-SEARCHes. Default 1900.
	SSDPPort uint16
	// RootDescURL, when set, is the IGD root description to use instead of
	// searching with SSDP.
	RootDescURL string
	// StateFile remembers this run's mappings (mode 0600) so the next run
	// deletes those a crash left behind. "" = no such memory.
	StateFile string
	// InContainer reports whether we run in a container, for the hint given
	// when no router answers. Nil = /.dockerenv or /run/.containerenv exists.
	InContainer func() bool
}

// Status is a snapshot of the client's view of the router and the mappings.
type Status struct {
	Gateway      netip.Addr
	LocalAddr    netip.Addr
	Protocol     string     // "pcp", "natpmp", "upnp", or "" while no router is in use
	ExternalAddr netip.Addr // as the router reports it; zero if unknown. Not verified.
	Mappings     []MappingStatus
	// Problem says in one sentence what keeps mappings from working and what
	// the user can do; "" when all is well.
	Problem string
	// RouterRestarts counts router restarts (or lost mappings) noticed.
	RouterRestarts int
}

// MappingStatus is one wanted mapping's state.
type MappingStatus struct {
	Mapping
	Active  bool      // the router forwards ExternalPort to us, as far as we know
	Expires time.Time // end of the granted lease; zero when inactive or permanent
	// Since is when the router last made it (zero when inactive); a check
	// from outside made before then verified an earlier mapping.
	Since time.Time
	Err   error // why the mapping is not active (nil while being made)
}

// mapper is one protocol's way of talking to the router.
type mapper interface {
	name() string
	// add creates or renews a mapping and returns what the router granted.
	add(ctx context.Context, r request) (grant, error)
	// remove deletes a mapping that the router granted on port granted.
	remove(ctx context.Context, r request, granted uint16) error
	// check is the cheap periodic check; it returns the external address when
	// the protocol reports one (reported), zero if the router has none.
	check(ctx context.Context) (addr netip.Addr, reported bool, err error)
	// verify reports whether the router still holds the mapping (UPnP);
	// epoch-based protocols answer true and rely on takeReset.
	verify(ctx context.Context, r request, granted uint16) (bool, error)
	// checksByRenewing: the protocol can't ask whether the router holds a
	// mapping (NAT-PMP, PCP), so the periodic check requests it again.
	checksByRenewing() bool
	// takeReset reports whether a router restart was seen since the last call.
	takeReset() bool
}

type request struct {
	Mapping
	Lease time.Duration
	Nonce [12]byte // PCP
	Local netip.Addr
}

type grant struct {
	ExternalPort uint16
	Lifetime     time.Duration // 0 = permanent
	ExternalAddr netip.Addr    // zero if the reply has none
}

type key struct {
	proto string
	port  uint16
}

// entry is the Run goroutine's record of one mapping.
type entry struct {
	m         Mapping
	old       *Mapping // previous version still on the router, to delete first
	nonce     [12]byte
	wanted    bool
	active    bool
	inFlight  bool   // an add was interrupted: the router may hold it
	protocol  string // the protocol that made it
	granted   uint16
	expires   time.Time
	since     time.Time // when it last became active
	next      time.Time // next renewal or retry
	failures  int
	err       error
	loggedErr string
}

var never = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Client keeps the wanted port mappings on the router.
type Client struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	httpc   *http.Client
	wake    chan struct{}
	changes chan struct{}
	running atomic.Bool

	mu      sync.Mutex // guards the fields below
	desired []Mapping
	status  Status
	repair  bool // Repair was called

	// The fields below belong to the Run goroutine.
	gw, local       netip.Addr
	ifName          string
	m               mapper            // protocol in use; nil until a router is found
	others          map[string]mapper // other protocols that answered (stale cleanup)
	nextDiscover    time.Time
	discoverFails   int
	discoverProblem string
	nextCheck       time.Time
	entries         map[key]*entry
	extAddr         netip.Addr
	extAddrProblem  string
	restarts        int
	staleDone       bool
	stateDirty      bool
	loggedProblem   string
	loggedState     string
}

// New returns a Client for cfg. It does nothing until Run.
func New(cfg Config) (*Client, error) {
	if cfg.Gateway == nil {
		cfg.Gateway = defaultGateway
	}
	if cfg.LocalAddr == nil {
		cfg.LocalAddr = defaultLocalAddr
	}
	if cfg.Protocols == nil {
		cfg.Protocols = []string{ProtoUPnP, ProtoNATPMP, ProtoPCP}
	}
	for _, p := range cfg.Protocols {
		if !slices.Contains(preference, p) {
			return nil, fmt.Errorf("portmap: unknown protocol %q (want upnp, natpmp or pcp)", p)
		}
	}
	if cfg.Lease == 0 {
		cfg.Lease = 2 * time.Hour
	}
	if cfg.Lease < time.Minute {
		return nil, fmt.Errorf("portmap: lease %s is shorter than a minute", cfg.Lease)
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 30 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.NATPMPPort == 0 {
		cfg.NATPMPPort = 5351
	}
	if !cfg.SSDPAddr.IsValid() {
		cfg.SSDPAddr = netip.MustParseAddrPort("239.255.255.250:1900")
	}
	if cfg.SSDPPort == 0 {
		cfg.SSDPPort = 1900
	}
	if cfg.RootDescURL != "" {
		if u, err := url.Parse(cfg.RootDescURL); err != nil || u.Scheme != "http" {
			return nil, fmt.Errorf("portmap: root description URL %q is not an http URL", cfg.RootDescURL)
		}
	}
	if cfg.InContainer == nil {
		cfg.InContainer = defaultInContainer
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Client{
		cfg:   cfg,
		log:   log,
		clock: cfg.Clock,
		httpc: &http.Client{
			Transport: &http.Transport{
				Proxy:                 nil, // the router is on the LAN: never through a proxy
				DialContext:           (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
				MaxIdleConnsPerHost:   2,
				IdleConnTimeout:       cfg.CheckInterval + 30*time.Second,
				ResponseHeaderTimeout: cfg.Timeout,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		wake:    make(chan struct{}, 1),
		changes: make(chan struct{}, 1),
		entries: map[key]*entry{},
	}, nil
}

func validMapping(m Mapping) error {
	if m.Proto != "tcp" && m.Proto != "udp" {
		return fmt.Errorf("portmap: mapping %s: protocol must be tcp or udp", m)
	}
	if m.ExternalPort == 0 || m.InternalPort == 0 {
		return fmt.Errorf("portmap: mapping %s: ports must not be 0", m)
	}
	return nil
}

// SetMappings replaces the set of wanted mappings; Run applies it promptly:
// new ones are made, dropped ones deleted, changed ones replaced.
func (c *Client) SetMappings(ms []Mapping) error {
	seen := map[key]bool{}
	cp := make([]Mapping, 0, len(ms))
	for _, m := range ms {
		if err := validMapping(m); err != nil {
			return err
		}
		k := key{m.Proto, m.ExternalPort}
		if seen[k] {
			return fmt.Errorf("portmap: mapping %s listed twice", m)
		}
		seen[k] = true
		if m.Description == "" {
			m.Description = "porthole"
		}
		cp = append(cp, m)
	}
	c.mu.Lock()
	c.desired = cp
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// Repair asks Run to delete and make again, at once, every mapping the
// router reports: for when a check from outside (the relay's probe) finds
// that a mapping the router holds does not forward. Some routers keep
// answering for rules that are gone (miniupnpd after a firewall reload
// still finds them with GetSpecificPortMappingEntry).
func (c *Client) Repair() {
	c.mu.Lock()
	c.repair = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Status returns a snapshot of the current state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Mappings = slices.Clone(s.Mappings)
	return s
}

// Changes is signalled (without blocking; one pending signal at most)
// whenever Status changes meaningfully: a mapping made or lost, the
// protocol, external address or problem changed, a router restart noticed.
// Lease renewals alone do not signal.
func (c *Client) Changes() <-chan struct{} { return c.changes }

// Run finds the router, keeps the wanted mappings on it until ctx ends, then
// deletes them (within a short deadline) and returns nil. Run may be called
// only once.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer c.httpc.CloseIdleConnections()
	select { // the first step reads the wanted set anyway
	case <-c.wake:
	default:
	}
	for {
		c.step(ctx)
		c.publish()
		t := c.clock.NewTimer(c.nextWake().Sub(c.clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			c.shutdown()
			c.publish()
			return nil
		case <-c.wake:
		case <-t.C():
		}
		t.Stop()
	}
}

// step does whatever is due: discovery, the periodic check, mappings.
func (c *Client) step(ctx context.Context) {
	c.syncDesired()
	c.mu.Lock()
	repair := c.repair
	c.repair = false
	c.mu.Unlock()
	if repair && c.m != nil {
		c.remakeAll(ctx)
	}
	if c.m == nil {
		if c.clock.Now().Before(c.nextDiscover) || !c.discover(ctx) {
			return
		}
	}
	if !c.clock.Now().Before(c.nextCheck) && !c.check(ctx) {
		return
	}
	c.reconcile(ctx)
	if c.stateDirty {
		c.saveState()
	}
}

func (c *Client) nextWake() time.Time {
	now := c.clock.Now()
	next := now.Add(c.cfg.CheckInterval)
	if c.m == nil {
		return minTime(next, c.nextDiscover)
	}
	next = minTime(next, c.nextCheck)
	for _, e := range c.entries {
		if !e.wanted || e.old != nil {
			return now
		}
		next = minTime(next, e.next)
	}
	return next
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// backoff is the delay before retry number n (n >= 1): 5s doubling, at most CheckInterval.
func (c *Client) backoff(n int) time.Duration {
	d := 5 * time.Second
	for i := 1; i < n && d < c.cfg.CheckInterval; i++ {
		d *= 2
	}
	return min(d, c.cfg.CheckInterval)
}

func (c *Client) syncDesired() {
	c.mu.Lock()
	desired := c.desired
	c.mu.Unlock()
	now := c.clock.Now()
	want := map[key]Mapping{}
	for _, m := range desired {
		want[key{m.Proto, m.ExternalPort}] = m
	}
	for k, e := range c.entries {
		m, ok := want[k]
		switch {
		case !ok:
			e.wanted = false
		case m != e.m:
			if e.active && e.old == nil {
				old := e.m
				e.old = &old
			}
			e.m, e.wanted, e.active, e.next, e.failures, e.err = m, true, false, now, 0, nil
		default:
			e.wanted = true
		}
	}
	for k, m := range want {
		if c.entries[k] == nil {
			e := &entry{m: m, wanted: true, next: now}
			rand.Read(e.nonce[:])
			c.entries[k] = e
		}
	}
}

func (c *Client) sortedEntries() []*entry {
	es := make([]*entry, 0, len(c.entries))
	for _, e := range c.entries {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *entry) int {
		if d := strings.Compare(a.m.Proto, b.m.Proto); d != 0 {
			return d
		}
		return int(a.m.ExternalPort) - int(b.m.ExternalPort)
	})
	return es
}

func (c *Client) req(e *entry, m Mapping) request {
	return request{Mapping: m, Lease: c.cfg.Lease, Nonce: e.nonce, Local: c.local}
}

type probeResult struct {
	name string
	m    mapper
	addr netip.Addr
	rep  bool  // addr was reported
	err  error // nil: works; else why not (m may still be set: the router answered but refused)
}

// discover finds the gateway and probes the protocols in parallel.
func (c *Client) discover(ctx context.Context) bool {
	gw, err := c.cfg.Gateway()
	if err != nil {
		c.discoverFailed(err, "no default gateway found: is the network up?")
		return false
	}
	local, ifName, err := c.cfg.LocalAddr(gw)
	if err != nil {
		c.discoverFailed(err, fmt.Sprintf("no route to the gateway %s", gw))
		return false
	}
	c.gw, c.local, c.ifName = gw, local, ifName

	results := make([]probeResult, len(preference))
	var wg sync.WaitGroup
	for i, name := range preference {
		if !slices.Contains(c.cfg.Protocols, name) {
			results[i] = probeResult{name: name, err: ErrNotSupported}
			continue
		}
		wg.Go(func() { results[i] = c.probe(ctx, name) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return false
	}

	// Prefer a protocol that works; else one whose router answered but refused.
	var chosen *probeResult
	for pass := 0; pass < 2 && chosen == nil; pass++ {
		for i := range results {
			r := &results[i]
			if r.m != nil && (r.err == nil || (pass == 1 && !errors.Is(r.err, ErrNotSupported))) {
				chosen = r
				break
			}
		}
	}
	if chosen == nil {
		var errs []error
		for _, r := range results {
			if r.err != ErrNotSupported {
				errs = append(errs, r.err)
			}
		}
		hint := "enable UPnP or NAT-PMP/PCP on the router"
		if looksLikeDockerBridge(gw, ifName, c.cfg.InContainer()) {
			hint = "running in a Docker bridge network? The router can't be reached from there: use host networking (network_mode: host)"
		}
		c.discoverFailed(fmt.Errorf("%w: %w", ErrNoRouter, errors.Join(errs...)),
			fmt.Sprintf("no router answered UPnP, NAT-PMP or PCP at gateway %s: %s", gw, hint))
		return false
	}

	c.m = chosen.m
	c.others = map[string]mapper{}
	for _, r := range results {
		if r.m != nil && r.name != chosen.name {
			c.others[r.name] = r.m
		}
	}
	c.discoverFails, c.discoverProblem = 0, ""
	for _, r := range results { // the chosen protocol's word first, then any other's
		if r.rep && r.err == nil && (r.name == chosen.name || !c.extAddr.IsValid()) {
			c.setExtAddr(r.addr, r.name == chosen.name)
		}
	}
	attrs := []any{"protocol", chosen.name, "gateway", gw, "local", local}
	if u, ok := chosen.m.(*upnpMapper); ok {
		attrs = append(attrs, "service", u.service, "location", u.location)
	}
	if chosen.err != nil {
		attrs = append(attrs, "err", chosen.err)
	}
	c.log.Info("portmap: router found", attrs...)
	now := c.clock.Now()
	c.nextCheck = now.Add(c.cfg.CheckInterval)
	for _, e := range c.entries {
		e.next = now
	}
	if !c.staleDone {
		c.removeStale(ctx)
		c.staleDone = true
	}
	return ctx.Err() == nil
}

func (c *Client) discoverFailed(err error, problem string) {
	c.discoverFails++
	c.discoverProblem = problem
	c.nextDiscover = c.clock.Now().Add(c.backoff(c.discoverFails))
	c.log.Debug("portmap: discovery failed", "err", err)
}

// probe tries one protocol with a short timeout.
func (c *Client) probe(ctx context.Context, name string) probeResult {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	r := probeResult{name: name}
	server := netip.AddrPortFrom(c.gw, c.cfg.NATPMPPort)
	switch name {
	case ProtoNATPMP:
		m := &natpmpMapper{server: server, clock: c.clock}
		r.addr, r.rep, r.err = m.check(ctx)
		if r.err == nil || isRouterAnswer(r.err) {
			r.m = m
		}
	case ProtoPCP:
		m := &pcpMapper{server: server, client: c.local, clock: c.clock}
		_, _, r.err = m.check(ctx)
		if r.err == nil || isRouterAnswer(r.err) {
			r.m = m
		}
	case ProtoUPnP:
		r.m, r.addr, r.err = c.probeUPnP(ctx)
		r.rep = r.err == nil
	}
	return r
}

// probeUPnP finds an IGD: the configured description, else SSDP to the
// multicast group and unicast to the gateway, using any reply's LOCATION.
func (c *Client) probeUPnP(ctx context.Context) (mapper, netip.Addr, error) {
	if c.cfg.RootDescURL != "" {
		u, _ := url.Parse(c.cfg.RootDescURL)
		m, addr, err := upnpAt(ctx, c.httpc, u, "", c.local)
		if err != nil {
			return nil, addr, err
		}
		return m, addr, nil
	}
	dests := []netip.AddrPort{c.cfg.SSDPAddr}
	if uni := netip.AddrPortFrom(c.gw, c.cfg.SSDPPort); uni != c.cfg.SSDPAddr {
		dests = append(dests, uni)
	}
	var m *upnpMapper
	var addr netip.Addr
	var lastErr error
	// Fetching a description gets its own timeout: a reply late in the
	// search window must not leave it no time.
	err := ssdpSearch(ctx, c.local, c.gw, dests, func(r ssdpResponse) bool {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
		defer cancel()
		m, addr, lastErr = upnpAt(fctx, c.httpc, r.Location, r.BootID, c.local)
		return lastErr == nil
	})
	if m != nil {
		return m, addr, nil
	}
	if lastErr != nil {
		return nil, addr, lastErr
	}
	return nil, addr, err
}

// isRouterAnswer says whether err is the router's own refusal, as opposed
// to silence or garbage.
func isRouterAnswer(err error) bool {
	var u *UPnPError
	var n *NATPMPError
	var p *PCPError
	return errors.As(err, &u) || errors.As(err, &n) || errors.As(err, &p)
}

// check is the periodic cheap check. It returns false if the router is gone.
func (c *Client) check(ctx context.Context) bool {
	octx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	addr, reported, err := c.m.check(octx)
	cancel()
	if ctx.Err() != nil {
		return false
	}
	c.nextCheck = c.clock.Now().Add(c.cfg.CheckInterval)
	if err != nil && !isRouterAnswer(err) {
		c.routerLost(err)
		return false
	}
	if c.m.takeReset() {
		c.routerRestarted("its epoch went back or jumped")
	}
	if err == nil && reported {
		c.setExtAddr(addr, true)
	}
	lost := 0
	for _, e := range c.sortedEntries() {
		if !e.active {
			continue
		}
		if c.m.checksByRenewing() {
			// Requested again (same nonce, same port) by reconcile in this
			// step: a router that lost it without its epoch showing (a
			// reboot soon after the previous reply, a firewall reload that
			// flushed the rules) makes it again, and the reply's epoch is
			// checked like any other.
			e.next = c.clock.Now()
			continue
		}
		octx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		ok, err := c.m.verify(octx, c.req(e, e.m), e.granted)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err != nil && !isRouterAnswer(err) {
			c.routerLost(err)
			return false
		}
		if err == nil && !ok {
			e.active, e.next = false, c.clock.Now()
			lost++
		}
	}
	if lost > 0 {
		c.routerRestarted(fmt.Sprintf("%d mapping(s) vanished from it", lost))
	}
	return true
}

// remakeAll deletes every active mapping and marks it for re-making (Repair).
func (c *Client) remakeAll(ctx context.Context) {
	c.log.Info("portmap: making every mapping again: a check from outside failed although the router reports them", "protocol", c.m.name())
	now := c.clock.Now()
	for _, e := range c.sortedEntries() {
		if !e.active || !e.wanted {
			continue
		}
		c.removeEntry(ctx, e, e.m)
		e.active, e.inFlight, e.next, e.expires = false, false, now, time.Time{}
		c.stateDirty = true
	}
}

// routerRestarted marks every mapping for re-making at once.
func (c *Client) routerRestarted(why string) {
	c.restarts++
	c.log.Warn("portmap: router restarted or lost our mappings; mapping again", "why", why, "protocol", c.m.name())
	now := c.clock.Now()
	for _, e := range c.entries {
		e.active, e.inFlight, e.next, e.expires = false, false, now, time.Time{}
	}
}

// routerLost forgets the router after it stopped answering; discovery starts again at once.
func (c *Client) routerLost(err error) {
	c.log.Warn("portmap: router stopped answering; searching again", "protocol", c.m.name(), "err", err)
	c.m, c.others = nil, nil
	c.nextDiscover = c.clock.Now()
	for _, e := range c.entries {
		e.active, e.inFlight, e.expires = false, false, time.Time{}
	}
}

func (c *Client) setExtAddr(a netip.Addr, authoritative bool) {
	if !a.IsValid() {
		if authoritative {
			c.extAddrProblem = "router reports no external address: its internet link is down, or it sits behind another NAT (carrier-grade NAT?)"
		}
		return
	}
	c.extAddrProblem = ""
	if a != c.extAddr {
		c.log.Info("portmap: router's external address", "addr", a, "was", c.extAddr)
		c.extAddr = a
	}
}

// reconcile deletes unwanted mappings and makes or renews the due ones.
func (c *Client) reconcile(ctx context.Context) {
	for _, e := range c.sortedEntries() {
		if ctx.Err() != nil || c.m == nil {
			return
		}
		k := key{e.m.Proto, e.m.ExternalPort}
		if !e.wanted {
			if e.active || e.inFlight {
				c.removeEntry(ctx, e, e.m)
			}
			delete(c.entries, k)
			c.stateDirty = true
			continue
		}
		if e.old != nil {
			c.removeEntry(ctx, e, *e.old)
			e.old = nil
			c.stateDirty = true
		}
		if !c.clock.Now().Before(e.next) {
			c.mapOne(ctx, e)
		}
	}
}

func (c *Client) removeEntry(ctx context.Context, e *entry, m Mapping) {
	granted := e.granted
	if granted == 0 {
		granted = m.ExternalPort
	}
	octx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if err := c.m.remove(octx, c.req(e, m), granted); err != nil && ctx.Err() == nil {
		c.log.Warn("portmap: could not delete mapping; it will expire", "mapping", m, "err", err)
	}
}

// mapOne makes or renews one mapping.
func (c *Client) mapOne(ctx context.Context, e *entry) {
	r := c.req(e, e.m)
	e.inFlight = true
	// UPnP may need a few calls for one add (retry without lease, read the lease back).
	octx, cancel := context.WithTimeout(ctx, 2*c.cfg.Timeout)
	defer cancel()
	g, err := c.m.add(octx, r)
	if ctx.Err() != nil {
		return // shutdown deletes it, in case the router made it
	}
	if c.m.takeReset() {
		c.routerRestarted("its epoch went back or jumped")
	}
	now := c.clock.Now()
	if err != nil {
		e.inFlight = !isRouterAnswer(err)
		c.failEntry(e, err)
		if !isRouterAnswer(err) && !errors.Is(err, ErrMalformed) {
			c.routerLost(err)
		}
		return
	}
	if g.ExternalPort != e.m.ExternalPort {
		if rerr := c.m.remove(octx, r, g.ExternalPort); rerr != nil && ctx.Err() == nil {
			c.log.Warn("portmap: could not release the port granted instead", "mapping", e.m, "granted", g.ExternalPort, "err", rerr)
		}
		e.inFlight = false
		e.active = false
		c.failEntry(e, &PortMismatchError{Wanted: e.m.ExternalPort, Granted: g.ExternalPort})
		return
	}
	if !e.active {
		e.since = now
		c.log.Info("portmap: port mapped", "mapping", e.m, "internal", netip.AddrPortFrom(c.local, e.m.InternalPort), "protocol", c.m.name(), "lifetime", g.Lifetime)
	}
	e.active, e.inFlight, e.granted, e.protocol = true, false, g.ExternalPort, c.m.name()
	e.err, e.loggedErr, e.failures = nil, "", 0
	if g.Lifetime > 0 {
		e.expires = now.Add(g.Lifetime)
		e.next = now.Add(g.Lifetime / 2)
	} else {
		e.expires, e.next = time.Time{}, never // permanent: checked, deleted on exit
	}
	if g.ExternalAddr.IsValid() {
		c.setExtAddr(g.ExternalAddr, true)
	}
	c.stateDirty = true
}

func (c *Client) failEntry(e *entry, err error) {
	now := c.clock.Now()
	e.err = err
	e.failures++
	e.next = now.Add(c.backoff(e.failures))
	if e.active && now.Before(e.expires) {
		e.next = minTime(e.next, e.expires) // still mapped: retry the renewal before it lapses
	} else {
		e.active = false
	}
	if msg := err.Error(); msg != e.loggedErr {
		e.loggedErr = msg
		c.log.Warn("portmap: mapping failed", "mapping", e.m, "problem", problemText(e.m, err), "err", err)
	}
	c.stateDirty = true
}

// removeStale deletes the mappings an earlier run recorded in the state file.
func (c *Client) removeStale(ctx context.Context) {
	if c.cfg.StateFile == "" {
		return
	}
	st, err := loadState(c.cfg.StateFile)
	if err != nil {
		c.log.Warn("portmap: ignoring unreadable state file", "err", err)
		return
	}
	for _, s := range st.Mappings {
		m := c.m
		if m.name() != s.Protocol {
			m = c.others[s.Protocol]
		}
		if m == nil {
			continue
		}
		r := request{Mapping: s.mapping(), Nonce: s.nonce(), Local: c.local}
		octx, cancel := context.WithTimeout(ctx, 2*c.cfg.Timeout)
		ok, err := m.verify(octx, r, s.Granted)
		if err == nil && ok {
			err = m.remove(octx, r, s.Granted)
		}
		cancel()
		if err == nil && !ok {
			continue // gone already, or now someone else's
		}
		if err != nil {
			c.log.Warn("portmap: could not delete a mapping left by an earlier run", "mapping", r.Mapping, "protocol", s.Protocol, "err", err)
			continue
		}
		c.log.Info("portmap: deleted a mapping left by an earlier run", "mapping", r.Mapping, "protocol", s.Protocol)
	}
	c.stateDirty = true
}

func (c *Client) saveState() {
	c.stateDirty = false
	if c.cfg.StateFile == "" {
		return
	}
	var st stateFile
	for _, e := range c.sortedEntries() {
		if !e.active && !e.inFlight {
			continue
		}
		p, granted := e.protocol, e.granted
		if !e.active {
			p, granted = c.m.name(), e.m.ExternalPort
		}
		sm := stateMapping{Protocol: p, Proto: e.m.Proto, External: e.m.ExternalPort, Internal: e.m.InternalPort,
			Granted: granted, Description: e.m.Description}
		if p == ProtoPCP {
			sm.Nonce = hex.EncodeToString(e.nonce[:])
		}
		st.Mappings = append(st.Mappings, sm)
	}
	if st.Mappings == nil {
		st.Mappings = []stateMapping{}
	}
	if err := saveState(c.cfg.StateFile, st); err != nil {
		if msg := err.Error(); msg != c.loggedState {
			c.loggedState = msg
			c.log.Warn("portmap: cannot save state; stale mappings may survive a crash", "err", err)
		}
	}
}

// shutdown deletes every mapping the router may hold, within a short deadline.
func (c *Client) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*c.cfg.Timeout)
	defer cancel()
	if c.m != nil {
		for _, e := range c.sortedEntries() {
			if !e.active && !e.inFlight {
				continue
			}
			granted := e.granted
			if !e.active {
				granted = e.m.ExternalPort
			}
			if err := c.m.remove(ctx, c.req(e, e.m), granted); err != nil {
				c.log.Warn("portmap: could not delete mapping at exit; the next run will", "mapping", e.m, "err", err)
				continue
			}
			e.active, e.inFlight = false, false
		}
	}
	c.saveState()
	for _, e := range c.entries {
		e.active, e.expires, e.err = false, time.Time{}, nil
	}
	c.m = nil
}

// publish updates the Status snapshot and signals Changes if it changed meaningfully.
func (c *Client) publish() {
	s := Status{Gateway: c.gw, LocalAddr: c.local, ExternalAddr: c.extAddr, RouterRestarts: c.restarts}
	if c.m != nil {
		s.Protocol = c.m.name()
	}
	for _, e := range c.sortedEntries() {
		if !e.wanted {
			continue
		}
		ms := MappingStatus{Mapping: e.m, Active: e.active, Err: e.err}
		if e.active {
			ms.Expires, ms.Since = e.expires, e.since
		}
		s.Mappings = append(s.Mappings, ms)
	}
	s.Problem = c.problem()
	if s.Problem != c.loggedProblem {
		if s.Problem != "" {
			c.log.Warn("portmap: "+s.Problem, "gateway", c.gw)
		} else if c.loggedProblem != "" {
			c.log.Info("portmap: problem solved", "was", c.loggedProblem)
		}
		c.loggedProblem = s.Problem
	}
	c.mu.Lock()
	changed := !sameStatus(c.status, s)
	c.status = s
	c.mu.Unlock()
	if changed {
		select {
		case c.changes <- struct{}{}:
		default:
		}
	}
}

func (c *Client) problem() string {
	if c.m == nil && c.discoverProblem != "" {
		return c.discoverProblem
	}
	for _, e := range c.sortedEntries() {
		if e.wanted && e.err != nil {
			return problemText(e.m, e.err)
		}
	}
	return c.extAddrProblem
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func sameStatus(a, b Status) bool {
	if a.Gateway != b.Gateway || a.LocalAddr != b.LocalAddr || a.Protocol != b.Protocol ||
		a.ExternalAddr != b.ExternalAddr || a.Problem != b.Problem ||
		a.RouterRestarts != b.RouterRestarts || len(a.Mappings) != len(b.Mappings) {
		return false
	}
	for i := range a.Mappings {
		x, y := a.Mappings[i], b.Mappings[i]
		if x.Mapping != y.Mapping || x.Active != y.Active || !x.Since.Equal(y.Since) || errString(x.Err) != errString(y.Err) {
			return false
		}
	}
	return true
}

// problemText says what a mapping error means for the user, in one sentence.
func problemText(m Mapping, err error) string {
	var (
		ue *UPnPError
		ne *NATPMPError
		pe *PCPError
		me *PortMismatchError
	)
	switch {
	case errors.As(err, &me):
		return fmt.Sprintf("router granted port %d instead of %d for %s; released it, since the service's port must be the same everywhere: free port %d on the router or choose another public port",
			me.Granted, me.Wanted, m.Proto, me.Wanted)
	case errors.As(err, &ue):
		switch ue.Code {
		case 501:
			return "router refuses mappings (UPnP 501 ActionFailed): port forwarding is disabled on the router, or its WAN address is private (carrier-grade NAT?)"
		case 606:
			return fmt.Sprintf("router does not allow mapping %s (UPnP 606 not authorized): allow it in the router's UPnP settings; many routers allow only ports >= 1024", m)
		case 718:
			return fmt.Sprintf("port %s is already forwarded on the router to another device (UPnP 718 ConflictInMappingEntry): remove that forwarding or choose another public port", m)
		case 728:
			return "router's port mapping table is full (UPnP 728): remove unused forwardings on the router"
		}
		return fmt.Sprintf("router refused mapping %s (UPnP %d %s)", m, ue.Code, ue.Desc)
	case errors.As(err, &ne):
		return fmt.Sprintf("router refuses mappings (NAT-PMP result %d): %s", ne.Code, natpmpMeanings[ne.Code])
	case errors.As(err, &pe):
		return fmt.Sprintf("router refuses mappings (PCP %s)", pcpNames[pe.Code])
	case errors.Is(err, ErrNoResponse):
		return fmt.Sprintf("router stopped answering while mapping %s", m)
	}
	return fmt.Sprintf("mapping %s failed: %v", m, err)
}
