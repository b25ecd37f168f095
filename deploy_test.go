package porthole_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/internal/config"
)

// unit is what the deploy tests need of a systemd unit's [Service] section.
type unit struct {
	execStart   []string
	execPre     []string
	credentials map[string]string // LoadCredential= name -> path
	settings    map[string]string
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{credentials: map[string]string{}, settings: map[string]string{}}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section != "[Service]" {
			continue
		}
		switch k {
		case "ExecStart":
			u.execStart = append(u.execStart, v)
		case "ExecStartPre":
			u.execPre = append(u.execPre, v)
		case "LoadCredential":
			name, src, _ := strings.Cut(v, ":")
			u.credentials[name] = src
		default:
			u.settings[k] = v
		}
	}
	return u
}

var credRef = regexp.MustCompile(`\$\{CREDENTIALS_DIRECTORY:-/etc/porthole\}/([A-Za-z0-9._-]+)`)

// TestDeployUnitsFitExamples: the systemd units work with the example configs as
// written. The service runs as a DynamicUser, so the config (0644) holds no
// secrets; each secret file it names under $CREDENTIALS_DIRECTORY has a
// LoadCredential= line of the same name (else the service would fail to read
// it), -check runs before the start with the same config, and the examples load
// cleanly (no warnings) from credentials as systemd hands them over.
func TestDeployUnitsFitExamples(t *testing.T) {
	creds := t.TempDir()
	for _, prog := range []string{"relay", "agent"} {
		u := readUnit(t, filepath.Join("deploy/systemd", "porthole-"+prog+".service"))
		bin := "/usr/local/bin/porthole-" + prog
		cfg := "/etc/porthole/" + prog + ".yaml"
		if want := bin + " -config " + cfg; !slices.Equal(u.execStart, []string{want}) {
			t.Errorf("%s: ExecStart=%q, want %q", prog, u.execStart, want)
		}
		if len(u.execPre) == 0 || !slices.Contains(strings.Fields(strings.TrimPrefix(u.execPre[0], "+")), "-check") ||
			strings.TrimSuffix(strings.TrimPrefix(u.execPre[0], "+"), " -check") != bin+" -config "+cfg {
			t.Errorf("%s: the first ExecStartPre= must be %s -config %s -check, got %q", prog, bin, cfg, u.execPre)
		}
		if u.settings["DynamicUser"] != "yes" || u.settings["StateDirectory"] != "porthole-"+prog {
			t.Errorf("%s: DynamicUser=%q StateDirectory=%q", prog, u.settings["DynamicUser"], u.settings["StateDirectory"])
		}

		example, err := os.ReadFile(filepath.Join("deploy/examples", prog+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		refs := map[string]bool{}
		for _, line := range strings.Split(string(example), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			for _, m := range credRef.FindAllStringSubmatch(line, -1) {
				refs[m[1]] = true
			}
			if k, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && slices.Contains([]string{"token", "api_token", "password", "key"}, k) {
				t.Errorf("%s.yaml holds a secret inline (%s:); the config is world-readable, use %s_file", prog, k, k)
			}
		}
		if len(refs) == 0 {
			t.Errorf("%s.yaml takes no secret from $CREDENTIALS_DIRECTORY", prog)
		}
		for name := range refs {
			if src, ok := u.credentials[name]; !ok || src != "/etc/porthole/"+name {
				t.Errorf("%s.yaml reads credential %s: the unit needs LoadCredential=%s:/etc/porthole/%s (has %q)", prog, name, name, name, src)
			}
			secret := "dns-provider-secret\n"
			if strings.HasSuffix(name, ".token") && name != "cloudflare.token" {
				secret = config.NewToken() + "\n"
			}
			if err := os.WriteFile(filepath.Join(creds, name), []byte(secret), 0o400); err != nil {
				t.Fatal(err)
			}
		}
		for name := range u.credentials {
			if !refs[name] {
				t.Errorf("%s unit loads credential %s that %s.yaml doesn't use: the service fails when the file is missing", prog, name, prog)
			}
		}
	}
	if t.Failed() {
		return
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv("PORTHOLE_RELAY_STATE", t.TempDir())
	r, err := config.LoadRelay("deploy/examples/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, err := config.LoadAgent("deploy/examples/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings)+len(a.Warnings) != 0 {
		t.Errorf("warnings: %q %q", r.Warnings, a.Warnings)
	}
	ra, ok := r.Agents[a.Name]
	if !ok {
		t.Fatalf("relay example has no agent %q", a.Name)
	}
	if ra.Token != a.Relay.Token {
		t.Errorf("relay and agent examples read different token files")
	}
	for _, s := range a.Services {
		if !ra.Ports.Contains(s.Port) {
			t.Errorf("agent example service %s port %d outside the relay's range %s for %s", s.Name, s.Port, ra.Ports, a.Name)
		}
	}
}

// TestDeployUnitsVerify runs systemd-analyze verify on the units, in a root
// with stand-in executables (verify checks that ExecStart= names one).
func TestDeployUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIPPED: systemd-analyze not installed; the units were not verified")
	}
	sysUnits := ""
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "sysinit.target")); err == nil {
			sysUnits = d
			break
		}
	}
	if sysUnits == "" {
		t.Skip("SKIPPED: no systemd unit directory with sysinit.target; the units were not verified")
	}
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The system's own units (sysinit.target and friends), copied with their
	// symlinks, which verify resolves inside the root.
	if out, err := exec.Command("cp", "-a", sysUnits, filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", sysUnits, err, out)
	}
	var units []string
	for _, prog := range []string{"relay", "agent"} {
		if err := os.WriteFile(filepath.Join(root, "usr/local/bin/porthole-"+prog), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join("deploy/systemd", "porthole-"+prog+".service"))
		if err != nil {
			t.Fatal(err)
		}
		u := filepath.Join(root, "etc/systemd/system", "porthole-"+prog+".service")
		if err := os.WriteFile(u, b, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, u)
	}
	out, err := exec.Command(sa, append([]string{"verify", "--root=" + root}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
