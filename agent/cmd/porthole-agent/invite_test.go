package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/agent/wg/invite"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/framework"
)

// writeWGConfig is writeViewerConfig with a wireguard: section (and an rtsp
// service on a name, not an address).
func writeWGConfig(t *testing.T, wg string) (path, stateDir string) {
	t.Helper()
	path, dir := writeViewerConfig(t)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(wg); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func TestInvite(t *testing.T) {
	cfg, dir := writeWGConfig(t, "wireguard:\n  port: 51820\n  address: 10.77.0.1/24\n  lan_addresses: true\n")
	png := filepath.Join(t.TempDir(), "pixel.png")
	r := runArgs("-config", cfg, "invite", "pixel", "-viewer", "alice", "-png", png)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	store, err := invite.New(invite.Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	agentKey, err := store.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"[Interface]\nPrivateKey = ",
		"Address = 10.77.0.2/32\nMTU = 1280\n",
		"[Peer]\nPublicKey = " + agentKey.String() + "\nEndpoint = home.example.com:51820\nAllowedIPs = 10.77.0.0/24, 192.168.1.20/32\nPersistentKeepalive = 25\n",
		"█",
		"http://10.77.0.1:10443/   (cam-web)",
		"192.168.1.20:80   (cam-web, the camera's own LAN address)",
		"porthole-agent invite -revoke pixel",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if fi, err := os.Stat(png); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() < 100 {
		t.Errorf("png: %v %v", err, fi)
	}
	// The private key printed is not stored anywhere in the state dir.
	_, rest, _ := strings.Cut(r.stdout, "PrivateKey = ")
	priv, _, _ := strings.Cut(rest, "\n")
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		if b, _ := os.ReadFile(filepath.Join(dir, f.Name())); strings.Contains(string(b), priv) {
			t.Errorf("%s holds the phone's private key", f.Name())
		}
	}

	r = runArgs("invite", "-list", "-config", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "pixel  alice   10.77.0.2") {
		t.Errorf("-list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runArgs("-config", cfg, "invite", "pixel", "-viewer", "alice"); r.code != 1 || !strings.Contains(r.stderr, "already invited") {
		t.Errorf("twice: exit %d\n%s", r.code, r.stderr)
	}
	if r := runArgs("-config", cfg, "invite", "-revoke", "pixel"); r.code != 0 || !strings.Contains(r.stdout, "revoked") {
		t.Errorf("-revoke: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runArgs("-config", cfg, "invite", "-revoke", "pixel"); r.code != 1 || !strings.Contains(r.stderr, "no such phone") {
		t.Errorf("revoke twice: exit %d\n%s", r.code, r.stderr)
	}
	if r := runArgs("-config", cfg, "invite", "-list"); r.code != 0 || !strings.Contains(r.stdout, "no phones") {
		t.Errorf("-list after revoke: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestInviteErrors(t *testing.T) {
	cfg, _ := writeWGConfig(t, "wireguard:\n  port: 51820\n  address: 10.77.0.1/24\n")
	noWG, _ := writeViewerConfig(t)
	badWG, _ := writeWGConfig(t, "wireguard:\n  port: 51820\n  address: 192.168.1.1/24\n")
	existing := filepath.Join(t.TempDir(), "taken.png")
	os.WriteFile(existing, nil, 0o600)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no viewer flag", []string{"-config", cfg, "invite", "pixel"}, 2, "give NAME with -viewer"},
		{"two names", []string{"-config", cfg, "invite", "a", "b", "-viewer", "alice"}, 2, "give NAME with -viewer"},
		{"list and name", []string{"-config", cfg, "invite", "-list", "a", "-viewer", "alice"}, 2, "give NAME with -viewer"},
		{"png without name", []string{"-config", cfg, "invite", "-list", "-png", "x.png"}, 2, "give NAME with -viewer"},
		{"unknown viewer", []string{"-config", cfg, "invite", "pixel", "-viewer", "mallory"}, 1, `no viewer "mallory" in the viewers: of ` + cfg + " (viewers: alice)"},
		{"bad name", []string{"-config", cfg, "invite", "My Phone", "-viewer", "alice"}, 1, `invalid phone name "My Phone"`},
		{"no section", []string{"-config", noWG, "invite", "pixel", "-viewer", "alice"}, 1, "has no wireguard: section"},
		{"bad section", []string{"-config", badWG, "invite", "-list"}, 1, "wireguard.address: tunnel subnet 192.168.1.0/24 holds service cam-web's target"},
		{"png exists", []string{"-config", cfg, "invite", "pixel", "-viewer", "alice", "-png", existing}, 1, "the invite was not kept"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runArgs(tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", r.code, tt.code, tt.want, r.stderr)
			}
		})
	}
	// The failed PNG left no phone behind.
	if r := runArgs("-config", cfg, "invite", "-list"); !strings.Contains(r.stdout, "no phones") {
		t.Errorf("after failures:\n%s%s", r.stdout, r.stderr)
	}
}

// TestCheckWireGuard: -check passes a config with a wireguard: section and
// makes no key (it reads, it does not start anything).
func TestCheckWireGuard(t *testing.T) {
	cfg, dir := writeWGConfig(t, "wireguard:\n  port: 51820\n  address: 10.77.0.1/24\n")
	framework.Write(t, dir, "missing.token", config.NewToken()+"\n")
	b, _ := os.ReadFile(cfg)
	framework.Write(t, dir, "agent.yaml", strings.Replace(string(b), "ddns:\n  hostname: home.example.com\n", "ddns:\n  hostname: home.example.com\n  provider: {type: duckdns, token: t0ken}\n", 1))
	r := runArgs("-config", cfg, "-check")
	if r.code != 0 || !strings.Contains(r.stdout, ": ok (") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, invite.KeyFile)); err == nil {
		t.Error("-check made the WireGuard key")
	}
}
