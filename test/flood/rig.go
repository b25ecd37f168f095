package flood

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/framework"
)

// RigConfig configures StartRig.
type RigConfig struct {
	// Relay and Agent are the binaries (framework.Build). Required.
	Relay, Agent string
	// Dir holds configs and state directories. Required.
	Dir string
	// Prefix is a command line relay and agents run through (see
	// framework.Spec.Prefix); nil runs them directly.
	Prefix []string
	// Transport is the agents' relay.transport; empty leaves the key out (auto).
	Transport string
	// RelayExtra is YAML added at the top level of relay.yaml (e.g. limits:).
	RelayExtra string
	// MaxOutput bounds each process's in-memory output; zero means 4 MiB.
	MaxOutput int
}

// Identity is an agent name and its token as relay.yaml knows them.
type Identity struct{ Name, Token string }

// Rig is a porthole-relay and two agents as separate processes on loopback,
// each service an echo server:
//
//   - agent "alpha" with services "flooded" (A1, the idle flood's target) and
//     "other" (A2: a viewer of another service of the same agent);
//   - agent "bravo" with service "cam" (B1: a viewer of another agent);
//   - the identity "mallory", known to the relay but not started: the probe
//     flood authenticates with it. Its port range holds only ProbeTarget, where
//     a listener accepts and never answers, so every probe the relay starts
//     waits for its full timeout (the costliest probe).
type Rig struct {
	Relay, AgentA, AgentB *framework.Process
	// RelayAddr is where agents connect (UDP for QUIC, TCP for the fallback).
	RelayAddr string
	// Admin is the relay's admin endpoint (/metrics, /status.json).
	Admin string
	// A1, A2 and B1 are the relay's listeners of the three services.
	A1, A2, B1 string
	// Flooder is mallory's identity; ProbeTarget its probes' address.
	Flooder     Identity
	ProbeTarget string

	backends []*framework.Backend
	hang     net.Listener
	hangWG   sync.WaitGroup
}

// StartRig starts the rig and waits until every service answers an echo
// through the relay.
func StartRig(ctx context.Context, cfg RigConfig) (*Rig, error) {
	if cfg.Relay == "" || cfg.Agent == "" || cfg.Dir == "" {
		return nil, errors.New("flood: RigConfig needs Relay, Agent and Dir")
	}
	if cfg.MaxOutput == 0 {
		cfg.MaxOutput = 4 << 20
	}
	r := &Rig{}
	fail := func(err error) (*Rig, error) { r.Close(); return nil, err }
	for range 3 {
		b, err := framework.Serve("127.0.0.1:0", framework.Echo)
		if err != nil {
			return fail(err)
		}
		r.backends = append(r.backends, b)
	}
	ports, err := disjointPorts()
	if err != nil {
		return fail(err)
	}
	rport, err := framework.FreePort("both")
	if err != nil {
		return fail(err)
	}
	aport, err := framework.FreePort("tcp")
	if err != nil {
		return fail(err)
	}
	r.RelayAddr, r.Admin = framework.Addr(rport), framework.Addr(aport)
	r.A1, r.A2, r.B1 = framework.Addr(ports[0]), framework.Addr(ports[1]), framework.Addr(ports[2])
	r.ProbeTarget = framework.Addr(ports[3])
	if r.hang, err = net.Listen("tcp", r.ProbeTarget); err != nil {
		return fail(fmt.Errorf("flood: probe target: %w", err))
	}
	r.hangWG.Go(func() { acceptAndHang(r.hang) })

	a, b := Identity{"alpha", config.NewToken()}, Identity{"bravo", config.NewToken()}
	r.Flooder = Identity{"mallory", config.NewToken()}
	rc := framework.RelayConfig{Listen: r.RelayAddr, StateDir: filepath.Join(cfg.Dir, "relay-state"),
		Extra: "admin: " + r.Admin + "\n" + cfg.RelayExtra,
		Agents: []framework.RelayAgent{
			{Name: a.Name, Token: a.Token, Lo: min(ports[0], ports[1]), Hi: max(ports[0], ports[1])},
			{Name: b.Name, Token: b.Token, Lo: ports[2], Hi: ports[2]},
			{Name: r.Flooder.Name, Token: r.Flooder.Token, Lo: ports[3], Hi: ports[3]},
		}}
	relayCfg, err := framework.WriteFile(cfg.Dir, "relay.yaml", rc.YAML())
	if err != nil {
		return fail(err)
	}
	agentCfg := func(id Identity, svcs ...framework.Service) (string, error) {
		ac := framework.AgentConfig{Name: id.Name, StateDir: filepath.Join(cfg.Dir, id.Name+"-state"),
			Relay: r.RelayAddr, Token: id.Token, Transport: cfg.Transport, Services: svcs,
			Extra: "admin: off\n"}
		return framework.WriteFile(cfg.Dir, id.Name+".yaml", ac.YAML())
	}
	aCfg, err := agentCfg(a,
		framework.Service{Name: "flooded", Target: r.backends[0].Addr(), Port: ports[0]},
		framework.Service{Name: "other", Target: r.backends[1].Addr(), Port: ports[1]})
	if err != nil {
		return fail(err)
	}
	bCfg, err := agentCfg(b, framework.Service{Name: "cam", Target: r.backends[2].Addr(), Port: ports[2]})
	if err != nil {
		return fail(err)
	}
	start := func(name, conf string) (*framework.Process, error) {
		return framework.Start(framework.Spec{Name: name, Path: cfg.Agent, Args: []string{"-config", conf},
			Prefix: cfg.Prefix, MaxOutput: cfg.MaxOutput})
	}
	if r.Relay, err = framework.Start(framework.Spec{Name: "relay", Path: cfg.Relay, Args: []string{"-config", relayCfg},
		Prefix: cfg.Prefix, MaxOutput: cfg.MaxOutput}); err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.Relay.WaitOutput(wctx, "relay listening"); err != nil {
		return fail(fmt.Errorf("flood: relay: %w\n%s", err, r.Describe(30)))
	}
	if r.AgentA, err = start("agent-alpha", aCfg); err != nil {
		return fail(err)
	}
	if r.AgentB, err = start("agent-bravo", bCfg); err != nil {
		return fail(err)
	}
	for _, addr := range []string{r.A1, r.A2, r.B1} {
		if err := framework.PollContext(wctx, 50*time.Millisecond, func() bool { return framework.EchoWorks(addr) }); err != nil {
			return fail(fmt.Errorf("flood: no echo through %s: %w\n%s", addr, err, r.Describe(30)))
		}
	}
	return r, nil
}

// disjointPorts returns four free TCP ports such that the first two (alpha's
// range lo-hi) don't cover the other two: relay.yaml refuses overlapping ranges.
func disjointPorts() ([]int, error) {
	var ps []int
	for len(ps) < 2 {
		p, err := framework.FreePort("tcp")
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	lo, hi := min(ps[0], ps[1]), max(ps[0], ps[1])
	for tries := 0; len(ps) < 4; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("flood: no free port outside %d-%d: %w", lo, hi, framework.ErrNoPort)
		}
		p, err := framework.FreePort("tcp")
		if err != nil {
			return nil, err
		}
		if p < lo || p > hi {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// acceptAndHang accepts until ln closes and never answers; connections end
// when the peer closes them.
func acceptAndHang(ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex // guards conns
	conns := map[net.Conn]bool{}
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Go(func() {
			io.Copy(io.Discard, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		})
	}
}

// Describe is the tail of each process's output, for a failure message.
func (r *Rig) Describe(n int) string {
	var b strings.Builder
	for _, p := range []*framework.Process{r.Relay, r.AgentA, r.AgentB} {
		if p != nil {
			b.WriteString(p.Describe(n))
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Close kills the processes and stops the backends. Idempotent.
func (r *Rig) Close() {
	for _, p := range []*framework.Process{r.AgentA, r.AgentB, r.Relay} {
		if p != nil {
			p.Kill()
		}
	}
	for _, b := range r.backends {
		b.Close()
	}
	if r.hang != nil {
		r.hang.Close()
		r.hangWG.Wait()
	}
}

// Goroutines is the relay's go_goroutines from its /metrics.
func (r *Rig) Goroutines() (int, error) {
	v, err := Metric(r.Admin, "go_goroutines")
	return int(v), err
}

// Metric reads one unlabelled sample from the Prometheus /metrics of the
// admin endpoint at addr.
func Metric(addr, name string) (float64, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("flood: metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("flood: metrics: %w", err)
	}
	return 0, fmt.Errorf("flood: metrics: no %s at %s", name, addr)
}
