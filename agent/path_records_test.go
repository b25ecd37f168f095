package agent

import (
	"net/netip"
	"testing"

	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/internal/config"
)

// The records a path asks for must be ones the provider can write: the
// dyndns2 family can't remove AAAA, and asking it to failed every update of a
// relay-configured agent (found in the namespace lab, test/lab scenarios).
func TestOnlyFamily(t *testing.T) {
	v4 := netip.MustParseAddr("203.0.113.2")
	v6 := netip.MustParseAddr("2001:db8::2")
	for _, tc := range []struct {
		provider string
		ip       netip.Addr
		want     ddns.Records
	}{
		{"cloudflare", v4, ddns.Records{V4: v4, NoV6: true}},
		{"rfc2136", v4, ddns.Records{V4: v4, NoV6: true}},
		{"cloudflare", v6, ddns.Records{V6: v6, NoV4: true}},
		{"dyndns2", v4, ddns.Records{V4: v4}},
		{"noip", v4, ddns.Records{V4: v4}},
		{"DynU", v4, ddns.Records{V4: v4}},
		// an IPv6 relay still needs the home's A gone; dyndns2 says it can't
		{"dyndns2", v6, ddns.Records{V6: v6, NoV4: true}},
	} {
		a := &Agent{ac: &config.Agent{DDNS: &config.DDNS{Provider: config.Provider{Type: tc.provider}}}}
		if got := a.onlyFamily(tc.ip); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.provider, tc.ip, got, tc.want)
		}
	}
}
