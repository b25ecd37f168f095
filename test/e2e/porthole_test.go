package e2e

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/framework"
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
// within the test. Its port is free for UDP and TCP (the fallback transport).
func newEnv(t *testing.T, agents ...agentEntry) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), udp: freePort(t, "both"), agents: agents}
	e.stateDir = filepath.Join(e.dir, "relay-state")
	rc := framework.RelayConfig{Listen: framework.Addr(e.udp), StateDir: e.stateDir}
	for _, a := range agents {
		rc.Agents = append(rc.Agents, framework.RelayAgent{Name: a.Name, Token: a.Token, Lo: a.Lo, Hi: a.Hi})
	}
	e.relayCfg = writeFile(t, e.dir, "relay.yaml", rc.YAML())
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
	ac := framework.AgentConfig{Name: name, StateDir: filepath.Join(e.dir, file+"-state"), Relay: framework.Addr(e.udp), Token: token}
	for _, s := range svcs {
		ac.Services = append(ac.Services, framework.Service{Name: s.Name, Target: s.Target, Port: s.Port, Allow: s.Allow})
	}
	return writeFile(e.t, e.dir, file, ac.YAML())
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
	return framework.Ports(t, n)
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
func echoWorks(port int) bool { return framework.EchoWorks(framework.Addr(port)) }

// waitEcho waits until an echo round trip through port works.
func waitEcho(t testing.TB, port int, timeout time.Duration) {
	t.Helper()
	framework.WaitEcho(t, framework.Addr(port), timeout)
}

// portClosed reports whether nothing listens on 127.0.0.1:port.
func portClosed(port int) bool { return framework.Refused(framework.Addr(port)) }

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
