package agent

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/ddns"
	"github.com/porthole-dev/porthole/agent/publicip"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/fakecloudflare"
)

func TestPublicIPConfig(t *testing.T) {
	relay := func(context.Context, publicip.Family) (netip.Addr, error) {
		return netip.MustParseAddr("203.0.113.7"), nil
	}
	router := func(context.Context, publicip.Family) (netip.Addr, error) {
		return netip.MustParseAddr("100.64.0.9"), nil
	}
	names := func(c publicip.Config) []string {
		var out []string
		for _, s := range c.Sources {
			out = append(out, s.Name())
		}
		return out
	}

	// Defaults: every kind, built-in lists; constructed only, never queried.
	cfg, err := publicIPConfig(config.PublicIP{MinAgree: 2, IPv6: true}, relay, router, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]string{"relay"}, publicip.DefaultHTTPSURLs...), "dns:cloudflare", "dns:opendns", "dns:google", "doh:cloudflare", "router")
	if got := names(cfg); !slices.Equal(got, want) {
		t.Fatalf("sources %v, want %v", got, want)
	}
	if cfg.Router != publicip.SourceRouter || cfg.MinAgree != 2 || !cfg.IPv6 {
		t.Fatalf("cfg %+v", cfg)
	}

	// Explicit lists; no relay and no router funcs leave those out.
	accept := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	pi := config.PublicIP{
		Sources:         []string{"relay", "https", "dns", "router"},
		HTTPS:           []string{"https://echo.example/ip"},
		DNS:             []string{"127.0.0.1:5353/whoami.cloudflare"},
		MinAgree:        1,
		Accept:          accept,
		IPv6InterfaceID: netip.MustParseAddr("::1"),
	}
	cfg, err = publicIPConfig(pi, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cfg); !slices.Equal(got, []string{"https://echo.example/ip", "dns:127.0.0.1:5353"}) {
		t.Fatalf("sources %v", got)
	}
	if cfg.Router != "" || !slices.Equal(cfg.Accept, accept) || cfg.IPv6InterfaceID != pi.IPv6InterfaceID || cfg.MinAgree != 1 {
		t.Fatalf("cfg %+v", cfg)
	}

	for _, bad := range []config.PublicIP{
		{Sources: []string{"carrier-pigeon"}},
		{Sources: []string{"https"}, HTTPS: []string{"ftp://x"}},
		{Sources: []string{"dns"}, DNS: []string{"no-such-resolver"}},
	} {
		if _, err := publicIPConfig(bad, nil, nil, nil); err == nil {
			t.Errorf("publicIPConfig(%+v) accepted", bad)
		}
	}
}

const testCFToken = "cf-test-token"

func TestNewUpdater(t *testing.T) {
	srv := fakecloudflare.New(t, testCFToken, "example.com")
	u, err := newUpdater(config.DDNS{
		Hostname: "Home.Example.com.",
		TTL:      2 * time.Minute,
		Provider: config.Provider{Type: "cloudflare", Zone: "example.com", APIToken: testCFToken, BaseURL: srv.URL},
	}, t.TempDir(), ddns.ProviderOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	v4 := netip.MustParseAddr("203.0.113.5")
	if out, err := u.Update(context.Background(), ddns.Records{V4: v4}); err != nil || out.Action != ddns.ActionUpdated {
		t.Fatalf("Update = %+v, %v", out, err)
	}
	if r := srv.All(); len(r) != 1 || r[0].Name != "home.example.com" || r[0].TTL != 120 {
		t.Fatalf("records %+v", r)
	}
	if s := u.Status(); s.Hostname != "home.example.com" || s.Provider != "cloudflare" || s.Published.V4 != v4 {
		t.Fatalf("status %+v", s)
	}
	if _, err := newUpdater(config.DDNS{Hostname: "h.example.com", Provider: config.Provider{Type: "nope"}}, "", ddns.ProviderOptions{}); !errors.Is(err, ddns.ErrBadConfig) {
		t.Fatal(err)
	}
}

// Every field of the YAML provider section reaches ddns: a field added to one
// side only shows up here.
func TestDDNSProviderConfigMapsEveryField(t *testing.T) {
	in := config.Provider{Type: "a", Zone: "b", APIToken: "c", BaseURL: "d", Username: "e", Password: "f",
		Token: "g", Server: "h", KeyName: "i", KeyAlg: "j", Key: "k"}
	got := ddnsProviderConfig(in)
	want := ddns.ProviderConfig{Type: "a", Zone: "b", APIToken: "c", BaseURL: "d", Username: "e", Password: "f",
		Token: "g", Server: "h", KeyName: "i", KeyAlg: "j", Key: "k"}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// The YAML accepts exactly the provider types ddns can build.
func TestProviderTypesAgree(t *testing.T) {
	yamlTypes := slices.Sorted(slices.Values(config.ProviderTypes))
	if got := ddns.ProviderTypes(); !slices.Equal(yamlTypes, got) {
		t.Fatalf("config.ProviderTypes %v, ddns.ProviderTypes() %v", yamlTypes, got)
	}
	for typ, p := range testProviders {
		if _, err := newUpdater(config.DDNS{Hostname: "home.example.com", Provider: p}, "", ddns.ProviderOptions{}); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
}

func TestConfigWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    config.DDNS
		want []string
	}{
		{"cloudflare deletes and sets TTLs", config.DDNS{TTL: 5 * time.Minute, DeleteOnExit: true, Provider: testProviders["cloudflare"]}, nil},
		{"noip defaults", config.DDNS{TTL: config.DefaultDDNSTTL, Provider: testProviders["noip"]}, nil},
		{"noip can't delete", config.DDNS{TTL: config.DefaultDDNSTTL, DeleteOnExit: true, Provider: testProviders["noip"]},
			[]string{"ddns.delete_on_exit: provider noip can't delete"}},
		{"duckdns ignores ttl", config.DDNS{TTL: 5 * time.Minute, DeleteOnExit: true, Provider: testProviders["duckdns"]},
			[]string{"ddns.ttl: provider duckdns sets its own TTL; 5m0s is ignored"}},
	} {
		got := ConfigWarnings(&config.Agent{DDNS: &tc.d})
		if len(got) != len(tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if !strings.Contains(got[i], tc.want[i]) {
				t.Errorf("%s: %q, want %q", tc.name, got[i], tc.want[i])
			}
		}
	}
	if w := ConfigWarnings(&config.Agent{}); w != nil {
		t.Errorf("no ddns: %q", w)
	}
}
