package framework

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

// Spec describes a program to start.
type Spec struct {
	// Name names the program in logs and errors. Required.
	Name string
	// Path is the program (a path, or a name looked up in PATH). Required.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is added to this process's environment (later entries win).
	Env []string
	// Dir is the working directory; empty means this process's.
	Dir string
	// Prefix is a command line the program is run through, e.g. `ip netns
	// exec NS` (the lab) or `setpriv ...` (the bench). The prefix must exec
	// the program, not fork it, so that Pid stays the program's own.
	Prefix []string
	// LogDir, if set, receives <Name>.stdout and <Name>.stderr with all of
	// the output; the in-memory copy (Output) is kept either way.
	LogDir string
	// MaxOutput bounds the in-memory copy of the output: past it only the
	// most recent half is kept. Zero means no bound.
	MaxOutput int
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL; zero
	// means 3s.
	StopTimeout time.Duration
}

// Process is a started program. It runs in its own process group, which
// Signal, Stop and Kill address (the program and its children, nothing else),
// and it is killed if the test process dies first (Linux).
type Process struct {
	// Name is Spec.Name.
	Name string
	// StdoutPath and StderrPath are the output files, empty without LogDir.
	StdoutPath, StderrPath string

	spec    Spec
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed when the program has exited and its output is copied
	exitErr error         // set before done is closed

	mu      sync.Mutex    // guards the fields below
	output  bytes.Buffer  // stdout and stderr interleaved
	cut     bool          // output lost its beginning to MaxOutput
	changed chan struct{} // closed and replaced on every write and at exit
}

// ErrExited means the program ended while something waited for it.
var ErrExited = errors.New("program exited")

// Start starts the program and returns at once; the caller stops it (Stop or
// Kill). Use WaitOutput, WaitListening or a condition of its own for
// readiness.
func Start(spec Spec) (*Process, error) {
	if spec.Name == "" || spec.Path == "" {
		return nil, fmt.Errorf("start %q: name and path are required", spec.Name)
	}
	p := &Process{Name: spec.Name, spec: spec, done: make(chan struct{}), changed: make(chan struct{})}
	if p.spec.StopTimeout == 0 {
		p.spec.StopTimeout = 3 * time.Second
	}
	var stdout, stderr *os.File
	closeFiles := func() {
		if stdout != nil {
			stdout.Close()
		}
		if stderr != nil {
			stderr.Close()
		}
	}
	if spec.LogDir != "" {
		p.StdoutPath = filepath.Join(spec.LogDir, spec.Name+".stdout")
		p.StderrPath = filepath.Join(spec.LogDir, spec.Name+".stderr")
		var err error
		if stdout, err = os.OpenFile(p.StdoutPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.Name, err)
		}
		if stderr, err = os.OpenFile(p.StderrPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err != nil {
			closeFiles()
			return nil, fmt.Errorf("start %s: %w", spec.Name, err)
		}
	}
	argv := append(append(append([]string{}, spec.Prefix...), spec.Path), spec.Args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), spec.Env...)
	cmd.Stdout = &outputWriter{p: p, f: stdout}
	cmd.Stderr = &outputWriter{p: p, f: stderr}
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 2 * time.Second // a grandchild holding the pipes must not block Wait
	p.cmd = cmd
	if err := cmd.Start(); err != nil {
		closeFiles()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p.started = time.Now()
	// owned: ends when the program exits; Stop, Kill and Wait wait for it
	go func() {
		err := cmd.Wait()
		closeFiles()
		p.exitErr = err
		close(p.done)
		p.notify()
	}()
	return p, nil
}

// StartT starts the program for a test: a start failure ends the test; when
// the test ends the program is killed (SIGKILL) and, if the test failed, its
// output is logged.
func StartT(tb testing.TB, spec Spec) *Process {
	tb.Helper()
	p, err := Start(spec)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("%s", p.Describe(400))
		}
	})
	return p
}

// Run starts bin with args for a test; see StartT.
func Run(tb testing.TB, name, bin string, args ...string) *Process {
	tb.Helper()
	return StartT(tb, Spec{Name: name, Path: bin, Args: args})
}

// outputWriter copies one output stream to its file and to the Process's buffer.
type outputWriter struct {
	p *Process
	f *os.File // nil without LogDir
}

func (w *outputWriter) Write(b []byte) (int, error) {
	n, err := len(b), error(nil)
	if w.f != nil {
		n, err = w.f.Write(b)
	}
	p := w.p
	p.mu.Lock()
	p.output.Write(b)
	if limit := p.spec.MaxOutput; limit > 0 && p.output.Len() > limit {
		tail := bytes.Clone(p.output.Bytes()[p.output.Len()-limit/2:])
		p.output.Reset()
		p.output.Write(tail)
		p.cut = true
	}
	p.mu.Unlock()
	p.notify()
	return n, err
}

func (p *Process) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// Pid is the program's process id (and process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Args is the command line as started, prefix included.
func (p *Process) Args() []string { return p.cmd.Args }

// Started is when the program was started.
func (p *Process) Started() time.Time { return p.started }

// Done is closed when the program has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the program has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is the program's exit status (nil for exit 0) once Done is closed; nil
// before.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.exitErr
	default:
		return nil
	}
}

// ExitCode is the exit code once the program has exited: -1 while it runs or
// if a signal ended it.
func (p *Process) ExitCode() int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// Output returns what the program wrote so far, stdout and stderr interleaved
// (with MaxOutput, the most recent part).
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// Lines returns the output lines that contain every one of subs.
func (p *Process) Lines(subs ...string) []string {
	var out []string
	for l := range strings.SplitSeq(p.Output(), "\n") {
		ok := l != ""
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// WaitOutput waits until the output contains substr. It returns early with
// ErrExited if the program ends first, or with ctx's error.
func (p *Process) WaitOutput(ctx context.Context, substr string) error {
	return p.WaitOutputCount(ctx, substr, 1)
}

// WaitOutputCount waits until the output contains substr at least n times;
// see WaitOutput.
func (p *Process) WaitOutputCount(ctx context.Context, substr string, n int) error {
	for {
		p.mu.Lock()
		found := strings.Count(p.output.String(), substr) >= n
		changed := p.changed
		p.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-p.done:
			if strings.Count(p.Output(), substr) >= n {
				return nil
			}
			return fmt.Errorf("%s: waiting for %q (x%d): %w (%v)", p.Name, substr, n, ErrExited, p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %q (x%d): %w", p.Name, substr, n, ctx.Err())
		case <-changed:
		}
	}
}

// Signal sends sig to the program's process group. It does nothing once the
// program has exited.
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits until the program has
// exited. It is idempotent.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits until the program exits or ctx ends.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for exit: %w", p.Name, ctx.Err())
	}
}

// Stop ends the program: SIGTERM to its process group, SIGKILL after
// Spec.StopTimeout. It is idempotent and returns once the program has exited.
func (p *Process) Stop() error {
	if !p.Running() {
		return nil
	}
	p.Signal(syscall.SIGCONT) // a SIGSTOPped program can't act on SIGTERM
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	timer := time.NewTimer(p.spec.StopTimeout)
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

// Describe is the program's state and the last n lines of its output, for the
// log of a failed test.
func (p *Process) Describe(n int) string {
	state := "running"
	if !p.Running() {
		state = "exited (status 0)"
		if p.exitErr != nil {
			state = fmt.Sprintf("exited (%v)", p.exitErr)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "---- %s (pid %d, %s): %s\n", p.Name, p.Pid(), state, strings.Join(p.cmd.Args, " "))
	if p.StdoutPath != "" {
		fmt.Fprintf(&b, "(all output in %s and %s)\n", p.StdoutPath, p.StderrPath)
	}
	b.WriteString(TailLines(p.Output(), n))
	fmt.Fprintf(&b, "---- end of %s\n", p.Name)
	return b.String()
}

// TailLines returns the last n lines of s, each ending in a newline, with a
// note of how many were left out.
func TailLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	skipped := 0
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
			skipped++
		}
	}
	if len(lines) == 0 {
		return "(no output)\n"
	}
	out := strings.Join(lines, "\n") + "\n"
	if skipped > 0 {
		out = fmt.Sprintf("(%d earlier lines left out)\n", skipped) + out
	}
	return out
}

// ---- /proc readings (Linux) ----

// RSS is the program's resident set size in KiB.
func (p *Process) RSS() (int64, error) { return ProcRSS(p.Pid()) }

// FDs is the number of the program's open file descriptors.
func (p *Process) FDs() (int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(p.Pid()) + "/fd")
	if err != nil {
		return 0, fmt.Errorf("%s fds: %w", p.Name, err)
	}
	return len(ents), nil
}

// CPUTime is the user plus system CPU time the program has used so far.
func (p *Process) CPUTime() (time.Duration, error) { return ProcCPUTime(p.Pid()) }

// ProcRSS reads VmRSS of pid in KiB.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("rss of %d: no VmRSS", pid)
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux
// architecture Go supports.
const clockTick = 100

// ProcCPUTime reads utime+stime of pid from /proc/PID/stat.
func ProcCPUTime(pid int) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	// fields 14 and 15 are the 12th and 13th after the command name
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// procStat returns the fields of /proc/PID/stat after the command name (which
// is in parentheses and may hold spaces): field 3 (state) is element 0.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("process %d: malformed stat", pid)
	}
	return f, nil
}

// Listening reports whether the program has a socket bound to port: a TCP
// listener for network "tcp", any UDP socket for "udp" (IPv4 or IPv6). It
// reads the program's own view (/proc/PID/net), so it sees the network
// namespace the program runs in.
func (p *Process) Listening(network string, port int) (bool, error) {
	if network != "tcp" && network != "udp" {
		return false, fmt.Errorf("network %q: want tcp or udp", network)
	}
	for _, f := range []string{network, network + "6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", p.Pid(), f))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && f != network {
				continue // no IPv6 in this kernel
			}
			return false, fmt.Errorf("%s: %w", p.Name, err)
		}
		if SocketTableHas(data, network == "tcp", port) {
			return true, nil
		}
	}
	return false, nil
}

// WaitListening polls Listening until it holds; it returns early with
// ErrExited if the program ends, or with ctx's error.
func (p *Process) WaitListening(ctx context.Context, network string, port int) error {
	return p.waitListening(ctx, network, port, nil)
}

// WaitListeningWhen is WaitListening that trusts /proc/PID/net only once
// ready(pid) holds (the lab: once `ip netns exec` has switched namespaces).
func (p *Process) WaitListeningWhen(ctx context.Context, network string, port int, ready func(pid int) bool) error {
	return p.waitListening(ctx, network, port, ready)
}

func (p *Process) waitListening(ctx context.Context, network string, port int, ready func(int) bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready == nil || ready(p.Pid()) {
			ok, err := p.Listening(network, port)
			if err != nil {
				return err
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

// SocketTableHas parses a /proc/net/{tcp,udp}[6] table: each row has
// "local_address" as HEXIP:HEXPORT and "st" as a hex state (0A = LISTEN).
func SocketTableHas(table []byte, tcpListen bool, port int) bool {
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
