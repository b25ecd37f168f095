package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// startEchoProcess runs the framework's echo backend as a process of its own.
func startEchoProcess(ctx context.Context, bins Bins) (*framework.Process, string, error) {
	return startBackendProcess(ctx, bins, "echo")
}

// startBackendProcess runs the framework's backend in mode (echo, readall,
// ...) as a process of its own, with more flags in args.
func startBackendProcess(ctx context.Context, bins Bins, mode string, args ...string) (*framework.Process, string, error) {
	port, err := framework.FreePort("tcp")
	if err != nil {
		return nil, "", err
	}
	p, err := framework.Start(framework.Spec{Name: mode, Path: bins.Backend, Args: append([]string{"-listen", framework.Addr(port), "-mode", mode}, args...)})
	if err != nil {
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "backend listening"); err != nil {
		p.Kill()
		return nil, "", fmt.Errorf("bench: %w", err)
	}
	return p, framework.Addr(port), nil
}

// Latency measures 64-byte ping-pong round trips from this process to an echo
// process, directly and through a relay and an agent (separate processes), per
// transport, and reports the added p50 and p99. Like throughput, each figure
// is the median of rounds runs, each on a fresh relay and agent: where the
// processes land on the cores moves a run's p50 by tens of µs. After each of
// Porthole's runs the smallest relay and agent on the transport's library
// alone (cmd/floor) is measured the same way: the report says how much of the
// added round trip is the library's. With withFRP, frp over the same
// transport is measured too, and its median is what Porthole's is compared
// with.
func Latency(ctx context.Context, bins Bins, n, rounds int, withFRP bool) []Figure {
	echoP, echoAddr, err := startEchoProcess(ctx, bins)
	if err != nil {
		return []Figure{errorFigure("added RTT", err)}
	}
	defer echoP.Kill()
	fb, figs, frpErr := frpFor(withFRP, "added RTT")
	for _, tr := range bins.Transports {
		var runs, floorRuns, frpRuns [][]Figure
		for range max(rounds, 1) {
			runs = append(runs, latencyFor(ctx, bins, echoAddr, tr, n))
			floorRuns = append(floorRuns, floorLatency(ctx, bins, echoAddr, tr, n))
			if frpErr == nil {
				frpRuns = append(frpRuns, frpLatency(ctx, fb, echoAddr, tr, n))
			}
		}
		ours := medianRuns(runs)
		floor := medianRuns(floorRuns)
		if len(ours) > 0 && len(floor) > 0 && !math.IsNaN(ours[0].Value) && !math.IsNaN(floor[0].Value) {
			floor[0].Note += fmt.Sprintf("; Porthole's added p50 minus this: %+.0f µs", ours[0].Value-floor[0].Value)
		}
		theirs := medianRuns(frpRuns) // none without frp
		issueFRP := frpQUICRTT
		if tr == "tcp" {
			issueFRP = frpTCPRTT
		}
		for i := range ours {
			if ours[i].Target == "" {
				continue
			}
			ours[i].Compare = fmt.Sprintf("%s %.0f µs (issue)", frpLabel(tr), issueFRP)
			if len(theirs) > 0 && !math.IsNaN(theirs[0].Value) {
				ours[i].Compare = fmt.Sprintf("%s %.0f µs here, %.0f (issue)", frpLabel(tr), theirs[0].Value, issueFRP)
			}
		}
		figs = append(append(append(figs, ours...), floor...), theirs...)
	}
	return figs
}

// latencyFor is one run of Latency's figures for transport on a fresh stack.
func latencyFor(ctx context.Context, bins Bins, echoAddr, tr string, n int) []Figure {
	names := []string{"added RTT p50, " + strings.ToUpper(tr) + ", 64 B ping-pong", "added RTT p99, " + strings.ToUpper(tr) + ", 64 B ping-pong"}
	st, err := StartStack(ctx, StackConfig{Bins: bins, Target: echoAddr, Transport: tr})
	if err != nil {
		return []Figure{errorFigure(names[0], err)}
	}
	defer st.Close()
	var rc, ac procCounters
	direct, through, err := rttHalves(ctx, echoAddr, st.ViewerAddr, n, func(measure func() error) error {
		r0, a0 := readCounters(st.Relay.Pid()), readCounters(st.Agent.Pid())
		err := measure()
		rc, ac = rc.add(readCounters(st.Relay.Pid()).sub(r0)), ac.add(readCounters(st.Agent.Pid()).sub(a0))
		return err
	})
	if err != nil {
		return []Figure{errorFigure(names[0], err)}
	}
	var figs []Figure
	for i, p := range []float64{50, 99} {
		d, t := percentile(direct, p), percentile(through, p)
		f := Figure{
			Name: names[i], Value: micros(t - d), Unit: "µs", Direct: micros(d), Ratio: float64(t) / float64(d),
			Note: fmt.Sprintf("through %.0f µs vs direct RTT; %d samples each; relay, agent and echo are separate processes; per round trip: relay %s, agent %s",
				micros(t), len(through), rc.per(float64(len(through))), ac.per(float64(len(through)))),
		}
		if p == 50 {
			f.Target, f.Pass = "< 150 µs added", t-d < 150*time.Microsecond
		}
		figs = append(figs, f)
	}
	return figs
}

// rttHalves runs n ping-pongs directly to echoAddr and n through viewerAddr,
// in alternating halves so that both paths see the same machine load; around
// each half through viewerAddr it calls wrap.
func rttHalves(ctx context.Context, echoAddr, viewerAddr string, n int, wrap func(measure func() error) error) (direct, through []time.Duration, err error) {
	for range 2 {
		d, err := pingPong(ctx, echoAddr, n/2)
		if err != nil {
			return nil, nil, err
		}
		direct = append(direct, d...)
		err = wrap(func() error {
			t, err := pingPong(ctx, viewerAddr, n/2)
			through = append(through, t...)
			return err
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return direct, through, nil
}

// frpLatency is Latency's p50 figure for frp over transport.
func frpLatency(ctx context.Context, fb frpBins, echoAddr, transport string, n int) []Figure {
	name := fmt.Sprintf("added RTT p50, %s, 64 B ping-pong", frpLabel(transport))
	st, err := startFRP(ctx, fb, echoAddr, transport)
	if err != nil {
		return []Figure{errorFigure(name, err)}
	}
	defer st.Close()
	direct, through, err := rttHalves(ctx, echoAddr, st.ViewerAddr, n, func(measure func() error) error { return measure() })
	if err != nil {
		return []Figure{errorFigure(name, err)}
	}
	d, t := percentile(direct, 50), percentile(through, 50)
	return []Figure{{Name: name, Value: micros(t - d), Unit: "µs", Direct: micros(d), Ratio: float64(t) / float64(d),
		Note: fmt.Sprintf("frp v0.65.0 beside Porthole, same run; through %.0f µs, p99 added %.0f µs; %d samples each; frps, frpc and echo are separate processes",
			micros(t), micros(percentile(through, 99)-percentile(direct, 99)), len(through))}}
}

// gogcSettings are the relay's GC settings measured for memory and (QUIC, one
// stream) throughput: the relay's default (GOGC=100 with its heap headroom
// capped, see relay.LimitGCHeadroom), Go's GOGC=100 rule alone (GOMEMLIMIT=off
// turns the cap off), and the GOGC=25 the relay main set before issue #7.
var gogcSettings = []struct {
	label string
	env   []string
}{
	{"default", nil},
	{"GOGC=100 without headroom cap", []string{"GOGC=100", "GOMEMLIMIT=off"}},
	{"GOGC=25 without headroom cap", []string{"GOGC=25", "GOMEMLIMIT=off"}},
}

// MemoryPerAgent runs the relay with n+1 agents configured and connected (each
// a porthole-agent process with one service) and reports the relay's RSS growth
// per agent, for each GC setting.
func MemoryPerAgent(ctx context.Context, bins Bins, n int, settle time.Duration) []Figure {
	var figs []Figure
	for _, g := range gogcSettings {
		name := fmt.Sprintf("relay RSS per idle agent (%d agents, %s)", n, g.label)
		f, err := memoryPerAgent(ctx, bins, n, settle, g.env)
		if err != nil {
			f = errorFigure(name, err)
		}
		f.Name = name
		figs = append(figs, f)
	}
	return figs
}

func memoryPerAgent(ctx context.Context, bins Bins, n int, settle time.Duration, env []string) (Figure, error) {
	st, err := StartStack(ctx, StackConfig{Bins: bins, Target: "127.0.0.1:9", RelayEnv: env, Agents: n})
	if err != nil {
		return Figure{}, err
	}
	defer st.Close()
	if err := framework.Sleep(ctx, settle); err != nil {
		return Figure{}, err
	}
	before, err := st.Relay.RSS()
	if err != nil {
		return Figure{}, err
	}
	if err := st.StartIdleAgents(ctx); err != nil {
		return Figure{}, err
	}
	if err := framework.Sleep(ctx, settle); err != nil {
		return Figure{}, err
	}
	after, err := st.Relay.RSS()
	if err != nil {
		return Figure{}, err
	}
	per := float64(after-before) / float64(n)
	return Figure{
		Value: per, Unit: "KiB", Direct: NoBaseline, Ratio: NoBaseline,
		Target: "< 100 KiB", Pass: per < 100,
		Note: fmt.Sprintf("VmRSS %d -> %d KiB, read %s after the last agent connected", before, after, settle),
	}, nil
}

// IdleViewers opens n viewer connections through the relay to one agent's
// echo service, each sending a byte and reading it back (so every stream
// reached the agent), spread over several 127.0.0.x source addresses, and
// reports the relay's RSS with all of them idle, for each GC setting.
func IdleViewers(ctx context.Context, bins Bins, n int, settle time.Duration) []Figure {
	var figs []Figure
	for _, g := range gogcSettings {
		name := fmt.Sprintf("relay RSS with %d idle viewers (%s)", n, g.label)
		f, err := idleViewers(ctx, bins, n, settle, g.env)
		if err != nil {
			f = errorFigure(name, err)
		}
		f.Name = name
		figs = append(figs, f)
	}
	return figs
}

func idleViewers(ctx context.Context, bins Bins, n int, settle time.Duration, env []string) (Figure, error) {
	echo, err := framework.Serve("127.0.0.1:0", framework.Echo)
	if err != nil {
		return Figure{}, err
	}
	defer echo.Close()
	// All n viewers go to one service: lift the per-service cap (1024 by
	// default) of the relay and of the agent (relayed streams pass its gateway
	// too), or the figure counts refused connections instead of memory.
	const noServiceCap = "limits:\n  max_conns_per_service: -1\n"
	st, err := StartStack(ctx, StackConfig{Bins: bins, Target: echo.Addr(), RelayEnv: env, RelayExtra: noServiceCap, AgentExtra: noServiceCap})
	if err != nil {
		return Figure{}, err
	}
	defer st.Close()
	if err := framework.Sleep(ctx, settle); err != nil {
		return Figure{}, err
	}
	before, err := st.Relay.RSS()
	if err != nil {
		return Figure{}, err
	}
	// 20 viewers per source address: a per-address cap must not turn the
	// figure into one of refused connections
	const perSource = 20
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{LocalAddr: viewerSource(i, perSource), Timeout: 10 * time.Second}
			c, err := d.DialContext(ctx, "tcp", st.ViewerAddr)
			if err != nil {
				errs[i] = err
				return
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			b := []byte{byte(i)}
			if _, err := c.Write(b); err == nil {
				_, err = io.ReadFull(c, b)
			}
			if err != nil {
				c.Close()
				errs[i] = err
				return
			}
			c.SetDeadline(time.Time{})
			conns[i] = c
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	ok := 0
	var firstErr error
	for i := range n {
		if errs[i] == nil {
			ok++
		} else if firstErr == nil {
			firstErr = errs[i]
		}
	}
	if err := framework.Sleep(ctx, settle); err != nil {
		return Figure{}, err
	}
	after, err := st.Relay.RSS()
	if err != nil {
		return Figure{}, err
	}
	open := 0
	for _, c := range conns {
		if c != nil && stillOpen(c) {
			open++
		}
	}
	mib := float64(after) / 1024
	f := Figure{
		Value: mib, Unit: "MiB", Direct: NoBaseline, Ratio: NoBaseline,
		Target: "< 128 MiB, all served", Pass: mib < 128 && ok == n && open == n,
		Note: fmt.Sprintf("VmRSS %d -> %d KiB (%.1f KiB per viewer); %d/%d viewers served from %d source addresses, %d still open at the reading",
			before, after, float64(after-before)/float64(max(ok, 1)), ok, n, (n+perSource-1)/perSource, open),
	}
	if firstErr != nil {
		f.Note += "; first error: " + firstErr.Error()
	}
	return f, nil
}

// UDPBuffers measures QUIC throughput (camera->viewer, P1) with
// net.core.rmem_max/wmem_max at the kernel's default, the machine's setting and
// at 7.5 MiB, the
// relay and agent running without CAP_NET_ADMIN so that the limit applies as
// it does for a service user. Root only; the settings are restored after.
func UDPBuffers(ctx context.Context, bins Bins, secs float64) []Figure {
	const name = "QUIC throughput camera->viewer -P1, UDP buffers"
	switch {
	case bins.Iperf3 == "":
		return []Figure{skipFigure(name, ErrNoIperf3)}
	case os.Geteuid() != 0:
		return []Figure{skipFigure(name, errors.New("needs root to change net.core.rmem_max/wmem_max"))}
	case len(dropNetAdmin()) == 0:
		return []Figure{skipFigure(name, errors.New("setpriv not found (util-linux): can't drop CAP_NET_ADMIN, quic-go would force its buffers"))}
	}
	keys := []string{"net.core.rmem_max", "net.core.wmem_max"}
	orig := map[string]string{}
	for _, k := range keys {
		v, err := readSysctl(k)
		if err != nil {
			return []Figure{errorFigure(name, err)}
		}
		orig[k] = v
	}
	defer func() {
		for _, k := range keys {
			writeSysctl(k, orig[k])
		}
	}()
	srv, err := startIperfServer(ctx, bins.Iperf3)
	if err != nil {
		return []Figure{errorFigure(name, err)}
	}
	defer srv.close()
	origBytes, _ := strconv.Atoi(orig[keys[0]])
	var figs []Figure
	// The machine's setting, the 7.5 MiB the issue asks about, and the
	// kernel's default of 208 KiB (a fresh VPS): quic-go wants 7 MiB of
	// SO_RCVBUF as getsockopt reports it, which is twice the set value, so it
	// is content from rmem_max 3.5 MiB up and short below.
	for _, size := range []int{212992, origBytes, 7<<20 + 512<<10} {
		label := fmt.Sprintf(" (rmem/wmem_max %.2f MiB)", float64(size)/(1<<20))
		for _, k := range keys {
			if err := writeSysctl(k, strconv.Itoa(size)); err != nil {
				return append(figs, errorFigure(name, err))
			}
		}
		got := throughputFor(ctx, bins, srv, "quic", secs, []int{1}, []bool{true}, nil, label)
		for i := range got {
			got[i].Target, got[i].Compare = "", "" // the targets are judged in the main figures
		}
		figs = append(figs, got...)
	}
	return figs
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		return "", fmt.Errorf("bench: sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(key, value string) error {
	if out, err := exec.Command("sysctl", "-q", "-w", key+"="+value).CombinedOutput(); err != nil {
		return fmt.Errorf("bench: sysctl -w %s=%s: %w: %s", key, value, err, out)
	}
	return nil
}

// Restart kills the relay with SIGKILL n times and measures, from the moment
// the restarted relay says it listens, how long until a viewer gets an echo
// through the agent's service again.
func Restart(ctx context.Context, bins Bins, n int, jitter time.Duration) []Figure {
	names := []string{"relay restart -> service answers, median", "relay restart -> service answers, max"}
	fail := func(err error) []Figure { return []Figure{errorFigure(names[0], err), errorFigure(names[1], err)} }
	echo, err := framework.Serve("127.0.0.1:0", framework.Echo)
	if err != nil {
		return fail(err)
	}
	defer echo.Close()
	st, err := StartStack(ctx, StackConfig{Bins: bins, Target: echo.Addr()})
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	if _, err := waitAnswers(ctx, st.ViewerAddr, 10*time.Second); err != nil {
		return fail(err)
	}
	var times []time.Duration
	for range n {
		// kill at a random point of the agent's heartbeat cycle
		if err := framework.Sleep(ctx, rand.N(jitter+1)); err != nil {
			return fail(err)
		}
		st.KillRelay()
		if err := st.StartRelay(ctx); err != nil {
			return fail(err)
		}
		back := time.Now()
		at, err := waitAnswers(ctx, st.ViewerAddr, 30*time.Second)
		if err != nil {
			return fail(err)
		}
		times = append(times, at.Sub(back))
	}
	med, worst := percentile(times, 50), percentile(times, 100)
	note := fmt.Sprintf("%d SIGKILL restarts: %s s", n, secondsList(times))
	return []Figure{
		{Name: names[0], Value: med.Seconds(), Unit: "s", Direct: NoBaseline, Ratio: NoBaseline, Target: "< 1 s", Pass: med < time.Second, Note: note},
		{Name: names[1], Value: worst.Seconds(), Unit: "s", Direct: NoBaseline, Ratio: NoBaseline, Target: "<= 3 s", Pass: worst <= 3*time.Second},
	}
}

// AgentKilled kills the agent with SIGKILL n times while a viewer is
// connected through the relay and measures how long until the viewer's
// connection ends (reset or closed) and until the relay's listener for the
// agent's service is closed. A wait is cut at limit and counted as limit.
func AgentKilled(ctx context.Context, bins Bins, n int, limit time.Duration) []Figure {
	names := []string{"agent killed -> viewer reset, max", "agent killed -> relay listener closed, max"}
	fail := func(err error) []Figure { return []Figure{errorFigure(names[0], err), errorFigure(names[1], err)} }
	echo, err := framework.Serve("127.0.0.1:0", framework.Echo)
	if err != nil {
		return fail(err)
	}
	defer echo.Close()
	st, err := StartStack(ctx, StackConfig{Bins: bins, Target: echo.Addr()})
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	var resets, closes []time.Duration
	cut := 0
	for i := range n {
		if i > 0 {
			if err := st.StartAgent(ctx); err != nil {
				return fail(err)
			}
		}
		c, err := net.DialTimeout("tcp", st.ViewerAddr, 5*time.Second)
		if err != nil {
			return fail(err)
		}
		b := []byte{'x'}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(b); err == nil {
			_, err = io.ReadFull(c, b)
		}
		if err != nil {
			c.Close()
			return fail(fmt.Errorf("bench: viewer before the kill: %w", err))
		}
		st.KillAgent()
		killed := time.Now()
		reset := make(chan time.Duration, 1)
		go func() {
			c.SetDeadline(killed.Add(limit))
			_, err := c.Read(b)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				reset <- limit
				return
			}
			reset <- time.Since(killed)
		}()
		port := tcpPort(st.ViewerAddr)
		pctx, cancel := context.WithDeadline(ctx, killed.Add(limit))
		perr := framework.PollContext(pctx, 10*time.Millisecond, func() bool {
			ok, err := st.Relay.Listening("tcp", port)
			return err == nil && !ok
		})
		cancel()
		closed := time.Since(killed)
		if perr != nil {
			closed = limit
		}
		r := <-reset
		c.Close()
		if r >= limit || closed >= limit {
			cut++
		}
		resets, closes = append(resets, min(r, limit)), append(closes, min(closed, limit))
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		// the relay must be without the agent's listener before the next round
		if closed >= limit && i < n-1 {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			framework.PollContext(wctx, 50*time.Millisecond, func() bool { ok, _ := st.Relay.Listening("tcp", port); return !ok })
			cancel()
		}
	}
	note := func(xs []time.Duration) string {
		s := fmt.Sprintf("%d SIGKILLs: %s s", n, secondsList(xs))
		if cut > 0 {
			s += fmt.Sprintf("; %d cut at the %s limit", cut, limit)
		}
		return s
	}
	rmax, cmax := percentile(resets, 100), percentile(closes, 100)
	return []Figure{
		{Name: names[0], Value: rmax.Seconds(), Unit: "s", Direct: NoBaseline, Ratio: NoBaseline, Target: "<= 5 s", Pass: rmax <= 5*time.Second && rmax < limit, Note: note(resets)},
		{Name: names[1], Value: cmax.Seconds(), Unit: "s", Direct: NoBaseline, Ratio: NoBaseline, Target: "<= 5 s", Pass: cmax <= 5*time.Second && cmax < limit, Note: note(closes)},
	}
}

// stillOpen reports whether an idle connection has neither been closed nor
// reset by the other side (a read finds nothing within a millisecond).
func stillOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func secondsList(xs []time.Duration) string {
	var l []string
	for _, t := range xs {
		l = append(l, fmt.Sprintf("%.2f", t.Seconds()))
	}
	return strings.Join(l, " ")
}

// waitAnswers polls viewer every few milliseconds until a byte echoes through it,
// returning when that happened.
func waitAnswers(ctx context.Context, viewer string, limit time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := framework.PollContext(ctx, 5*time.Millisecond, func() bool { return answers(viewer) }); err != nil {
		return time.Time{}, fmt.Errorf("bench: %s did not answer within %s: %w", viewer, limit, err)
	}
	return time.Now(), nil
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

// viewerSource is the loopback source address of the i-th of many viewers, perSource
// of them on each (127.0.1.1, 127.0.1.2, ...): real viewers come from many
// addresses, and the daemons' per-address cap (64 by default) must not turn a
// figure into one of refused connections.
func viewerSource(i, perSource int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/perSource/250), byte(1+i/perSource%250))}
}

// StartBackend runs the framework's backend in mode as a process of its own
// and returns it with its address (for tools such as rttprobe).
func StartBackend(ctx context.Context, bins Bins, mode string, args ...string) (*framework.Process, string, error) {
	return startBackendProcess(ctx, bins, mode, args...)
}
