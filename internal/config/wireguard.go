package config

import (
	"net"
	"net/netip"
	"strconv"
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

var wireguardKeys = []string{"port", "address", "lan_addresses", "endpoint"}

// cgnat is 100.64.0.0/10 (RFC 6598), which netip's IsPrivate leaves out; it
// is private to the carrier, and phones on mobile data often sit in it.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// wireguard reads the wireguard: section; a is the rest of the agent's config
// (services and ddns already read).
func (p *parser) wireguard(f *fields, a *Agent) *WireGuard {
	w := &WireGuard{}
	if v, line, present, ok := p.integer(f, "port"); ok {
		switch {
		case !present:
			p.errorf(line, f.sub("port"), "required: the public UDP port phones dial (relay and router), e.g. 51820")
		case v < 1 || v > 65535:
			p.errorf(line, f.sub("port"), "%d is not a port (1-65535)", v)
		default:
			w.Port = uint16(v)
		}
	}
	if s, line, ok := p.required(f, "address", "the agent's tunnel address with the subnet's length, e.g. 10.77.0.1/24"); ok {
		w.Address = p.tunnelAddress(s, line, f.sub("address"), a)
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
