package config

import (
	"strings"
	"testing"
)

// TestRelayPortsHint: with relay.ports (and udp_ports) in agent.yaml, -check
// warns about a service port (or wireguard.port) the relay would refuse;
// without the hint nothing is said.
func TestRelayPortsHint(t *testing.T) {
	tok := NewToken()
	doc := func(hint string) string {
		return "name: home\nrelay:\n  address: relay.example.com:7443\n  token: " + tok + "\n" + hint +
			"services:\n  - name: in\n    target: 192.168.1.20:554\n    port: 10010\n    allow: [192.0.2.0/24]\n" +
			"  - name: out\n    target: 192.168.1.20:554\n    port: 10554\n    allow: [192.0.2.0/24]\n" +
			"wireguard:\n  port: 51820\n  address: 10.77.0.1/24\n  endpoint: home.example.com:51820\n"
	}
	a, err := ParseAgent("a.yaml", []byte(doc("  ports: 10000-10099\n  udp_ports: 51000-51009\n")), envOf())
	if err != nil {
		t.Fatal(err)
	}
	if a.Relay.Ports != (PortRange{Lo: 10000, Hi: 10099}) || a.Relay.UDPPorts != (PortRange{Lo: 51000, Hi: 51009}) {
		t.Errorf("hints %v %v", a.Relay.Ports, a.Relay.UDPPorts)
	}
	want := []string{
		"a.yaml:14: services[1].port: port 10554 is outside relay.ports 10000-10099",
		"a.yaml:17: wireguard.port: port 51820 is outside relay.udp_ports 51000-51009",
	}
	got := outside(a.Warnings)
	if len(got) != len(want) {
		t.Fatalf("warnings %q, want %q", a.Warnings, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) || !strings.Contains(got[i], "the relay will refuse it") {
			t.Errorf("warning %q, want %q...", got[i], w)
		}
	}
	a, err = ParseAgent("a.yaml", []byte(doc("")), envOf())
	if err != nil || len(outside(a.Warnings)) != 0 {
		t.Errorf("without the hint: %v %q", err, a.Warnings)
	}
	if _, err := ParseAgent("a.yaml", []byte(doc("  ports: 10099-10000\n")), envOf()); err == nil || !strings.Contains(err.Error(), "relay.ports: range \"10099-10000\" is backwards") {
		t.Errorf("backwards hint: %v", err)
	}
}

func outside(warnings []string) (out []string) {
	for _, w := range warnings {
		if strings.Contains(w, "is outside relay.") {
			out = append(out, w)
		}
	}
	return out
}
