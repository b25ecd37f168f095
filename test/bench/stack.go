package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/framework"
)

// Bins are the programs a run starts as separate processes.
type Bins struct {
	Relay, Agent, Backend string
	// Floor is cmd/floor, the smallest relay and agent on the tunnel
	// libraries alone.
	Floor string
	// Iperf3 is the iperf3 command, empty when it is not installed.
	Iperf3 string
	// Transports are the agent's relay transports to measure: "quic" always,
	// "tcp" once the agent accepts `relay.transport: tcp`.
	Transports []string
	// TransportKey says the agent knows relay.transport; without it the
	// agent's one transport (QUIC) is used and the key is left out.
	TransportKey bool
}

// BuildBins builds the binaries (test/framework, once per process) and finds
// iperf3 and the transports the agent knows. PORTHOLE_BENCH_BINS=DIR takes
// porthole-relay and porthole-agent from DIR instead.
func BuildBins() (Bins, error) {
	var b Bins
	var err error
	if b.Relay, err = framework.Build(framework.RelayPkg); err != nil {
		return b, err
	}
	if b.Agent, err = framework.Build(framework.AgentPkg); err != nil {
		return b, err
	}
	if b.Backend, err = framework.Build(framework.BackendPkg); err != nil {
		return b, err
	}
	if b.Floor, err = framework.Build(FloorPkg); err != nil {
		return b, err
	}
	if dir := os.Getenv("PORTHOLE_BENCH_BINS"); dir != "" {
		// prebuilt (or wrapped: GOMAXPROCS=1 exec ...) relay and agent, to
		// measure another build or runtime setting with the same bench
		b.Relay, b.Agent = filepath.Join(dir, "porthole-relay"), filepath.Join(dir, "porthole-agent")
	}
	b.Iperf3, _ = exec.LookPath("iperf3")
	b.Transports = []string{"quic"}
	if ok, err := agentAccepts(b.Agent, "tcp"); err != nil {
		return b, err
	} else if ok {
		b.Transports = append(b.Transports, "tcp")
		b.TransportKey = true
	}
	return b, nil
}

// agentAccepts reports whether `porthole-agent -check` accepts a config that
// sets relay.transport to transport: the TCP fallback's figures appear once
// the agent has it.
func agentAccepts(agentBin, transport string) (bool, error) {
	dir, err := os.MkdirTemp("", "porthole-bench-probe-")
	if err != nil {
		return false, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	ac := framework.AgentConfig{Name: "probe", StateDir: filepath.Join(dir, "state"), Relay: "127.0.0.1:7443",
		Token: config.NewToken(), Transport: transport,
		Services: []framework.Service{{Name: "cam", Target: "127.0.0.1:9", Port: 10001}}}
	path, err := framework.WriteFile(dir, "agent.yaml", ac.YAML())
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = exec.CommandContext(ctx, agentBin, "-check", "-config", path).Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return false, nil
	}
	return err == nil, err
}

// dropNetAdmin is a command prefix that runs relay and agent without
// CAP_NET_ADMIN when this process is root: quic-go then gets the UDP buffers
// net.core.rmem_max/wmem_max allow, as a service user does, instead of forcing
// 7 MiB past the limit.
var dropNetAdmin = sync.OnceValue(func() []string {
	if os.Geteuid() != 0 {
		return nil
	}
	p, err := exec.LookPath("setpriv")
	if err != nil {
		return nil
	}
	return []string{p, "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--"}
})

// StackConfig describes a relay and one agent.
type StackConfig struct {
	Bins Bins
	// Target is the agent's one service's backend (host:port).
	Target string
	// Transport is the agent's relay.transport; empty, or an agent that
	// doesn't know the key (Bins.TransportKey), leaves it out.
	Transport string
	// RelayEnv is added to the relay's environment (GOGC=...).
	RelayEnv []string
	// Agents is how many more agents the relay knows, idle and not started
	// here (for the memory figure); see StartIdleAgents.
	Agents int
	// RelayExtra is YAML added at the top level of relay.yaml (limits:).
	RelayExtra string
	// AgentExtra is YAML added at the top level of the main agent's agent.yaml.
	AgentExtra string
}

// Stack is porthole-relay and porthole-agent running as separate processes on
// loopback, with one service: viewers dial ViewerAddr.
type Stack struct {
	Relay, Agent *framework.Process
	// ViewerAddr is the relay's listener of the agent's service.
	ViewerAddr string
	// RelayAddr is where agents connect (UDP, and TCP for the fallback).
	RelayAddr string

	cfg       StackConfig
	dir       string
	relayCfg  string
	agentCfg  string
	idle      []idleAgent
	idlePorts []int
	extra     []*framework.Process
}

type idleAgent struct{ name, token string }

// StartStack starts a relay and an agent and waits until the relay listens on
// the service's port.
func StartStack(ctx context.Context, cfg StackConfig) (*Stack, error) {
	dir, err := os.MkdirTemp("", "porthole-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if !cfg.Bins.TransportKey {
		cfg.Transport = ""
	}
	s := &Stack{cfg: cfg, dir: dir}
	fail := func(err error) (*Stack, error) { s.Close(); return nil, err }
	rport, err := framework.FreePort("both")
	if err != nil {
		return fail(err)
	}
	n := 1 + cfg.Agents
	ports := make([]int, n)
	for i := range ports {
		if ports[i], err = framework.FreePort("tcp"); err != nil {
			return fail(err)
		}
	}
	s.RelayAddr = framework.Addr(rport)
	s.ViewerAddr = framework.Addr(ports[0])
	tok := config.NewToken()
	rc := framework.RelayConfig{Listen: s.RelayAddr, StateDir: filepath.Join(dir, "relay-state"), Extra: cfg.RelayExtra,
		Agents: []framework.RelayAgent{{Name: "home", Token: tok, Lo: ports[0], Hi: ports[0]}}}
	for i := 1; i < n; i++ {
		a := idleAgent{name: fmt.Sprintf("idle%04d", i), token: config.NewToken()}
		s.idle = append(s.idle, a)
		rc.Agents = append(rc.Agents, framework.RelayAgent{Name: a.name, Token: a.token, Lo: ports[i], Hi: ports[i]})
	}
	// idle agents' service ports, for StartIdleAgents
	s.idlePorts = ports[1:]
	if s.relayCfg, err = framework.WriteFile(dir, "relay.yaml", rc.YAML()); err != nil {
		return fail(err)
	}
	ac := framework.AgentConfig{Name: "home", StateDir: filepath.Join(dir, "agent-state"), Relay: s.RelayAddr, Token: tok,
		Transport: cfg.Transport, Services: []framework.Service{{Name: "cam", Target: cfg.Target, Port: ports[0]}},
		Extra: cfg.AgentExtra}
	if s.agentCfg, err = framework.WriteFile(dir, "agent.yaml", ac.YAML()); err != nil {
		return fail(err)
	}
	if err := s.StartRelay(ctx); err != nil {
		return fail(err)
	}
	if err := s.StartAgent(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// StartRelay starts (or restarts, after KillRelay) the relay and waits until
// it says it listens.
func (s *Stack) StartRelay(ctx context.Context) error {
	p, err := framework.Start(framework.Spec{Name: "relay", Path: s.cfg.Bins.Relay, Args: []string{"-config", s.relayCfg},
		Env: s.cfg.RelayEnv, Prefix: dropNetAdmin(), MaxOutput: 4 << 20})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	s.Relay = p
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "relay listening"); err != nil {
		return fmt.Errorf("bench: %w\n%s", err, framework.TailLines(p.Output(), 20))
	}
	return nil
}

// StartAgent starts (or restarts, after KillAgent) the agent and waits until
// the relay listens on its service's port.
func (s *Stack) StartAgent(ctx context.Context) error {
	p, err := framework.Start(framework.Spec{Name: "agent", Path: s.cfg.Bins.Agent, Args: []string{"-config", s.agentCfg},
		Prefix: dropNetAdmin(), MaxOutput: 4 << 20})
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	s.Agent = p
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := s.waitService(ctx); err != nil {
		return fmt.Errorf("bench: %w\nagent:\n%s\nrelay:\n%s", err, framework.TailLines(p.Output(), 20), framework.TailLines(s.Relay.Output(), 20))
	}
	return nil
}

// waitService waits until the relay listens on the service port, or a
// process exits.
func (s *Stack) waitService(ctx context.Context) error {
	port := tcpPort(s.ViewerAddr)
	err := framework.PollContext(ctx, 5*time.Millisecond, func() bool {
		ok, _ := s.Relay.Listening("tcp", port)
		return ok || !s.Relay.Running() || !s.Agent.Running()
	})
	switch {
	case err != nil:
		return fmt.Errorf("service port %d not open: %w", port, err)
	case !s.Relay.Running():
		return fmt.Errorf("relay exited: %v", s.Relay.Err())
	case !s.Agent.Running():
		return fmt.Errorf("agent exited: %v", s.Agent.Err())
	}
	return nil
}

// KillRelay sends SIGKILL to the relay and waits for it to be gone.
func (s *Stack) KillRelay() { s.Relay.Kill() }

// KillAgent sends SIGKILL to the agent and waits for it to be gone.
func (s *Stack) KillAgent() { s.Agent.Kill() }

// StartIdleAgents starts the StackConfig.Agents idle agents, each a process
// of its own with one service, and waits until the relay has accepted all of
// them ("agent connected" once per agent beyond the first).
func (s *Stack) StartIdleAgents(ctx context.Context) error {
	for i, a := range s.idle {
		ac := framework.AgentConfig{Name: a.name, StateDir: filepath.Join(s.dir, a.name+"-state"), Relay: s.RelayAddr, Token: a.token,
			Transport: s.cfg.Transport, Services: []framework.Service{{Name: "cam", Target: "127.0.0.1:9", Port: s.idlePorts[i]}}}
		path, err := framework.WriteFile(s.dir, a.name+".yaml", ac.YAML())
		if err != nil {
			return err
		}
		p, err := framework.Start(framework.Spec{Name: a.name, Path: s.cfg.Bins.Agent, Args: []string{"-config", path},
			Prefix: dropNetAdmin(), MaxOutput: 64 << 10})
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		s.extra = append(s.extra, p)
	}
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	want := 1 + len(s.idle)
	if err := s.Relay.WaitOutputCount(ctx, "agent connected", want); err != nil {
		return fmt.Errorf("bench: %d agents: %w (%d connected)", len(s.idle), err, strings.Count(s.Relay.Output(), "agent connected")-1)
	}
	return nil
}

// CPU is the relay's and the agent's CPU time so far.
func (s *Stack) CPU() (relay, agent time.Duration, err error) {
	r, err1 := s.Relay.CPUTime()
	a, err2 := s.Agent.CPUTime()
	return r, a, errors.Join(err1, err2)
}

// Close kills every process of the stack and removes its files.
func (s *Stack) Close() {
	for _, p := range append(s.extra, s.Agent, s.Relay) {
		if p != nil {
			p.Kill()
		}
	}
	os.RemoveAll(s.dir)
}

func tcpPort(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	var n int
	fmt.Sscan(p, &n)
	return n
}
