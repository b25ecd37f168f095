// Package doctor is `porthole-agent doctor`: it checks, one line each, what
// the agent needs from the world around it: the relay over UDP (QUIC) and TCP,
// the clock, state_dir's permissions, each camera and its camera_login, the
// router's port-mapping protocols (read-only: it maps nothing), and whether DNS
// answers what the agent published. Every problem comes with the fix.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/porthole-dev/porthole/agent/portmap"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/httpgw"
	"github.com/porthole-dev/porthole/tunnel"
)

// Outcome of one check.
type Outcome string

// Outcomes.
const (
	OK      Outcome = "ok"
	Problem Outcome = "problem"
	Skipped Outcome = "skipped"
)

// Result is one check's line.
type Result struct {
	Check   string // what was checked: "relay UDP", "camera frontdoor", ...
	Outcome Outcome
	Detail  string // what was found
	Fix     string // what to do; set for a Problem, sometimes for Skipped
}

// String is the line doctor prints.
func (r Result) String() string {
	s := fmt.Sprintf("%-8s %s: %s", r.Outcome, r.Check, r.Detail)
	if r.Fix != "" {
		s += "\n         fix: " + r.Fix
	}
	return s
}

// AgentView is what doctor learns from the running agent (its status), if any.
type AgentView struct {
	// TunnelConnected: the running agent's tunnel is up (its token works).
	TunnelConnected bool
	// DNS is what the agent last published, as "A=203.0.113.7 AAAA=none".
	DNS string
}

// Config configures Run. Only Agent is required.
type Config struct {
	Agent *config.Agent
	// Timeout bounds each check; zero = 5 s.
	Timeout time.Duration
	// DialQUIC and DialTCP reach the relay; nil = the tunnel's.
	DialQUIC, DialTCP tunnel.DialFunc
	// Running returns the running agent's view; nil, or an error, = no agent
	// runs. While one runs, the token is not tried: a second session with it
	// would replace the agent's own.
	Running func(ctx context.Context) (AgentView, error)
	// TimeURL is an HTTP(S) URL whose Date header the clock is compared
	// with; "" = tls.acme_ca, else the first publicip.https URL, else the
	// clock check is skipped.
	TimeURL string
	// HTTPClient fetches TimeURL and camera pages; nil = a plain client.
	HTTPClient *http.Client
	// DialLAN reaches cameras; nil = net.Dialer.
	DialLAN func(ctx context.Context, network, addr string) (net.Conn, error)
	// Portmap is the base of the router check's config (tests: the gateway
	// and ports of a fake router); the agent config's protocols and gateway
	// are added.
	Portmap portmap.Config
	// LookupIP resolves ddns.hostname; nil = the system resolver.
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// PublicIP detects the public address when no agent runs; nil = the
	// DNS check compares with nothing and says so.
	PublicIP func(ctx context.Context) (netip.Addr, error)
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// MaxClockSkew is the clock difference doctor calls a problem: ACME, TLS and
// the relay's session tickets tolerate less than minutes.
const MaxClockSkew = 30 * time.Second

// Run runs every check and returns their lines in order.
func Run(ctx context.Context, cfg Config) []Result {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.DialQUIC == nil {
		cfg.DialQUIC = tunnel.DialQUIC(nil)
	}
	if cfg.DialTCP == nil {
		cfg.DialTCP = tunnel.DialTCP()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.DialLAN == nil {
		cfg.DialLAN = (&net.Dialer{}).DialContext
	}
	if cfg.LookupIP == nil {
		cfg.LookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &doctor{cfg: cfg, ac: cfg.Agent}
	if cfg.Running != nil {
		rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		v, err := cfg.Running(rctx)
		cancel()
		if err == nil {
			d.running = &v
		}
	}
	var out []Result
	out = append(out, d.relay(ctx)...)
	out = append(out, d.clock(ctx))
	out = append(out, d.stateDir()...)
	out = append(out, d.cameras(ctx)...)
	out = append(out, d.router(ctx))
	out = append(out, d.dns(ctx))
	return out
}

// Failed reports whether any result is a Problem.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return r.Outcome == Problem })
}

type doctor struct {
	cfg     Config
	ac      *config.Agent
	running *AgentView // nil when no agent answers
}

func (d *doctor) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.Timeout)
}

func (d *doctor) relay(ctx context.Context) []Result {
	if d.ac.Relay == nil {
		return []Result{{Check: "relay", Outcome: Skipped, Detail: "no relay: section (direct only)"}}
	}
	addr := d.ac.Relay.Address
	var out []Result
	// UDP: a QUIC handshake, then the token when no agent holds the session.
	r := Result{Check: "relay UDP (QUIC)"}
	cctx, cancel := d.timeout(ctx)
	start := time.Now()
	conn, err := d.cfg.DialQUIC(cctx, addr)
	rtt := time.Since(start).Round(time.Millisecond)
	switch {
	case err != nil:
		r.Outcome, r.Detail = Problem, fmt.Sprintf("no QUIC handshake with %s: %s", addr, errText(err))
		r.Fix = "check that the relay runs (systemctl status porthole-relay on the VPS) and that its firewall lets UDP " +
			portOf(addr) + " in; if this network blocks UDP, the agent falls back to TCP (relay.transport: auto)"
	case d.running != nil:
		r.Outcome, r.Detail = OK, fmt.Sprintf("QUIC handshake with %s in %s", addr, rtt)
		if d.running.TunnelConnected {
			r.Detail += "; the running agent's tunnel is connected, so the token works"
		} else {
			r.Detail += "; token not tried (it would replace the running agent's session, which is not connected: see porthole-agent status)"
		}
		conn.CloseWithError(0, "doctor")
	default:
		_, _, aerr := tunnel.Authenticate(cctx, conn, d.ac.Name, d.ac.Relay.Token, "porthole-agent doctor")
		conn.CloseWithError(0, "doctor")
		switch {
		case aerr == nil:
			r.Outcome, r.Detail = OK, fmt.Sprintf("QUIC handshake with %s in %s; the relay accepts the token of agent %q", addr, rtt, d.ac.Name)
		case errors.Is(aerr, tunnel.ErrAuth):
			r.Outcome, r.Detail = Problem, fmt.Sprintf("the relay at %s does not accept the token of agent %q", addr, d.ac.Name)
			r.Fix = "put the same token in relay.yaml (agents: " + d.ac.Name + ": token_file) and agent.yaml (relay: token_file); make one with porthole-relay token"
		default:
			r.Outcome, r.Detail = Problem, fmt.Sprintf("QUIC handshake with %s, then the relay refused agent %q: %s", addr, d.ac.Name, errText(aerr))
			r.Fix = "check that relay.yaml lists the agent " + d.ac.Name + " under agents:, with the same token"
		}
	}
	cancel()
	out = append(out, r)

	r = Result{Check: "relay TCP (fallback)"}
	cctx, cancel = d.timeout(ctx)
	defer cancel()
	start = time.Now()
	conn, err = d.cfg.DialTCP(cctx, addr)
	if err != nil {
		r.Outcome, r.Detail = Problem, fmt.Sprintf("no TLS handshake over TCP with %s: %s", addr, errText(err))
		r.Fix = "let TCP " + portOf(addr) + " in at the relay's firewall: the agent uses it when UDP is blocked"
	} else {
		r.Outcome, r.Detail = OK, fmt.Sprintf("TLS handshake over TCP with %s in %s", addr, time.Since(start).Round(time.Millisecond))
		conn.CloseWithError(0, "doctor")
	}
	return append(out, r)
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return p
}

// errText shortens err for a line.
func errText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer in time"
	}
	return err.Error()
}

func (d *doctor) clock(ctx context.Context) Result {
	r := Result{Check: "clock"}
	src := d.cfg.TimeURL
	if src == "" && d.ac.TLS != nil && d.ac.TLS.ACMECA != "" {
		src = d.ac.TLS.ACMECA
	}
	if src == "" && len(d.ac.PublicIP.HTTPS) > 0 {
		src = d.ac.PublicIP.HTTPS[0]
	}
	if src == "" {
		r.Outcome, r.Detail = Skipped, "no time source in the config (tls.acme_ca or publicip.https)"
		r.Fix = "check it by hand: timedatectl (System clock synchronized: yes)"
		return r
	}
	u, err := url.Parse(src)
	host := "the time source"
	if err == nil {
		host = u.Host
	}
	cctx, cancel := d.timeout(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodHead, src, nil)
	if err != nil {
		r.Outcome, r.Detail = Skipped, "the time source is not a URL"
		return r
	}
	sent := d.cfg.Now()
	resp, err := d.cfg.HTTPClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		r.Outcome, r.Detail = Skipped, fmt.Sprintf("%s did not answer: %s", host, errText(err))
		return r
	}
	resp.Body.Close()
	got := d.cfg.Now()
	remote, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		r.Outcome, r.Detail = Skipped, host+" sent no Date header"
		return r
	}
	local := sent.Add(got.Sub(sent) / 2)
	skew := local.Sub(remote).Round(time.Second)
	if skew.Abs() > MaxClockSkew {
		r.Outcome, r.Detail = Problem, fmt.Sprintf("this clock is %s off %s's", skew, host)
		r.Fix = "turn on time sync: timedatectl set-ntp true (or install chrony); certificates and the relay's TLS need a right clock"
		return r
	}
	r.Outcome, r.Detail = OK, fmt.Sprintf("within %s of %s (±1 s)", skew.Abs(), host)
	return r
}

// maxStateFiles bounds the walk of state_dir.
const maxStateFiles = 2000

func (d *doctor) stateDir() []Result {
	dir := d.ac.StateDir
	r := Result{Check: "state_dir " + dir}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.Outcome, r.Detail = Problem, "does not exist"
		r.Fix = "the agent creates it at start; to make it now: install -d -m 700 " + dir + " (owned by the agent's user)"
		return []Result{r}
	case err != nil:
		r.Outcome, r.Detail, r.Fix = Problem, errText(err), "run doctor as the agent's user (sudo -u porthole ...)"
		return []Result{r}
	case !fi.IsDir():
		r.Outcome, r.Detail, r.Fix = Problem, "is not a directory", "point state_dir: at a directory"
		return []Result{r}
	case fi.Mode().Perm()&0o077 != 0:
		r.Outcome, r.Detail = Problem, fmt.Sprintf("mode %04o: others can look in (it holds keys, sessions and the audit log)", fi.Mode().Perm())
		r.Fix = "chmod 700 " + dir
		return []Result{r}
	}
	var open []string
	n := 0
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable parts: reported by the agent when it needs them
		}
		if n++; n > maxStateFiles {
			return filepath.SkipAll
		}
		info, err := e.Info()
		if err != nil || p == dir {
			return nil
		}
		if info.Mode().Perm()&0o077 != 0 {
			open = append(open, fmt.Sprintf("%s (%04o)", p, info.Mode().Perm()))
		}
		return nil
	})
	if len(open) > 0 {
		r.Outcome, r.Detail = Problem, fmt.Sprintf("open to group or others: %s", strings.Join(first(open, 3), ", "))
		r.Fix = "chmod -R go= " + dir
		return []Result{r}
	}
	r.Outcome, r.Detail = OK, "mode 0700, every file 0600 or stricter"
	return []Result{r}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

func (d *doctor) cameras(ctx context.Context) []Result {
	var out []Result
	for i, s := range d.ac.Services {
		if s.Target == "" {
			continue
		}
		out = append(out, d.camera(ctx, i, s))
	}
	return out
}

func (d *doctor) camera(ctx context.Context, i int, s config.Service) Result {
	r := Result{Check: "camera " + s.Name}
	cctx, cancel := d.timeout(ctx)
	defer cancel()
	conn, err := d.cfg.DialLAN(cctx, "tcp", s.Target)
	if err != nil {
		r.Outcome, r.Detail = Problem, fmt.Sprintf("%s not reachable: %s", s.Target, errText(err))
		r.Fix = fmt.Sprintf("check the camera's power and cable, and services[%d].target (the camera's LAN address and port)", i)
		return r
	}
	conn.Close()
	if s.CameraLogin == nil {
		r.Outcome, r.Detail = OK, s.Target+" answers (no camera_login to check)"
		return r
	}
	var code int
	switch s.Kind {
	case config.KindHTTP:
		code, err = d.httpLogin(cctx, s)
	case config.KindRTSP:
		code, err = d.rtspLogin(cctx, s)
	default:
		r.Outcome, r.Detail = OK, s.Target+" answers"
		return r
	}
	switch {
	case err != nil:
		r.Outcome, r.Detail = Problem, fmt.Sprintf("%s answers TCP, but the login check failed: %s", s.Target, errText(err))
		r.Fix = fmt.Sprintf("check services[%d].kind (%s) matches what the camera speaks on that port", i, s.Kind)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		r.Outcome, r.Detail = Problem, fmt.Sprintf("%s refuses camera_login (user %q): status %d", s.Target, s.CameraLogin.Username, code)
		r.Fix = fmt.Sprintf("check services[%d].camera_login against the camera's own web page (user, password_file)", i)
	case code/100 == 2:
		r.Outcome, r.Detail = OK, fmt.Sprintf("%s answers and accepts camera_login (status %d)", s.Target, code)
	default:
		r.Outcome, r.Detail = OK, fmt.Sprintf("%s answers status %d to %s; camera_login was not refused", s.Target, code, loginPath(s))
	}
	return r
}

// loginPath is what the login check asks for.
func loginPath(s config.Service) string {
	if s.Kind == config.KindHTTP {
		if s.Snapshot != "" {
			return "GET " + s.Snapshot
		}
		return "GET /"
	}
	if s.Path != "" {
		return "DESCRIBE " + s.Path
	}
	return "DESCRIBE /"
}

// httpLogin GETs the snapshot path (or /) with the camera's login.
func (d *doctor) httpLogin(ctx context.Context, s config.Service) (int, error) {
	p := strings.TrimPrefix(loginPath(s), "GET ")
	tr := &http.Transport{DialContext: d.cfg.DialLAN}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: httpgw.CameraTransport(tr, s.CameraLogin.Username, s.CameraLogin.Password),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Target+p, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// rtspLogin sends DESCRIBE with the camera's login.
func (d *doctor) rtspLogin(ctx context.Context, s config.Service) (int, error) {
	u, err := base.ParseURL("rtsp://" + s.Target + strings.TrimPrefix(loginPath(s), "DESCRIBE "))
	if err != nil {
		return 0, err
	}
	u.User = url.UserPassword(s.CameraLogin.Username, s.CameraLogin.Password)
	c := &gortsplib.Client{ReadTimeout: d.cfg.Timeout, WriteTimeout: d.cfg.Timeout, UserAgent: "Porthole doctor",
		DialContext: d.cfg.DialLAN}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	defer close(done)
	go func() { // the end of ctx closes the client mid-request
		select {
		case <-ctx.Done():
		case <-done:
		}
		c.Close()
	}()
	_, res, err := c.Describe(u)
	var bad liberrors.ErrClientBadStatusCode
	switch {
	case errors.As(err, &bad):
		return int(bad.Code), nil
	case err != nil:
		return 0, err
	}
	return int(res.StatusCode), nil
}

func (d *doctor) router(ctx context.Context) Result {
	r := Result{Check: "router port mapping"}
	if !d.ac.Direct.Enabled || len(d.ac.Services) == 0 {
		r.Outcome, r.Detail = Skipped, "direct.enabled is false (relay only)"
		return r
	}
	pc := d.cfg.Portmap
	if len(d.ac.Direct.Protocols) > 0 {
		pc.Protocols = d.ac.Direct.Protocols
	}
	if gw := d.ac.Direct.Gateway; gw.IsValid() && pc.Gateway == nil {
		pc.Gateway = func() (netip.Addr, error) { return gw, nil }
	}
	pc.StateFile = "" // discovery only: no mapping is asked for, none to remember
	pm, err := portmap.New(pc)
	if err != nil {
		r.Outcome, r.Detail = Problem, errText(err)
		return r
	}
	cctx, cancel := context.WithTimeout(ctx, 3*d.cfg.Timeout)
	done := make(chan struct{})
	go func() { pm.Run(cctx); close(done) }()
	var st portmap.Status
	for t := time.NewTicker(20 * time.Millisecond); ; {
		st = pm.Status()
		if st.Protocol != "" || st.Problem != "" || cctx.Err() != nil {
			t.Stop()
			break
		}
		select {
		case <-cctx.Done():
		case <-t.C:
		}
	}
	cancel()
	<-done
	switch {
	case st.Protocol != "":
		r.Outcome = OK
		r.Detail = fmt.Sprintf("the router %s answers %s", st.Gateway, strings.ToUpper(st.Protocol))
		if st.ExternalAddr.IsValid() {
			r.Detail += ", external address " + st.ExternalAddr.String()
		}
		r.Detail += " (nothing was mapped)"
	case st.Problem != "":
		r.Outcome, r.Detail = Problem, st.Problem
		r.Fix = "turn on UPnP IGD, NAT-PMP or PCP in the router's settings, or set direct.enabled: false to use the relay only"
	default:
		r.Outcome, r.Detail = Problem, "no router answered UPnP, NAT-PMP or PCP in time"
		r.Fix = "turn on UPnP IGD, NAT-PMP or PCP in the router's settings, or set direct.enabled: false to use the relay only"
	}
	return r
}

func (d *doctor) dns(ctx context.Context) Result {
	r := Result{Check: "DNS"}
	if d.ac.DDNS == nil {
		r.Outcome, r.Detail = Skipped, "no ddns: section"
		return r
	}
	host := d.ac.DDNS.Hostname
	r.Check = "DNS " + host
	cctx, cancel := d.timeout(ctx)
	defer cancel()
	addrs, err := d.cfg.LookupIP(cctx, host)
	if err != nil {
		r.Outcome, r.Detail = Problem, fmt.Sprintf("does not resolve: %s", errText(err))
		r.Fix = "run porthole-agent -once to publish it, and check ddns.provider's credentials; a new name can take minutes to appear"
		return r
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	got := joinAddrs(addrs)
	var want []netip.Addr
	var from string
	switch {
	case d.running != nil && d.running.DNS != "":
		want, from = parseRecords(d.running.DNS), "what the running agent published ("+d.running.DNS+")"
	case d.cfg.PublicIP != nil:
		ip, err := d.cfg.PublicIP(cctx)
		if err != nil {
			r.Outcome, r.Detail = Skipped, fmt.Sprintf("answers %s; no running agent, and the public address is unknown (%s)", got, errText(err))
			return r
		}
		want, from = []netip.Addr{ip.Unmap()}, "the public address detected now ("+ip.String()+"; a relayed agent publishes the relay's instead)"
	default:
		r.Outcome, r.Detail = Skipped, fmt.Sprintf("answers %s; no running agent to compare with", got)
		return r
	}
	for _, w := range want {
		if !slices.Contains(addrs, w) {
			r.Outcome, r.Detail = Problem, fmt.Sprintf("answers %s, not %s", got, from)
			r.Fix = fmt.Sprintf("wait for the record's TTL (%s), or flush this machine's DNS cache; if it lasts, check porthole-agent status for a DNS error", d.ac.DDNS.TTL)
			return r
		}
	}
	r.Outcome, r.Detail = OK, fmt.Sprintf("answers %s, as %s", got, from)
	return r
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// parseRecords reads the addresses of "A=203.0.113.7 AAAA=none".
func parseRecords(s string) []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.Fields(s) {
		_, v, ok := strings.Cut(f, "=")
		if a, err := netip.ParseAddr(v); ok && err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}
