package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
)

// agentEntry is one agent in relay.yaml.
type agentEntry struct {
	Name, Token string
	Lo, Hi      int
}

// service is one service in agent.yaml.
type service struct {
	Name, Target string
	Port         int
	Allow        string // YAML flow list, e.g. "[any]"
}

// env is a relay's configuration and its agents' shared settings for one test.
type env struct {
	t        *testing.T
	dir      string
	udp      int // the relay's UDP port
	stateDir string
	agents   []agentEntry
	relayCfg string
}

// newEnv writes relay.yaml for agents. The relay's state_dir survives restarts
// within the test.
func newEnv(t *testing.T, agents ...agentEntry) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), udp: freePort(t, "udp"), agents: agents}
	e.stateDir = filepath.Join(e.dir, "relay-state")
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:%d\nviewer_bind: 127.0.0.1\nstate_dir: %s\nagents:\n", e.udp, e.stateDir)
	for _, a := range agents {
		fmt.Fprintf(&b, "  %s:\n    token: %s\n    ports: %d-%d\n", a.Name, a.Token, a.Lo, a.Hi)
	}
	e.relayCfg = writeFile(t, e.dir, "relay.yaml", b.String())
	return e
}

// startRelay starts porthole-relay and waits for its "relay listening" line.
func (e *env) startRelay() *Process {
	e.t.Helper()
	p := startProcess(e.t, "relay", bins.relay, "-config", e.relayCfg)
	p.WaitLog("relay listening", 10*time.Second)
	return p
}

// agentConfig writes an agent.yaml (relay only, no router, no DNS) and returns its path.
func (e *env) agentConfig(file, name, token string, svcs ...service) string {
	e.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nstate_dir: %s\nrelay:\n  address: 127.0.0.1:%d\n  token: %s\ndirect:\n  enabled: false\nservices:\n",
		name, filepath.Join(e.dir, file+"-state"), e.udp, token)
	for _, s := range svcs {
		allow := s.Allow
		if allow == "" {
			allow = "[any]"
		}
		fmt.Fprintf(&b, "  - name: %s\n    target: %s\n    port: %d\n    allow: %s\n", s.Name, s.Target, s.Port, allow)
	}
	return writeFile(e.t, e.dir, file, b.String())
}

// startAgent starts porthole-agent with the config at path.
func (e *env) startAgent(name, path string) *Process {
	e.t.Helper()
	return startProcess(e.t, name, bins.agent, "-config", path)
}

// servicePorts allocates n TCP ports for services and returns them with the range
// that covers them.
func servicePorts(t testing.TB, n int) (ps []int, lo, hi int) {
	t.Helper()
	for range n {
		p := freePort(t, "tcp")
		ps = append(ps, p)
		if lo == 0 || p < lo {
			lo = p
		}
		if p > hi {
			hi = p
		}
	}
	return ps, lo, hi
}

func strongToken() string { return config.NewToken() }

// ---- viewers ----

func dialViewer(t testing.TB, port int) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 3*time.Second)
	if err != nil {
		t.Fatalf("viewer dial %d: %v", port, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// echoWorks reports whether a short round trip through port succeeds now.
func echoWorks(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	msg := []byte("ping " + strconv.Itoa(port))
	if _, err := c.Write(msg); err != nil {
		return false
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return false
	}
	return bytes.Equal(got, msg)
}

// waitEcho waits until an echo round trip through port works.
func waitEcho(t testing.TB, port int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() bool { return echoWorks(port) }, "no echo through port %d", port)
}

// portClosed reports whether nothing listens on 127.0.0.1:port.
func portClosed(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return errors.Is(err, syscallECONNREFUSED)
	}
	c.Close()
	return false
}

// readsNothing reports whether c is closed by the other side without sending a byte.
func readsNothing(c net.Conn, timeout time.Duration) (bool, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false, err
	}
	return n == 0, err
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
