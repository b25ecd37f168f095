package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A secret file others can read is a secret no longer: -check and the
// start of both programs warn, naming the key, the line and the fix.
func TestSecretFileModeWarning(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // umask may have narrowed it
			t.Fatal(err)
		}
		return path
	}
	open := write("open.token", tokA+"\n", 0o644)
	write("group.pass", "dyn-password\n", 0o640)
	write("closed.token", tokB+"\n", 0o600)
	write("cf.token", "cf-api-token\n", 0o400)

	r, err := ParseRelay(filepath.Join(dir, "relay.yaml"), []byte("agents:\n  home:\n    token_file: open.token\n    ports: 10000-10099\n  cabin:\n    token_file: closed.token\n    ports: 10100-10199\n"), envOf())
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "relay.yaml") + ":3: agents.home.token_file: secret file " + open + " is open to group or others (mode 0644): chmod 600 " + open
	if len(r.Warnings) != 1 || r.Warnings[0] != want {
		t.Fatalf("relay warnings %q\nwant %q", r.Warnings, want)
	}

	a, err := ParseAgent(filepath.Join(dir, "agent.yaml"), []byte(`name: home
relay: {address: "relay.example.com:7443", token_file: closed.token}
services: [{name: cam, target: "192.168.1.20:554", port: 10554, allow: [198.51.100.0/24]}]
ddns:
  hostname: home.example.com
  provider:
    type: noip
    username: me
    password_file: group.pass
`), envOf())
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], "agent.yaml:9: ddns.provider.password_file: secret file ") ||
		!strings.Contains(a.Warnings[0], "(mode 0640): chmod 600 ") || strings.Contains(a.Warnings[0], "dyn-password") {
		t.Fatalf("agent warnings %q", a.Warnings)
	}

	// 0600 and 0400 are fine.
	a, err = ParseAgent(filepath.Join(dir, "agent.yaml"), []byte("name: home\nddns: {hostname: home.example.com, provider: {type: cloudflare, zone: example.com, api_token_file: cf.token}}\n"), envOf())
	if err != nil || len(a.Warnings) != 0 {
		t.Fatalf("0400 file: %v, warnings %q", err, a.Warnings)
	}
}

// A secret written into a config that others can read is exposed the same way.
func TestInlineSecretConfigModeWarning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	for _, tc := range []struct {
		body string
		mode os.FileMode
		warn bool
	}{
		{"agents:\n  home: {token: " + tokA + ", ports: 1}\n", 0o644, true},
		{"agents:\n  home: {token: " + tokA + ", ports: 1}\n", 0o600, false},
		{"agents:\n  home: {token: \"${TOK}\", ports: 1}\n", 0o644, false}, // from the environment
	} {
		if err := os.WriteFile(path, []byte(tc.body), tc.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		r, err := ParseRelay(path, []byte(tc.body), envOf("TOK", tokB))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(r.Warnings, "\n")
		if tc.warn != (len(r.Warnings) == 1 && strings.Contains(got, path+":2: agents.home.token: a secret written into "+path) &&
			strings.Contains(got, "move it to token_file")) || strings.Contains(got, tokA) {
			t.Errorf("%q mode %04o: warnings %q", tc.body, tc.mode, r.Warnings)
		}
	}
}
