package porthole_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

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
	r, a := loadExamples(t, creds)
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

// loadExamples loads the example configs with their secrets in creds, as
// systemd hands them over.
func loadExamples(t *testing.T, creds string) (*config.Relay, *config.Agent) {
	t.Helper()
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
	return r, a
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

// TestDeployCompose: the compose examples fit the images (tools/release) and
// the example configs: the relay publishes 7443 over UDP and TCP and a TCP
// range holding the example agent's ports and every service port of the
// agent example; the agent runs on the host's network; both mount the config
// directory and a volume on the image's state directory.
func TestDeployCompose(t *testing.T) {
	type service struct {
		Image       string   `yaml:"image"`
		Command     []string `yaml:"command"`
		Ports       []string `yaml:"ports"`
		NetworkMode string   `yaml:"network_mode"`
		Volumes     []string `yaml:"volumes"`
	}
	load := func(prog string) service {
		b, err := os.ReadFile("deploy/compose/" + prog + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Services map[string]service `yaml:"services"`
			Volumes  map[string]any     `yaml:"volumes"`
		}
		if err := yaml.Unmarshal(b, &f); err != nil {
			t.Fatalf("deploy/compose/%s.yaml: %v", prog, err)
		}
		s, ok := f.Services[prog]
		if !ok {
			t.Fatalf("deploy/compose/%s.yaml: no service %q", prog, prog)
		}
		if s.Image != "porthole-"+prog+":latest" || !slices.Equal(s.Command, []string{"-config", "/etc/porthole/" + prog + ".yaml"}) {
			t.Errorf("%s: image %q command %q", prog, s.Image, s.Command)
		}
		if !slices.Contains(s.Volumes, "./porthole:/etc/porthole:ro") || !slices.Contains(s.Volumes, prog+"-state:/var/lib/porthole-"+prog) {
			t.Errorf("%s: volumes %q: want the config directory and %s-state on the state directory", prog, s.Volumes, prog)
		}
		if _, ok := f.Volumes[prog+"-state"]; !ok {
			t.Errorf("%s: volume %s-state not declared", prog, prog)
		}
		return s
	}
	relay, agent := load("relay"), load("agent")
	if agent.NetworkMode != "host" || len(agent.Ports) != 0 {
		t.Errorf("agent: network_mode %q ports %q: the agent needs the host's network (router discovery, direct listeners)", agent.NetworkMode, agent.Ports)
	}
	for _, want := range []string{"7443:7443/udp", "7443:7443/tcp"} {
		if !slices.Contains(relay.Ports, want) {
			t.Errorf("relay: ports %q lack %s", relay.Ports, want)
		}
	}
	creds := t.TempDir()
	for _, f := range []string{"home.token", "cloudflare.token"} {
		if err := os.WriteFile(filepath.Join(creds, f), []byte(config.NewToken()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, a := loadExamples(t, creds)
	published := func(p uint16, proto string) bool {
		for _, spec := range relay.Ports {
			m := regexp.MustCompile(`^(\d+)(?:-(\d+))?:(\d+)(?:-(\d+))?/` + proto + `$`).FindStringSubmatch(spec)
			if m == nil || m[1] != m[3] || m[2] != m[4] {
				continue
			}
			lo, _ := strconv.Atoi(m[1])
			hi := lo
			if m[2] != "" {
				hi, _ = strconv.Atoi(m[2])
			}
			if int(p) >= lo && int(p) <= hi {
				return true
			}
		}
		return false
	}
	ports := r.Agents[a.Name].Ports
	if !published(ports.Lo, "tcp") || !published(ports.Hi, "tcp") {
		t.Errorf("relay compose publishes %q, not the example agent's range %s (TCP, same numbers inside and out)", relay.Ports, ports)
	}
	if u := r.Agents[a.Name].UDPPorts; u.Lo == 0 || !published(u.Lo, "udp") || !published(u.Hi, "udp") {
		t.Errorf("relay compose publishes %q, not the example agent's udp_ports %s (UDP, WireGuard)", relay.Ports, u)
	}
	for _, s := range a.Services {
		if !published(s.Port, "tcp") {
			t.Errorf("relay compose doesn't publish service %s's port %d/tcp", s.Name, s.Port)
		}
	}
}

// TestDeployCloudInit: the relay's cloud-init file is YAML and cloud-config,
// the relay config it writes passes the relay's checks, the firewall opens
// SSH, UDP and TCP 7443 and every agent's TCP range, and `cloud-init schema`
// accepts it (skipped loudly when cloud-init is not installed; a failure when
// PORTHOLE_CLOUDINIT=require, as .ci/run sets).
func TestDeployCloudInit(t *testing.T) {
	const file = "deploy/cloud-init/relay.yaml"
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "#cloud-config\n") {
		t.Errorf("%s: the first line must be #cloud-config", file)
	}
	var ci struct {
		WriteFiles []struct {
			Path    string `yaml:"path"`
			Content string `yaml:"content"`
		} `yaml:"write_files"`
		RunCmd []any `yaml:"runcmd"`
	}
	if err := yaml.Unmarshal(b, &ci); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var relayYAML string
	for _, f := range ci.WriteFiles {
		if f.Path == "/etc/porthole/relay.yaml" {
			relayYAML = f.Content
		}
	}
	if relayYAML == "" {
		t.Fatalf("%s writes no /etc/porthole/relay.yaml", file)
	}
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if err := os.WriteFile(filepath.Join(dir, "home.token"), []byte(config.NewToken()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(relayYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := config.LoadRelay(filepath.Join(dir, "relay.yaml"))
	if err != nil {
		t.Fatalf("%s: its relay.yaml: %v", file, err)
	}
	var cmds []string
	for _, c := range ci.RunCmd {
		if l, ok := c.([]any); ok {
			var parts []string
			for _, p := range l {
				parts = append(parts, fmt.Sprint(p))
			}
			cmds = append(cmds, strings.Join(parts, " "))
		}
	}
	want := []string{"ufw allow 22/tcp", "ufw allow 7443/udp", "ufw allow 7443/tcp", "ufw --force enable", "systemctl enable --now porthole-relay"}
	for name, ag := range r.Agents {
		want = append(want, fmt.Sprintf("ufw allow %d:%d/tcp", ag.Ports.Lo, ag.Ports.Hi))
		switch u := ag.UDPPorts; {
		case u.Lo != 0 && u.Lo == u.Hi:
			want = append(want, fmt.Sprintf("ufw allow %d/udp", u.Lo))
		case u.Lo != 0:
			want = append(want, fmt.Sprintf("ufw allow %d:%d/udp", u.Lo, u.Hi))
		}
		t.Logf("agent %s: ports %s", name, ag.Ports)
	}
	for _, w := range want {
		if !slices.Contains(cmds, w) {
			t.Errorf("%s: runcmd lacks %q", file, w)
		}
	}

	ciBin, err := exec.LookPath("cloud-init")
	if err != nil {
		if os.Getenv("PORTHOLE_CLOUDINIT") == "require" {
			t.Fatal("PORTHOLE_CLOUDINIT=require but cloud-init is not installed")
		}
		t.Skip("CLOUD-INIT SKIPPED: cloud-init not installed (apt-get install cloud-init); only the YAML was checked")
	}
	if out, err := exec.Command(ciBin, "schema", "--config-file", file).CombinedOutput(); err != nil {
		t.Errorf("cloud-init schema: %v\n%s", err, out)
	}
}
