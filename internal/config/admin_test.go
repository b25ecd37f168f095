package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentAdmin(t *testing.T) {
	const head = "name: home\nservices:\n  - {name: cam, target: \"192.168.1.20:554\", port: 10554, allow: [198.51.100.0/24]}\n"
	tests := []struct {
		name, line  string
		addr        string
		isDefault   bool
		warn        string // prefix of the one expected warning; "" = none
		errKey, err string
	}{
		{"absent", "", DefaultAgentAdmin, true, "", "", ""},
		{"empty", "admin:\n", DefaultAgentAdmin, true, "", "", ""},
		{"empty string", "admin: \"\"\n", DefaultAgentAdmin, true, "", "", ""},
		{"default written", "admin: 127.0.0.1:7480\n", DefaultAgentAdmin, false, "", "", ""},
		{"other port", "admin: 127.0.0.1:9000\n", "127.0.0.1:9000", false, "", "", ""},
		{"ipv6 loopback", "admin: \"[::1]:7480\"\n", "[::1]:7480", false, "", "", ""},
		{"off", "admin: off\n", "", false, "", "", ""},
		{"false", "admin: false\n", "", false, "", "", ""},
		{"all interfaces", "admin: 0.0.0.0:7480\n", "0.0.0.0:7480", false, "a.yaml:4: admin: 0.0.0.0:7480 can be reached from other machines", "", ""},
		{"no host", "admin: :7480\n", ":7480", false, "a.yaml:4: admin: :7480 can be reached", "", ""},
		{"lan address", "admin: 192.168.1.5:7480\n", "192.168.1.5:7480", false, "a.yaml:4: admin: 192.168.1.5:7480 can be reached", "", ""},
		{"name", "admin: localhost:7480\n", "", false, "", "admin", "listen host must be an IP"},
		{"no port", "admin: 127.0.0.1\n", "", false, "", "admin", "expected host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent("a.yaml", []byte(head+tt.line), envOf())
			if tt.err != "" {
				checkErrs(t, err, want{4, tt.errKey, tt.err})
				return
			}
			checkErrs(t, err)
			if a.Admin != tt.addr || a.AdminDefault != tt.isDefault {
				t.Errorf("admin = %q default %v; want %q %v", a.Admin, a.AdminDefault, tt.addr, tt.isDefault)
			}
			switch {
			case tt.warn == "" && len(a.Warnings) != 0:
				t.Errorf("unexpected warnings %q", a.Warnings)
			case tt.warn != "" && (len(a.Warnings) != 1 || !strings.HasPrefix(a.Warnings[0], tt.warn)):
				t.Errorf("warnings = %q, want one starting %q", a.Warnings, tt.warn)
			}
		})
	}
}

func TestRelayAdminAndMetricsAlias(t *testing.T) {
	const agents = "agents: {home: {token: " + tokB + ", ports: 10554}}\n"
	r, err := ParseRelay("r.yaml", []byte(agents), envOf())
	checkErrs(t, err)
	if r.Admin != DefaultRelayAdmin || !r.AdminDefault || len(r.Warnings) != 0 {
		t.Errorf("default: %q %v %q", r.Admin, r.AdminDefault, r.Warnings)
	}

	r, err = ParseRelay("r.yaml", []byte(agents+"admin: off\n"), envOf())
	checkErrs(t, err)
	if r.Admin != "" {
		t.Errorf("admin: off gave %q", r.Admin)
	}

	// An existing config with the old key keeps working, with a warning naming the line.
	r, err = ParseRelay("r.yaml", []byte(agents+"metrics: 127.0.0.1:9466\n"), envOf())
	checkErrs(t, err)
	if r.Admin != "127.0.0.1:9466" || r.AdminDefault {
		t.Errorf("metrics alias: admin %q default %v", r.Admin, r.AdminDefault)
	}
	if len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], "r.yaml:2: metrics: deprecated: rename metrics to admin") {
		t.Errorf("warnings = %q", r.Warnings)
	}

	r, err = ParseRelay("r.yaml", []byte(agents+"metrics: 0.0.0.0:9466\n"), envOf())
	checkErrs(t, err)
	if len(r.Warnings) != 2 || !strings.HasPrefix(r.Warnings[1], "r.yaml:2: metrics: 0.0.0.0:9466 can be reached from other machines") {
		t.Errorf("warnings = %q", r.Warnings)
	}

	_, err = ParseRelay("r.yaml", []byte(agents+"admin: 127.0.0.1:7481\nmetrics: 127.0.0.1:9466\n"), envOf())
	checkErrs(t, err, want{3, "metrics", "old name of admin (line 2)"})
}

func TestPeekAgentAdmin(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "agent.token")
	if err := os.WriteFile(secret, []byte(tokA), 0o000); err != nil { // unreadable, like root's 0600 to a user
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	body := "name: home\nstate_dir: " + dir + "\nadmin: 127.0.0.1:9480\nrelay:\n  address: relay.example.com:7443\n  token_file: " + secret +
		"\n  token: ${UNSET_VAR}\nfuture_key: {whatever: 1}\nservices: [not, checked]\n"
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := PeekAgentAdmin(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got != (AgentAdmin{Name: "home", Admin: "127.0.0.1:9480", StateDir: dir}) {
		t.Errorf("got %+v", got)
	}

	got, err = ParseAgentAdmin("a.yaml", []byte("name: home\n"), envOf())
	if err != nil || got != (AgentAdmin{Name: "home", Admin: DefaultAgentAdmin, StateDir: DefaultAgentStateDir}) {
		t.Errorf("defaults: %+v %v", got, err)
	}
	got, err = ParseAgentAdmin("a.yaml", []byte("admin: off\n"), envOf())
	if err != nil || got.Admin != "" {
		t.Errorf("off: %+v %v", got, err)
	}
	if _, err := ParseAgentAdmin("a.yaml", []byte("admin: [1, 2]\n"), envOf()); err == nil {
		t.Error("a list as admin: accepted")
	}
	if _, err := PeekAgentAdmin(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file: no error")
	}
}
