package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
)

type result struct {
	code           int
	stdout, stderr string
}

func runArgs(args ...string) result {
	var out, errb strings.Builder
	code := run(context.Background(), args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// fakeAgent serves st as an agent's /status.json; it returns the admin address.
func fakeAgent(t *testing.T, st agent.Status) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status.json" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(st)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// writeConfig writes an agent config whose secret file the reader can't read
// (it is missing, which fails even for root): status must not need it.
func writeConfig(t *testing.T, admin string) (path, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	secret := filepath.Join(dir, "unreadable", "agent.token")
	path = filepath.Join(dir, "agent.yaml")
	body := "name: home\nstate_dir: " + dir + "\nadmin: " + admin + "\nrelay:\n  address: relay.example.com:7443\n  token_file: " + secret +
		"\nservices:\n  - {name: cam, target: 192.168.1.20:554, port: 10554, allow: [any]}\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func freshStatus() agent.Status {
	now := time.Now()
	st := agent.Status{Name: "home", Version: "v1", Started: now.Add(-time.Hour), Updated: now.Add(-5 * time.Second),
		StaleAfterSeconds: 60, Path: "relay", PathWhy: "router: no UPnP, NAT-PMP or PCP answer"}
	st.Tunnel = agent.TunnelStatus{Connected: true, Relay: "relay.example.com:7443", Since: now.Add(-time.Minute),
		Transport: "tcp", TransportWhy: "QUIC did not connect within 2s (UDP blocked?)", Reconnects: 2, LastError: "", Streams: 1}
	st.Services = []agent.ServiceStatus{
		{Name: "frontdoor", Port: 10322, Target: "192.168.1.20:554", Relay: "accepted",
			Camera:  agent.CameraStatus{Last: now.Add(-10 * time.Second), OK: true, LastOK: now.Add(-10 * time.Second)},
			Viewers: 1, Connections: 4, BytesOut: 12_345_678, BytesIn: 4_321},
		{Name: "garage", Port: 10999, Target: "192.168.1.21:554", Relay: "refused", RelayReason: "port 10999 is outside this agent's range",
			Camera: agent.CameraStatus{Last: now.Add(-time.Minute), Error: "dial tcp 192.168.1.21:554: connect: no route to host"}},
	}
	return st
}

func TestStatusNormal(t *testing.T) {
	addr := fakeAgent(t, freshStatus())
	cfg, _ := writeConfig(t, addr)
	for _, args := range [][]string{
		{"-config", cfg, "status"},
		{"status", "-config", cfg},
	} {
		r := runArgs(args...)
		if r.code != 0 {
			t.Fatalf("%q: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{
			"agent home (v1)",
			"up for 1m0s, over tcp (QUIC did not connect within 2s (UDP blocked?)); 2 reconnects",
			"path:     relay (router: no UPnP, NAT-PMP or PCP answer)",
			"frontdoor: public port 10322 -> 192.168.1.20:554",
			"relay:   accepted",
			"camera:  connected 10s ago",
			"viewers: 1 now, 4 connections, 0 refused; 12.3 MB to viewers, 4.3 kB from viewers",
			"relay:   refused: port 10999 is outside this agent's range",
			"camera:  FAILED 1m0s ago: dial tcp 192.168.1.21:554: connect: no route to host",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%q: output lacks %q:\n%s", args, want, r.stdout)
			}
		}
		if strings.Contains(r.stdout+r.stderr, "s3cret") {
			t.Error("status printed the token")
		}
	}
	r := runArgs("status", "-config", cfg, "-json")
	var st agent.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil || st.Name != "home" {
		t.Errorf("-json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
}

func TestStatusLastTunnelError(t *testing.T) {
	st := freshStatus()
	st.Tunnel.Connected = false
	st.Tunnel.LastError = "relay refused our proof: wrong token, or agent name \"home\" unknown to the relay"
	cfg, _ := writeConfig(t, fakeAgent(t, st))
	r := runArgs("status", "-config", cfg)
	if !strings.Contains(r.stdout, "tunnel:   relay.example.com:7443: down; 2 reconnects") ||
		!strings.Contains(r.stdout, "last error: relay refused our proof") {
		t.Errorf("output:\n%s", r.stdout)
	}
}

func TestStatusNotRunning(t *testing.T) {
	addr := deadAddr(t)
	cfg, _ := writeConfig(t, addr)
	r := runArgs("status", "-config", cfg)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	want := "no agent answers at " + addr + ": is porthole-agent running? systemctl status porthole-agent"
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
}

func TestStatusOtherAgentAnswers(t *testing.T) {
	st := freshStatus()
	st.Name = "cabin"
	cfg, _ := writeConfig(t, fakeAgent(t, st))
	r := runArgs("status", "-config", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, `agent "cabin" answers there, not "home"`) {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}

func TestStatusNotAnAgent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>router login</html>")) }))
	defer srv.Close()
	cfg, _ := writeConfig(t, srv.Listener.Addr().String())
	r := runArgs("status", "-config", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "not a porthole-agent status") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}

func TestStatusStale(t *testing.T) {
	st := freshStatus()
	st.Updated = time.Now().Add(-10 * time.Minute)
	cfg, _ := writeConfig(t, fakeAgent(t, st))
	r := runArgs("status", "-config", cfg)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if !strings.Contains(r.stdout, "STALE:    status is stale: the agent's loop last finished a pass 10m0s ago") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "its loop seems stuck") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
}

func TestStatusAdminOffReadsSavedFile(t *testing.T) {
	cfg, dir := writeConfig(t, "off")
	r := runArgs("status", "-config", cfg)
	if r.code != 1 || !strings.Contains(r.stderr, "admin endpoint is off") || !strings.Contains(r.stderr, "no status in "+dir) {
		t.Errorf("no saved file: exit %d\n%s", r.code, r.stderr)
	}
	st := freshStatus()
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, agent.StatusFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = runArgs("-config", cfg, "status")
	if r.code != 0 || !strings.Contains(r.stderr, "admin endpoint is off (admin: off in "+cfg+"): showing what the agent last saved in "+filepath.Join(dir, agent.StatusFile)) ||
		!strings.Contains(r.stdout, "agent home") {
		t.Errorf("fresh file: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	st.Updated = time.Now().Add(-time.Hour)
	b, _ = json.Marshal(st)
	os.WriteFile(filepath.Join(dir, agent.StatusFile), b, 0o600)
	r = runArgs("-config", cfg, "status")
	if r.code != 1 || !strings.Contains(r.stderr, "is porthole-agent running?") {
		t.Errorf("old file: exit %d\n%s", r.code, r.stderr)
	}
}

// A -once run (from cron) leaves its status in state_dir; with no agent
// answering, status shows it and says where it came from.
func TestStatusAfterOnce(t *testing.T) {
	cfg, dir := writeConfig(t, deadAddr(t))
	st := freshStatus()
	st.Once = true
	b, _ := json.Marshal(st)
	os.WriteFile(filepath.Join(dir, agent.StatusFile), b, 0o600)
	r := runArgs("status", "-config", cfg)
	if r.code != 0 || !strings.Contains(r.stderr, "no agent answers") || !strings.Contains(r.stderr, "showing the last -once run's status") ||
		!strings.Contains(r.stdout, "agent home") {
		t.Errorf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// A user who can't read the config at all still gets an answer from the
// default address (or a plain "not running").
func TestStatusUnreadableConfig(t *testing.T) {
	r := runArgs("status", "-config", filepath.Join(t.TempDir(), "missing.yaml"), "-addr", deadAddr(t))
	if r.code != 1 || !strings.Contains(r.stderr, "no agent answers") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
	r = runArgs("status", "-config", filepath.Join(t.TempDir(), "missing.yaml"), "-addr", fakeAgent(t, freshStatus()))
	if r.code != 0 || !strings.Contains(r.stdout, "agent home") {
		t.Errorf("with -addr: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestUnknownCommand(t *testing.T) {
	cfg, _ := writeConfig(t, deadAddr(t))
	for _, args := range [][]string{
		{"-config", cfg, "stauts"},
		{"stop", "-config", cfg},
		{"-config", cfg, "run"},
	} {
		r := runArgs(args...)
		if r.code != 2 || !strings.Contains(r.stderr, "unknown command") {
			t.Errorf("%q: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	if r := runArgs("status", "-config", cfg, "extra"); r.code != 2 || !strings.Contains(r.stderr, `unexpected argument "extra"`) {
		t.Errorf("status extra: exit %d\n%s", r.code, r.stderr)
	}
}

func TestCheckWarnsNonLoopbackAdmin(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("name: home\nadmin: 0.0.0.0:7480\nstate_dir: "+dir+"\nddns:\n  hostname: home.example.com\n  provider: {type: duckdns, token: t0ken}\n"), 0o600)
	r := runArgs("-config", cfg, "-check")
	if r.code != 0 || !strings.Contains(r.stderr, "warning: "+cfg+":2: admin: 0.0.0.0:7480 can be reached from other machines") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}

func TestStartAdminDefaultTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ac := &config.Agent{Name: "home", StateDir: t.TempDir(), Admin: taken.Addr().String(), AdminDefault: true,
		DDNS: &config.DDNS{Hostname: "home.example.com", Provider: config.Provider{Type: "duckdns", Token: "t0ken"}}}
	a, err := agent.New(agent.Config{Agent: ac})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	adm, err := startAdmin(a, ac, log)
	if adm != nil || err != nil || !strings.Contains(logs.String(), "default address is taken") {
		t.Errorf("default address taken: %v %v\n%s", adm, err, logs.String())
	}
	ac.AdminDefault = false // written in the config: the user must hear it
	if adm, err := startAdmin(a, ac, log); adm != nil || err == nil {
		t.Errorf("configured address taken: %v %v", adm, err)
	}
	ac.Admin = "127.0.0.1:0"
	adm, err = startAdmin(a, ac, log)
	if err != nil || adm == nil {
		t.Fatalf("free address: %v", err)
	}
	adm.Close()
	ac.Admin = ""
	if adm, err := startAdmin(a, ac, log); adm != nil || err != nil {
		t.Errorf("admin off: %v %v", adm, err)
	}
}

// syncBuffer is a strings.Builder safe to write from the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStatusOfRunningAgent runs the real program (no relay; DDNS against a
// provider that does not answer, so its error shows) and asks it with the
// status command and every admin endpoint: the provider's token never shows.
func TestStatusOfRunningAgent(t *testing.T) {
	dir := t.TempDir()
	admin := deadAddr(t) // free now; the agent binds it
	dead := deadAddr(t)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("203.0.113.7\n")) }))
	defer echo.Close()
	const secret = "s3cret-duck-token"
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("name: home\nstate_dir: "+dir+"\nadmin: "+admin+
		"\npublicip: {sources: [https], https: [\""+echo.URL+"/\"], min_agree: 1, ipv6: false, accept: [203.0.113.0/24]}"+
		"\nddns:\n  hostname: home.duckdns.org\n  provider: {type: duckdns, token: "+secret+", base_url: \"http://"+dead+"/update\"}\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"-config", cfg}, &out, &errb) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("agent exit %d\n%s", code, errb.String())
		}
	}()
	var r result
	for deadline := time.Now().Add(10 * time.Second); ; {
		r = runArgs("status", "-config", cfg)
		if r.code == 0 && strings.Contains(r.stdout, "last error: duckdns") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the running agent's DNS error: exit %d\n%s%s\nagent log:\n%s", r.code, r.stdout, r.stderr, errb.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	if !strings.Contains(r.stdout, "agent home (dev)") || !strings.Contains(r.stdout, "public:   203.0.113.7") {
		t.Errorf("status:\n%s%s", r.stdout, r.stderr)
	}
	bodies := r.stdout + r.stderr + errb.String()
	for _, path := range []string{"/", "/status.json", "/metrics", "/healthz"} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %s", path, resp.Status)
		}
		bodies += string(b)
	}
	if strings.Contains(bodies, secret) {
		t.Error("the DNS provider's token shows in the status, an admin endpoint or the log")
	}
}

func runStdin(input string, args ...string) result {
	saved := stdin
	stdin = strings.NewReader(input)
	defer func() { stdin = saved }()
	return runArgs(args...)
}

func TestPasswd(t *testing.T) {
	const pw = "long enough secret"
	for _, in := range []string{pw + "\n", pw + "\r\n", pw} {
		r := runStdin(in, "passwd", "alice")
		if r.code != 0 {
			t.Fatalf("%q: exit %d\n%s", in, r.code, r.stderr)
		}
		hash, rest, _ := strings.Cut(r.stdout, "\n")
		if err := access.CheckHash(hash); err != nil {
			t.Fatalf("first line %q: %v", hash, err)
		}
		if !strings.Contains(rest, "viewers:\n  alice: {password_hash: \""+hash+"\"}\n") {
			t.Errorf("no YAML hint:\n%s", r.stdout)
		}
		if strings.Contains(r.stdout+r.stderr, pw) {
			t.Error("passwd echoed the password")
		}
		// The hash is of the line without its line ending.
		s, err := access.New(access.Config{Viewers: map[string]string{"alice": hash}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Basic(context.Background(), "alice", pw, netip.MustParseAddr("127.0.0.1")); err != nil {
			t.Errorf("%q: the hash does not match the password: %v", in, err)
		}
	}
	// passwd needs no config, not even a readable one.
	if r := runStdin(pw+"\n", "-config", "/nonexistent/agent.yaml", "passwd"); r.code != 0 || !strings.Contains(r.stdout, "  NAME: {password_hash:") {
		t.Errorf("without a config: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for in, want := range map[string]string{
		"":          "no password on stdin",
		"\n":        "too short (0 characters): use at least 8",
		"short1\n":  "too short (6 characters)",
		"ééééééé\n": "too short (7 characters)",
	} {
		r := runStdin(in, "passwd")
		if r.code != 1 || !strings.Contains(r.stderr, want) || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %q", in, r.code, r.stdout, r.stderr, want)
		}
		if in != "" && strings.Contains(r.stderr, strings.TrimSpace(in)) && strings.TrimSpace(in) != "" {
			t.Errorf("%q: the refusal echoes the password", in)
		}
	}
	if r := runStdin(pw, "passwd", "alice", "bob"); r.code != 2 {
		t.Errorf("two names: exit %d", r.code)
	}
}

// writeViewerConfig writes an agent config with viewers and an http
// service; its secret file is missing: link must not need it.
func writeViewerConfig(t *testing.T) (path, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "agent.yaml")
	body := "name: home\nstate_dir: " + dir + "\nrelay:\n  address: relay.example.com:7443\n  token_file: " + filepath.Join(dir, "missing.token") +
		"\nservices:\n  - {name: cam-web, kind: http, target: 192.168.1.20:80, port: 10443, allow: [any]}\n" +
		"viewers:\n  alice: {password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"}\n" +
		"ddns:\n  hostname: home.example.com\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func TestLink(t *testing.T) {
	cfg, dir := writeViewerConfig(t)
	r := runArgs("-config", cfg, "link", "alice", "-note", "kitchen tablet")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	token, _, _ := strings.Cut(r.stdout, "\n")
	if !strings.HasPrefix(token, access.TokenPrefix) {
		t.Fatalf("first line %q is not a token", token)
	}
	if !strings.Contains(r.stdout, "https://home.example.com:10443/?porthole_token="+token+"   (cam-web)") {
		t.Errorf("no example URL:\n%s", r.stdout)
	}
	links, err := access.ListLinks(dir)
	if err != nil || len(links) != 1 || links[0].Viewer != "alice" || links[0].Note != "kitchen tablet" {
		t.Fatalf("links %+v, %v", links, err)
	}
	id := links[0].ID
	fi, err := os.Stat(filepath.Join(dir, access.LinksFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("links file: %v %v", err, fi.Mode())
	}
	if r := runArgs("link", "-note", "second", "-config", cfg, "alice"); r.code != 0 {
		t.Errorf("flags first: exit %d\n%s", r.code, r.stderr)
	}
	r = runArgs("link", "-list", "-config", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, id+"  alice") || !strings.Contains(r.stdout, "kitchen tablet") || !strings.Contains(r.stdout, "second") {
		t.Errorf("-list: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, token) {
		t.Error("-list shows a token")
	}
	if r := runArgs("-config", cfg, "link", "-revoke", id); r.code != 0 || !strings.Contains(r.stdout, "revoked") {
		t.Errorf("-revoke: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if links, _ := access.ListLinks(dir); len(links) != 1 || links[0].ID == id {
		t.Errorf("after revoke: %+v", links)
	}
	if r := runArgs("-config", cfg, "link", "-revoke", id); r.code != 1 || !strings.Contains(r.stderr, "no such link") {
		t.Errorf("revoke twice: exit %d\n%s", r.code, r.stderr)
	}
	if r := runArgs("-config", cfg, "link", "mallory"); r.code != 1 || !strings.Contains(r.stderr, `no viewer "mallory"`) || !strings.Contains(r.stderr, "(viewers: alice)") {
		t.Errorf("unknown viewer: exit %d\n%s", r.code, r.stderr)
	}
	for _, args := range [][]string{
		{"-config", cfg, "link"},
		{"-config", cfg, "link", "alice", "bob"},
		{"-config", cfg, "link", "-list", "alice"},
	} {
		if r := runArgs(args...); r.code != 2 {
			t.Errorf("%q: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	if r := runArgs("link", "-list", "-config", filepath.Join(t.TempDir(), "missing.yaml")); r.code != 1 {
		t.Errorf("missing config: exit %d", r.code)
	}
}
