package publicip

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/porthole-dev/porthole/internal/config"
)

func TestFromConfig(t *testing.T) {
	relay := func(context.Context, Family) (netip.Addr, error) { return netip.MustParseAddr("203.0.113.7"), nil }
	router := func(context.Context, Family) (netip.Addr, error) { return netip.MustParseAddr("100.64.0.9"), nil }
	names := func(c Config) []string {
		var out []string
		for _, s := range c.Sources {
			out = append(out, s.Name())
		}
		return out
	}

	// Defaults: every kind, built-in lists; constructed only, never queried.
	cfg, err := FromConfig(config.PublicIP{MinAgree: 2, IPv6: true}, relay, router, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]string{"relay"}, DefaultHTTPSURLs...), "dns:cloudflare", "dns:opendns", "dns:google", "doh:cloudflare", "router")
	if got := names(cfg); !slices.Equal(got, want) {
		t.Fatalf("sources %v, want %v", got, want)
	}
	if cfg.Router != SourceRouter || cfg.MinAgree != 2 || !cfg.IPv6 {
		t.Fatalf("cfg %+v", cfg)
	}

	// Explicit lists; no relay and no router funcs leave those out.
	pi := config.PublicIP{
		Sources:         []string{"relay", "https", "dns", "router"},
		HTTPS:           []string{"https://echo.example/ip"},
		DNS:             []string{"127.0.0.1:5353/whoami.cloudflare"},
		MinAgree:        1,
		Accept:          testAccept,
		IPv6InterfaceID: netip.MustParseAddr("::1"),
	}
	cfg, err = FromConfig(pi, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cfg); !slices.Equal(got, []string{"https://echo.example/ip", "dns:127.0.0.1:5353"}) {
		t.Fatalf("sources %v", got)
	}
	if cfg.Router != "" || len(cfg.Accept) != len(testAccept) || cfg.IPv6InterfaceID != pi.IPv6InterfaceID {
		t.Fatalf("cfg %+v", cfg)
	}

	for _, bad := range []config.PublicIP{
		{Sources: []string{"carrier-pigeon"}},
		{Sources: []string{"https"}, HTTPS: []string{"ftp://x"}},
		{Sources: []string{"dns"}, DNS: []string{"no-such-resolver"}},
	} {
		if _, err := FromConfig(bad, nil, nil, nil); err == nil {
			t.Errorf("FromConfig(%+v) accepted", bad)
		}
	}
}
