package invite

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PhoneMTU is the MTU in every phone config. The relay carries each
// WireGuard packet as one datagram inside the agent's QUIC tunnel, which has
// room for about 1350 bytes on an ordinary 1500-byte internet path: a
// 1280-byte inner packet becomes 1312 bytes of WireGuard (32 bytes of
// header and tag) and fits, the apps' default 1420 would not. 1280 is also
// IPv6's minimum link MTU, so it fits mobile networks and tunnels too.
const PhoneMTU = 1280

// PhoneKeepalive is the phone's PersistentKeepalive in seconds: it keeps the
// phone's NAT mapping and the relay's record of its address alive while the
// phone is idle, so the agent can always reach it.
const PhoneKeepalive = 25

// Phone is everything in a phone's WireGuard config.
type Phone struct {
	// Name is the phone's name, written as a comment.
	Name string
	// PrivateKey is the phone's private key (from Store.Add).
	PrivateKey wgtypes.Key
	// Address is the phone's tunnel address.
	Address netip.Addr
	// AgentKey is the agent's public key (Store.PublicKey).
	AgentKey wgtypes.Key
	// Endpoint is the host:port the phone dials: the DDNS name and the
	// WireGuard port (config.Agent.PhoneEndpoint).
	Endpoint string
	// AllowedIPs are what the phone sends into the tunnel (AllowedIPs).
	AllowedIPs []netip.Prefix
}

// AllowedIPs is what a phone routes into the tunnel: the tunnel subnet and,
// with lan_addresses, each camera's own address (as a /32 or /128). Nothing
// else, so the phone's other traffic never goes home.
func AllowedIPs(address netip.Prefix, lan []netip.Addr) []netip.Prefix {
	out := []netip.Prefix{address.Masked()}
	for _, a := range lan {
		p := netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		if !address.Masked().Contains(p.Addr()) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Config is the phone's WireGuard config in wg-quick format, as the
// WireGuard apps import it. It holds the phone's private key: print it once.
// No DNS line: the phone reaches everything by address inside the tunnel and
// keeps its own resolver for the rest.
func (p Phone) Config() string {
	var b strings.Builder
	bits := 32
	if p.Address.Is6() {
		bits = 128
	}
	allowed := make([]string, len(p.AllowedIPs))
	for i, a := range p.AllowedIPs {
		allowed[i] = a.String()
	}
	fmt.Fprintf(&b, "# Porthole: %s\n", p.Name)
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nAddress = %s\nMTU = %d\n\n", p.PrivateKey, netip.PrefixFrom(p.Address, bits), PhoneMTU)
	fmt.Fprintf(&b, "[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = %s\nPersistentKeepalive = %d\n",
		p.AgentKey, p.Endpoint, strings.Join(allowed, ", "), PhoneKeepalive)
	return b.String()
}

// QRTerminal renders text as a QR code for a terminal, two modules per
// character with half blocks. The light modules and the quiet zone are
// drawn, the dark ones left blank: right for the usual light-on-dark
// terminal; lightBackground draws the dark ones instead.
func QRTerminal(text string, lightBackground bool) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("qr code: %w", err)
	}
	return q.ToSmallString(lightBackground), nil
}

// QRPNG renders text as a PNG QR code about size pixels wide.
func QRPNG(text string, size int) ([]byte, error) {
	b, err := qrcode.Encode(text, qrcode.Medium, size)
	if err != nil {
		return nil, fmt.Errorf("qr code: %w", err)
	}
	return b, nil
}

// WGConf is the config as `wg setconf` takes it: Config without the
// wg-quick-only lines (Address, MTU, DNS), which the caller applies with ip.
func WGConf(config string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(config, "\n") {
		k, _, _ := strings.Cut(line, "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "address", "mtu", "dns", "table", "preup", "postup", "predown", "postdown", "saveconfig":
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}
