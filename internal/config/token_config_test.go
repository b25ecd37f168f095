package config

import (
	"strings"
	"testing"
)

// Tokens chosen by people were accepted (found offline in 370 guesses each):
// both relay.yaml and agent.yaml must refuse them, at their line, with a
// message saying how to make a token, and without showing the token.
func TestConfigRefusesChosenTokens(t *testing.T) {
	for _, tok := range []string{"password123password123", "correct-horse-battery-staple"} {
		relay := "listen: 0.0.0.0:7443\nagents:\n  home:\n    token: " + tok + "\n    ports: 10000-10099\n"
		agent := "name: home\nrelay:\n  address: relay.example.com:7443\n  token: " + tok + "\nservices: [{name: cam, target: '192.168.1.20:554', port: 10554, allow: [198.51.100.0/24]}]\n"
		_, rerr := ParseRelay("relay.yaml", []byte(relay), envOf())
		_, aerr := ParseAgent("agent.yaml", []byte(agent), envOf())
		for _, c := range []struct {
			name string
			err  error
			want string
		}{
			{"relay.yaml", rerr, "relay.yaml:4: agents.home.token: "},
			{"agent.yaml", aerr, "agent.yaml:4: relay.token: "},
		} {
			if c.err == nil {
				t.Errorf("%s accepted token %q", c.name, tok)
				continue
			}
			msg := c.err.Error()
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, "porthole-relay token") {
				t.Errorf("%s: %q: want %q and how to make a token", c.name, msg, c.want)
			}
			if strings.Contains(msg, tok) {
				t.Errorf("%s: error shows the token: %s", c.name, msg)
			}
		}
	}
}

const tokOld = "Tv1OH58rpPw8fG8qtC4bcX8PVME39rjnRGwU6pt62ig" // made by the old NewToken

// An old generated token keeps working, with a warning at its line; a new
// one gets none; a mistyped one is refused as a copying mistake.
func TestConfigTokenFormats(t *testing.T) {
	relayWith := func(tok string) string {
		return "agents:\n  home:\n    token: " + tok + "\n    ports: 10000-10099\n"
	}
	r, err := ParseRelay("relay.yaml", []byte(relayWith(tokOld)), envOf())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], "relay.yaml:3: agents.home.token: an old-style token") ||
		!strings.Contains(r.Warnings[0], "porthole-relay token") || strings.Contains(r.Warnings[0], tokOld) {
		t.Fatalf("warnings %q", r.Warnings)
	}
	a, err := ParseAgent("agent.yaml", []byte("name: home\nrelay: {address: 'relay.example.com:7443', token: "+tokOld+"}\nservices: [{name: cam, target: '192.168.1.20:554', port: 10554, allow: [198.51.100.0/24]}]\n"), envOf())
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Warnings) != 1 || !strings.HasPrefix(a.Warnings[0], "agent.yaml:2: relay.token: an old-style token") {
		t.Fatalf("warnings %q", a.Warnings)
	}

	if r, err := ParseRelay("relay.yaml", []byte(relayWith(tokA)), envOf()); err != nil || len(r.Warnings) != 0 {
		t.Fatalf("new token: %v, warnings %q", err, r.Warnings)
	}
	typo := tokA[:20] + string(tokA[21]) + string(tokA[20]) + tokA[22:] // two characters swapped
	_, err = ParseRelay("relay.yaml", []byte(relayWith(typo)), envOf())
	if err == nil || !strings.Contains(err.Error(), "relay.yaml:3: agents.home.token: token checksum mismatch: copy it again") || strings.Contains(err.Error(), typo) {
		t.Fatalf("typo: %v", err)
	}
}
