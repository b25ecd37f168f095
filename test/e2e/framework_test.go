package e2e

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bins holds the binaries built once for this test process.
var bins struct {
	dir, relay, agent string
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "porthole-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"./relay/cmd/porthole-relay", "./agent/cmd/porthole-agent")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building the binaries: %v\n%s", err, out)
		return 1
	}
	bins.dir = dir
	bins.relay = filepath.Join(dir, "porthole-relay")
	bins.agent = filepath.Join(dir, "porthole-agent")
	return m.Run()
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module")
	}
	return filepath.Dir(gomod), nil
}

// ---- ports ----

var ports struct {
	mu   sync.Mutex // guards used
	used map[string]bool
}

// freePort returns a port on 127.0.0.1 that is free for network ("tcp" or "udp") and
// was not handed out before in this process. Ports come from below the kernel's
// ephemeral range, so that a restarted process can bind its port again without an
// outgoing connection of another test having taken it meanwhile.
func freePort(t testing.TB, network string) int {
	t.Helper()
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.used == nil {
		ports.used = map[string]bool{}
	}
	lo, hi := 20000, ephemeralLow()-1
	for range 1000 {
		p := lo + mrand.IntN(hi-lo+1)
		key := network + "/" + strconv.Itoa(p)
		if ports.used[key] {
			continue
		}
		addr := "127.0.0.1:" + strconv.Itoa(p)
		switch network {
		case "tcp":
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			ln.Close()
		case "udp":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				continue
			}
			pc.Close()
		default:
			t.Fatalf("free port: network %q", network)
		}
		ports.used[key] = true
		return p
	}
	t.Fatalf("free port: none found in %d-%d", lo, hi)
	return 0
}

// ephemeralLow is the start of the kernel's ephemeral port range (32768 if unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 21000 {
				return n
			}
		}
	}
	return 32768
}

// ---- polling ----

// eventually polls cond every 20ms until it is true or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("after %s: "+format, append([]any{timeout}, args...)...)
	}
}

func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// ---- processes ----

// logBuffer collects a process's output.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Process is one started binary.
type Process struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	log   *logBuffer
	done  chan struct{} // closed when the process has exited
	state *os.ProcessState
	start time.Time
}

// startProcess starts bin with args. The process is killed at the end of the test,
// and its output is printed if the test failed.
func startProcess(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, name: name, log: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	p.cmd.Env = append(os.Environ(), "GOTRACEBACK=all")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.start = time.Now()
	go func() {
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("---- %s (pid %d) output ----\n%s---- end of %s ----", name, p.cmd.Process.Pid, p.log.String(), name)
		}
	})
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Log is everything the process wrote so far.
func (p *Process) Log() string { return p.log.String() }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process if it is still running.
func (p *Process) Signal(sig syscall.Signal) {
	if p.Running() {
		p.cmd.Process.Signal(sig)
	}
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits up to timeout for the exit and returns the exit code (-1 if killed by a
// signal); it fails the test on timeout.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	return p.state.ExitCode()
}

// WaitLog waits until the output contains s.
func (p *Process) WaitLog(s string, timeout time.Duration) {
	p.t.Helper()
	eventually(p.t, timeout, func() bool { return strings.Contains(p.Log(), s) }, "%s log has no %q", p.name, s)
}

// WaitLogCount waits until the output contains s at least n times.
func (p *Process) WaitLogCount(s string, n int, timeout time.Duration) {
	p.t.Helper()
	eventually(p.t, timeout, func() bool { return strings.Count(p.Log(), s) >= n }, "%s log has %q fewer than %d times", p.name, s, n)
}

// Lines returns the log lines containing every one of subs.
func (p *Process) Lines(subs ...string) []string {
	var out []string
	for _, l := range strings.Split(p.Log(), "\n") {
		ok := true
		for _, s := range subs {
			if !strings.Contains(l, s) {
				ok = false
				break
			}
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

// FDs is the number of open file descriptors of the process (Linux /proc).
func (p *Process) FDs() int {
	p.t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(p.Pid()) + "/fd")
	if err != nil {
		p.t.Fatalf("%s fds: %v", p.name, err)
	}
	return len(ents)
}

// RSS is the resident set size of the process in KiB (Linux /proc).
func (p *Process) RSS() int {
	p.t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/status")
	if err != nil {
		p.t.Fatalf("%s status: %v", p.name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// runCmd runs bin to completion and returns its exit code and combined output.
func runCmd(t testing.TB, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("run %s: %v", bin, err)
	}
	return 0, string(out)
}

// writeFile writes content to dir/name, mode 0600 (configs hold tokens).
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
