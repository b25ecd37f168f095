package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/icholy/digest"
	"golang.org/x/net/ipv4"
	"golang.org/x/sync/errgroup"
)

// Limits on what discovery does and keeps.
const (
	// MaxHosts bounds the unicast targets of one run (a /22).
	MaxHosts = 1024
	// maxCameras bounds the answering hosts kept.
	maxCameras = 256
	// cameraWorkers is how many cameras are queried at once.
	cameraWorkers = 8
	// onvifBudget is the time for all ONVIF requests to one camera, in
	// request timeouts.
	onvifBudget = 4
)

// Defaults for Config's zero values.
var (
	DefaultRTSPPorts = []int{554, 8554}
	DefaultHTTPPorts = []int{80, 8080}
)

// dialFunc dials TCP; tests replace it.
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config says where and how to look for cameras.
type Config struct {
	// Interfaces are the names of the interfaces to send the multicast
	// probe on. Empty means every interface that is up, can multicast and
	// has a private IPv4 address. Ignored when Hosts is set.
	Interfaces []string
	// Hosts switches to unicast: each item is an IP, IP:port (port of
	// WS-Discovery, default 3702), a host name, or a CIDR; at most MaxHosts
	// addresses in all.
	Hosts []string
	// Username and Password are the camera's ONVIF login; empty Username
	// means no credentials (some cameras still answer). Password is never
	// logged or printed.
	Username string
	Password string
	// Timeout is how long to wait for WS-Discovery answers; zero means 3s.
	Timeout time.Duration
	// RequestTimeout bounds each ONVIF request and each port probe; zero
	// means 4s.
	RequestTimeout time.Duration
	// RTSPPorts and HTTPPorts are probed on every answering host (besides
	// the ports its ONVIF URIs name); nil means DefaultRTSPPorts and
	// DefaultHTTPPorts, an empty non-nil slice none.
	RTSPPorts []int
	HTTPPorts []int
	// Logger gets debug details; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Dial dials the port probes; nil means a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Camera is one host that answered the WS-Discovery probe, with what could be
// learned about it.
type Camera struct {
	// Host is the address the answer came from.
	Host string `json:"host"`
	// Name and Hardware come from the ONVIF scopes.
	Name     string `json:"name,omitempty"`
	Hardware string `json:"hardware,omitempty"`
	ProbeMatch
	// Authenticated is true when ONVIF answered with the credentials given.
	Authenticated bool      `json:"authenticated"`
	Profiles      []Profile `json:"profiles,omitempty"`
	SnapshotURI   string    `json:"snapshot_uri,omitempty"`
	// Ports are the RTSP and HTTP port probes, in the order tried.
	Ports []PortProbe `json:"ports,omitempty"`
	// Problems say what could not be learned and why, in words for users.
	Problems []string `json:"problems,omitempty"`
}

// Result is one discovery run.
type Result struct {
	// Probed names where the probe went: interfaces (multicast) or hosts.
	Probed  []string `json:"probed"`
	Cameras []Camera `json:"cameras"`
	// Ignored counts datagrams that were not ProbeMatches answers.
	Ignored int `json:"ignored,omitempty"`
}

// ErrNoInterface means there was no interface to send the multicast probe on.
var ErrNoInterface = errors.New("no interface to probe")

// Run probes, waits cfg.Timeout for answers, queries each answering host and
// returns what it learned. It fails only when it could not probe at all, or
// when ctx ended (then with what it had learned so far); cameras that
// misbehave get Problems.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	d := newDiscoverer(cfg)
	res := &Result{Cameras: []Camera{}}
	var err error
	if len(cfg.Hosts) > 0 {
		err = d.unicast(ctx, res)
	} else {
		err = d.multicast(ctx, res)
	}
	if err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cameraWorkers)
	for i := range res.Cameras {
		g.Go(func() error {
			d.inspect(gctx, &res.Cameras[i])
			return nil
		})
	}
	g.Wait()
	slices.SortFunc(res.Cameras, func(a, b Camera) int {
		return netip.MustParseAddr(a.Host).Compare(netip.MustParseAddr(b.Host))
	})
	return res, ctx.Err()
}

type discoverer struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	dial dialFunc

	mu      sync.Mutex // guards the fields below
	byHost  map[netip.Addr]int
	ignored int
}

func newDiscoverer(cfg Config) *discoverer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 4 * time.Second
	}
	if cfg.RTSPPorts == nil {
		cfg.RTSPPorts = DefaultRTSPPorts
	}
	if cfg.HTTPPorts == nil {
		cfg.HTTPPorts = DefaultHTTPPorts
	}
	d := &discoverer{cfg: cfg, log: cfg.Logger, now: cfg.Now, dial: cfg.Dial, byHost: map[netip.Addr]int{}}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.dial == nil {
		d.dial = (&net.Dialer{}).DialContext
	}
	return d
}

// multicast sends the probe on each chosen interface and collects answers.
func (d *discoverer) multicast(ctx context.Context, res *Result) error {
	ifaces, err := chooseInterfaces(d.cfg.Interfaces)
	if err != nil {
		return err
	}
	group := &net.UDPAddr{IP: net.ParseIP(multicastGroup), Port: WSDPort}
	deadline := d.now().Add(d.cfg.Timeout)
	var wg sync.WaitGroup
	var errs []error
	for _, ifc := range ifaces {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ifc.addr.AsSlice()})
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", ifc.Name, err))
			continue
		}
		pc := ipv4.NewPacketConn(c)
		if err := pc.SetMulticastInterface(&ifc.Interface); err != nil {
			c.Close()
			errs = append(errs, fmt.Errorf("interface %s: %w", ifc.Name, err))
			continue
		}
		pc.SetMulticastTTL(1)
		res.Probed = append(res.Probed, fmt.Sprintf("%s (%s)", ifc.Name, ifc.addr))
		wg.Go(func() {
			defer c.Close()
			d.exchange(ctx, c, deadline, func(send func(*net.UDPAddr)) { send(group) }, nil, res)
		})
	}
	wg.Wait()
	if len(res.Probed) == 0 {
		return fmt.Errorf("%w: %w", ErrNoInterface, errors.Join(errs...))
	}
	for _, e := range errs {
		d.log.Warn("discover: an interface could not be probed", "err", e)
	}
	return nil
}

// unicast sends the probe to each host and collects answers.
func (d *discoverer) unicast(ctx context.Context, res *Result) error {
	targets, err := ParseHosts(ctx, d.cfg.Hosts)
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp", nil)
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	defer c.Close()
	res.Probed = append(res.Probed, d.cfg.Hosts...)
	deadline := d.now().Add(d.cfg.Timeout)
	answered := func(t netip.AddrPort) bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		_, ok := d.byHost[t.Addr()]
		return ok
	}
	d.exchange(ctx, c, deadline, func(send func(*net.UDPAddr)) {
		for _, t := range targets {
			if !answered(t) {
				send(net.UDPAddrFromAddrPort(t))
			}
		}
	}, func() bool {
		// every host answered: no need to wait out the timeout
		for _, t := range targets {
			if !answered(t) {
				return false
			}
		}
		return true
	}, res)
	return nil
}

// exchange sends the probe (twice: at the start and a third into the wait,
// since UDP may drop the first) and reads answers on c until deadline, or
// until complete (if not nil) says every expected host answered.
func (d *discoverer) exchange(ctx context.Context, c *net.UDPConn, deadline time.Time, sendAll func(func(*net.UDPAddr)), complete func() bool, res *Result) {
	id := newMessageID()
	msg := probeMessage(id)
	send := func(to *net.UDPAddr) {
		if _, err := c.WriteToUDP(msg, to); err != nil {
			d.log.Debug("discover: probe not sent", "to", to, "err", err)
		}
	}
	sendAll(send)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTimer(deadline.Sub(d.now()) / 3)
		defer t.Stop()
		select {
		case <-t.C:
			sendAll(send)
		case <-done:
		}
	})
	defer wg.Wait()
	defer close(done)
	// The deadline first: set after, it would undo a cancel that came
	// between (Run then waited out the whole timeout).
	c.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		src := from.Addr().Unmap()
		relates, matches, err := decodeProbeMatches(buf[:n])
		if err != nil || relates != "" && relates != id {
			d.log.Debug("discover: ignored an answer", "from", from, "err", err, "relates_to", relates)
			d.mu.Lock()
			res.Ignored++
			d.mu.Unlock()
			continue
		}
		d.add(res, src, matches)
		if complete != nil && complete() {
			return
		}
	}
}

// add records the answer of host src.
func (d *discoverer) add(res *Result, src netip.Addr, matches []ProbeMatch) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.byHost[src]
	if !ok {
		if len(res.Cameras) >= maxCameras {
			return
		}
		i = len(res.Cameras)
		d.byHost[src] = i
		res.Cameras = append(res.Cameras, Camera{Host: src.String()})
	}
	cam := &res.Cameras[i]
	for _, m := range matches {
		if cam.Endpoint == "" {
			cam.Endpoint = m.Endpoint
		}
		cam.Types = appendNew(cam.Types, m.Types, maxScopes)
		cam.Scopes = appendNew(cam.Scopes, m.Scopes, maxScopes)
		cam.XAddrs = appendNew(cam.XAddrs, m.XAddrs, maxXAddrs)
	}
	cam.Name = scopeValue(cam.Scopes, "name")
	cam.Hardware = scopeValue(cam.Scopes, "hardware")
}

func appendNew(dst, src []string, max int) []string {
	for _, s := range src {
		if len(dst) < max && !slices.Contains(dst, s) {
			dst = append(dst, s)
		}
	}
	return dst
}

// inspect queries one answering host: ONVIF, then its ports.
func (d *discoverer) inspect(ctx context.Context, cam *Camera) {
	host := netip.MustParseAddr(cam.Host)
	d.onvif(ctx, cam, host)
	type probe struct {
		proto string
		port  int
	}
	var probes []probe
	seen := map[probe]bool{}
	addProbe := func(p probe) {
		if p.port > 0 && p.port < 65536 && !seen[p] {
			seen[p] = true
			probes = append(probes, p)
		}
	}
	for _, p := range cam.Profiles {
		if _, port, ok := uriHostPort(p.StreamURI, 554); ok {
			addProbe(probe{"rtsp", port})
		}
	}
	for _, p := range d.cfg.RTSPPorts {
		addProbe(probe{"rtsp", p})
	}
	if _, port, ok := uriHostPort(cam.SnapshotURI, 80); ok {
		addProbe(probe{"http", port})
	}
	for _, p := range d.cfg.HTTPPorts {
		addProbe(probe{"http", p})
	}
	cam.Ports = make([]PortProbe, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			if p.proto == "rtsp" {
				cam.Ports[i] = probeRTSP(ctx, d.dial, host, p.port, d.cfg.RequestTimeout)
			} else {
				cam.Ports[i] = probeHTTP(ctx, d.dial, host, p.port, d.cfg.RequestTimeout)
			}
		})
	}
	wg.Wait()
}

// onvif asks the camera for its media profiles, stream and snapshot URIs.
func (d *discoverer) onvif(ctx context.Context, cam *Camera, host netip.Addr) {
	deviceURL := d.deviceURL(cam, host)
	if deviceURL == "" {
		return
	}
	// a camera that answers each request just before its time limit must
	// not hold a worker for a dozen of them
	ctx, cancel := context.WithTimeout(ctx, onvifBudget*d.cfg.RequestTimeout)
	defer cancel()
	var rt http.RoundTripper = &http.Transport{
		Proxy:                  nil, // cameras are on the LAN: never through a proxy
		DialContext:            d.dial,
		ResponseHeaderTimeout:  d.cfg.RequestTimeout,
		MaxResponseHeaderBytes: maxProbeHeader,
	}
	if d.cfg.Username != "" {
		// some cameras want HTTP digest besides (or instead of) WS-Security
		rt = &digest.Transport{Username: d.cfg.Username, Password: d.cfg.Password, Transport: rt}
	}
	c := &onvifClient{
		hc: &http.Client{Transport: rt, Timeout: d.cfg.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		user: d.cfg.Username, password: d.cfg.Password, now: d.now,
	}
	defer c.hc.CloseIdleConnections()
	problem := func(format string, args ...any) {
		cam.Problems = append(cam.Problems, fmt.Sprintf(format, args...))
	}
	if d.cfg.Username != "" {
		off, err := c.clockOffset(ctx, deviceURL)
		if err != nil {
			d.log.Debug("discover: no camera time; using ours for the WS-Security digest", "host", cam.Host, "err", err)
		} else {
			c.offset = off
			if off > time.Minute || off < -time.Minute {
				problem("the camera's clock is %s off from this machine's: set its time (NTP), or logins may fail", off.Round(time.Second))
			}
		}
	}
	explain := func(err error) {
		switch {
		case errors.Is(err, ErrNotAuthorized) && d.cfg.Username == "":
			problem("ONVIF needs a login: run again with -user and -password-file (%s)", err)
		case errors.Is(err, ErrNotAuthorized):
			problem("ONVIF refused user %q: wrong user or password? (%s)", d.cfg.Username, err)
		case ctx.Err() != nil:
			problem("ONVIF at %s answers too slowly (%s for all requests): %s", deviceURL, onvifBudget*d.cfg.RequestTimeout, err)
		case isTimeout(err):
			problem("ONVIF at %s: no answer within %s (-request-timeout): %s", deviceURL, d.cfg.RequestTimeout, err)
		default:
			problem("ONVIF at %s: %s", deviceURL, err)
		}
	}
	mediaURL, err := c.mediaURL(ctx, deviceURL)
	if err != nil {
		explain(err)
		return
	}
	if !d.sameHost(cam, host, mediaURL) {
		return
	}
	profiles, err := c.profiles(ctx, mediaURL)
	if err != nil {
		explain(err)
		return
	}
	cam.Authenticated = d.cfg.Username != ""
	for i := range profiles {
		u, err := c.streamURI(ctx, mediaURL, profiles[i].Token)
		if err != nil {
			explain(err)
			continue
		}
		profiles[i].StreamURI = scrubURI(u, d.cfg.Password)
	}
	cam.Profiles = profiles
	if u, err := c.snapshotURI(ctx, mediaURL, profiles[0].Token); err == nil {
		cam.SnapshotURI = scrubURI(u, d.cfg.Password)
	} else if !errors.Is(err, ErrNotAuthorized) {
		d.log.Debug("discover: no snapshot URI", "host", cam.Host, "err", err)
	} else {
		explain(err)
	}
}

// deviceURL picks the device service URL to query: one on the answering
// host's own address. A device that names another address is only trusted
// with a private one, since a stranger on the LAN could answer the probe
// and point us (with the camera login) anywhere.
func (d *discoverer) deviceURL(cam *Camera, host netip.Addr) string {
	var other string
	// plain http first: cameras' https certificates are self-signed
	xaddrs := slices.Clone(cam.XAddrs)
	slices.SortStableFunc(xaddrs, func(a, b string) int {
		return strings.Compare(a[:min(len(a), 5)], b[:min(len(b), 5)]) // "http:" < "https"
	})
	for _, x := range xaddrs {
		a, ok := xaddrHost(x)
		if ok && a == host {
			return x
		}
		if ok && other == "" && (a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast()) {
			other = x
		}
	}
	if other != "" {
		cam.Problems = append(cam.Problems, fmt.Sprintf("the camera answered from %s but names %s as its ONVIF address: using it", host, other))
		return other
	}
	if len(cam.XAddrs) == 0 {
		cam.Problems = append(cam.Problems, "the camera named no ONVIF address (XAddrs): only its ports were probed")
	} else {
		cam.Problems = append(cam.Problems, fmt.Sprintf("the camera answered from %s but names %s as its ONVIF address, not on the LAN: ignored", host, cam.XAddrs[0]))
	}
	return ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// sameHost checks that the media service is on the same host (or a private
// address), as deviceURL does for the device service.
func (d *discoverer) sameHost(cam *Camera, host netip.Addr, u string) bool {
	a, ok := xaddrHost(u)
	if ok && (a == host || a.IsPrivate() || a.IsLoopback()) {
		return true
	}
	cam.Problems = append(cam.Problems, fmt.Sprintf("the camera names %s as its media service, not on the LAN: ignored", u))
	return false
}

// scrubURI drops user:password@ from a URI a camera gave, and any copy of the
// password in it: what discover prints must never hold the password.
func scrubURI(s, password string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = nil
		s = u.String()
	}
	if password != "" {
		s = strings.ReplaceAll(s, password, "PASSWORD")
		s = strings.ReplaceAll(s, url.QueryEscape(password), "PASSWORD")
	}
	return s
}

// uriHostPort splits a URI's host and port (defPort when absent).
func uriHostPort(s string, defPort int) (netip.Addr, int, bool) {
	if s == "" {
		return netip.Addr{}, 0, false
	}
	u, err := url.Parse(s)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}, 0, false
	}
	port := defPort
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return netip.Addr{}, 0, false
		}
	}
	return a.Unmap(), port, true
}

// iface is an interface chosen for the multicast probe, with its IPv4 address.
type iface struct {
	net.Interface
	addr netip.Addr
}

// chooseInterfaces returns the named interfaces, or the default ones.
func chooseInterfaces(names []string) ([]iface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var cands []candidate
	for _, ifc := range all {
		addrs, _ := ifc.Addrs()
		c := candidate{Interface: ifc}
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil {
				c.addrs = append(c.addrs, pfx.Addr())
			}
		}
		cands = append(cands, c)
	}
	return pickInterfaces(cands, names)
}

type candidate struct {
	net.Interface
	addrs []netip.Addr
}

// pickInterfaces is chooseInterfaces' decision, separate for tests.
func pickInterfaces(cands []candidate, names []string) ([]iface, error) {
	var out []iface
	if len(names) > 0 {
		for _, n := range names {
			i := slices.IndexFunc(cands, func(c candidate) bool { return c.Name == n })
			if i < 0 {
				var known []string
				for _, c := range cands {
					known = append(known, c.Name)
				}
				return nil, fmt.Errorf("%w: no interface %q (there are: %s)", ErrNoInterface, n, strings.Join(known, ", "))
			}
			c := cands[i]
			a, ok := firstIPv4(c.addrs, false)
			switch {
			case c.Flags&net.FlagUp == 0:
				return nil, fmt.Errorf("%w: interface %s is down", ErrNoInterface, n)
			case c.Flags&net.FlagMulticast == 0:
				return nil, fmt.Errorf("%w: interface %s cannot send multicast; give the camera's address with -host", ErrNoInterface, n)
			case !ok:
				return nil, fmt.Errorf("%w: interface %s has no IPv4 address", ErrNoInterface, n)
			}
			out = append(out, iface{c.Interface, a})
		}
		return out, nil
	}
	for _, c := range cands {
		if c.Flags&net.FlagUp == 0 || c.Flags&net.FlagMulticast == 0 || c.Flags&net.FlagLoopback != 0 {
			continue
		}
		if a, ok := firstIPv4(c.addrs, true); ok {
			out = append(out, iface{c.Interface, a})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no interface is up with a private IPv4 address (192.168.x, 10.x, 172.16-31.x); name one with -iface, or give the camera's address with -host", ErrNoInterface)
	}
	return out, nil
}

func firstIPv4(addrs []netip.Addr, private bool) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() && (!private || a.IsPrivate()) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// ParseHosts expands unicast targets (IP, IP:port, host name, CIDR) to
// WS-Discovery addresses, at most MaxHosts. A CIDR leaves out its network
// and broadcast addresses.
func ParseHosts(ctx context.Context, items []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	seen := map[netip.AddrPort]bool{}
	add := func(ap netip.AddrPort) error {
		if seen[ap] {
			return nil
		}
		if len(out) == MaxHosts {
			return fmt.Errorf("more than %d hosts: probe a smaller range (a /24 is 254 hosts)", MaxHosts)
		}
		seen[ap] = true
		out = append(out, ap)
		return nil
	}
	for _, it := range items {
		it = strings.TrimSpace(it)
		switch {
		case it == "":
			continue
		case strings.Contains(it, "/"):
			pfx, err := netip.ParsePrefix(it)
			if err != nil {
				return nil, fmt.Errorf("host %q: not a CIDR: %w", it, err)
			}
			pfx = pfx.Masked()
			bits := pfx.Addr().BitLen() - pfx.Bits()
			if bits > 10 {
				return nil, fmt.Errorf("host %q: %d addresses, more than %d: probe a smaller range", it, uint64(1)<<min(bits, 63), MaxHosts)
			}
			a := pfx.Addr()
			n := 1 << bits
			for i := range n {
				if pfx.Addr().Is4() && bits >= 2 && (i == 0 || i == n-1) {
					a = a.Next()
					continue
				}
				if err := add(netip.AddrPortFrom(a, WSDPort)); err != nil {
					return nil, err
				}
				a = a.Next()
			}
		default:
			host, port := it, WSDPort
			if h, p, err := net.SplitHostPort(it); err == nil {
				n, err := strconv.Atoi(p)
				if err != nil || n < 1 || n > 65535 {
					return nil, fmt.Errorf("host %q: bad port %q", it, p)
				}
				host, port = h, n
			}
			a, err := netip.ParseAddr(host)
			if err != nil {
				addrs, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
				if lerr != nil || len(addrs) == 0 {
					return nil, fmt.Errorf("host %q: not an IP address, and the name does not resolve: %w", it, lerr)
				}
				a = addrs[0]
			}
			if err := add(netip.AddrPortFrom(a.Unmap(), uint16(port))); err != nil {
				return nil, err
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no host to probe")
	}
	return out, nil
}
