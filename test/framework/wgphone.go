package framework

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WGPhone is a phone made in process from an invite's WireGuard config:
// wireguard-go with a netstack TUN (no root, no kernel module), its UDP
// socket on the host. Dial reaches the tunnel's addresses.
type WGPhone struct {
	dev  *device.Device
	tnet *netstack.Net
	// Address is the phone's tunnel address (Interface Address).
	Address netip.Addr
}

// WGQuick is what a wg-quick config (an invite) says, as WGPhone uses it.
type WGQuick struct {
	PrivateKey, PeerKey wgtypes.Key
	Address             netip.Prefix
	MTU                 int
	Endpoint            string
	AllowedIPs          []netip.Prefix
	Keepalive           int
}

// ParseWGQuick reads a wg-quick config, e.g. the text porthole-agent invite
// prints; it stops at the first line after the [Peer] section that is not
// part of it (the QR code and the notes that follow the config).
func ParseWGQuick(text string) (WGQuick, error) {
	var q WGQuick
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			if line == "" && section == "Peer" && q.Endpoint != "" {
				break
			}
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			if section == "Peer" {
				break
			}
			return q, fmt.Errorf("wg-quick: line %q is not key = value", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var err error
		switch section + "." + k {
		case "Interface.PrivateKey":
			q.PrivateKey, err = wgtypes.ParseKey(v)
		case "Interface.Address":
			q.Address, err = netip.ParsePrefix(v)
		case "Interface.MTU":
			q.MTU, err = strconv.Atoi(v)
		case "Peer.PublicKey":
			q.PeerKey, err = wgtypes.ParseKey(v)
		case "Peer.Endpoint":
			q.Endpoint = v
		case "Peer.AllowedIPs":
			for a := range strings.SplitSeq(v, ",") {
				p, perr := netip.ParsePrefix(strings.TrimSpace(a))
				if perr != nil {
					err = perr
					break
				}
				q.AllowedIPs = append(q.AllowedIPs, p)
			}
		case "Peer.PersistentKeepalive":
			q.Keepalive, err = strconv.Atoi(v)
		}
		if err != nil {
			return q, fmt.Errorf("wg-quick: %s.%s: %w", section, k, err)
		}
	}
	if q.PrivateKey == (wgtypes.Key{}) || q.PeerKey == (wgtypes.Key{}) || !q.Address.IsValid() || q.Endpoint == "" || len(q.AllowedIPs) == 0 {
		return q, fmt.Errorf("wg-quick: incomplete config (PrivateKey, Address, PublicKey, Endpoint, AllowedIPs):\n%s", text)
	}
	return q, nil
}

// NewWGPhone brings up a phone from q; endpoint, if not empty, replaces
// q.Endpoint (an address instead of the DNS name of the invite). Close it.
func NewWGPhone(q WGQuick, endpoint string) (*WGPhone, error) {
	if endpoint == "" {
		endpoint = q.Endpoint
	}
	ep, err := netip.ParseAddrPort(endpoint)
	if err != nil {
		return nil, fmt.Errorf("wg phone: endpoint %q: want an address:port: %w", endpoint, err)
	}
	mtu := q.MTU
	if mtu == 0 {
		mtu = 1280
	}
	tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{q.Address.Addr()}, nil, mtu)
	if err != nil {
		return nil, err
	}
	dev := device.NewDevice(tdev, conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\npublic_key=%s\nendpoint=%s\npersistent_keepalive_interval=%d\n",
		hex.EncodeToString(q.PrivateKey[:]), hex.EncodeToString(q.PeerKey[:]), ep, q.Keepalive)
	for _, a := range q.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", a)
	}
	if err := dev.IpcSet(b.String()); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wg phone: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wg phone: %w", err)
	}
	return &WGPhone{dev: dev, tnet: tnet, Address: q.Address.Addr()}, nil
}

// StartWGPhone is NewWGPhone from an invite's text, closed when the test ends.
func StartWGPhone(tb testing.TB, invite, endpoint string) *WGPhone {
	tb.Helper()
	q, err := ParseWGQuick(invite)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := NewWGPhone(q, endpoint)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Close stops the phone.
func (p *WGPhone) Close() { p.dev.Close() }

// DialContext dials inside the tunnel (tcp, tcp4, udp...).
func (p *WGPhone) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.tnet.DialContext(ctx, network, addr)
}

// HTTPClient is a client whose connections go through the tunnel, one
// connection per request.
func (p *WGPhone) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: p.DialContext, DisableKeepAlives: true}}
}

// Handshakes reports whether the phone completed a handshake.
func (p *WGPhone) Handshakes() bool {
	s, err := p.dev.IpcGet()
	return err == nil && strings.Contains(s, "last_handshake_time_sec=") && !strings.Contains(s, "last_handshake_time_sec=0\n")
}
