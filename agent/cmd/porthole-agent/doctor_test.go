package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
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

// Doctor must see a running agent (and so not try the token, which would
// replace its session) by its admin endpoint, or by a fresh status.json.
func TestDoctorSeesRunningAgent(t *testing.T) {
	ctx := context.Background()
	st := freshStatus()
	st.DNS = "A=203.0.113.7 AAAA=none"
	dir := t.TempDir()
	ac := &config.Agent{Name: "home", StateDir: dir, Admin: fakeAgent(t, st)}
	v, err := runningAgent(ctx, ac)
	if err != nil || !v.TunnelConnected || v.DNS != st.DNS {
		t.Errorf("admin answers: %+v, %v", v, err)
	}
	ac.Admin = deadAddr(t)
	if _, err := runningAgent(ctx, ac); err == nil {
		t.Error("no agent and no status.json: running")
	}
	b, _ := json.Marshal(st)
	os.WriteFile(filepath.Join(dir, agent.StatusFile), b, 0o600)
	ac.Admin = ""
	if v, err := runningAgent(ctx, ac); err != nil || !v.TunnelConnected {
		t.Errorf("admin off, fresh status.json: %+v, %v", v, err)
	}
	st.Updated = time.Now().Add(-time.Hour)
	b, _ = json.Marshal(st)
	os.WriteFile(filepath.Join(dir, agent.StatusFile), b, 0o600)
	if _, err := runningAgent(ctx, ac); err == nil {
		t.Error("an old status.json: running")
	}
	// Something odd answers at the admin address: count it as an agent.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{")) }))
	defer srv.Close()
	ac.Admin = srv.Listener.Addr().String()
	if _, err := runningAgent(ctx, ac); err != nil {
		t.Errorf("an odd answer: %v, want it taken for an agent", err)
	}
}
