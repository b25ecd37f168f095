package framework

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/config"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Default.Remove()
	os.Exit(code)
}

func TestProcessOutputAndExit(t *testing.T) {
	dir := t.TempDir()
	p := StartT(t, Spec{Name: "sh", Path: "sh", Args: []string{"-c", "echo one; echo two >&2; echo x=$X; exit 3"}, Env: []string{"X=42"}, LogDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "x=42"); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if p.ExitCode() != 3 {
		t.Errorf("exit code %d, want 3", p.ExitCode())
	}
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) {
		t.Errorf("Err %v", p.Err())
	}
	if err := p.WaitOutput(ctx, "never printed"); !errors.Is(err, ErrExited) {
		t.Errorf("WaitOutput on an exited program: %v", err)
	}
	for path, want := range map[string]string{p.StdoutPath: "one\nx=42\n", p.StderrPath: "two\n"} {
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", path, b, err, want)
		}
	}
	if got := p.Lines("o"); len(got) != 2 {
		t.Errorf("Lines(o) = %q", got)
	}
	if d := p.Describe(1); !strings.Contains(d, "exit status 3") || !strings.Contains(d, "earlier lines left out") {
		t.Errorf("Describe: %s", d)
	}
}

func TestProcessStopAndKill(t *testing.T) {
	s := StartT(t, Spec{Name: "sleeper", Path: "sh", Args: []string{"-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.1; done"}})
	WaitOutput(t, s, "ready", 10*time.Second)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.Output(), "got TERM") || s.ExitCode() != 0 {
		t.Errorf("Stop: exit %d, output %q", s.ExitCode(), s.Output())
	}
	k := StartT(t, Spec{Name: "stubborn", Path: "sh", Args: []string{"-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"}, StopTimeout: 100 * time.Millisecond})
	WaitOutput(t, k, "ready", 10*time.Second)
	cpu, err := k.CPUTime()
	if err != nil || cpu < 0 {
		t.Errorf("CPUTime %v, %v", cpu, err)
	}
	if rss, err := k.RSS(); err != nil || rss <= 0 {
		t.Errorf("RSS %d, %v", rss, err)
	}
	if n, err := k.FDs(); err != nil || n < 3 {
		t.Errorf("FDs %d, %v", n, err)
	}
	if err := k.Stop(); err != nil {
		t.Fatal(err)
	}
	if k.Running() || k.Err() == nil {
		t.Errorf("a program ignoring SIGTERM survived Stop: %v", k.Err())
	}
	k.Kill() // idempotent
	if err := k.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("Signal after exit: %v", err)
	}
}

func TestMaxOutputKeepsTail(t *testing.T) {
	p := StartT(t, Spec{Name: "chatty", Path: "sh", Args: []string{"-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; echo end"}, MaxOutput: 1000})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.Wait(ctx)
	out := p.Output()
	if len(out) > 1000 || !strings.HasSuffix(out, "end\n") {
		t.Errorf("%d bytes, ends %q", len(out), out[max(0, len(out)-20):])
	}
}

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		for _, n := range []string{"tcp", "udp", "both"} {
			p := Port(t, n)
			if p < 20000 || p >= EphemeralLow() {
				t.Errorf("%s port %d outside 20000-%d", n, p, EphemeralLow())
			}
			if n == "both" && seen[p] {
				t.Errorf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
	if _, err := FreePort("sctp"); err == nil {
		t.Error("sctp accepted")
	}
}

func TestListening(t *testing.T) {
	port := Port(t, "tcp")
	b, err := Serve(Addr(port), Echo)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data, err := os.ReadFile("/proc/self/net/tcp")
	if err != nil {
		t.Skip(err)
	}
	if !SocketTableHas(data, true, port) {
		t.Errorf("listener on %d not in /proc/self/net/tcp", port)
	}
	if SocketTableHas(nil, false, 0) {
		t.Error("empty table has a socket")
	}
	bin := Binary(t, BackendPkg)
	bp := Port(t, "tcp")
	proc := Run(t, "backend", bin, "-listen", Addr(bp), "-mode", "greeter", "-banner", "hi")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := proc.WaitListening(ctx, "tcp", bp); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", Addr(bp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	if want := "hi peer=" + c.LocalAddr().String() + "\n"; line != want {
		t.Errorf("greeter said %q, want %q", line, want)
	}
}

func TestBackends(t *testing.T) {
	echo := StartBackend(t, Echo)
	WaitEcho(t, echo.Addr(), 5*time.Second)
	ra := StartBackend(t, ReadAll)
	c, err := net.Dial("tcp", ra.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "abc")
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	if want := "3 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"; string(got) != want {
		t.Errorf("readall: %q", got)
	}
	src := StartBackend(t, Source(1<<20))
	c2, err := net.Dial("tcp", src.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if n, err := io.Copy(io.Discard, c2); n != 1<<20 || err != nil {
		t.Errorf("source: %d bytes, %v", n, err)
	}
	hang := StartBackend(t, Hang)
	c3, err := net.Dial("tcp", hang.Addr())
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 5*time.Second, func() bool { return hang.Conns() == 1 }, "hang backend has %d connections", hang.Conns())
	c3.Close()
	Eventually(t, 5*time.Second, func() bool { return hang.Conns() == 0 }, "hang backend kept the closed connection")
	if !Refused(refusedAddr(t)) {
		t.Error("nothing listens, yet not refused")
	}
}

func refusedAddr(t *testing.T) string { return Addr(Port(t, "tcp")) }

func TestCamera(t *testing.T) {
	cam := StartCamera(t, camsim.Config{Name: "test cam"})
	resp, err := http.Get("http://" + cam.HTTPAddr + "/snapshot.jpg")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(b) < 100 || b[0] != 0xFF || b[1] != 0xD8 {
		t.Errorf("snapshot: %s, %d bytes", resp.Status, len(b))
	}
}

// TestConfigsParse: the writers' YAML is accepted by the real parsers.
func TestConfigsParse(t *testing.T) {
	dir := t.TempDir()
	tok := config.NewToken()
	rc := RelayConfig{Listen: "127.0.0.1:7443", StateDir: filepath.Join(dir, "r"),
		Agents: []RelayAgent{{Name: "home", Token: tok, Lo: 10000, Hi: 10010}, {Name: "cabin", Token: config.NewToken(), Lo: 10020, Hi: 10020}}}
	r, err := config.ParseRelay("relay.yaml", []byte(rc.YAML()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, rc.YAML())
	}
	if len(r.Agents) != 2 || r.Agents["home"].Token != tok || r.ViewerBind != "127.0.0.1" {
		t.Errorf("relay parsed as %+v", r)
	}
	ac := AgentConfig{Name: "home", StateDir: filepath.Join(dir, "a"), Relay: "127.0.0.1:7443", Token: tok,
		Services: []Service{{Name: "cam", Target: "127.0.0.1:554", Port: 10001}, {Name: "web", Target: "127.0.0.1:80", Port: 10002, Allow: "[127.0.0.0/8]"}}}
	a, err := config.ParseAgent("agent.yaml", []byte(ac.YAML()), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, ac.YAML())
	}
	if len(a.Services) != 2 || a.Services[1].Port != 10002 {
		t.Errorf("agent parsed as %+v", a)
	}
	path := Write(t, dir, "agent.yaml", ac.YAML())
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	if got := indent("a\nb\n", "  "); got != "  a\n  b\n" {
		t.Errorf("indent: %q", got)
	}
}
