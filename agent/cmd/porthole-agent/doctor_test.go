package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/internal/config"
)

// doctor prints one line per check and exits 1 on a problem: here the relay
// is not there (UDP and TCP), and the state_dir is open to others.
func TestDoctorCommand(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("name: home\nadmin: off\nstate_dir: "+state+"\nrelay:\n  address: "+deadAddr(t)+
		"\n  token: "+config.NewToken()+"\nservices:\n  - {name: cam, target: \""+deadAddr(t)+"\", port: 10554, allow: [any]}\ndirect: {enabled: false}\n"), 0o600)
	r := runArgs("-config", cfg, "doctor")
	for _, want := range []string{"ok       config " + cfg, "problem  relay UDP (QUIC)", "problem  relay TCP (fallback)",
		"skipped  clock", "problem  state_dir " + state + ": mode 0755", "fix: chmod 700 " + state,
		"problem  camera cam", "skipped  router port mapping", "skipped  DNS"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	if r := runArgs("-config", cfg, "doctor", "extra"); r.code != 2 {
		t.Errorf("doctor extra: exit %d", r.code)
	}
}
