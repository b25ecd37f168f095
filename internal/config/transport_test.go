package config

import "testing"

func TestAgentRelayTransport(t *testing.T) {
	const head = "name: home\nservices: [{name: cam, target: \"192.168.1.20:554\", port: 10554, allow: [any]}]\n"
	for _, tc := range []struct{ yaml, want string }{
		{"relay: {address: \"relay.example.com:7443\", token: " + tokA + "}\n", "auto"},
		{"relay: {address: \"relay.example.com:7443\", token: " + tokA + ", transport: tcp}\n", "tcp"},
		{"relay: {address: \"relay.example.com:7443\", token: " + tokA + ", transport: QUIC}\n", "quic"},
	} {
		a, err := ParseAgent("agent.yaml", []byte(head+tc.yaml), envOf())
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		if a.Relay.Transport != tc.want {
			t.Errorf("%s: transport %q, want %q", tc.yaml, a.Relay.Transport, tc.want)
		}
	}
	_, err := ParseAgent("agent.yaml", []byte(head+"relay:\n  address: \"relay.example.com:7443\"\n  token: "+tokA+"\n  transport: udp\n"), envOf())
	checkErrs(t, err, want{6, "relay.transport", `unknown transport "udp": want auto`})
}
