//go:build linux

package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
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

// Spec describes a program to run in a lab namespace.
type Spec struct {
	// Path is the program (a path, or a name looked up in PATH inside the
	// namespace). Required.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is added to the test process's environment (later entries win).
	Env []string
	// Dir is the working directory; empty means the Proc's own directory
	// under the lab's temporary directory.
	Dir string
	// Files are written into the Proc's own directory before the program
	// starts, mode 0600 (configs may hold tokens): name -> content. With
	// the default Dir, Args can name them by relative path.
	Files map[string][]byte
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL;
	// zero means 3s.
	StopTimeout time.Duration
}

// Proc is a program running inside a lab namespace. Its stdout and stderr go
// to files in Dir (shown in the test log when the test fails); it is stopped
// by pid (its own process group) when the test that started it ends.
type Proc struct {
	Name string // unique within the lab
	Role Role   // namespace it runs in
	// Dir holds <Name>.stdout and <Name>.stderr; it is also the working
	// directory unless Spec.Dir said otherwise.
	Dir        string
	StdoutPath string
	StderrPath string

	lab         *Lab
	cmd         *exec.Cmd
	stopTimeout time.Duration
	done        chan struct{} // closed when the process has exited and its output is copied
	exitErr     error         // set before done is closed

	mu      sync.Mutex    // guards the fields below
	output  bytes.Buffer  // stdout and stderr interleaved, the tail if large
	changed chan struct{} // closed and replaced on every write
}

// maxOutput bounds the in-memory copy of a Proc's output (the files keep all).
const maxOutput = 4 << 20

// Start runs args[0] with args[1:] inside namespace r (Role: WAN, ISP, Router,
// LAN) and returns at once; see StartSpec.
func (l *Lab) Start(t testing.TB, r Role, name string, args ...string) *Proc {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("lab: Start %s: no program", name)
	}
	return l.StartSpec(t, r, name, Spec{Path: args[0], Args: args[1:]})
}

// StartSpec runs a program inside namespace r. The program is stopped when t
// ends (or at Down); if t failed, the tail of its output is logged. Start
// failures end the test. Use WaitOutput or WaitListening for readiness.
func (l *Lab) StartSpec(t testing.TB, r Role, name string, spec Spec) *Proc {
	t.Helper()
	p, err := l.start(r, name, spec)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("lab: %v", err)
		}
		if t.Failed() {
			t.Logf("lab: %s", p.describe())
		}
	})
	return p
}

func (l *Lab) start(r Role, name string, spec Spec) (*Proc, error) {
	ns, err := l.nsName(r)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if spec.Path == "" {
		return nil, fmt.Errorf("start %s: no program", name)
	}
	l.mu.Lock()
	if l.isDown {
		l.mu.Unlock()
		return nil, fmt.Errorf("start %s: lab is down", name)
	}
	name = l.uniqueNameLocked(name)
	l.mu.Unlock()

	p := &Proc{
		Name:        name,
		Role:        r,
		Dir:         filepath.Join(l.dir, name),
		lab:         l,
		stopTimeout: spec.StopTimeout,
		done:        make(chan struct{}),
		changed:     make(chan struct{}),
	}
	if p.stopTimeout == 0 {
		p.stopTimeout = 3 * time.Second
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	for fname, content := range spec.Files {
		if fname != filepath.Base(fname) {
			return nil, fmt.Errorf("start %s: file %q: want a plain name", name, fname)
		}
		if err := os.WriteFile(filepath.Join(p.Dir, fname), content, 0o600); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	p.StdoutPath = filepath.Join(p.Dir, name+".stdout")
	p.StderrPath = filepath.Join(p.Dir, name+".stderr")
	stdout, err := os.OpenFile(p.StdoutPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	stderr, err := os.OpenFile(p.StderrPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}

	// `ip netns exec` execs the program (no fork), so cmd's pid is the
	// program's own pid.
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, spec.Path}, spec.Args...)...)
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = p.Dir
	}
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdin = nil
	cmd.Stdout = &procWriter{p: p, f: stdout}
	cmd.Stderr = &procWriter{p: p, f: stderr}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // its own group: Stop signals it and its children, nothing else
		// killed if the test process dies before cleanup; the lab never
		// ends an OS thread that started a child (see inNetns)
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.WaitDelay = 2 * time.Second // a grandchild holding the pipes must not block Wait
	p.cmd = cmd
	if err := cmd.Start(); err != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, r, err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	// owned: ends when the process exits; Stop and Down wait for it
	go func() {
		err := cmd.Wait()
		stdout.Close()
		stderr.Close()
		p.exitErr = err
		close(p.done)
		p.notify()
	}()
	return p, nil
}

// uniqueNameLocked returns name, or name-2, name-3... if taken.
func (l *Lab) uniqueNameLocked(name string) string {
	taken := func(n string) bool {
		for _, p := range l.procs {
			if p.Name == n {
				return true
			}
		}
		return false
	}
	if !taken(name) {
		return name
	}
	for i := 2; ; i++ {
		if n := name + "-" + strconv.Itoa(i); !taken(n) {
			return n
		}
	}
}

// procWriter copies one output stream to its file and to the Proc's buffer.
type procWriter struct {
	p *Proc
	f *os.File
}

func (w *procWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.p.mu.Lock()
	w.p.output.Write(b)
	if w.p.output.Len() > maxOutput {
		tail := bytes.Clone(w.p.output.Bytes()[w.p.output.Len()-maxOutput/2:])
		w.p.output.Reset()
		w.p.output.Write(tail)
	}
	w.p.mu.Unlock()
	w.p.notify()
	return n, err
}

func (p *Proc) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Pid is the program's process id (and process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the program has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the program's exit status (nil for exit 0) once Done is closed;
// nil before.
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.exitErr
	default:
		return nil
	}
}

// Output returns what the program wrote so far, stdout and stderr
// interleaved (the last few MiB if it wrote more).
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// ErrExited means the program ended while something waited for it.
var ErrExited = errors.New("program exited")

// WaitOutput waits until the program's output contains substr. It returns
// early with ErrExited if the program ends first, or ctx's error.
func (p *Proc) WaitOutput(ctx context.Context, substr string) error {
	for {
		p.mu.Lock()
		found := strings.Contains(p.output.String(), substr)
		changed := p.changed
		p.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), substr) {
				return nil
			}
			return fmt.Errorf("%s: waiting for %q: %w (%v)", p.Name, substr, ErrExited, p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %q: %w", p.Name, substr, ctx.Err())
		case <-changed:
		}
	}
}

// Signal sends sig to the program's process group (failure injection:
// SIGKILL, SIGSTOP...). It does nothing once the program has exited.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	return nil
}

// Stop ends the program: SIGTERM to its process group, SIGKILL after the
// stop timeout. It is idempotent and returns once the program has exited.
func (p *Proc) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.Signal(syscall.SIGCONT) // a SIGSTOPped program can't act on SIGTERM
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	timer := time.NewTimer(p.stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	timer.Reset(5 * time.Second)
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, p.Pid())
	}
}

// describe is the Proc's status and the tail of its logs, for failed tests.
func (p *Proc) describe() string {
	var b strings.Builder
	state := "running"
	select {
	case <-p.done:
		state = fmt.Sprintf("exited (%v)", p.exitErr)
		if p.exitErr == nil {
			state = "exited (status 0)"
		}
	default:
	}
	fmt.Fprintf(&b, "%s in %s, pid %d, %s: %s\n", p.Name, p.Role, p.Pid(), state, strings.Join(p.cmd.Args[4:], " "))
	for _, f := range []string{p.StdoutPath, p.StderrPath} {
		fmt.Fprintf(&b, "--- %s (last %d lines)\n", filepath.Base(f), tailLines)
		b.WriteString(tail(f, tailLines))
	}
	return b.String()
}

const tailLines = 60

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)\n", err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return "(empty)\n"
	}
	return strings.Join(lines, "\n") + "\n"
}

// WaitListening waits until the program has a socket bound to port: a TCP
// listener for network "tcp", any UDP socket for "udp" (IPv4 or IPv6). It
// reads the program's own view (/proc/PID/net), so it sees the namespace the
// program runs in; it returns early with ErrExited if the program ends.
func (p *Proc) WaitListening(ctx context.Context, network string, port int) error {
	ino, err := nsInode(p.lab.ns[p.Role])
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// until `ip netns exec` has switched, /proc/PID/net is the host's
		if inProcNS(p.Pid(), ino) {
			ok, err := listening(p.Pid(), network, port)
			if err != nil {
				return fmt.Errorf("%s: %w", p.Name, err)
			}
			if ok {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s: waiting for %s port %d: %w (%v)", p.Name, network, port, ErrExited, p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %s port %d: %w", p.Name, network, port, ctx.Err())
		case <-tick.C:
		}
	}
}

// listening reports whether /proc/PID/net/{network,network6} has a socket on
// port (TCP: in LISTEN state).
func listening(pid int, network string, port int) (bool, error) {
	if network != "tcp" && network != "udp" {
		return false, fmt.Errorf("network %q: want tcp or udp", network)
	}
	for _, f := range []string{network, network + "6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && f != network {
				continue // no IPv6 in this kernel
			}
			return false, err
		}
		if socketTableHas(data, network == "tcp", port) {
			return true, nil
		}
	}
	return false, nil
}

// socketTableHas parses a /proc/net/{tcp,udp}[6] table: each row has
// "local_address" as HEXIP:HEXPORT and "st" as a hex state (0A = LISTEN).
func socketTableHas(table []byte, tcpListen bool, port int) bool {
	want := fmt.Sprintf(":%04X", port)
	lines := strings.Split(string(table), "\n")
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasSuffix(f[1], want) {
			continue
		}
		if !tcpListen || f[3] == "0A" {
			return true
		}
	}
	return false
}
