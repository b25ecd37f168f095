package config

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Relay defaults.
const (
	DefaultRelayListen     = "0.0.0.0:7443"
	DefaultViewerBind      = "0.0.0.0"
	DefaultRelayStateDir   = "/var/lib/porthole-relay"
	DefaultAgentStateDir   = "/var/lib/porthole-agent"
	DefaultDirectListen    = "0.0.0.0"
	DefaultRFC2136KeyAlg   = "hmac-sha256"
	defaultPublicIPMinimum = 2
)

var (
	relayKeys      = []string{"listen", "viewer_bind", "public_ip", "state_dir", "agents", "admin", "metrics", "limits"}
	relayAgentKeys = []string{"token", "token_file", "ports", "udp_ports"}
)

// LoadRelay reads, parses and validates a relay config file.
func LoadRelay(path string) (*Relay, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return ParseRelay(path, data, nil)
}

func readConfig(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return data, nil
}

// ParseRelay parses and validates a relay config. file names the config in
// messages and anchors relative *_file paths; lookupEnv expands ${VAR}
// (nil = os.LookupEnv). A non-nil error is an Errors listing every problem.
func ParseRelay(file string, data []byte, lookupEnv func(string) (string, bool)) (*Relay, error) {
	return newParser(file, lookupEnv).relay(data)
}

func (p *parser) relay(data []byte) (*Relay, error) {
	root := p.document(data)
	if root == nil {
		return nil, p.result()
	}
	f := p.mapping(root, "", relayKeys)
	if f == nil {
		return nil, p.result()
	}
	r := &Relay{}

	var line int
	var ok bool
	r.Listen, line, ok = p.str(f, "listen", DefaultRelayListen)
	if ok {
		p.hostPort(r.Listen, line, "listen", true)
	}
	r.ViewerBind, line, ok = p.str(f, "viewer_bind", DefaultViewerBind)
	if ok {
		p.bindIP(r.ViewerBind, line, "viewer_bind")
	}
	r.PublicIP = p.ip(f, "public_ip")
	if r.PublicIP.IsValid() && (r.PublicIP.IsUnspecified() || r.PublicIP.IsMulticast()) {
		p.errorf(f.m["public_ip"].val.Line, "public_ip", "%s is not a usable public address", r.PublicIP)
	}
	r.StateDir, _, _ = p.str(f, "state_dir", DefaultRelayStateDir)
	p.relayAdmin(f, r)

	r.Limits = p.limits(f)
	r.Agents = p.relayAgents(f)
	r.Warnings = p.warningList()
	if err := p.result(); err != nil {
		return nil, err
	}
	return r, nil
}

// bindIP checks a listen address given as a bare IP.
func (p *parser) bindIP(s string, line int, path string) {
	if _, err := parseIP(s); err != nil {
		p.errorf(line, path, "expected an IP address to bind to, got %q", s)
	}
}

type agentRange struct {
	name string
	line int
	r    PortRange
}

func (p *parser) relayAgents(f *fields) map[string]RelayAgent {
	e, present := f.m["agents"]
	if !present {
		p.errorf(f.line, "agents", "required: at least one agent (name: {token, ports})")
		return nil
	}
	af := p.mapping(e.val, "agents", nil)
	if af == nil {
		return nil
	}
	if len(af.m) == 0 {
		p.errorf(e.key.Line, "agents", "required: at least one agent (name: {token, ports})")
		return nil
	}
	agents := make(map[string]RelayAgent, len(af.m))
	var ranges, udpRanges []agentRange
	for _, name := range af.keys {
		ae := af.m[name]
		path := "agents." + name
		p.checkName(name, ae.key.Line, path)
		m := p.mapping(ae.val, path, relayAgentKeys)
		if m == nil {
			continue
		}
		var a RelayAgent
		a.Token, _ = p.token(m, "token")
		if pe, ok := m.m["ports"]; ok {
			if r, ok := p.portRange(pe.val, m.sub("ports")); ok {
				a.Ports = r
				ranges = append(ranges, agentRange{name: name, line: resolve(pe.val).Line, r: r})
			}
		} else {
			p.errorf(m.line, m.sub("ports"), "required: a port range like 10000-10099")
		}
		if pe, ok := m.m["udp_ports"]; ok {
			if r, ok := p.portRange(pe.val, m.sub("udp_ports")); ok {
				a.UDPPorts = r
				udpRanges = append(udpRanges, agentRange{name: name, line: resolve(pe.val).Line, r: r})
			}
		}
		agents[name] = a
	}
	p.overlaps(ranges, "ports")
	p.overlaps(udpRanges, "udp_ports")
	return agents
}

// overlaps reports agents whose port ranges (of key, "ports" or "udp_ports")
// overlap, at the later one's line.
func (p *parser) overlaps(ranges []agentRange, key string) {
	sort.Slice(ranges, func(i, j int) bool {
		if ranges[i].r.Lo != ranges[j].r.Lo {
			return ranges[i].r.Lo < ranges[j].r.Lo
		}
		return ranges[i].name < ranges[j].name
	})
	for i := range ranges {
		for j := i + 1; j < len(ranges) && ranges[j].r.Lo <= ranges[i].r.Hi; j++ {
			a, b := ranges[i], ranges[j]
			if a.line > b.line {
				a, b = b, a
			}
			p.errorf(b.line, "agents."+b.name+"."+key, "%s overlaps agent %s's %s %s (line %d)", b.r, a.name, key, a.r, a.line)
		}
	}
}

// String formats r as "lo-hi", or "lo" for a single port.
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// portRange parses "lo-hi" or a single port (number or string).
func (p *parser) portRange(n *yaml.Node, path string) (PortRange, bool) {
	s, ok := p.scalar(n, path)
	if !ok {
		return PortRange{}, false
	}
	line := resolve(n).Line
	s = strings.TrimSpace(s)
	if s == "" {
		p.errorf(line, path, "required: a port range like 10000-10099")
		return PortRange{}, false
	}
	loS, hiS, isRange := strings.Cut(s, "-")
	if !isRange {
		hiS = loS
	}
	lo, err1 := parsePort(loS)
	hi, err2 := parsePort(hiS)
	if err1 != nil || err2 != nil {
		p.errorf(line, path, "expected a port (1-65535) or a range like 10000-10099, got %q", s)
		return PortRange{}, false
	}
	if lo > hi {
		p.errorf(line, path, "range %q is backwards: low port first", s)
		return PortRange{}, false
	}
	return PortRange{Lo: lo, Hi: hi}, true
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return uint16(n), nil
}

func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("zoned address %q", s)
	}
	return a.Unmap(), nil
}
