//go:build linux

package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
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

// Proc is a program running inside a lab namespace: a framework.Process
// started through `ip netns exec`. Its stdout and stderr go to files in Dir
// (shown in the test log when the test fails); it is stopped by pid (its own
// process group) when the test that started it ends.
type Proc struct {
	*framework.Process
	Name string // unique within the lab
	Role Role   // namespace it runs in
	// Dir holds <Name>.stdout and <Name>.stderr; it is also the working
	// directory unless Spec.Dir said otherwise.
	Dir        string
	StdoutPath string
	StderrPath string

	lab *Lab
}

// maxOutput bounds the in-memory copy of a Proc's output (the files keep all).
const maxOutput = 4 << 20

// ErrExited means the program ended while something waited for it.
var ErrExited = framework.ErrExited

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

	dir := filepath.Join(l.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	for fname, content := range spec.Files {
		if fname != filepath.Base(fname) {
			return nil, fmt.Errorf("start %s: file %q: want a plain name", name, fname)
		}
		if err := os.WriteFile(filepath.Join(dir, fname), content, 0o600); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	wd := spec.Dir
	if wd == "" {
		wd = dir
	}
	// `ip netns exec` execs the program (no fork), so the pid is the
	// program's own. The lab never ends an OS thread that started a child
	// (see inNetns), which Pdeathsig relies on.
	fp, err := framework.Start(framework.Spec{
		Name: name, Path: spec.Path, Args: spec.Args, Env: spec.Env, Dir: wd,
		Prefix: []string{"ip", "netns", "exec", ns},
		LogDir: dir, MaxOutput: maxOutput, StopTimeout: spec.StopTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, r, err)
	}
	p := &Proc{Process: fp, Name: name, Role: r, Dir: dir, StdoutPath: fp.StdoutPath, StderrPath: fp.StderrPath, lab: l}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
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

// describe is the Proc's status and the tail of its logs, for failed tests.
func (p *Proc) describe() string {
	var b strings.Builder
	state := "running"
	select {
	case <-p.Done():
		state = fmt.Sprintf("exited (%v)", p.Err())
		if p.Err() == nil {
			state = "exited (status 0)"
		}
	default:
	}
	fmt.Fprintf(&b, "%s in %s, pid %d, %s: %s\n", p.Name, p.Role, p.Pid(), state, strings.Join(p.Args()[4:], " "))
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
	if len(data) == 0 {
		return "(empty)\n"
	}
	return framework.TailLines(string(data), n)
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
	// until `ip netns exec` has switched, /proc/PID/net is the host's
	return p.WaitListeningWhen(ctx, network, port, func(pid int) bool { return inProcNS(pid, ino) })
}

// socketTableHas parses a /proc/net/{tcp,udp}[6] table (framework.SocketTableHas).
func socketTableHas(table []byte, tcpListen bool, port int) bool {
	return framework.SocketTableHas(table, tcpListen, port)
}
