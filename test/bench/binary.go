package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/tunnel"
)

// BuildRelay builds porthole-relay into dir and returns its path.
func BuildRelay(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("bench: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "porthole-relay")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./relay/cmd/porthole-relay")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: building porthole-relay: %w\n%s", err, out)
	}
	return bin, nil
}

// benchAgent is one agent entry of a relay.yaml written for a benchmark.
type benchAgent struct {
	name, token string
	port        uint16
}

// relayProc is a running porthole-relay.
type relayProc struct {
	cmd   *exec.Cmd
	ready time.Time     // when it logged that it listens
	done  chan struct{} // closed when stderr is drained and the process reaped
}

func writeRelayConfig(dir string, udpPort uint16, agents []benchAgent) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:%d\nviewer_bind: 127.0.0.1\nstate_dir: %s\nagents:\n", udpPort, filepath.Join(dir, "state"))
	for _, a := range agents {
		fmt.Fprintf(&b, "  %s: {token: %s, ports: %d}\n", a.name, a.token, a.port)
	}
	path := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("bench: relay.yaml: %w", err)
	}
	return path, nil
}

// startRelayProc starts the relay binary and waits until it logs that it listens.
func startRelayProc(ctx context.Context, bin, cfgPath string) (*relayProc, error) {
	cmd := exec.Command(bin, "-config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start relay: %w", err)
	}
	p := &relayProc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan time.Time, 1)
	var tail []string
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "relay listening") {
				ready <- time.Now()
			}
			if len(tail) < 20 {
				tail = append(tail, sc.Text())
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case p.ready = <-ready:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("bench: relay exited: %s", strings.Join(tail, "\n"))
	case <-timer.C:
		err = errors.New("bench: relay did not start within 10s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.kill()
	return nil, err
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *relayProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// rssKiB reads VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, errors.New("bench: no VmRSS")
}

// agentLog is where bench agents log: stderr at debug level when
// PORTHOLE_BENCH_LOG is set (to see why a figure is what it is), nowhere otherwise.
var agentLog = func() *slog.Logger {
	if os.Getenv("PORTHOLE_BENCH_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}()

// agentRunner runs in-process tunnel clients and stops them all on stop.
type agentRunner struct {
	wg      sync.WaitGroup
	cancels []context.CancelFunc
}

// start runs a tunnel client for a, each on its own UDP socket, calling onConnect
// after every handshake.
func (r *agentRunner) start(relayAddr string, a benchAgent, target string, onConnect func()) error {
	cl, err := tunnel.New(tunnel.Config{
		Address: relayAddr, Name: a.name, Token: a.token,
		Services:  []tunnel.Service{{Name: "cam", Port: a.port, Allow: []string{"any"}}},
		Handler:   tunnel.ForwardTo(map[string]string{"cam": target}),
		OnConnect: func(tunnel.Session) { onConnect() },
		Logger:    agentLog,
	})
	if err != nil {
		return fmt.Errorf("bench: agent %s: %w", a.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancels = append(r.cancels, cancel)
	r.wg.Add(1)
	go func() { defer r.wg.Done(); cl.Run(ctx) }()
	return nil
}

func (r *agentRunner) stop() {
	for _, c := range r.cancels {
		c()
	}
	r.wg.Wait()
}

func makeAgents(n int) ([]benchAgent, error) {
	agents := make([]benchAgent, n)
	seen := map[uint16]bool{}
	for i := range agents {
		var port uint16
		for port == 0 || seen[port] {
			p, err := freeTCPPort()
			if err != nil {
				return nil, err
			}
			port = p
		}
		seen[port] = true
		agents[i] = benchAgent{name: fmt.Sprintf("agent%03d", i), token: config.NewToken(), port: port}
	}
	return agents, nil
}

// MemoryPerAgent runs the relay binary with n agents configured, connects n
// in-process agents (one service each, own UDP socket, own name and token), lets
// the relay settle and reports its RSS growth per agent.
func MemoryPerAgent(ctx context.Context, bin string, n int, settle time.Duration) Figure {
	name := fmt.Sprintf("relay RSS per idle agent (%d agents)", n)
	dir, err := os.MkdirTemp("", "porthole-bench-")
	if err != nil {
		return errorFigure(name, err)
	}
	defer os.RemoveAll(dir)
	agents, err := makeAgents(n)
	if err != nil {
		return errorFigure(name, err)
	}
	udp, err := freeUDPPort()
	if err != nil {
		return errorFigure(name, err)
	}
	cfg, err := writeRelayConfig(dir, udp, agents)
	if err != nil {
		return errorFigure(name, err)
	}
	p, err := startRelayProc(ctx, bin, cfg)
	if err != nil {
		return errorFigure(name, err)
	}
	defer p.kill()
	if err := sleepCtx(ctx, settle); err != nil {
		return errorFigure(name, err)
	}
	before, err := rssKiB(p.cmd.Process.Pid)
	if err != nil {
		return errorFigure(name, err)
	}
	var r agentRunner
	defer r.stop()
	var connected sync.WaitGroup
	connected.Add(n)
	relayAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(udp)))
	for _, a := range agents {
		var once sync.Once
		if err := r.start(relayAddr, a, "127.0.0.1:9", func() { once.Do(connected.Done) }); err != nil {
			return errorFigure(name, err)
		}
	}
	all := make(chan struct{})
	go func() { connected.Wait(); close(all) }()
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	select {
	case <-all:
	case <-timer.C:
		return errorFigure(name, errors.New("bench: agents did not all connect within 60s"))
	case <-ctx.Done():
		return errorFigure(name, ctx.Err())
	}
	if err := sleepCtx(ctx, settle); err != nil {
		return errorFigure(name, err)
	}
	after, err := rssKiB(p.cmd.Process.Pid)
	if err != nil {
		return errorFigure(name, err)
	}
	per := float64(after-before) / float64(n)
	return Figure{
		Name: name, Value: per, Unit: "KiB", Direct: NoBaseline, Ratio: NoBaseline,
		Target: "< 100 KiB", Pass: per < 100,
		Note: fmt.Sprintf("VmRSS %d -> %d KiB, read %s after connect", before, after, settle),
	}
}

// Restart kills the relay binary with SIGKILL n times and measures, from the
// moment the restarted relay logs that it listens, how long until a viewer gets
// an echo through the agent's service again.
func Restart(ctx context.Context, bin string, n int, jitter time.Duration) []Figure {
	names := []string{"relay restart -> service answers, median", "relay restart -> service answers, max"}
	fail := func(err error) []Figure { return []Figure{errorFigure(names[0], err), errorFigure(names[1], err)} }
	dir, err := os.MkdirTemp("", "porthole-bench-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	src, err := serve(echo)
	if err != nil {
		return fail(err)
	}
	defer src.close()
	agents, err := makeAgents(1)
	if err != nil {
		return fail(err)
	}
	udp, err := freeUDPPort()
	if err != nil {
		return fail(err)
	}
	cfg, err := writeRelayConfig(dir, udp, agents)
	if err != nil {
		return fail(err)
	}
	p, err := startRelayProc(ctx, bin, cfg)
	if err != nil {
		return fail(err)
	}
	defer func() { p.kill() }()
	var r agentRunner
	defer r.stop()
	if err := r.start(net.JoinHostPort("127.0.0.1", strconv.Itoa(int(udp))), agents[0], src.addr(), func() {}); err != nil {
		return fail(err)
	}
	viewer := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(agents[0].port)))
	if _, err := waitAnswers(ctx, viewer, 10*time.Second); err != nil {
		return fail(err)
	}
	var times []time.Duration
	for range n {
		// Kill at a random point of the agent's heartbeat cycle.
		if err := sleepCtx(ctx, rand.N(jitter+1)); err != nil {
			return fail(err)
		}
		p.kill()
		if p, err = startRelayProc(ctx, bin, cfg); err != nil {
			return fail(err)
		}
		at, err := waitAnswers(ctx, viewer, 30*time.Second)
		if err != nil {
			return fail(err)
		}
		times = append(times, at.Sub(p.ready))
	}
	var list []string
	for _, t := range times {
		list = append(list, fmt.Sprintf("%.2f", t.Seconds()))
	}
	med, worst := percentile(times, 50), percentile(times, 100)
	note := fmt.Sprintf("%d SIGKILL restarts: %s s", n, strings.Join(list, " "))
	return []Figure{
		{Name: names[0], Value: med.Seconds(), Unit: "s", Direct: NoBaseline, Ratio: NoBaseline, Target: "< 1 s", Pass: med < time.Second, Note: note},
		{Name: names[1], Value: worst.Seconds(), Unit: "s", Direct: NoBaseline, Ratio: NoBaseline, Target: "<= 3 s", Pass: worst <= 3*time.Second},
	}
}

// waitAnswers polls viewer every few milliseconds until a byte echoes through it,
// returning when that happened.
func waitAnswers(ctx context.Context, viewer string, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if answers(viewer) {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("bench: %s did not answer within %s", viewer, limit)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
	}
}

func answers(viewer string) bool {
	c, err := net.DialTimeout("tcp", viewer, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err = c.Read(b)
	return err == nil && b[0] == 'x'
}

// sleepCtx waits d; benchmarks let the measured process settle, they never wait
// on a condition this way.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
