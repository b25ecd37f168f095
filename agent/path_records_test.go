package agent

import (
	"net/netip"
	"testing"

	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/internal/config"
)

// testProviders are valid provider sections of every type, for building
// updaters without touching the network.
var testProviders = map[string]config.Provider{
	"cloudflare": {Type: "cloudflare", Zone: "example.com", APIToken: "t"},
	"rfc2136":    {Type: "rfc2136", Server: "127.0.0.1:53", Zone: "example.com"},
	"duckdns":    {Type: "duckdns", Token: "t"},
	"dyndns2":    {Type: "dyndns2", BaseURL: "https://dyn.example.net/nic/update", Username: "u", Password: "p"},
	"noip":       {Type: "noip", Username: "u", Password: "p"},
	"dynu":       {Type: "DynU", Username: "u", Password: "p"},
}

// The records a path asks for must be ones the provider can write: the
// dyndns2 family can't remove AAAA, and asking it to failed every update of a
// relay-configured agent (found in the namespace lab, test/lab scenarios).
// The agent learns that from the provider's Capabilities; this table is the
// behaviour per provider type from before they existed, and must not change.
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
		{"duckdns", v4, ddns.Records{V4: v4, NoV6: true}},
		{"cloudflare", v6, ddns.Records{V6: v6, NoV4: true}},
		{"rfc2136", v6, ddns.Records{V6: v6, NoV4: true}},
		{"dyndns2", v4, ddns.Records{V4: v4}},
		{"noip", v4, ddns.Records{V4: v4}},
		{"dynu", v4, ddns.Records{V4: v4}},
		// an IPv6 relay still needs the home's A gone; dyndns2 and duckdns say they can't
		{"dyndns2", v6, ddns.Records{V6: v6, NoV4: true}},
		{"duckdns", v6, ddns.Records{V6: v6, NoV4: true}},
	} {
		u, err := newUpdater(config.DDNS{Hostname: "home.example.com", Provider: testProviders[tc.provider]}, "", ddns.ProviderOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.provider, err)
		}
		a := &Agent{updater: u}
		if got := a.onlyFamily(tc.ip); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.provider, tc.ip, got, tc.want)
		}
	}
}
