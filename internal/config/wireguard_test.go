package config

import (
	"net/netip"
	"reflect"
	"testing"
)

// wgBase is an agent with a relay, a ddns hostname, a viewer and one service
// on 192.168.1.20 (6 lines); tests append a wireguard: section from line 7.
const wgBase = `name: home
relay: {address: "relay.example.com:7443", token: ` + tokA + `}
ddns: {hostname: home.example.com, provider: {type: duckdns, token: t}}
viewers: {alice: {password_hash: "` + hashAlice + `"}}
services:
  - {name: cam, target: "192.168.1.20:554", port: 10554, allow: [any]}
`

func TestWireGuardSection(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(wgBase+`wireguard:
  port: 51820
  address: 10.77.0.1/24
`), envOf())
	checkErrs(t, err)
	want := &WireGuard{Port: 51820, Address: netip.MustParsePrefix("10.77.0.1/24")}
	if !reflect.DeepEqual(a.WireGuard, want) {
		t.Errorf("wireguard = %+v, want %+v", a.WireGuard, want)
	}
	if got := a.PhoneEndpoint(); got != "home.example.com:51820" {
		t.Errorf("PhoneEndpoint = %q", got)
	}

	a, err = ParseAgent("a.yaml", []byte(wgBase+`wireguard:
  port: 51821
  address: fd77::1/64
  lan_addresses: true
  endpoint: "203.0.113.9:51000"
`), envOf())
	checkErrs(t, err)
	want = &WireGuard{Port: 51821, Address: netip.MustParsePrefix("fd77::1/64"), LANAddresses: true, Endpoint: "203.0.113.9:51000"}
	if !reflect.DeepEqual(a.WireGuard, want) {
		t.Errorf("wireguard = %+v, want %+v", a.WireGuard, want)
	}
	if got := a.PhoneEndpoint(); got != "203.0.113.9:51000" {
		t.Errorf("PhoneEndpoint = %q", got)
	}

	a, err = ParseAgent("a.yaml", []byte(wgBase+"wireguard: {port: 51820, listen_port: 51900, address: 10.77.0.1/24}\n"), envOf())
	checkErrs(t, err)
	if a.WireGuard.ListenPort != 51900 || a.WireGuard.LocalPort() != 51900 || a.WireGuard.Port != 51820 || a.PhoneEndpoint() != "home.example.com:51820" {
		t.Errorf("listen_port: %+v, endpoint %q", a.WireGuard, a.PhoneEndpoint())
	}
	if w := (&WireGuard{Port: 51820}); w.LocalPort() != 51820 {
		t.Errorf("LocalPort without listen_port = %d", w.LocalPort())
	}

	a, err = ParseAgent("a.yaml", []byte(wgBase), envOf())
	checkErrs(t, err)
	if a.WireGuard != nil || a.PhoneEndpoint() != "" {
		t.Errorf("no section: wireguard = %+v", a.WireGuard)
	}
}

func TestWireGuardErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"missing keys", wgBase + "wireguard:\n  lan_addresses: true\n", []want{
			{8, "wireguard.port", "required: the public UDP port"},
			{8, "wireguard.address", "required: the agent's tunnel address"},
		}},
		{"unknown key", wgBase + "wireguard: {port: 51820, address: 10.77.0.1/24, dns: 1.1.1.1}\n", []want{
			{7, "", "unknown key wireguard.dns"},
		}},
		{"port range", wgBase + "wireguard:\n  port: 70000\n  address: 10.77.0.1/24\n", []want{
			{8, "wireguard.port", "70000 is not a port"},
		}},
		{"port zero", wgBase + "wireguard:\n  port: 0\n  address: 10.77.0.1/24\n", []want{
			{8, "wireguard.port", "0 is not a port"},
		}},
		{"listen_port range", wgBase + "wireguard:\n  port: 51820\n  listen_port: 0\n  address: 10.77.0.1/24\n", []want{
			{9, "wireguard.listen_port", "0 is not a port"},
		}},
		{"port text", wgBase + "wireguard:\n  port: wg\n  address: 10.77.0.1/24\n", []want{
			{8, "wireguard.port", "expected a whole number"},
		}},
		{"no prefix", wgBase + "wireguard:\n  port: 51820\n  address: 10.77.0.1\n", []want{
			{9, "wireguard.address", "with a prefix length"},
		}},
		{"public", wgBase + "wireguard:\n  port: 51820\n  address: 8.8.8.1/24\n", []want{
			{9, "wireguard.address", "8.8.8.1 is not a private address"},
		}},
		{"public v6", wgBase + "wireguard:\n  port: 51820\n  address: 2001:db8::1/64\n", []want{
			{9, "wireguard.address", "not a private address"},
		}},
		{"too small", wgBase + "wireguard:\n  port: 51820\n  address: 10.77.0.1/31\n", []want{
			{9, "wireguard.address", "/31 leaves no address for phones"},
		}},
		{"network address", wgBase + "wireguard:\n  port: 51820\n  address: 10.77.0.0/24\n", []want{
			{9, "wireguard.address", "subnet's own address"},
		}},
		{"broadcast", wgBase + "wireguard:\n  port: 51820\n  address: 10.77.0.255/24\n", []want{
			{9, "wireguard.address", "broadcast address"},
		}},
		{"overlaps LAN target", wgBase + "wireguard:\n  port: 51820\n  address: 192.168.1.250/24\n", []want{
			{9, "wireguard.address", "holds service cam's target 192.168.1.20"},
		}},
		{"overlaps router", wgBase + "direct: {gateway: 10.1.0.1}\nwireguard:\n  port: 51820\n  address: 10.0.0.1/8\n", []want{
			{10, "wireguard.address", "holds the router 10.1.0.1"},
		}},
		{"bad endpoint", wgBase + "wireguard:\n  port: 51820\n  address: 10.77.0.1/24\n  endpoint: home.example.com\n", []want{
			{10, "wireguard.endpoint", "expected host:port"},
		}},
		{"no endpoint without ddns", `name: home
relay: {address: "relay.example.com:7443", token: ` + tokA + `}
services:
  - {name: cam, target: "192.168.1.20:554", port: 10554, allow: [any]}
wireguard:
  port: 51820
  address: 10.77.0.1/24
`, []want{{6, "wireguard.endpoint", "required without a ddns section"}}},
		{"unreachable", `name: home
direct: {enabled: false}
ddns: {hostname: home.example.com, provider: {type: duckdns, token: t}}
wireguard: {port: 51820, address: 10.77.0.1/24}
`, []want{{4, "wireguard", "no way for phones to reach the agent"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAgent("a.yaml", []byte(tt.yaml), envOf())
			checkErrs(t, err, tt.want...)
		})
	}
}

func TestWireGuardWithoutViewersWarns(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(`name: home
ddns: {hostname: home.example.com, provider: {type: duckdns, token: t}}
services:
  - {name: cam, target: "192.168.1.20:554", port: 10554, allow: [10.0.0.0/8]}
wireguard: {port: 51820, address: 10.77.0.1/24}
`), envOf())
	checkErrs(t, err)
	if len(a.Warnings) != 1 || !contains(a.Warnings, "a.yaml:5: wireguard: no viewers: every invite belongs to a viewer; add a viewers: section before porthole-agent invite") {
		t.Errorf("warnings = %q", a.Warnings)
	}
}

func TestPeekAgentWireGuard(t *testing.T) {
	// The token file is missing and ${TOKEN} unset: invite must not need them.
	w, err := ParseAgentWireGuard("a.yaml", []byte(`name: home
state_dir: /srv/ph
relay: {address: "relay.example.com:7443", token_file: /missing/token, token: "${TOKEN}"}
ddns: {hostname: Home.Example.com., provider: {type: duckdns, token_file: /missing}}
viewers: {alice: {password_hash_file: /missing}, bob: {}}
services:
  - {name: cam, kind: rtsp, target: "192.168.1.20:554", port: 10554, allow: [any]}
  - {name: web, kind: http, target: "192.168.1.20:80", port: 10443, allow: [any]}
wireguard: {port: 51820, address: 10.77.0.1/24, lan_addresses: true}
`), envOf())
	checkErrs(t, err)
	wantW := AgentWireGuard{
		StateDir:  "/srv/ph",
		WireGuard: &WireGuard{Port: 51820, Address: netip.MustParsePrefix("10.77.0.1/24"), LANAddresses: true},
		Endpoint:  "home.example.com:51820",
		Viewers:   []string{"alice", "bob"},
		Services: []Service{{Name: "cam", Kind: "rtsp", Target: "192.168.1.20:554", Port: 10554},
			{Name: "web", Kind: "http", Target: "192.168.1.20:80", Port: 10443}},
	}
	if !reflect.DeepEqual(w, wantW) {
		t.Errorf("got %+v\nwant %+v", w, wantW)
	}
	// The wireguard section is checked as strictly as by LoadAgent.
	_, err = ParseAgentWireGuard("a.yaml", []byte(`services:
  - {name: cam, target: "10.77.0.20:554"}
wireguard: {port: 51820, address: 10.77.0.1/24, endpoint: "h.example.com:1"}
`), envOf())
	checkErrs(t, err, want{3, "wireguard.address", "holds service cam's target"})
}
