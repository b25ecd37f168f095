package agent

import (
	"fmt"
	"strconv"
	"time"

	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// AdminConfig is the admin endpoint's configuration for this agent: status,
// page, health and metrics; the caller sets Addr (or Listener) and Logger.
func (a *Agent) AdminConfig() admin.Config {
	return admin.Config{
		Status:  func() any { return a.Status() },
		Page:    func() admin.Page { return StatusPage(a.Status(), time.Now()) },
		Health:  a.Health,
		Metrics: admin.NewRegistry(collector{a}),
	}
}

// StatusPage is the admin status page for st.
func StatusPage(st Status, now time.Time) admin.Page {
	p := admin.Page{Title: "porthole-agent " + st.Name}
	up, accepted := 0, 0
	for _, s := range st.Services {
		if s.Relay == "accepted" {
			accepted++
		}
		if s.Camera.OK || s.Camera.Last.IsZero() {
			up++
		}
	}
	switch {
	case st.Stale(now) != nil:
		p.Headline, p.Level = "Stale: "+st.Stale(now).Error(), admin.Bad
	case st.Tunnel.Relay != "" && !st.Tunnel.Connected:
		p.Headline, p.Level = "Tunnel to the relay is down", admin.Bad
	case st.Tunnel.Relay != "" && accepted < len(st.Services):
		p.Headline, p.Level = fmt.Sprintf("%d of %d services accepted by the relay", accepted, len(st.Services)), admin.Warn
	case up < len(st.Services):
		p.Headline, p.Level = fmt.Sprintf("%d of %d cameras answered their last connection", up, len(st.Services)), admin.Warn
	default:
		p.Headline, p.Level = fmt.Sprintf("%d services ready; viewers reach them %s", len(st.Services), pathPhrase(st.Path)), admin.OK
	}

	gen := admin.Section{Title: "Agent"}
	gen.Rows = append(gen.Rows, admin.Row{Key: "path", Value: orNone(st.Path) + ": " + st.PathWhy})
	if st.DNS != "" || st.DNSAction != "" {
		gen.Rows = append(gen.Rows, admin.Row{Key: "DNS", Value: orNone(st.DNS) + " (" + st.DNSAction + "), " + strconv.Itoa(st.DNSUpdates) + " updates"})
	}
	if st.DNSError != "" {
		gen.Rows = append(gen.Rows, admin.Row{Key: "DNS error", Value: st.DNSError, Level: admin.Bad})
	}
	if st.PublicV4 != "" || st.PublicV6 != "" {
		gen.Rows = append(gen.Rows, admin.Row{Key: "public", Value: st.PublicV4 + " " + st.PublicV6})
	}
	if st.NAT != "" {
		gen.Rows = append(gen.Rows, admin.Row{Key: "NAT", Value: st.NAT})
	}
	if !st.Started.IsZero() {
		gen.Rows = append(gen.Rows, admin.Row{Key: "running", Value: ago(now, st.Started) + ", version " + orNone(st.Version)})
	}
	p.Sections = append(p.Sections, gen)

	if t := st.Tunnel; t.Relay != "" {
		sec := admin.Section{Title: "Tunnel to " + t.Relay, Level: admin.OK}
		if t.Connected {
			v := "up for " + ago(now, t.Since)
			if t.Observed != "" {
				v += ", seen as " + t.Observed
			}
			sec.Rows = append(sec.Rows, admin.Row{Key: "state", Value: v, Level: admin.OK})
			tr := orNone(t.Transport)
			if t.TransportWhy != "" {
				tr += " (" + t.TransportWhy + ")"
			}
			sec.Rows = append(sec.Rows, admin.Row{Key: "transport", Value: tr})
		} else {
			sec.Level = admin.Bad
			sec.Rows = append(sec.Rows, admin.Row{Key: "state", Value: "down", Level: admin.Bad})
		}
		sec.Rows = append(sec.Rows, admin.Row{Key: "reconnects", Value: strconv.Itoa(t.Reconnects)},
			admin.Row{Key: "viewers", Value: strconv.FormatInt(t.Streams, 10) + " relayed streams open"})
		if t.LastError != "" {
			sec.Rows = append(sec.Rows, admin.Row{Key: "last error", Value: t.LastError, Level: admin.Warn})
		}
		p.Sections = append(p.Sections, sec)
	}

	for _, s := range st.Services {
		sec := admin.Section{Title: fmt.Sprintf("%s (port %d)", s.Name, s.Port), Level: admin.OK}
		if s.Relay != "" {
			r := admin.Row{Key: "relay", Value: s.Relay, Level: admin.OK}
			if s.RelayReason != "" {
				r.Value += ": " + s.RelayReason
			}
			if s.Relay != "accepted" {
				r.Level, sec.Level = admin.Bad, admin.Bad
			}
			sec.Rows = append(sec.Rows, r)
		}
		cam := admin.Row{Key: "camera", Value: s.Target + ": " + cameraLine(s.Camera, now)}
		if s.Kind == config.KindPortal {
			cam = admin.Row{Key: "page", Value: "the phone page: every camera of the http and rtsp services"}
		}
		switch {
		case s.Camera.Last.IsZero():
		case s.Camera.OK:
			cam.Level = admin.OK
		default:
			cam.Level, sec.Level = admin.Bad, max(sec.Level, admin.Warn)
		}
		refused := fmt.Sprintf("%d refused", s.Denied+s.Refused)
		if s.Refused > 0 {
			refused += fmt.Sprintf(" (%d by limits)", s.Refused)
		}
		sec.Rows = append(sec.Rows, cam,
			admin.Row{Key: "viewers", Value: fmt.Sprintf("%d now (%d relayed, %d direct), %d connections, %s",
				s.Viewers, s.Relayed.Viewers, s.Direct.Viewers, s.Connections, refused)},
			admin.Row{Key: "bytes", Value: admin.FormatBytes(s.BytesOut) + " to viewers, " + admin.FormatBytes(s.BytesIn) + " from viewers"})
		if line := pathsLine(s); line != "" {
			sec.Rows = append(sec.Rows, admin.Row{Key: "by path", Value: line})
		}
		p.Sections = append(p.Sections, sec)
	}

	if len(st.Viewers) > 0 {
		sec := admin.Section{Title: "Viewers' data (to them / from them since start; today against the daily cap)"}
		for _, v := range st.Viewers {
			r := admin.Row{Key: v.Viewer, Value: usageLine(v)}
			if len(v.Services) > 0 {
				r.Value += "; " + servicesLine(v)
			}
			if v.Cap > 0 && v.Today >= v.Cap {
				r.Level, sec.Level = admin.Warn, admin.Warn
			}
			sec.Rows = append(sec.Rows, r)
		}
		p.Sections = append(p.Sections, sec)
	}

	if st.Router.Gateway != "" || st.Router.Problem != "" {
		sec := admin.Section{Title: "Router"}
		sec.Rows = append(sec.Rows, admin.Row{Key: "gateway", Value: orNone(st.Router.Gateway) + ", " + orNone(st.Router.Protocol) + ", external " + orNone(st.Router.External)})
		for _, m := range st.Router.Mappings {
			sec.Rows = append(sec.Rows, admin.Row{Key: "mapping", Value: m})
		}
		if st.Router.Problem != "" {
			sec.Rows = append(sec.Rows, admin.Row{Key: "problem", Value: st.Router.Problem, Level: admin.Warn})
		}
		p.Sections = append(p.Sections, sec)
	}
	return p
}

func pathPhrase(path string) string {
	switch path {
	case "direct":
		return "directly at home"
	case "relay":
		return "through the relay"
	case "home":
		return "at the home's address"
	}
	return "by a path not decided yet"
}

// collector exports the agent's status to Prometheus at scrape time.
type collector struct{ a *Agent }

var (
	descTunnelUp   = prometheus.NewDesc("porthole_agent_tunnel_up", "1 while the tunnel to the relay is up.", nil, nil)
	descTransport  = prometheus.NewDesc("porthole_agent_tunnel_transport", "1 for the transport the tunnel uses (quic, tcp).", []string{"transport"}, nil)
	descReconnects = prometheus.NewDesc("porthole_agent_tunnel_reconnects_total", "Tunnel sessions lost and re-established.", nil, nil)
	descStreams    = prometheus.NewDesc("porthole_agent_tunnel_streams_active", "Viewer streams open through the tunnel, all services.", nil, nil)
	descPath       = prometheus.NewDesc("porthole_agent_path", "1 for the path DNS points viewers at.", []string{"path"}, nil)
	descServices   = prometheus.NewDesc("porthole_agent_services", "Services in the config.", nil, nil)
	descAccepted   = prometheus.NewDesc("porthole_agent_service_relay_accepted", "1 when the relay accepted the service.", []string{"service"}, nil)
	descCameraUp   = prometheus.NewDesc("porthole_agent_camera_up", "1 when the last connection to the service's camera succeeded (0 before any).", []string{"service"}, nil)
	descActive     = prometheus.NewDesc("porthole_agent_viewer_connections_active", "Viewer connections open now.", []string{"service"}, nil)
	descTotal      = prometheus.NewDesc("porthole_agent_viewer_connections_total", "Viewer connections accepted.", []string{"service"}, nil)
	descDenied     = prometheus.NewDesc("porthole_agent_viewer_connections_denied_total", "Viewer connections refused by the allow rule.", []string{"service"}, nil)
	descRefused    = prometheus.NewDesc("porthole_agent_viewer_connections_refused_total", "Viewer connections refused by a limit (limits:).", []string{"service"}, nil)
	descPathActive = prometheus.NewDesc("porthole_agent_viewer_connections_active_by_path", "Viewer connections open now, by path (relayed, direct).", []string{"service", "path"}, nil)
	descPathBytes  = prometheus.NewDesc("porthole_agent_bytes_by_path_total", "Bytes moved per service and path (relayed, direct): in = viewer to camera, out = camera to viewer.", []string{"service", "path", "direction"}, nil)
	descBytes      = prometheus.NewDesc("porthole_agent_bytes_total", "Bytes moved per service: in = viewer to camera, out = camera to viewer.", []string{"service", "direction"}, nil)
	descDNSUpdates = prometheus.NewDesc("porthole_agent_dns_updates_total", "DNS record writes since the agent started.", nil, nil)
	descDNSError   = prometheus.NewDesc("porthole_agent_dns_error", "1 while the last DNS operation failed.", nil, nil)
	descMappings   = prometheus.NewDesc("porthole_agent_port_mappings", "Router port mappings by state (active, failed, pending).", []string{"state"}, nil)
	descLastPass   = prometheus.NewDesc("porthole_agent_last_pass_timestamp_seconds", "When the agent's loop last finished a pass.", nil, nil)
	descViewerB    = prometheus.NewDesc("porthole_agent_viewer_bytes_total", "Bytes moved per logged-in viewer and service since start: in = from the viewer, out = to the viewer.", []string{"viewer", "service", "direction"}, nil)
	descViewerDay  = prometheus.NewDesc("porthole_agent_viewer_bytes_today", "Bytes a viewer moved since local midnight, both directions, every service (what daily_cap limits).", []string{"viewer"}, nil)
	descViewerCap  = prometheus.NewDesc("porthole_agent_viewer_daily_cap_bytes", "A viewer's daily_cap.", []string{"viewer"}, nil)
	descWGPeers    = prometheus.NewDesc("porthole_agent_wireguard_peers", "WireGuard peers (phones) allowed in.", nil, nil)
	descWGBytes    = prometheus.NewDesc("porthole_agent_wireguard_peer_bytes_total", "WireGuard bytes per peer: rx from the phone, tx to it.", []string{"peer", "viewer", "direction"}, nil)
	descWGShake    = prometheus.NewDesc("porthole_agent_wireguard_peer_last_handshake_timestamp_seconds", "When the peer last completed a handshake (0: never).", []string{"peer", "viewer"}, nil)
	descWGPath     = prometheus.NewDesc("porthole_agent_wireguard_peer_path", "1 for the path the peer's last packet came by (direct, relay).", []string{"peer", "viewer", "path"}, nil)
	descWGDropped  = prometheus.NewDesc("porthole_agent_wireguard_dropped_total", "WireGuard packets dropped, by reason (garbage, oversize, relay_queue_full, handshake_flood, tunnel).", []string{"reason"}, nil)
	descWGTCP      = prometheus.NewDesc("porthole_agent_wireguard_tcp_total", "The agent's userspace TCP inside the tunnel: segments sent, segments retransmitted, retransmission timeouts (kind sent, retransmitted, timeouts).", []string{"kind"}, nil)
	agentMetrics   = []*prometheus.Desc{descWGPeers, descWGBytes, descWGShake, descWGPath, descWGDropped, descWGTCP, descTunnelUp, descTransport, descReconnects, descStreams, descPath, descServices, descAccepted,
		descCameraUp, descActive, descTotal, descDenied, descRefused, descPathActive, descPathBytes, descBytes, descDNSUpdates, descDNSError, descMappings, descLastPass,
		descViewerB, descViewerDay, descViewerCap}
	knownPaths      = []string{"direct", "relay", "home", "unknown"}
	knownTransports = []string{"quic", "tcp"}
)

var _ prometheus.Collector = collector{}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range agentMetrics {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if w := st.WireGuard; w != nil {
		gauge(descWGPeers, float64(len(w.Peers)))
		for _, p := range w.Peers {
			counter(descWGBytes, float64(p.RxBytes), p.Name, p.Viewer, "rx")
			counter(descWGBytes, float64(p.TxBytes), p.Name, p.Viewer, "tx")
			var hs float64
			if !p.LastHandshake.IsZero() {
				hs = float64(p.LastHandshake.Unix())
			}
			gauge(descWGShake, hs, p.Name, p.Viewer)
			for _, path := range []string{"direct", "relay"} {
				gauge(descWGPath, b2f(p.Path == path), p.Name, p.Viewer, path)
			}
		}
		counter(descWGDropped, float64(w.Garbage), "garbage")
		counter(descWGDropped, float64(w.Oversize), "oversize")
		counter(descWGDropped, float64(w.RelayDropped), "relay_queue_full")
		counter(descWGDropped, float64(w.HandshakesDropped), "handshake_flood")
		counter(descWGDropped, float64(w.TunnelDropped), "tunnel")
		counter(descWGTCP, float64(w.Stack.TCPSegmentsSent), "sent")
		counter(descWGTCP, float64(w.Stack.TCPRetransmits), "retransmitted")
		counter(descWGTCP, float64(w.Stack.TCPTimeouts), "timeouts")
	}
	if st.Tunnel.Relay != "" {
		gauge(descTunnelUp, b2f(st.Tunnel.Connected))
		for _, t := range knownTransports {
			gauge(descTransport, b2f(st.Tunnel.Connected && st.Tunnel.Transport == t), t)
		}
		counter(descReconnects, float64(st.Tunnel.Reconnects))
		gauge(descStreams, float64(st.Tunnel.Streams))
	}
	for _, p := range knownPaths {
		gauge(descPath, b2f(st.Path == p || p == "unknown" && st.Path == ""), p)
	}
	gauge(descServices, float64(len(st.Services)))
	for _, s := range st.Services {
		if s.Relay != "" {
			gauge(descAccepted, b2f(s.Relay == "accepted"), s.Name)
		}
		gauge(descCameraUp, b2f(s.Camera.OK), s.Name)
		gauge(descActive, float64(s.Viewers), s.Name)
		counter(descTotal, float64(s.Connections), s.Name)
		counter(descDenied, float64(s.Denied), s.Name)
		counter(descRefused, float64(s.Refused), s.Name)
		for _, p := range []struct {
			name string
			st   PathStats
		}{{"relayed", s.Relayed}, {"direct", s.Direct}} {
			gauge(descPathActive, float64(p.st.Viewers), s.Name, p.name)
			counter(descPathBytes, float64(p.st.BytesIn), s.Name, p.name, "in")
			counter(descPathBytes, float64(p.st.BytesOut), s.Name, p.name, "out")
		}
		counter(descBytes, float64(s.BytesIn), s.Name, "in")
		counter(descBytes, float64(s.BytesOut), s.Name, "out")
	}
	for _, v := range st.Viewers {
		for _, s := range v.Services {
			counter(descViewerB, float64(s.BytesIn), v.Viewer, s.Service, "in")
			counter(descViewerB, float64(s.BytesOut), v.Viewer, s.Service, "out")
		}
		gauge(descViewerDay, float64(v.Today), v.Viewer)
		if v.Cap > 0 {
			gauge(descViewerCap, float64(v.Cap), v.Viewer)
		}
	}
	if c.a.updater != nil {
		counter(descDNSUpdates, float64(st.DNSUpdates))
		gauge(descDNSError, b2f(st.DNSError != ""))
	}
	if c.a.pm != nil {
		var active, failed, pending int
		for _, m := range c.a.pm.Status().Mappings {
			switch {
			case m.Active:
				active++
			case m.Err != nil:
				failed++
			default:
				pending++
			}
		}
		gauge(descMappings, float64(active), "active")
		gauge(descMappings, float64(failed), "failed")
		gauge(descMappings, float64(pending), "pending")
	}
	if !st.Updated.IsZero() {
		gauge(descLastPass, float64(st.Updated.UnixNano())/1e9)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
