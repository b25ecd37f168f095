package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
	"github.com/porthole-dev/porthole/tunnel"
)

// StatusFile is where a running agent saves its status, inside state_dir: the
// status command's fallback when the admin endpoint is off.
const StatusFile = "status.json"

// saveStatus marks a finished pass of the agent's loop (what /healthz and the
// staleness check watch) and writes the status to state_dir for the status
// command's fallback when the admin endpoint is off.
func (a *Agent) saveStatus() {
	now := time.Now().UTC()
	a.mu.Lock()
	a.status.Updated = now
	if a.updater != nil {
		// Count writes of this process only: LastWrite starts at the last
		// write of an earlier run, from the state file.
		if lw := a.updater.Status().LastWrite; lw.After(a.lastWrite) && lw.After(a.status.Started) {
			a.dnsUpdates++
			a.lastWrite = lw
		}
	}
	a.mu.Unlock()
	if a.web != nil {
		a.web.saveUsage()
	}
	st := a.Status()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return
	}
	tmp := filepath.Join(a.ac.StateDir, "."+StatusFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return // the state_dir warning was logged at start
	}
	os.Rename(tmp, filepath.Join(a.ac.StateDir, StatusFile))
}

// staleAfter is how old Updated may grow before the loop counts as stuck: the
// path loop waits up to 1.5 intervals between passes, and a pass may take a
// while (address detection, one probe per service, the DNS write). Zero when
// no loop runs. The caller holds a.mu or owns a.
func (a *Agent) staleAfter() time.Duration {
	switch {
	case a.det != nil:
		interval := a.ac.PublicIP.Interval
		if interval <= 0 {
			interval = 5 * time.Minute
		}
		return interval*3/2 + 2*time.Minute + time.Duration(len(a.ac.Services))*10*time.Second
	case a.tun != nil:
		return time.Minute // statusLoop saves every 10 s
	}
	return 0
}

// ErrStale is wrapped by Status.Stale.
var ErrStale = errors.New("status is stale")

// Stale says why st is out of date at now (the agent's loop has not finished
// a pass for longer than it should), or nil.
func (st Status) Stale(now time.Time) error {
	if st.StaleAfterSeconds <= 0 || st.Once {
		return nil // a -once run's status is as old as the run, which the header shows
	}
	limit := time.Duration(st.StaleAfterSeconds) * time.Second
	last, what := st.Updated, "last finished a pass"
	if last.IsZero() {
		last, what = st.Started, "started and has not finished a pass since"
	}
	if last.IsZero() {
		return nil
	}
	if age := now.Sub(last); age > limit {
		return fmt.Errorf("%w: the agent's loop %s %s ago (it should at least every %s)", ErrStale, what, age.Round(time.Second), limit)
	}
	return nil
}

// Health is nil while the agent's loop runs on time; for /healthz.
func (a *Agent) Health() error { return a.Status().Stale(time.Now()) }

// relayState is the relay's answer for the service name: waiting, accepted
// or refused, and why.
func relayState(ts tunnel.Status, name string) (state, reason string) {
	if !ts.Connected {
		reason = "the tunnel is not up"
		if ts.LastError != "" {
			reason += ": " + ts.LastError
		}
		return "waiting", reason
	}
	state, reason = "refused", "the relay did not answer for this service"
	for _, r := range ts.Session.Results {
		if r.Name != name {
			continue
		}
		if r.Accepted {
			return "accepted", ""
		}
		reason = r.Reason
	}
	return state, reason
}

// serviceStatusLocked builds the per-service part of Status. a.mu is held.
func (a *Agent) serviceStatusLocked(ts tunnel.Status) []ServiceStatus {
	out := make([]ServiceStatus, 0, len(a.ac.Services))
	for i, s := range a.ac.Services {
		ss := ServiceStatus{Name: s.Name, Kind: cmp.Or(s.Kind, config.KindTCP), TLS: s.TLS, Port: s.Port, Target: s.Target,
			Camera: a.cams.get(s.Target)}
		ss.URL = viewerURL(s, a.publicHostLocked())
		if a.tun != nil {
			ss.Relay, ss.RelayReason = relayState(ts, s.Name)
		}
		// Both lists hold one listener per service, in config order.
		if i < len(a.direct) {
			ss.Direct = pathStats(a.direct[i].Stats())
		}
		if i < len(a.relayed) {
			ss.Relayed = pathStats(a.relayed[i].Stats())
		}
		for _, l := range a.wgListeners[s.Name] {
			w := pathStats(l.Stats())
			ss.WireGuard.Viewers += w.Viewers
			ss.WireGuard.Connections += w.Connections
			ss.WireGuard.Denied += w.Denied
			ss.WireGuard.Refused += w.Refused
			ss.WireGuard.BytesIn += w.BytesIn
			ss.WireGuard.BytesOut += w.BytesOut
		}
		d, r, w := ss.Direct, ss.Relayed, ss.WireGuard
		ss.Viewers = d.Viewers + r.Viewers + w.Viewers
		ss.Connections = d.Connections + r.Connections + w.Connections
		ss.Denied = d.Denied + r.Denied + w.Denied
		ss.Refused = d.Refused + r.Refused + w.Refused
		ss.BytesIn = d.BytesIn + r.BytesIn + w.BytesIn
		ss.BytesOut = d.BytesOut + r.BytesOut + w.BytesOut
		out = append(out, ss)
	}
	return out
}

// CameraStatus is the last connection the agent made to a camera.
type CameraStatus struct {
	Last   time.Time `json:"last,omitzero"` // zero: not tried since the agent started
	OK     bool      `json:"ok"`
	Error  string    `json:"error,omitempty"`
	LastOK time.Time `json:"last_ok,omitzero"`
}

// cameraLog remembers the last connection result per LAN target; every viewer
// connection on either path dials through it.
type cameraLog struct {
	mu sync.Mutex // guards the fields below
	m  map[string]CameraStatus
}

func newCameraLog() *cameraLog { return &cameraLog{m: map[string]CameraStatus{}} }

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// wrap records the outcome of each dial and returns the connection untouched,
// so the splice fast path still sees a *net.TCPConn.
func (c *cameraLog) wrap(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		c.record(addr, err, time.Now())
		return conn, err
	}
}

func (c *cameraLog) record(addr string, err error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.m[addr]
	cs.Last, cs.OK, cs.Error = now, err == nil, ""
	if err != nil {
		cs.Error = err.Error()
	} else {
		cs.LastOK = now
	}
	c.m[addr] = cs
}

func (c *cameraLog) get(addr string) CameraStatus {
	if c == nil {
		return CameraStatus{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[addr]
}

// ReadStatus reads the status a running agent saved in stateDir.
func ReadStatus(stateDir string) (Status, error) {
	var st Status
	b, err := os.ReadFile(filepath.Join(stateDir, StatusFile))
	if err != nil {
		return st, fmt.Errorf("no status in %s (is the agent running with this config?): %w", stateDir, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("reading %s: %w", filepath.Join(stateDir, StatusFile), err)
	}
	return st, nil
}

// ErrNotRunning is returned by QueryStatus when no agent, or not the agent
// asked for, answers at the address.
var ErrNotRunning = errors.New("no agent answers")

// QueryStatus asks a running agent's admin endpoint (host:port) for its status.
// An unspecified host (0.0.0.0, ::, empty) is asked on loopback. With name set,
// an agent of another name answering there (a second agent on this machine
// holding the default address) counts as not running.
func QueryStatus(ctx context.Context, client *http.Client, addr, name string) (Status, error) {
	var st Status
	if client == nil {
		// No proxy from the environment: the agent is on this machine or the LAN.
		client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	addr = dialableAdmin(addr)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status.json", nil)
	if err != nil {
		return st, fmt.Errorf("admin address %q: %w", addr, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return st, fmt.Errorf("%w at %s: is porthole-agent running? systemctl status porthole-agent (%w)", ErrNotRunning, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("the agent at %s answered %s", addr, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&st); err != nil || st.Name == "" {
		if err == nil {
			err = errors.New("no agent name")
		}
		return st, fmt.Errorf("something answers at %s, but not a porthole-agent status (another program on this port?): %w", addr, err)
	}
	if name != "" && st.Name != name {
		return Status{}, fmt.Errorf("%w at %s: agent %q answers there, not %q: is porthole-agent running with this config? systemctl status porthole-agent", ErrNotRunning, addr, st.Name, name)
	}
	return st, nil
}

// dialableAdmin turns a listen address into one to connect to.
func dialableAdmin(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		if err == nil && ip.Is6() {
			return net.JoinHostPort("::1", port)
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// PrintStatus writes st for a person; now is the reader's clock, for ages.
func PrintStatus(w io.Writer, st Status, now time.Time) {
	fmt.Fprintf(w, "agent %s", st.Name)
	if st.Version != "" {
		fmt.Fprintf(w, " (%s)", st.Version)
	}
	if !st.Started.IsZero() {
		fmt.Fprintf(w, ", running for %s", ago(now, st.Started))
	}
	if !st.Updated.IsZero() {
		fmt.Fprintf(w, ", last pass %s ago", ago(now, st.Updated))
	}
	fmt.Fprintln(w)
	if err := st.Stale(now); err != nil {
		fmt.Fprintf(w, "STALE:    %s; the figures below may be out of date\n", err)
	}
	if st.Tunnel.Relay != "" {
		t := st.Tunnel
		state := "down"
		if t.Connected {
			state = "up"
			if !t.Since.IsZero() {
				state += " for " + ago(now, t.Since)
			}
			state += ", over " + orNone(t.Transport)
			if t.TransportWhy != "" {
				state += " (" + t.TransportWhy + ")"
			}
			if t.Observed != "" {
				state += ", the relay sees us as " + t.Observed
			}
		}
		fmt.Fprintf(w, "tunnel:   %s: %s; %d reconnects\n", t.Relay, state, t.Reconnects)
		if t.Connected {
			fmt.Fprintf(w, "          %d relayed viewer streams open\n", t.Streams)
		}
		if t.LastError != "" {
			fmt.Fprintf(w, "          last error: %s\n", t.LastError)
		}
	}
	if st.Path != "" || st.PathWhy != "" {
		fmt.Fprintf(w, "path:     %s (%s)\n", orNone(st.Path), st.PathWhy)
	} else {
		fmt.Fprintln(w, "path:     none (no ddns section: DNS is not managed)")
	}
	if st.DNS != "" || st.DNSAction != "" || st.DNSError != "" {
		fmt.Fprintf(w, "dns:      %s (%s); %d updates since start\n", orNone(st.DNS), st.DNSAction, st.DNSUpdates)
		if st.DNSError != "" {
			fmt.Fprintf(w, "          last error: %s\n", st.DNSError)
		}
	}
	if st.PublicV4 != "" || st.PublicV6 != "" {
		fmt.Fprintf(w, "public:   %s\n", strings.TrimSpace(st.PublicV4+" "+st.PublicV6))
	}
	if st.NAT != "" {
		fmt.Fprintf(w, "nat:      %s\n", st.NAT)
	}
	if st.Router.Gateway != "" || st.Router.Problem != "" {
		fmt.Fprintf(w, "router:   gateway %s, protocol %s, external %s\n", orNone(st.Router.Gateway), orNone(st.Router.Protocol), orNone(st.Router.External))
		for _, m := range st.Router.Mappings {
			fmt.Fprintf(w, "          %s\n", m)
		}
		if st.Router.Problem != "" {
			fmt.Fprintf(w, "          problem: %s\n", st.Router.Problem)
		}
	}
	if c := st.Certificate; c != nil {
		line := c.Source
		if !c.NotAfter.IsZero() {
			line += ", valid until " + c.NotAfter.Format(time.DateOnly)
		}
		if c.Subject != "" {
			line += ", " + c.Subject
		}
		fmt.Fprintf(w, "tls:      %s\n", line)
		if c.Source == "self-signed" {
			fmt.Fprintln(w, "          browsers will warn: check that they show this fingerprint (SHA-256)")
		}
		fmt.Fprintf(w, "          fingerprint %s\n", c.Fingerprint)
		if c.LastError != "" {
			fmt.Fprintf(w, "          last error: %s\n", c.LastError)
		}
	}
	if len(st.Services) > 0 {
		fmt.Fprintln(w, "services:")
	}
	for _, s := range st.Services {
		kind := s.Kind
		if s.TLS {
			kind += ", tls"
		}
		fmt.Fprintf(w, "  %s: public port %d -> %s (%s)\n", s.Name, s.Port, targetName(s), orNone(kind))
		if s.URL != "" {
			fmt.Fprintf(w, "    open:    %s\n", s.URL)
		}
		if s.Relay != "" {
			line := s.Relay
			if s.RelayReason != "" {
				line += ": " + s.RelayReason
			}
			fmt.Fprintf(w, "    relay:   %s\n", line)
		}
		if s.Kind != config.KindPortal {
			fmt.Fprintf(w, "    camera:  %s\n", cameraLine(s.Camera, now))
		}
		fmt.Fprintf(w, "    viewers: %s\n", viewersLine(s))
		if line := pathsLine(s); line != "" {
			fmt.Fprintf(w, "             %s\n", line)
		}
	}
	if ws := st.WireGuard; ws != nil {
		printWireGuard(w, ws, now)
	}
	if len(st.Viewers) > 0 {
		fmt.Fprintln(w, "viewers:  data each viewer moved (to them / from them since start; today against the daily cap)")
	}
	for _, v := range st.Viewers {
		fmt.Fprintf(w, "  %s: %s\n", v.Viewer, usageLine(v))
		if len(v.Services) > 0 {
			fmt.Fprintf(w, "    by service: %s\n", servicesLine(v))
		}
	}
}

// targetName is what a service leads to, for people.
func targetName(s ServiceStatus) string {
	if s.Kind == config.KindPortal {
		return "the phone page"
	}
	return s.Target
}

// usageLine is a viewer's data figures.
func usageLine(v meter.ViewerUsage) string {
	line := fmt.Sprintf("%s to them, %s from them; today %s", meter.FormatBytes(v.BytesOut), meter.FormatBytes(v.BytesIn), meter.FormatBytes(v.Today))
	if v.Cap > 0 {
		line += " of " + meter.FormatBytes(v.Cap)
		if v.Today >= v.Cap {
			line += " (CAP REACHED: video stops until " + v.ResetsAt.Local().Format("15:04") + ")"
		}
	}
	return line
}

// servicesLine is a viewer's figures per service.
func servicesLine(v meter.ViewerUsage) string {
	parts := make([]string, 0, len(v.Services))
	for _, s := range v.Services {
		parts = append(parts, s.Service+" "+meter.FormatBytes(s.BytesOut+s.BytesIn))
	}
	return strings.Join(parts, ", ")
}

// publicHostLocked is the host viewers use: the ddns hostname, else the
// public IPv4 address last detected, else the relay's host (its service
// listeners take viewers at the same ports), else "". a.mu is held.
func (a *Agent) publicHostLocked() string {
	switch {
	case a.ac.DDNS != nil:
		return a.ac.DDNS.Hostname
	case a.status.PublicV4 != "":
		return a.status.PublicV4
	case a.ac.Relay != nil:
		if h, _, err := net.SplitHostPort(a.ac.Relay.Address); err == nil {
			return h
		}
	}
	return ""
}

// viewerURL is what a viewer opens for service s at host: rtsps://host:port/<name>
// for rtsp (rtsp:// with tls off), https://host:port/ for http; "" for tcp
// (the camera's own protocol) and when host is unknown.
func viewerURL(s config.Service, host string) string {
	var scheme, path string
	switch s.Kind {
	case config.KindRTSP:
		scheme, path = "rtsp", "/"+s.Name
	case config.KindHTTP, config.KindPortal:
		scheme, path = "http", "/"
	default:
		return ""
	}
	if host == "" {
		return ""
	}
	if s.TLS {
		scheme += "s"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(s.Port))) + path
}

// viewersLine is a service's viewer figures, both paths together.
func viewersLine(s ServiceStatus) string {
	line := fmt.Sprintf("%d now, %d connections, %d refused", s.Viewers, s.Connections, s.Denied+s.Refused)
	if s.Refused > 0 {
		line += fmt.Sprintf(" (%d by limits)", s.Refused)
	}
	return line + fmt.Sprintf("; %s to viewers, %s from viewers", admin.FormatBytes(s.BytesOut), admin.FormatBytes(s.BytesIn))
}

// pathsLine splits the figures by path when both have seen viewers; "" when
// one path has all of them (the line above says it all).
func pathsLine(s ServiceStatus) string {
	if s.Relayed.Connections == 0 || s.Direct.Connections == 0 {
		return ""
	}
	path := func(p PathStats) string {
		return fmt.Sprintf("%d now, %s to viewers", p.Viewers, admin.FormatBytes(p.BytesOut))
	}
	return "relayed " + path(s.Relayed) + "; direct " + path(s.Direct)
}

func cameraLine(c CameraStatus, now time.Time) string {
	switch {
	case c.Last.IsZero():
		return "no connection yet (the agent connects when a viewer does)"
	case c.OK:
		return "connected " + ago(now, c.Last) + " ago"
	case c.LastOK.IsZero():
		return "FAILED " + ago(now, c.Last) + " ago: " + c.Error
	}
	return "FAILED " + ago(now, c.Last) + " ago: " + c.Error + " (last success " + ago(now, c.LastOK) + " ago)"
}

func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// printWireGuard is the wireguard part of PrintStatus.
func printWireGuard(w io.Writer, st *WireGuardStatus, now time.Time) {
	fmt.Fprintf(w, "wireguard: UDP port %d, %d phones\n", st.Port, len(st.Peers))
	if st.Relay != "" {
		line := st.Relay
		if st.RelayReason != "" {
			line += ": " + st.RelayReason
		}
		fmt.Fprintf(w, "    relay:   %s\n", line)
	}
	fmt.Fprintf(w, "    packets: direct %d in / %d out, relay %d in / %d out\n", st.DirectReceived, st.DirectSent, st.RelayReceived, st.RelaySent)
	if drops := st.Garbage + st.Oversize + st.RelayDropped + st.RelaySendErrors + st.HandshakesDropped + st.TunnelDropped; drops > 0 {
		fmt.Fprintf(w, "    dropped: %d garbage, %d oversize, %d relay queue full, %d in the tunnel, %d relay send errors, %d handshakes (flood)\n",
			st.Garbage, st.Oversize, st.RelayDropped, st.TunnelDropped, st.RelaySendErrors, st.HandshakesDropped)
	}
	if k := st.Stack; k.TCPSegmentsSent > 0 {
		// a phone's connections inside the tunnel: many timeouts beside
		// few segments mean a lossy path to that phone
		fmt.Fprintf(w, "    tcp:     %d segments sent, %d retransmitted, %d timeouts\n", k.TCPSegmentsSent, k.TCPRetransmits, k.TCPTimeouts)
	}
	for _, p := range st.Peers {
		hs := "no handshake yet"
		if !p.LastHandshake.IsZero() {
			hs = "handshake " + ago(now, p.LastHandshake) + " ago"
		}
		fmt.Fprintf(w, "  %s (%s, %s): %s, via %s, %d bytes in / %d out\n", p.Name, p.Viewer, p.Address, hs, orNone(p.Path), p.RxBytes, p.TxBytes)
	}
}
