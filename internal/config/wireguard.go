package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// WireGuard is the agent's wireguard: section: phones as WireGuard peers,
// each invite belonging to one viewer (porthole-agent invite).
type WireGuard struct {
	// Port is the one public UDP port, the same on the relay and the router,
	// and the agent's own UDP socket for the direct path. Required.
	Port uint16
	// Address is the agent's tunnel address with the tunnel subnet's prefix
	// length (10.77.0.1/24): services answer at Address.Addr() inside the
	// tunnel and phones get the other addresses of the subnet. Required: a
	// private (RFC 1918 or IPv6 ULA) prefix that holds no service's target.
	Address netip.Prefix
	// LANAddresses makes each service's own LAN target (192.168.1.20:554)
	// reachable inside the tunnel too, for vendor apps that only know it;
	// only the configured targets, never the rest of the LAN. Default false.
	LANAddresses bool
	// ListenPort is the agent's own UDP socket when it differs from Port:
	// the router maps Port to it, and the relay still forwards Port. Zero
	// (listen_port absent) = Port. For a relay on the same machine as the
	// agent (both can't bind one port), or a router that maps to another
	// internal port.
	ListenPort uint16
	// Endpoint is the host:port phones dial. Empty = ddns.hostname and Port
	// (see PhoneEndpoint); required when there is no ddns section.
	Endpoint string
}

// PhoneEndpoint is the Endpoint line of a phone's WireGuard config: Endpoint
// when set, else ddns.hostname:port. Empty when neither is known.
func (a *Agent) PhoneEndpoint() string {
	switch {
	case a.WireGuard == nil:
		return ""
	case a.WireGuard.Endpoint != "":
		return a.WireGuard.Endpoint
	case a.DDNS != nil && a.DDNS.Hostname != "":
		return net.JoinHostPort(a.DDNS.Hostname, strconv.Itoa(int(a.WireGuard.Port)))
	}
	return ""
}

var wireguardKeys = []string{"port", "listen_port", "address", "lan_addresses", "endpoint"}

// cgnat is 100.64.0.0/10 (RFC 6598), which netip's IsPrivate leaves out; it
// is private to the carrier, and phones on mobile data often sit in it.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// wireguard reads the wireguard: section; a is the rest of the agent's config
// (services and ddns already read).
func (p *parser) wireguard(f *fields, a *Agent) *WireGuard {
	w := &WireGuard{}
	w.Port, _, _ = p.port(f, "port", "the public UDP port phones dial (relay and router), e.g. 51820")
	if s, line, ok := p.required(f, "address", "the agent's tunnel address with the subnet's length, e.g. 10.77.0.1/24"); ok {
		w.Address = p.tunnelAddress(s, line, f.sub("address"), a)
	}
	if _, ok := f.m["listen_port"]; ok {
		w.ListenPort, _, _ = p.port(f, "listen_port", "the agent's own UDP port, when the router maps port to another one")
	}
	w.LANAddresses = p.boolean(f, "lan_addresses", false)
	if ep, line, ok := p.str(f, "endpoint", ""); ok && ep != "" {
		if p.hostPort(ep, line, f.sub("endpoint"), false) {
			w.Endpoint = ep
		}
	} else if ok && a.DDNS == nil {
		p.errorf(f.line, f.sub("endpoint"), "required without a ddns section: the host:port phones dial, e.g. home.example.com:51820")
	}
	if a.Relay == nil && !a.Direct.Enabled {
		p.errorf(f.line, "wireguard", "no way for phones to reach the agent: configure relay or enable direct")
	}
	if len(a.Viewers) == 0 {
		p.warnf(f.line, "wireguard", "no viewers: every invite belongs to a viewer; add a viewers: section before porthole-agent invite")
	}
	return w
}

// tunnelAddress checks the wireguard address: a private host address inside
// its prefix, with room for phones, holding no service target.
func (p *parser) tunnelAddress(s string, line int, key string, a *Agent) netip.Prefix {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		p.errorf(line, key, "expected the agent's tunnel address with a prefix length, e.g. 10.77.0.1/24, got %q", s)
		return netip.Prefix{}
	}
	addr := pfx.Addr()
	if addr.Zone() != "" || addr.Is4In6() {
		p.errorf(line, key, "expected a plain IPv4 or IPv6 address with a prefix length, got %q", s)
		return netip.Prefix{}
	}
	// At least 2 free host addresses (IPv4 /30: agent + one phone + network + broadcast).
	maxBits := addr.BitLen() - 2
	switch {
	case !addr.IsPrivate() && !cgnat.Contains(addr):
		p.errorf(line, key, "%s is not a private address: use one from 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or fd00::/8 that your LAN does not use", addr)
		return netip.Prefix{}
	case pfx.Bits() > maxBits:
		p.errorf(line, key, "/%d leaves no address for phones: use /%d or shorter (e.g. /24)", pfx.Bits(), maxBits)
		return netip.Prefix{}
	case addr == pfx.Masked().Addr():
		p.errorf(line, key, "%s is the subnet's own address: give the agent a host address, e.g. %s/%d", addr, addr.Next(), pfx.Bits())
		return netip.Prefix{}
	case addr.Is4() && addr == lastAddr(pfx):
		p.errorf(line, key, "%s is the subnet's broadcast address: give the agent a host address, e.g. %s/%d", addr, pfx.Masked().Addr().Next(), pfx.Bits())
		return netip.Prefix{}
	}
	for i, svc := range a.Services {
		host, _, err := net.SplitHostPort(svc.Target)
		if err != nil {
			continue
		}
		if t, err := netip.ParseAddr(host); err == nil && pfx.Contains(t.Unmap()) {
			p.errorf(line, key, "tunnel subnet %s holds service %s's target %s (services[%d]): pick a subnet your LAN does not use",
				pfx.Masked(), svc.Name, t, i)
			return netip.Prefix{}
		}
	}
	if a.Direct.Gateway.IsValid() && pfx.Contains(a.Direct.Gateway) {
		p.errorf(line, key, "tunnel subnet %s holds the router %s (direct.gateway): pick a subnet your LAN does not use", pfx.Masked(), a.Direct.Gateway)
		return netip.Prefix{}
	}
	return pfx
}

// lastAddr is the highest address of pfx.
func lastAddr(pfx netip.Prefix) netip.Addr {
	b := pfx.Masked().Addr().AsSlice()
	for i := pfx.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// AgentWireGuard is what porthole-agent invite reads of agent.yaml. It reads
// no secret (no *_file, no ${VAR} needed), so it works from a shell where
// the agent's token is not at hand.
type AgentWireGuard struct {
	// StateDir is state_dir (DefaultAgentStateDir when absent).
	StateDir string
	// WireGuard is the wireguard: section, validated as LoadAgent does; nil
	// when absent.
	WireGuard *WireGuard
	// Endpoint is the Endpoint line of phone configs (Agent.PhoneEndpoint).
	Endpoint string
	// Viewers are the names under viewers:, in file order.
	Viewers []string
	// Services hold only Name, Kind, Target and Port.
	Services []Service
}

// PeekAgentWireGuard reads the keys of an agent config that invites need:
// state_dir, wireguard:, ddns.hostname, the viewers' names and the services'
// names, kinds, targets and ports. The rest is not checked (porthole-agent
// -check does that).
func PeekAgentWireGuard(path string) (AgentWireGuard, error) {
	data, err := readConfig(path)
	if err != nil {
		return AgentWireGuard{}, err
	}
	return ParseAgentWireGuard(path, data, nil)
}

// ParseAgentWireGuard is PeekAgentWireGuard on data already read.
func ParseAgentWireGuard(file string, data []byte, lookupEnv func(string) (string, bool)) (AgentWireGuard, error) {
	p := newParser(file, lookupEnv)
	var out AgentWireGuard
	f := p.lenientRoot(data)
	if f == nil {
		return out, p.result()
	}
	out.StateDir, _, _ = p.str(f, "state_dir", DefaultAgentStateDir)
	a := &Agent{Direct: Direct{Enabled: true}}
	if f.has("relay") {
		a.Relay = &AgentRelay{}
	}
	if df := p.section(f, "direct", nil); df != nil {
		a.Direct.Enabled = p.boolean(df, "enabled", true)
		a.Direct.Gateway = p.ip(df, "gateway")
	}
	if df := p.section(f, "ddns", nil); df != nil {
		h, _, _ := p.str(df, "hostname", "")
		a.DDNS = &DDNS{Hostname: strings.ToLower(strings.TrimSuffix(h, "."))}
	}
	if vf := p.section(f, "viewers", nil); vf != nil {
		out.Viewers = vf.keys
		a.Viewers = map[string]Viewer{}
		for _, v := range vf.keys {
			a.Viewers[v] = Viewer{}
		}
	}
	if e, ok := f.m["services"]; ok {
		if n := resolve(e.val); n.Kind == yaml.SequenceNode {
			for i, item := range n.Content {
				sf := p.mapping(item, fmt.Sprintf("services[%d]", i), nil)
				if sf == nil {
					continue
				}
				var s Service
				s.Name, _, _ = p.str(sf, "name", "")
				s.Kind, _, _ = p.str(sf, "kind", KindTCP)
				s.Target, _, _ = p.str(sf, "target", "")
				if v, _, _, ok := p.integer(sf, "port"); ok && v > 0 && v < 65536 {
					s.Port = uint16(v)
				}
				a.Services = append(a.Services, s)
			}
		}
	}
	out.Services = a.Services
	if wf := p.section(f, "wireguard", wireguardKeys); wf != nil {
		a.WireGuard = p.wireguard(wf, a)
		out.WireGuard = a.WireGuard
		out.Endpoint = a.PhoneEndpoint()
	}
	return out, p.result()
}

// LocalPort is the agent's own UDP port: ListenPort, or Port without it.
func (w *WireGuard) LocalPort() uint16 {
	if w.ListenPort != 0 {
		return w.ListenPort
	}
	return w.Port
}
