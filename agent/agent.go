// Package agent is porthole-agent, the home daemon. It wires the parts together:
// the tunnel to the relay (tunnel), the direct listeners and router port
// mappings (internal/gateway, agent/portmap), public address detection
// (agent/publicip) and the DNS record (agent/ddns), and it decides which path DNS
// points at: the home, once the relay has verified the direct path from outside for
// every service, or the relay otherwise.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/agent/notify"
	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/agent/publicip"
	"github.com/porthole-dev/porthole/agent/wg"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
	"github.com/porthole-dev/porthole/tunnel"
)

// Config configures an Agent. Only Agent is required; the rest are hooks for tests.
type Config struct {
	// Agent is the loaded agent.yaml. Required.
	Agent *config.Agent
	// Logger; nil discards.
	Logger *slog.Logger
	// Version is reported to the relay and DNS providers.
	Version string
	// HTTPClient is used by DNS providers; nil = their default.
	HTTPClient *http.Client
	// Sources replaces the public-address sources built from the config (tests).
	Sources []publicip.Source
	// DialLAN dials camera targets; nil = net.Dialer.
	DialLAN func(ctx context.Context, network, addr string) (net.Conn, error)
	// Portmap is the base port-mapping config; the agent fills in what the agent
	// config says (protocols, gateway, logger, state file).
	Portmap portmap.Config
	// DialRelayQUIC replaces the tunnel's QUIC dial (tests: a smaller stream
	// budget); nil = the real one.
	DialRelayQUIC tunnel.DialFunc
	// WireGuardPort is the public WireGuard UDP port (wireguard.port in
	// agent.yaml); zero: no WireGuard, or WireGuard.Port when WireGuard is
	// set (WireGuard.Port is the agent's own socket: wireguard.listen_port,
	// which the router mapping leads to). When set it
	// is registered with the relay as the UDP service WireGuardService
	// (forwarded as datagrams, within the agent's udp_ports at the relay),
	// mapped at the router with the TCP services, and verified by the relay's
	// UDP probe, which whatever owns the port answers with
	// proto.UDPProbeReply (the WireGuard device does).
	WireGuardPort uint16
	// WireGuard, if set, runs the WireGuard endpoint for phones (see
	// WireGuardConfig); nil = none.
	WireGuard *WireGuardConfig
}

// WireGuardService is the name the WireGuard port is registered and probed
// under; no TCP service may have it.
const WireGuardService = "wireguard"

// Agent is a running home agent.
type Agent struct {
	cfg Config
	ac  *config.Agent
	log *slog.Logger

	tun    *tunnel.Client  // nil without a relay section
	pm     *portmap.Client // nil unless direct.enabled
	direct []*gateway.Listener
	// relayed serves the viewer streams of the tunnel, one socketless
	// listener per service in config order; nil without a relay section.
	relayed []*gateway.Listener
	// viewers is the agent's viewer Limiter (limits:), shared by the direct
	// and relayed listeners of every service.
	viewers *gateway.Limiter
	// web is what the http and rtsp services share (viewers, certificate,
	// audit log, handlers); nil without such a service.
	web     *web
	det     *publicip.Detector // nil without ddns
	updater *ddns.Updater      // nil without ddns
	kick    chan struct{}      // asks the path loop to re-check now
	onPass  func(passReport)   // tests: called after each path-loop pass; nil in production
	paths   pathSources        // where the path loop's facts come from (pathloop.go)

	cams *cameraLog // last connection result per LAN target

	oneBoxLogged sync.Map         // service name -> true: the one-box refusal was logged (onebox.go)
	notifier     *notify.Notifier // nil without notify: (events.go)
	dialCamera   dialFunc         // the camera checks' dialer, not counted in cams
	camEvery     time.Duration    // CameraCheckEvery; tests shorten it
	// wgDev is the WireGuard device while it runs.
	wgDev atomic.Pointer[wg.Device]
	// direct (above) is appended under mu, since Status reads it.

	mu         sync.Mutex // guards the fields below
	status     Status
	lastWrite  time.Time // the DNS updater's LastWrite seen by saveStatus
	dnsUpdates int
	pathLog    reasonLimiter // rate-limits the path log line
	// wgListeners serve the services inside the WireGuard tunnel, by
	// service (its tunnel address, then its LAN address).
	wgListeners map[string][]*gateway.Listener
}

// Status is the agent's state as `porthole-agent status` prints it, the admin
// endpoint's /status.json and status.json in state_dir. It never holds a secret.
type Status struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	// Started is when the agent was built (the process start, in practice).
	Started time.Time `json:"started,omitzero"`
	// Updated is when the agent's loop last finished a pass (path and DNS, or
	// the status refresh without ddns).
	Updated time.Time `json:"updated"`
	// StaleAfterSeconds: an Updated older than this means the loop is stuck.
	// Zero when there is no loop to watch.
	StaleAfterSeconds int `json:"stale_after_seconds,omitempty"`
	// Once marks a status saved by a -once run, not by a running agent.
	Once     bool            `json:"once,omitempty"`
	Tunnel   TunnelStatus    `json:"tunnel"`
	Services []ServiceStatus `json:"services,omitempty"`
	PublicV4 string          `json:"public_v4,omitempty"`
	PublicV6 string          `json:"public_v6,omitempty"`
	NAT      string          `json:"nat,omitempty"`
	Router   struct {
		Gateway  string   `json:"gateway,omitempty"`
		Protocol string   `json:"protocol,omitempty"`
		External string   `json:"external,omitempty"`
		Mappings []string `json:"mappings,omitempty"`
		Problem  string   `json:"problem,omitempty"`
	} `json:"router"`
	Path      string `json:"path"`        // "direct", "relay", "home" (no relay) or "unknown"
	PathWhy   string `json:"path_reason"` // why
	DNS       string `json:"dns,omitempty"`
	DNSAction string `json:"dns_action,omitempty"`
	// DNSUpdates counts the record writes since the agent started.
	DNSUpdates int    `json:"dns_updates"`
	DNSError   string `json:"dns_error,omitempty"`
	// WireGuard is the phones' endpoint: peers, handshakes, bytes, path,
	// and the relay's answer for its port; nil without it.
	WireGuard *WireGuardStatus `json:"wireguard,omitempty"`
	// Certificate is what viewers of the TLS services get; nil without one.
	Certificate *CertStatus `json:"certificate,omitempty"`
	// Viewers are the data figures of each viewer who logged in since the
	// start or today, or has a daily cap (http, rtsp and portal services).
	Viewers []meter.ViewerUsage `json:"viewers,omitempty"`
}

// WireGuardStatus is the WireGuard device's figures and the relay's answer
// for the WireGuard port.
type WireGuardStatus struct {
	wg.Stats
	// Relay is the relay's answer for the WireGuard port, as a service's
	// Relay: "waiting", "accepted" or "refused" (RelayReason says why: e.g.
	// the port is outside the agent's udp_ports); empty without a relay.
	Relay       string `json:"relay,omitempty"`
	RelayReason string `json:"relay_reason,omitempty"`
	// TunnelDropped are the relay's packets from phones dropped by the
	// tunnel before the device saw them: over the session's datagram
	// budget, or because the agent's reader fell behind (the current
	// session's). Zero without a relay.
	TunnelDropped uint64 `json:"tunnel_dropped,omitempty"`
}

// CertStatus is the certificate of the agent's TLS services.
type CertStatus struct {
	// Source is "acme", "file" or "self-signed" (browsers warn: compare
	// Fingerprint with what the browser shows).
	Source      string    `json:"source"`
	Subject     string    `json:"subject,omitempty"`
	Issuer      string    `json:"issuer,omitempty"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	Fingerprint string    `json:"fingerprint_sha256,omitempty"`
	// LastError is the last failure to obtain, renew or load it.
	LastError   string    `json:"last_error,omitempty"`
	NextRenewal time.Time `json:"next_renewal,omitzero"`
}

// TunnelStatus is the tunnel to the relay.
type TunnelStatus struct {
	Connected bool      `json:"connected"`
	Relay     string    `json:"relay,omitempty"`
	Since     time.Time `json:"since,omitzero"` // when the current session came up
	Observed  string    `json:"observed,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	// Transport is "quic" or "tcp" (the fallback), and TransportWhy why that one.
	Transport    string `json:"transport,omitempty"`
	TransportWhy string `json:"transport_reason,omitempty"`
	Reconnects   int    `json:"reconnects"`
	// Streams is the viewer connections open through the tunnel now, all
	// services together (per service in ServiceStatus once the tunnel counts them).
	Streams int64 `json:"streams"`
}

// ServiceStatus is one exposed service.
type ServiceStatus struct {
	Name string `json:"name"`
	// Kind is tcp, http or rtsp; TLS says whether viewers get TLS at the
	// agent.
	Kind   string `json:"kind,omitempty"`
	TLS    bool   `json:"tls,omitempty"`
	Port   uint16 `json:"port"`
	Target string `json:"target"`
	// URL is what a viewer opens (rtsps://host:port/<name>, https://host:port/),
	// host being the ddns hostname, the public IPv4 address or the relay's
	// host; empty for tcp and while no host is known.
	URL string `json:"url,omitempty"`
	// Relay is "accepted", "refused" (RelayReason says why), "waiting" (no
	// session yet), or "" without a relay.
	Relay       string `json:"relay,omitempty"`
	RelayReason string `json:"relay_reason,omitempty"`
	// Camera is the last connection to Target, for any viewer on either path.
	Camera CameraStatus `json:"camera"`
	// Viewers connected now, connections accepted, refused by the allow rule
	// (Denied) and by a limit (Refused), bytes moved: viewer to camera (in)
	// and camera to viewer (out). Both paths together; bytes move while
	// connections run.
	Viewers     int64 `json:"viewers"`
	Connections int64 `json:"connections"`
	Denied      int64 `json:"denied"`
	Refused     int64 `json:"refused"`
	BytesIn     int64 `json:"bytes_in"`
	BytesOut    int64 `json:"bytes_out"`
	// Relayed and Direct are the same figures per path: viewers through the
	// relay's tunnel, and viewers at the agent's own listener.
	Relayed PathStats `json:"relayed"`
	Direct  PathStats `json:"direct"`
	// WireGuard are the same figures for phones inside the WireGuard
	// tunnel (either way to it), at the tunnel and LAN addresses together.
	WireGuard PathStats `json:"wireguard"`
}

// PathStats are one path's viewer figures of a service (see ServiceStatus).
type PathStats struct {
	Viewers     int64 `json:"viewers"`
	Connections int64 `json:"connections"`
	Denied      int64 `json:"denied"`
	Refused     int64 `json:"refused"`
	BytesIn     int64 `json:"bytes_in"`
	BytesOut    int64 `json:"bytes_out"`
}

func pathStats(s gateway.Stats) PathStats {
	return PathStats{Viewers: s.Active, Connections: s.Total, Denied: s.Denied, Refused: s.Refused,
		BytesIn: s.BytesIn, BytesOut: s.BytesOut}
}

// New builds the agent's parts from cfg without starting anything.
func New(cfg Config) (_ *Agent, err error) {
	ac := cfg.Agent
	if ac == nil {
		return nil, errors.New("agent: Config.Agent is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialLAN == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		cfg.DialLAN = d.DialContext
	}
	if ac.WireGuard != nil && cfg.WireGuard == nil {
		if cfg.WireGuard, err = wireGuardFromConfig(ac, cfg.Logger); err != nil {
			return nil, err
		}
		if cfg.WireGuardPort == 0 {
			cfg.WireGuardPort = ac.WireGuard.Port // the public one; WireGuard.Port is listen_port
		}
	}
	if w := cfg.WireGuard; w != nil && cfg.WireGuardPort == 0 {
		cfg.WireGuardPort = w.Port
	}
	cams := newCameraLog()
	dialCamera := cfg.DialLAN
	cfg.DialLAN = cams.wrap(cfg.DialLAN)
	a := &Agent{cfg: cfg, ac: ac, log: cfg.Logger, kick: make(chan struct{}, 1), viewers: newLimiter(ac.Limits),
		dialCamera: dialCamera, camEvery: CameraCheckEvery}
	a.status.Name, a.status.Version, a.status.Started, a.cams = ac.Name, cfg.Version, time.Now(), cams
	if a.notifier, err = newNotifier(ac, cfg); err != nil {
		return nil, err
	}

	a.web, err = newWeb(ac, cfg.Logger, ddns.ProviderOptions{
		HTTPClient: cfg.HTTPClient, UserAgent: ddns.UserAgent(cfg.Version), Logger: cfg.Logger.With("part", "ddns")}, cfg.DialLAN, a.notifier)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && a.web != nil {
			a.web.close()
		}
	}()
	if ac.Relay != nil {
		svcs, handler, err := a.relayServices()
		if err != nil {
			return nil, err
		}
		tc := tunnel.Config{
			Address: ac.Relay.Address, Name: ac.Name, Token: ac.Relay.Token, Transport: ac.Relay.Transport,
			Services: svcs, Handler: handler, Logger: cfg.Logger.With("part", "tunnel"), DialQUIC: cfg.DialRelayQUIC,
			OnConnect:  func(s tunnel.Session) { a.oneBoxRefusals(s); a.poke() },
			OnObserved: func(netip.AddrPort) { a.poke() },
		}
		if cfg.WireGuard != nil {
			tc.OnDatagram = a.onDatagram
		}
		tun, err := tunnel.New(tc)
		if err != nil {
			return nil, err
		}
		a.tun = tun
	}
	if ac.Direct.Enabled && (len(ac.Services) > 0 || cfg.WireGuardPort != 0) {
		pc := cfg.Portmap
		if len(ac.Direct.Protocols) > 0 {
			pc.Protocols = ac.Direct.Protocols
		}
		if ac.Direct.Gateway.IsValid() && pc.Gateway == nil {
			gw := ac.Direct.Gateway
			pc.Gateway = func() (netip.Addr, error) { return gw, nil }
		}
		pc.Logger = cfg.Logger.With("part", "portmap")
		if pc.StateFile == "" {
			pc.StateFile = filepath.Join(ac.StateDir, "portmap-state.json")
		}
		pm, err := portmap.New(pc)
		if err != nil {
			return nil, fmt.Errorf("agent: port mapping: %w", err)
		}
		a.pm = pm
	}
	if ac.DDNS != nil {
		u, err := newUpdater(*ac.DDNS, ac.StateDir, ddns.ProviderOptions{
			HTTPClient: cfg.HTTPClient, UserAgent: ddns.UserAgent(cfg.Version), Logger: cfg.Logger.With("part", "ddns"),
		})
		if err != nil {
			return nil, fmt.Errorf("agent: ddns: %w", err)
		}
		a.updater = u
		var relaySrc, routerSrc publicip.LookupFunc
		if a.tun != nil {
			relaySrc = a.relayObserved
		}
		if a.pm != nil {
			routerSrc = a.routerExternal
		}
		pc, err := publicIPConfig(ac.PublicIP, relaySrc, routerSrc, cfg.Logger.With("part", "publicip"))
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		if cfg.Sources != nil {
			pc.Sources = cfg.Sources
		}
		// A relayed agent publishes the relay's address, never the home's IPv6.
		pc.IPv6 = pc.IPv6 && ac.Relay == nil
		a.det = publicip.New(pc)
	}
	a.paths = a.defaultPathSources()
	return a, nil
}

// relayObserved is the "relay" public-address source: the address the relay sees
// on the authenticated tunnel.
func (a *Agent) relayObserved(ctx context.Context, fam publicip.Family) (netip.Addr, error) {
	st := a.tun.Status()
	if !st.Connected {
		return netip.Addr{}, tunnel.ErrNotConnected
	}
	ip := st.Session.Observed.Addr().Unmap()
	if (fam == publicip.IPv4) != ip.Is4() {
		return netip.Addr{}, publicip.ErrNoAnswer
	}
	return ip, nil
}

// routerExternal is the "router" source: the external address the router reports.
func (a *Agent) routerExternal(ctx context.Context, fam publicip.Family) (netip.Addr, error) {
	ext := a.pm.Status().ExternalAddr
	if fam != publicip.IPv4 || !ext.IsValid() {
		return netip.Addr{}, publicip.ErrNoAnswer
	}
	return ext, nil
}

func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Status returns the current state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.status
	st.StaleAfterSeconds = int(a.staleAfter() / time.Second)
	st.DNSUpdates = a.dnsUpdates
	var ts tunnel.Status
	if a.tun != nil {
		ts = a.tun.Status()
		st.Tunnel.Connected = ts.Connected
		st.Tunnel.Relay = a.ac.Relay.Address
		st.Tunnel.LastError = ts.LastError
		st.Tunnel.Reconnects = ts.Reconnects
		st.Tunnel.Streams = a.tun.ActiveStreams()
		st.Tunnel.Transport, st.Tunnel.TransportWhy = ts.Transport, ts.TransportWhy
		if ts.Connected {
			st.Tunnel.Since = ts.Since
		}
		if ts.Session.Observed.IsValid() {
			st.Tunnel.Observed = ts.Session.Observed.String()
		}
	}
	if a.updater != nil {
		us := a.updater.Status()
		st.DNSError = us.LastError
	}
	if a.web != nil && a.web.certs != nil {
		cs := a.web.certs.Status()
		st.Certificate = &CertStatus{Source: cs.Source, Subject: cs.Subject, Issuer: cs.Issuer,
			NotAfter: cs.NotAfter, Fingerprint: cs.Fingerprint, LastError: cs.LastError, NextRenewal: cs.NextRenewal}
	}
	st.Services = a.serviceStatusLocked(ts)
	if a.web != nil {
		st.Viewers = a.web.meter.Usage()
	}
	if d := a.wgDev.Load(); d != nil {
		st.WireGuard = &WireGuardStatus{Stats: d.Stats()}
		if a.tun != nil && a.cfg.WireGuardPort != 0 {
			st.WireGuard.Relay, st.WireGuard.RelayReason = relayState(ts, WireGuardService)
			ds := a.tun.DatagramStats()
			st.WireGuard.TunnelDropped = ds.Dropped + ds.QueueDropped
		}
	}
	if a.pm != nil {
		ps := a.pm.Status()
		st.Router.Protocol = ps.Protocol
		st.Router.Problem = ps.Problem
		st.Router.Mappings = nil
		if ps.Gateway.IsValid() {
			st.Router.Gateway = ps.Gateway.String()
		}
		if ps.ExternalAddr.IsValid() {
			st.Router.External = ps.ExternalAddr.String()
		}
		for _, m := range ps.Mappings {
			s := m.Mapping.String()
			switch {
			case m.Active && m.Expires.IsZero():
				s += " active (permanent)"
			case m.Active:
				s += " active until " + m.Expires.Format(time.RFC3339)
			case m.Err != nil:
				s += " failed: " + m.Err.Error()
			default:
				s += " pending"
			}
			st.Router.Mappings = append(st.Router.Mappings, s)
		}
	}
	return st
}

// Run runs the agent until ctx ends, then shuts down cleanly: direct listeners stop,
// router mappings are deleted, the tunnel closes (and, if configured, DNS records are deleted).
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.ac.StateDir, 0o700); err != nil {
		a.log.Warn("state_dir is not writable; running without saved state", "dir", a.ac.StateDir, "err", err)
	}
	if a.web != nil {
		defer a.web.close() // after the parts below have stopped
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("part stopped", "part", name, "err", err)
			}
		}()
	}
	if a.tun != nil {
		run("tunnel", a.tun.Run)
	}
	if a.notifier.Enabled() {
		run("notify", a.notifier.Run)
		run("events", a.watchEvents)
		run("camera checks", a.checkCameras)
	}
	if a.web != nil && a.web.certs != nil {
		run("certs", a.web.certs.Run)
	}
	if a.cfg.WireGuard != nil {
		if err := a.startWireGuard(ctx, run); err != nil {
			return err
		}
	}
	if a.pm != nil {
		if err := a.startDirect(ctx, run); err != nil {
			return err
		}
	}
	if a.det != nil {
		w := publicip.NewWatcher(publicip.WatcherConfig{Logger: a.log})
		run("watcher", w.Run)
		run("path", func(ctx context.Context) error { return a.pathLoop(ctx, w.C()) })
	} else if a.tun != nil {
		run("status", func(ctx context.Context) error { return a.statusLoop(ctx) })
	}
	a.log.Info("agent running", "name", a.ac.Name, "services", len(a.ac.Services),
		"relay", a.tun != nil, "direct", a.pm != nil, "ddns", a.updater != nil)
	a.logViewerURLs()
	<-ctx.Done()
	if a.updater != nil && a.ac.DDNS.DeleteOnExit {
		dctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.updater.Delete(dctx); err != nil {
			a.log.Warn("deleting DNS records on exit failed", "err", err)
		}
		c()
	}
	if a.web != nil {
		a.web.closeHandlers() // http keep-alive and streams: no drain to wait for
	}
	sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	for _, l := range a.direct {
		l.Shutdown(sctx)
	}
	// No new relayed viewers; those still open end with the tunnel, whose Run
	// waits for them (the deferred wg.Wait).
	for _, l := range a.relayed {
		l.Close()
	}
	a.mu.Lock()
	for _, ls := range a.wgListeners {
		for _, l := range ls {
			l.Close() // the device's Run closes its connections
		}
	}
	a.mu.Unlock()
	return nil
}

// startDirect opens the agent's own gateway listeners (what the router forwards
// to) and starts port mapping.
func (a *Agent) startDirect(ctx context.Context, run func(string, func(context.Context) error)) error {
	var maps []portmap.Mapping
	for _, s := range a.ac.Services {
		cfg, err := a.gatewayConfig(s, "direct")
		if err != nil {
			return err
		}
		cfg.Addr = net.JoinHostPort(a.ac.Direct.Listen, strconv.Itoa(int(s.Port)))
		if a.tun != nil {
			cfg.Intercept = a.tun.AnswerProbe // the relay's probes arrive here, not through the tunnel
		}
		l, err := gateway.Listen(cfg)
		if err != nil {
			return a.directListenError(ctx, s.Name, s.Port, err)
		}
		a.mu.Lock() // Status reads a.direct
		a.direct = append(a.direct, l)
		a.mu.Unlock()
		run("direct "+s.Name, l.Serve)
		maps = append(maps, portmap.Mapping{Proto: "tcp", ExternalPort: s.Port, InternalPort: s.Port, Description: "porthole " + s.Name})
	}
	if p := a.cfg.WireGuardPort; p != 0 {
		internal := p
		if d := a.wgDev.Load(); d != nil {
			internal = d.Port() // wireguard.listen_port
		}
		maps = append(maps, portmap.Mapping{Proto: "udp", ExternalPort: p, InternalPort: internal, Description: "porthole " + WireGuardService})
	}
	if err := a.pm.SetMappings(maps); err != nil {
		return err
	}
	run("portmap", a.pm.Run)
	run("portmap changes", func(ctx context.Context) error { // forward to the path loop
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-a.pm.Changes():
				a.poke()
			}
		}
	})
	return nil
}

// statusLoop keeps status.json fresh when there is no DNS to manage.
func (a *Agent) statusLoop(ctx context.Context) error {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		a.saveStatus()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-a.kick:
		}
	}
}

// onlyFamily is what DNS should hold to send viewers to ip: ip, and no record
// of the other family. A provider that can't remove AAAA (the dyndns2 family)
// fails such an update; since the agent never publishes AAAA while a relay is
// configured, it leaves AAAA alone there instead. The home's A must go for an
// IPv6 relay whatever the provider says, so that update fails loudly rather
// than sending viewers to a stale home address.
func (a *Agent) onlyFamily(ip netip.Addr) ddns.Records {
	if ip.Is6() {
		return ddns.Records{V6: ip, NoV4: true}
	}
	return ddns.Records{V4: ip, NoV6: a.updater.Capabilities().RemoveAAAA}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
