package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// The e2e tests run on test/framework; the names below are the e2e tests'
// short forms of it.

// bins holds the binaries built once for this test process.
var bins struct {
	relay, agent string
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	defer framework.Default.Remove()
	var err error
	if bins.relay, err = framework.Build(framework.RelayPkg); err == nil {
		bins.agent, err = framework.Build(framework.AgentPkg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// freePort returns a port on 127.0.0.1 below the ephemeral range, never handed
// out before in this process; see framework.FreePort.
func freePort(t testing.TB, network string) int {
	t.Helper()
	return framework.Port(t, network)
}

// eventually polls cond every 20ms until it is true or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	framework.Eventually(t, timeout, cond, format, args...)
}

func poll(timeout time.Duration, cond func() bool) bool { return framework.Poll(timeout, cond) }

// Process is one started binary, with test-failing waits.
type Process struct {
	*framework.Process
	t    testing.TB
	name string
}

// startProcess starts bin with args. The process is killed at the end of the test,
// and its output is printed if the test failed.
func startProcess(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	return &Process{Process: framework.Run(t, name, bin, args...), t: t, name: name}
}

// Log is everything the process wrote so far.
func (p *Process) Log() string { return p.Output() }

// Signal sends sig to the process if it is still running.
func (p *Process) Signal(sig syscall.Signal) {
	if err := p.Process.Signal(sig); err != nil {
		p.t.Error(err)
	}
}

// Wait waits up to timeout for the exit and returns the exit code (-1 if killed by a
// signal); it fails the test on timeout.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.Process.Wait(ctx); err != nil {
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	return p.ExitCode()
}

// WaitLog waits until the output contains s.
func (p *Process) WaitLog(s string, timeout time.Duration) {
	p.t.Helper()
	framework.WaitOutput(p.t, p.Process, s, timeout)
}

// WaitLogCount waits until the output contains s at least n times.
func (p *Process) WaitLogCount(s string, n int, timeout time.Duration) {
	p.t.Helper()
	framework.WaitOutputCount(p.t, p.Process, s, n, timeout)
}

// FDs is the number of open file descriptors of the process (Linux /proc).
func (p *Process) FDs() int {
	p.t.Helper()
	n, err := p.Process.FDs()
	if err != nil {
		p.t.Fatal(err)
	}
	return n
}

// RSS is the resident set size of the process in KiB (Linux /proc).
func (p *Process) RSS() int {
	p.t.Helper()
	n, err := p.Process.RSS()
	if err != nil {
		p.t.Fatal(err)
	}
	return int(n)
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
	return framework.Write(t, dir, name, content)
}
