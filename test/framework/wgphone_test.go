package framework

import (
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/porthole-dev/porthole/agent/wg/invite"
)

// TestParseWGQuick reads an invite's config followed by what invite prints
// after it, and refuses an incomplete one.
func TestParseWGQuick(t *testing.T) {
	priv, _ := wgtypes.GeneratePrivateKey()
	agent, _ := wgtypes.GeneratePrivateKey()
	text := invite.Phone{Name: "pixel", PrivateKey: priv, Address: netip.MustParseAddr("10.77.0.2"), AgentKey: agent.PublicKey(),
		Endpoint: "127.0.0.1:51820", AllowedIPs: invite.AllowedIPs(netip.MustParsePrefix("10.77.0.1/24"), nil)}.Config()
	q, err := ParseWGQuick(text + "\n█▀▀▀▀▀█ ▄ QR\nPhone pixel (viewer alice) gets 10.77.0.2 = in the tunnel\n")
	if err != nil {
		t.Fatal(err)
	}
	want := WGQuick{PrivateKey: priv, PeerKey: agent.PublicKey(), Address: netip.MustParsePrefix("10.77.0.2/32"), MTU: invite.PhoneMTU,
		Endpoint: "127.0.0.1:51820", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}, Keepalive: invite.PhoneKeepalive}
	if q.PrivateKey != want.PrivateKey || q.PeerKey != want.PeerKey || q.Address != want.Address || q.MTU != want.MTU ||
		q.Endpoint != want.Endpoint || len(q.AllowedIPs) != 1 || q.AllowedIPs[0] != want.AllowedIPs[0] || q.Keepalive != want.Keepalive {
		t.Errorf("got %+v\nwant %+v", q, want)
	}
	if _, err := ParseWGQuick(strings.Replace(text, "Endpoint", "# Endpoint", 1)); err == nil {
		t.Error("a config without Endpoint was accepted")
	}
	if _, err := ParseWGQuick(strings.Replace(text, "MTU = ", "MTU = x", 1)); err == nil || !strings.Contains(err.Error(), "Interface.MTU") {
		t.Errorf("bad MTU: %v", err)
	}
}
