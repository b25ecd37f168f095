package relay

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the relay's state to Prometheus at scrape time, reading the
// counters the sessions and listeners keep anyway (nothing on the data path).
type collector struct{ s *Server }

var (
	descAgents                          = prometheus.NewDesc("porthole_relay_agents_connected", "Agents with an authenticated tunnel.", nil, nil)
	descActive                          = prometheus.NewDesc("porthole_relay_viewer_connections_active", "Viewer connections being relayed.", []string{"agent", "service"}, nil)
	descTotal                           = prometheus.NewDesc("porthole_relay_viewer_connections_total", "Viewer connections accepted by the service listener.", []string{"agent", "service"}, nil)
	descDenied                          = prometheus.NewDesc("porthole_relay_viewer_connections_denied_total", "Viewer connections refused by the allow rule.", []string{"agent", "service"}, nil)
	descBytes                           = prometheus.NewDesc("porthole_relay_bytes_total", "Bytes relayed by finished viewer connections.", []string{"agent", "service", "direction"}, nil)
	descUDPFlows                        = prometheus.NewDesc("porthole_relay_udp_flows", "Phones' UDP flows (address and port) forwarded to the agent's WireGuard port now.", []string{"agent"}, nil)
	descUDPPackets                      = prometheus.NewDesc("porthole_relay_udp_packets_total", "WireGuard packets forwarded; in: phones to agent, out: agent to phones.", []string{"agent", "direction"}, nil)
	descUDPBytes                        = prometheus.NewDesc("porthole_relay_udp_bytes_total", "WireGuard bytes forwarded (UDP payloads).", []string{"agent", "direction"}, nil)
	descUDPDropped                      = prometheus.NewDesc("porthole_relay_udp_dropped_total", "UDP packets dropped, by reason (see the README).", []string{"agent", "reason"}, nil)
	allMetrics                          = []*prometheus.Desc{descAgents, descActive, descTotal, descDenied, descBytes, descUDPFlows, descUDPPackets, descUDPBytes, descUDPDropped}
	_              prometheus.Collector = collector{}
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allMetrics {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	sessions := make([]*session, 0, len(c.s.sessions))
	for _, ss := range c.s.sessions {
		sessions = append(sessions, ss)
	}
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(len(sessions)))
	for _, ss := range sessions {
		ss.mu.Lock()
		for _, l := range ss.listeners {
			st := l.ln.Stats()
			labels := []string{ss.name, l.spec.Name}
			ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.Active), labels...)
			ch <- prometheus.MustNewConstMetric(descTotal, prometheus.CounterValue, float64(st.Total), labels...)
			ch <- prometheus.MustNewConstMetric(descDenied, prometheus.CounterValue, float64(st.Denied), labels...)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesIn), ss.name, l.spec.Name, "in")
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesOut), ss.name, l.spec.Name, "out")
		}
		udp := ss.udp
		ss.mu.Unlock()
		if udp != nil {
			u := udp.status()
			ch <- prometheus.MustNewConstMetric(descUDPFlows, prometheus.GaugeValue, float64(u.Flows), ss.name)
			ch <- prometheus.MustNewConstMetric(descUDPPackets, prometheus.CounterValue, float64(u.PacketsIn), ss.name, "in")
			ch <- prometheus.MustNewConstMetric(descUDPPackets, prometheus.CounterValue, float64(u.PacketsOut), ss.name, "out")
			ch <- prometheus.MustNewConstMetric(descUDPBytes, prometheus.CounterValue, float64(u.BytesIn), ss.name, "in")
			ch <- prometheus.MustNewConstMetric(descUDPBytes, prometheus.CounterValue, float64(u.BytesOut), ss.name, "out")
			for _, r := range udpDropReasons {
				ch <- prometheus.MustNewConstMetric(descUDPDropped, prometheus.CounterValue, float64(u.Dropped[r]), ss.name, r)
			}
		}
	}
}

// Status is the relay's state for the admin endpoint: every configured agent,
// connected or not, and its services. It never holds a token.
type Status struct {
	Listen   string        `json:"listen"`
	PublicIP string        `json:"public_ip,omitempty"`
	Started  time.Time     `json:"started"`
	Agents   []AgentStatus `json:"agents"`
}

// AgentStatus is one configured agent.
type AgentStatus struct {
	Name      string `json:"name"`
	Ports     string `json:"ports"`
	Connected bool   `json:"connected"`
	// Remote is the agent's address as the relay sees it.
	Remote string `json:"remote,omitempty"`
	// Transport is the tunnel's transport: "quic", or "tcp" (the fallback
	// when UDP is blocked on the agent's side).
	Transport string          `json:"transport,omitempty"`
	Services  []ServiceStatus `json:"services,omitempty"`
	// UDPPorts is the agent's udp_ports in relay.yaml; UDP its WireGuard
	// forwarding, once it registered a UDP port in this session.
	UDPPorts string     `json:"udp_ports,omitempty"`
	UDP      *UDPStatus `json:"udp,omitempty"`
}

// ServiceStatus is one service listener the relay runs for an agent.
type ServiceStatus struct {
	Name        string `json:"name"`
	Port        uint16 `json:"port"`
	Viewers     int64  `json:"viewers"`
	Connections int64  `json:"connections"`
	Denied      int64  `json:"denied"`    // by the allow rule
	Refused     int64  `json:"refused"`   // by a limit (limits:)
	BytesIn     int64  `json:"bytes_in"`  // viewer to agent
	BytesOut    int64  `json:"bytes_out"` // agent to viewer
}

// Status returns the relay's current state.
func (s *Server) Status() Status {
	rc := s.cfg.Relay
	st := Status{Listen: s.Addr().String(), Started: s.started}
	if rc.PublicIP.IsValid() {
		st.PublicIP = rc.PublicIP.String()
	}
	s.mu.Lock()
	sessions := make(map[string]*session, len(s.sessions))
	maps.Copy(sessions, s.sessions)
	s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(rc.Agents)) {
		as := AgentStatus{Name: name, Ports: rc.Agents[name].Ports.String()}
		if u := rc.Agents[name].UDPPorts; u.Hi != 0 {
			as.UDPPorts = u.String()
		}
		if ss := sessions[name]; ss != nil {
			as.Connected = true
			as.Remote = ss.ts.Observed().String()
			as.Transport = ss.ts.Transport()
			ss.mu.Lock()
			for _, l := range ss.listeners {
				ls := l.ln.Stats()
				as.Services = append(as.Services, ServiceStatus{Name: l.spec.Name, Port: l.spec.Port,
					Viewers: ls.Active, Connections: ls.Total, Denied: ls.Denied, Refused: ls.Refused, BytesIn: ls.BytesIn, BytesOut: ls.BytesOut})
			}
			udp := ss.udp
			ss.mu.Unlock()
			if udp != nil {
				as.UDP = udp.status()
			}
			slices.SortFunc(as.Services, func(a, b ServiceStatus) int { return cmp.Compare(a.Port, b.Port) })
		}
		st.Agents = append(st.Agents, as)
	}
	return st
}

// StatusPage is the relay's admin status page for st.
func StatusPage(st Status) admin.Page {
	p := admin.Page{Title: "porthole-relay"}
	up := 0
	for _, a := range st.Agents {
		if a.Connected {
			up++
		}
	}
	p.Headline = fmt.Sprintf("%d of %d agents connected", up, len(st.Agents))
	p.Level = admin.OK
	if up < len(st.Agents) {
		p.Level = admin.Warn
	}
	gen := admin.Section{Title: "Relay", Rows: []admin.Row{{Key: "agents on", Value: st.Listen}}}
	if st.PublicIP != "" {
		gen.Rows = append(gen.Rows, admin.Row{Key: "public IP", Value: st.PublicIP})
	}
	gen.Rows = append(gen.Rows, admin.Row{Key: "running", Value: time.Since(st.Started).Round(time.Second).String()})
	p.Sections = append(p.Sections, gen)
	for _, a := range st.Agents {
		sec := admin.Section{Title: "Agent " + a.Name, Level: admin.OK}
		if a.Connected {
			sec.Rows = append(sec.Rows, admin.Row{Key: "tunnel", Value: "up from " + a.Remote + " over " + cmp.Or(a.Transport, "?"), Level: admin.OK})
		} else {
			sec.Level = admin.Warn
			sec.Rows = append(sec.Rows, admin.Row{Key: "tunnel", Value: "not connected", Level: admin.Warn})
		}
		sec.Rows = append(sec.Rows, admin.Row{Key: "ports", Value: a.Ports})
		for _, sv := range a.Services {
			refused := fmt.Sprintf("%d refused", sv.Denied+sv.Refused)
			if sv.Refused > 0 {
				refused += fmt.Sprintf(" (%d by limits)", sv.Refused)
			}
			sec.Rows = append(sec.Rows, admin.Row{Key: fmt.Sprintf("%s :%d", sv.Name, sv.Port),
				Value: fmt.Sprintf("%d viewers now, %d connections, %s; %s to viewers, %s from viewers",
					sv.Viewers, sv.Connections, refused, admin.FormatBytes(sv.BytesOut), admin.FormatBytes(sv.BytesIn))})
		}
		if a.UDPPorts != "" {
			sec.Rows = append(sec.Rows, admin.Row{Key: "udp_ports", Value: a.UDPPorts})
		}
		if u := a.UDP; u != nil {
			var dropped uint64
			for _, n := range u.Dropped {
				dropped += n
			}
			sec.Rows = append(sec.Rows, admin.Row{Key: "WireGuard :" + portsString(u.Ports),
				Value: fmt.Sprintf("%d flows now (%d in all), %d packets (%s) to the agent, %d (%s) to phones, %d dropped",
					u.Flows, u.FlowsTotal, u.PacketsIn, admin.FormatBytes(int64(u.BytesIn)), u.PacketsOut, admin.FormatBytes(int64(u.BytesOut)), dropped)})
		}
		p.Sections = append(p.Sections, sec)
	}
	return p
}

// health is nil while the relay serves; /healthz.
func (s *Server) health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errors.New("shutting down")
	}
	return nil
}

// listenAdmin binds the admin endpoint; nil when off. When the default address
// is taken (a second relay on this machine) the relay runs without it; an
// address set in the config must be free.
func (s *Server) listenAdmin() (*admin.Server, error) {
	rc := s.cfg.Relay
	addr := rc.Admin
	if addr == "" {
		addr = rc.Metrics // the deprecated field still works for Go callers
	}
	if addr == "" {
		return nil, nil
	}
	adm, err := admin.New(admin.Config{
		Addr:    addr,
		Status:  func() any { return s.Status() },
		Page:    func() admin.Page { return StatusPage(s.Status()) },
		Health:  s.health,
		Metrics: admin.NewRegistry(collector{s}),
		Logger:  s.log.With("part", "admin"),
	})
	if err != nil && rc.AdminDefault {
		s.log.Warn("admin endpoint not started: its default address is taken (another relay on this machine?); set admin: to a free address, or admin: off",
			"addr", addr, "err", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return adm, nil
}

// AdminAddr is the bound admin address, or nil when the endpoint is off.
func (s *Server) AdminAddr() net.Addr {
	if s.adm == nil {
		return nil
	}
	return s.adm.Addr()
}

// MetricsAddr is AdminAddr, whose /metrics it serves.
//
// Deprecated: use AdminAddr.
func (s *Server) MetricsAddr() net.Addr { return s.AdminAddr() }
