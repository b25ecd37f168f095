package bench

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/porthole-dev/porthole/agent/wg"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/framework"
)

// WireGuardScale sizes the "wireguard" step.
type WireGuardScale struct {
	// Seconds is the length of one bulk transfer.
	Seconds float64
	// Pings is the number of ping-pong round trips per path.
	Pings int
	// Peers is how many phones are active at the relay for its memory per peer.
	Peers int
}

// Tunnel addresses of the step: the agent and its phones.
var wgTunnel = netip.MustParsePrefix("10.77.0.1/24")

// WireGuard measures TCP from a phone to a camera through WireGuard, and
// back: the camera is a sink process (readall backend), or a source, behind
// the agent, the phone is
// wireguard-go with agent/wg's userspace stack in this process (a real phone
// has its kernel's stack), configured from `porthole-agent invite`. Via the
// relay, the phone sends to the relay's UDP port, which forwards to the agent
// through its tunnel; direct, to the agent's own UDP port. As root the relay
// runs in a network namespace of its own behind a veth pair, both binding
// the one port number, and a real wireguard-go phone is measured too
// (kernelPhone); without root the relay shares the host and the agent takes
// listen_port.
// Beside them, a direct TCP connection to the same sink in the same run.
func WireGuard(ctx context.Context, bins Bins, s WireGuardScale) []Figure {
	names := map[string]string{"relay": "WireGuard via relay, phone -> camera TCP", "direct": "WireGuard direct, phone -> camera TCP"}
	fail := func(err error) []Figure {
		return []Figure{errorFigure(names["relay"], err), errorFigure(names["direct"], err)}
	}
	sink, sinkAddr, err := startBackendProcess(ctx, bins, "readall")
	if err != nil {
		return fail(err)
	}
	defer sink.Kill()
	echo, echoAddr, err := startBackendProcess(ctx, bins, "echo")
	if err != nil {
		return fail(err)
	}
	defer echo.Kill()
	source, sourceAddr, err := startBackendProcess(ctx, bins, "source", "-size", strconv.FormatInt(1<<50, 10))
	if err != nil {
		return fail(err)
	}
	defer source.Kill()
	iperfAddr := "127.0.0.1:9" // nothing there: no iperf3, no real phone figures
	if bins.Iperf3 != "" {
		srv, err := startIperfServer(ctx, bins.Iperf3)
		if err != nil {
			return fail(err)
		}
		defer srv.close()
		iperfAddr = srv.addr
	}
	st, err := startWGStack(ctx, bins, sinkAddr, echoAddr, sourceAddr, iperfAddr)
	if err != nil {
		return fail(err)
	}
	defer st.close()
	// every invite first: the running agent picks them up at once
	for i := range 3 + s.Peers {
		inv, err := st.invite(ctx, i)
		if err != nil {
			return fail(err)
		}
		st.invites = append(st.invites, inv)
	}

	var figs []Figure
	directTCP, err := bulk(ctx, tcpDialer(sinkAddr), s.Seconds, true)
	if err != nil {
		return fail(fmt.Errorf("direct TCP: %w", err))
	}
	directDown, err := bulk(ctx, tcpDialer(sourceAddr), s.Seconds, false)
	if err != nil {
		return fail(fmt.Errorf("direct TCP: %w", err))
	}
	directRTT, err := pingPong(ctx, echoAddr, s.Pings)
	if err != nil {
		return fail(fmt.Errorf("direct TCP: %w", err))
	}
	paths := []struct {
		name, target string
		goal         float64
		ep           netip.AddrPort
	}{
		{"relay", ">= 300 Mbit/s", 300, st.relayEP},
		{"direct", ">= 500 Mbit/s", 500, st.directEP},
	}
	for i, p := range paths {
		ph, err := st.phone(ctx, i, p.ep)
		if err != nil {
			figs = append(figs, errorFigure(names[p.name], err))
			continue
		}
		r0, a0, _ := st.cpu()
		res, err := bulk(ctx, ph.dialer(st.ports[0]), s.Seconds, true)
		r1, a1, _ := st.cpu()
		if err != nil {
			ph.close()
			figs = append(figs, errorFigure(names[p.name], err))
			continue
		}
		gb := float64(res.bytes) / 1e9
		f := Figure{Name: names[p.name], Value: res.mbps(), Unit: "Mbit/s", Direct: directTCP.mbps(), Ratio: res.mbps() / directTCP.mbps(),
			Target: p.target, Pass: res.mbps() >= p.goal,
			Note: fmt.Sprintf("%d MiB in %.1fs, one way; CPU per GB: agent %.2f s, relay %.2f s; the phone (wireguard-go + agent/wg's netstack) is this process; direct = plain TCP to the same sink",
				res.bytes>>20, res.elapsed.Seconds(), (a1-a0).Seconds()/gb, (r1-r0).Seconds()/gb)}
		if p.name == "direct" {
			f.Note = fmt.Sprintf("%d MiB in %.1fs, one way; CPU per GB: agent %.2f s; direct = plain TCP to the same sink",
				res.bytes>>20, res.elapsed.Seconds(), (a1-a0).Seconds()/gb)
		}
		figs = append(figs, f)
		downName := strings.Replace(names[p.name], "phone -> camera", "camera -> phone", 1)
		r0, a0, _ = st.cpu()
		s0 := st.stack(ctx)
		res, err = bulk(ctx, ph.dialer(st.ports[2]), s.Seconds, false)
		r1, a1, _ = st.cpu()
		s1 := st.stack(ctx)
		if err != nil {
			figs = append(figs, errorFigure(downName, err))
		} else {
			gb = float64(res.bytes) / 1e9
			figs = append(figs, Figure{Name: downName, Value: res.mbps(), Unit: "Mbit/s", Direct: directDown.mbps(), Ratio: res.mbps() / directDown.mbps(),
				Note: fmt.Sprintf("%d MiB in %.1fs from a source process; CPU per GB: agent %.2f s, relay %.2f s (zero on the direct path); direct = plain TCP from the same source; %s; %s",
					res.bytes>>20, res.elapsed.Seconds(), (a1-a0).Seconds()/gb, (r1-r0).Seconds()/gb, timeline(res.perSec), stackDelta(s0, s1))})
		}
		c, err := ph.dialer(st.ports[1])(ctx)
		var rtts []time.Duration
		if err == nil {
			rtts, err = pingPongConn(ctx, c, s.Pings)
			c.Close()
		}
		ph.close()
		name := "added RTT p50 inside WireGuard, " + p.name + ", 64 B ping-pong"
		if err != nil {
			figs = append(figs, errorFigure(name, err))
			continue
		}
		d, t := percentile(directRTT, 50), percentile(rtts, 50)
		figs = append(figs, Figure{Name: name, Value: micros(t - d), Unit: "µs", Direct: micros(d), Ratio: float64(t) / float64(d),
			Note: fmt.Sprintf("through %.0f µs vs direct TCP RTT; %d samples each; p99 %.0f µs through", micros(t), len(rtts), micros(percentile(rtts, 99)))})
	}
	figs = append(figs, st.kernelPhone(ctx, s, 2)...)
	if st.relayEP.IsValid() {
		figs = append(figs, st.relayPerPeer(ctx, s.Peers))
	}
	return figs
}

// tcpDialer dials addr over plain TCP (the baseline).
func tcpDialer(addr string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// bulkResult is one timed one-way transfer.
type bulkResult struct {
	bytes   int64
	elapsed time.Duration
	perSec  []float64 // Mbit/s moved in each whole second
}

func (r bulkResult) mbps() float64 { return float64(r.bytes) * 8 / r.elapsed.Seconds() / 1e6 }

// bulk moves data one way for seconds on a connection from dial. up: it sends
// zeros to a readall sink, half-closes and waits for its count (the time runs
// until the sink has read every byte); down: it reads from a source.
func bulk(ctx context.Context, dial func(context.Context) (net.Conn, error), seconds float64, up bool) (bulkResult, error) {
	c, err := dial(ctx)
	if err != nil {
		return bulkResult{}, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	move, what := c.Read, "receive"
	if up {
		move, what = c.Write, "send"
	}
	buf := make([]byte, 64<<10)
	var n, mark int64
	var perSec []float64
	start := time.Now()
	end, next := start.Add(time.Duration(seconds*float64(time.Second))), start.Add(time.Second)
	for now := start; now.Before(end); now = time.Now() {
		if !now.Before(next) {
			perSec = append(perSec, float64(n-mark)*8/1e6)
			mark, next = n, next.Add(time.Second)
		}
		k, err := move(buf)
		n += int64(k)
		if err != nil {
			return bulkResult{}, fmt.Errorf("%s: %w", what, err)
		}
	}
	if !up {
		return bulkResult{bytes: n, elapsed: time.Since(start), perSec: perSec}, nil
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return bulkResult{}, errors.New("connection cannot half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		return bulkResult{}, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	el := time.Since(start)
	if err != nil {
		return bulkResult{}, fmt.Errorf("sink's count: %w", err)
	}
	if got, _, _ := strings.Cut(line, " "); got != strconv.FormatInt(n, 10) {
		return bulkResult{}, fmt.Errorf("sink read %s bytes, %d sent", got, n)
	}
	return bulkResult{bytes: n, elapsed: el, perSec: perSec}, nil
}

// wgStack is a relay (in a namespace of its own when root) and an agent with
// a wireguard: section, a sink and an echo service, and one invite.
type wgStack struct {
	relay, agent *framework.Process
	dir          string
	ports        [4]int // the sink's, the echo's, the source's and iperf3's public ports
	agentKey     wg.Key
	agentCfg     string
	bins         Bins
	relayEP      netip.AddrPort // the relay's WireGuard port
	directEP     netip.AddrPort // the agent's
	noNetns      error          // why the relay shares the host (no real phone then)
	relayNS      string         // the relay's network namespace
	iperfAddr    string         // the iperf3 server behind the agent
	admin        string         // the agent's admin endpoint
	cleanup      []func()
	invites      []phoneInvite
}

// phoneInvite is what `porthole-agent invite` printed for one phone.
type phoneInvite struct {
	priv, agent wg.Key
	addr        netip.Addr
}

func startWGStack(ctx context.Context, bins Bins, sinkAddr, echoAddr, sourceAddr, iperfAddr string) (*wgStack, error) {
	dir, err := os.MkdirTemp("", "porthole-bench-wg-")
	if err != nil {
		return nil, err
	}
	st := &wgStack{dir: dir, bins: bins, iperfAddr: iperfAddr}
	fail := func(err error) (*wgStack, error) { st.close(); return nil, fmt.Errorf("bench: wireguard: %w", err) }
	rport, err := framework.FreePort("both")
	if err != nil {
		return fail(err)
	}
	wgPort, err := framework.FreePort("udp")
	if err != nil {
		return fail(err)
	}
	for i := range st.ports {
		if st.ports[i], err = framework.FreePort("tcp"); err != nil {
			return fail(err)
		}
	}
	relayHost, listenPort := "127.0.0.1", wgPort
	var prefix []string
	ns, nsIP, cleanup, err := relayNetns(ctx)
	if err != nil {
		// The relay shares the host: the agent takes a UDP port of its own
		// (listen_port), as behind a router that maps port to another one.
		st.noNetns = err
		if listenPort, err = framework.FreePort("udp"); err != nil {
			return fail(err)
		}
	} else {
		st.cleanup = append(st.cleanup, cleanup)
		st.relayNS, relayHost, prefix = ns, nsIP, []string{"ip", "netns", "exec", ns}
	}
	aport, err := framework.FreePort("tcp")
	if err != nil {
		return fail(err)
	}
	st.admin = framework.Addr(aport)
	tok := config.NewToken()
	lo, hi := slices.Min(st.ports[:]), slices.Max(st.ports[:])
	rc := framework.RelayConfig{Listen: net.JoinHostPort(relayHost, strconv.Itoa(rport)), ViewerBind: relayHost, StateDir: filepath.Join(dir, "relay-state"),
		Agents: []framework.RelayAgent{{Name: "home", Token: tok, Lo: lo, Hi: hi, Extra: fmt.Sprintf("udp_ports: %d\n", wgPort)}}}
	relayCfg, err := framework.WriteFile(dir, "relay.yaml", rc.YAML())
	if err != nil {
		return fail(err)
	}
	ac := framework.AgentConfig{Name: "home", StateDir: filepath.Join(dir, "agent-state"), Relay: rc.Listen, Token: tok,
		Services: []framework.Service{{Name: "cam", Target: sinkAddr, Port: st.ports[0]}, {Name: "echo", Target: echoAddr, Port: st.ports[1]},
			{Name: "source", Target: sourceAddr, Port: st.ports[2]}, {Name: "iperf3", Target: iperfAddr, Port: st.ports[3]}},
		Extra: "admin: " + st.admin + "\nviewers:\n  alice: {password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"}\n" +
			fmt.Sprintf("wireguard:\n  port: %d\n  listen_port: %d\n  address: %s\n  endpoint: 127.0.0.1:%d\n", wgPort, listenPort, wgTunnel, wgPort)}
	if st.agentCfg, err = framework.WriteFile(dir, "agent.yaml", ac.YAML()); err != nil {
		return fail(err)
	}
	if st.relay, err = framework.Start(framework.Spec{Name: "relay", Path: bins.Relay, Args: []string{"-config", relayCfg},
		Prefix: append(prefix, dropNetAdmin()...), MaxOutput: 4 << 20}); err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := st.relay.WaitOutput(wctx, "relay listening"); err != nil {
		return fail(fmt.Errorf("%w\n%s", err, framework.TailLines(st.relay.Output(), 20)))
	}
	if st.agent, err = framework.Start(framework.Spec{Name: "agent", Path: bins.Agent, Args: []string{"-config", st.agentCfg},
		Prefix: dropNetAdmin(), MaxOutput: 4 << 20}); err != nil {
		return fail(err)
	}
	if err := st.relay.WaitOutput(wctx, "WireGuard port forwarded"); err != nil {
		return fail(fmt.Errorf("relay: %w\nrelay:\n%s\nagent:\n%s", err, framework.TailLines(st.relay.Output(), 20), framework.TailLines(st.agent.Output(), 20)))
	}
	st.relayEP = netip.AddrPortFrom(netip.MustParseAddr(relayHost), uint16(wgPort))
	st.directEP = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(listenPort))
	return st, nil
}

// netnsID names this run's namespaces and picks their subnets.
var netnsID = os.Getpid() % 10000

// relayNetns makes a network namespace for the relay, joined to this one by a
// veth pair, and returns its name and address; root only. There relay and
// agent bind the same WireGuard port number, as on two machines.
func relayNetns(ctx context.Context) (ns, addr string, cleanup func(), err error) {
	if os.Geteuid() != 0 {
		return "", "", nil, errors.New("the real phone needs root (network namespaces for it and the relay)")
	}
	id, sub := netnsID, 1+netnsID%250
	ns, host, peer := fmt.Sprintf("pbwg%d", id), fmt.Sprintf("pbwg%dh", id), fmt.Sprintf("pbwg%dn", id)
	hostIP, nsIP := fmt.Sprintf("10.231.%d.1", sub), fmt.Sprintf("10.231.%d.2", sub)
	cleanup = func() { ipQuiet("netns", "del", ns); ipQuiet("link", "del", host) }
	cleanup() // a previous run's leftovers
	err = ipRun(ctx, cleanup,
		[]string{"netns", "add", ns},
		[]string{"link", "add", host, "type", "veth", "peer", "name", peer},
		[]string{"link", "set", peer, "netns", ns},
		[]string{"addr", "add", hostIP + "/30", "dev", host},
		[]string{"link", "set", host, "up"},
		[]string{"-n", ns, "addr", "add", nsIP + "/30", "dev", peer},
		[]string{"-n", ns, "link", "set", peer, "up"},
		[]string{"-n", ns, "link", "set", "lo", "up"})
	return ns, nsIP, cleanup, err
}

// ipRun runs ip with each argument list in turn; on a failure it calls
// cleanup and says which.
func ipRun(ctx context.Context, cleanup func(), cmds ...[]string) error {
	for _, args := range cmds {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			cleanup()
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func ipQuiet(args ...string) { exec.Command("ip", args...).Run() }

func (st *wgStack) cpu() (relay, agent time.Duration, err error) {
	r, err1 := st.relay.CPUTime()
	a, err2 := st.agent.CPUTime()
	return r, a, errors.Join(err1, err2)
}

// stack reads the agent's userspace TCP counters (status.json); zero if it
// cannot.
func (st *wgStack) stack(ctx context.Context) wg.StackStats {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var doc struct {
		WireGuard struct {
			Stack wg.StackStats `json:"stack"`
		} `json:"wireguard"`
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+st.admin+"/status.json", nil)
	if err != nil {
		return wg.StackStats{}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return wg.StackStats{}
	}
	defer resp.Body.Close()
	json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&doc)
	return doc.WireGuard.Stack
}

// stackDelta says what the agent's stack counted between a and b, for a
// figure's note.
func stackDelta(a, b wg.StackStats) string {
	return fmt.Sprintf("agent TCP: %d segments sent, %d retransmitted, %d timeouts, %d fast / %d SACK / %d TLP recoveries, %d queue drops",
		b.TCPSegmentsSent-a.TCPSegmentsSent, b.TCPRetransmits-a.TCPRetransmits, b.TCPTimeouts-a.TCPTimeouts,
		b.TCPFastRecovery-a.TCPFastRecovery, b.TCPSACKRecovery-a.TCPSACKRecovery, b.TCPTLPRecovery-a.TCPTLPRecovery, b.QueueDrops-a.QueueDrops)
}

func (st *wgStack) close() {
	for _, p := range []*framework.Process{st.agent, st.relay} {
		if p != nil {
			keepLog(p)
		}
	}
	for _, f := range st.cleanup {
		f()
	}
	os.RemoveAll(st.dir)
}

// keepLog stops p; it writes p's output to $PORTHOLE_BENCH_LOGS/NAME.log, if that is set:
// a bench run's daemons' logs, for a figure that needs explaining.
func keepLog(p *framework.Process) {
	dir := os.Getenv("PORTHOLE_BENCH_LOGS")
	if dir == "" {
		p.Kill()
		return
	}
	p.Stop() // a clean exit writes a profile (PORTHOLE_CPUPROFILE)
	if err := os.WriteFile(filepath.Join(dir, p.Name+".log"), []byte(p.Output()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "bench: keep log:", err)
	}
}

// invite runs `porthole-agent invite` for phone i and reads the config it
// prints: the phone's key and address, the agent's key.
func (st *wgStack) invite(ctx context.Context, i int) (inv phoneInvite, err error) {
	out, err := exec.CommandContext(ctx, st.bins.Agent, "-config", st.agentCfg, "invite", fmt.Sprintf("phone%d", i), "-viewer", "alice").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return inv, fmt.Errorf("invite: %w", err)
	}
	q, err := framework.ParseWGQuick(string(out))
	if err != nil {
		return inv, fmt.Errorf("invite: %w", err)
	}
	inv = phoneInvite{priv: wg.Key(q.PrivateKey), agent: wg.Key(q.PeerKey), addr: q.Address.Addr()}
	if inv.priv.IsZero() || inv.agent.IsZero() || !inv.addr.IsValid() {
		return inv, fmt.Errorf("invite printed no PrivateKey, PublicKey and Address:\n%s", out)
	}
	return inv, nil
}

// wgPhone is a phone in this process: wireguard-go on a UDP socket with
// agent/wg's netstack.
type wgPhone struct {
	dev *device.Device
	ns  *wg.Netstack
}

// phone brings invited phone i up towards ep; the agent picks the invite up
// within its poll (the first dial waits for the handshake).
func (st *wgStack) phone(ctx context.Context, i int, ep netip.AddrPort) (*wgPhone, error) {
	priv, agent, addr := st.invites[i].priv, st.invites[i].agent, st.invites[i].addr
	ns, err := wg.NewNetstack([]netip.Addr{addr}, wg.MTU)
	if err != nil {
		return nil, err
	}
	dev := device.NewDevice(ns, conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=%s\n", hex.EncodeToString(priv[:]), hex.EncodeToString(agent[:]), ep, wgTunnel.Masked())
	if err := dev.IpcSet(uapi); err != nil {
		dev.Close()
		return nil, err
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, err
	}
	p := &wgPhone{dev: dev, ns: ns}
	// The agent reloads its invites on a poll, and a handshake is retried
	// every 5 s: wait for the first connection.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for wctx.Err() == nil {
		actx, acancel := context.WithTimeout(wctx, 3*time.Second)
		c, err := p.dialer(st.ports[1])(actx)
		acancel()
		if err == nil {
			c.Close()
			return p, nil
		}
		last = err
	}
	p.close()
	return nil, fmt.Errorf("phone %d: no connection through WireGuard to %s: %v", i, ep, last)
}

func (p *wgPhone) dialer(port int) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		return p.ns.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(wgTunnel.Addr(), uint16(port)))
	}
}

func (p *wgPhone) close() { p.dev.Close() }

// relayPerPeer brings n phones up through the relay, each with a connection
// and a few round trips, and reports the relay's RSS growth per active phone.
func (st *wgStack) relayPerPeer(ctx context.Context, n int) Figure {
	name := fmt.Sprintf("relay RSS per active WireGuard phone (%d phones)", n)
	before, err := st.relay.RSS()
	if err != nil {
		return errorFigure(name, err)
	}
	r0, _, _ := st.cpu()
	start := time.Now()
	var phones []*wgPhone
	defer func() {
		for _, p := range phones {
			p.close()
		}
	}()
	for i := range n {
		p, err := st.phone(ctx, 3+i, st.relayEP)
		if err != nil {
			return errorFigure(name, err)
		}
		phones = append(phones, p)
		c, err := p.dialer(st.ports[1])(ctx)
		if err == nil {
			_, err = pingPongConn(ctx, c, 10)
			c.Close()
		}
		if err != nil {
			return errorFigure(name, err)
		}
	}
	after, err := st.relay.RSS()
	if err != nil {
		return errorFigure(name, err)
	}
	r1, _, _ := st.cpu()
	per := float64(after-before) / float64(n)
	return Figure{Name: name, Value: per, Unit: "KiB", Direct: NoBaseline, Ratio: NoBaseline,
		Note: fmt.Sprintf("VmRSS %d -> %d KiB; relay CPU %.1f ms per phone for its handshake, a connection and 10 round trips (%.1fs for all)",
			before, after, float64((r1-r0).Microseconds())/1e3/float64(n), time.Since(start).Seconds())}
}

// kernelPhone measures with the faithful phone: Debian's wireguard-go in a
// network namespace of its own, with the kernel's TCP, configured from invite
// i, running iperf3 through the tunnel to an iperf3 server behind the agent,
// each way, direct (to the agent's port over a veth pair to this namespace)
// and via the relay (over a veth pair to the relay's namespace). Root, iperf3,
// wireguard-go and wg.
func (st *wgStack) kernelPhone(ctx context.Context, s WireGuardScale, i int) []Figure {
	const name = "WireGuard, real wireguard-go phone (kernel TCP), iperf3"
	_, err1 := exec.LookPath("wireguard-go")
	_, err2 := exec.LookPath("wg")
	switch {
	case st.relayNS == "":
		return []Figure{skipFigure(name, st.noNetns)}
	case st.bins.Iperf3 == "" || err1 != nil || err2 != nil:
		return []Figure{skipFigure(name, errors.New("needs iperf3, wireguard-go and wg (apt-get install iperf3 wireguard-go wireguard-tools)"))}
	}
	id, sub := netnsID, 1+netnsID%250
	ns, hostEnd, phoneEnd := fmt.Sprintf("pbwg%dp", id), fmt.Sprintf("pbwg%dph", id), fmt.Sprintf("pbwg%dpn", id)
	phoneR, relayEnd := fmt.Sprintf("pbwg%dpr", id), fmt.Sprintf("pbwg%drp", id)
	hostIP, phoneIP := fmt.Sprintf("10.232.%d.1", sub), fmt.Sprintf("10.232.%d.2", sub)
	prIP, rpIP := fmt.Sprintf("10.233.%d.1", sub), fmt.Sprintf("10.233.%d.2", sub)
	iface := fmt.Sprintf("wgpb%d", id) // its UAPI socket is on the host's /var/run/wireguard: unique
	cleanup := func() { ipQuiet("netns", "del", ns); ipQuiet("link", "del", hostEnd) }
	cleanup()
	defer cleanup()
	if err := ipRun(ctx, cleanup,
		[]string{"netns", "add", ns},
		[]string{"-n", ns, "link", "set", "lo", "up"},
		[]string{"link", "add", hostEnd, "type", "veth", "peer", "name", phoneEnd},
		[]string{"link", "set", phoneEnd, "netns", ns},
		[]string{"addr", "add", hostIP + "/30", "dev", hostEnd},
		[]string{"link", "set", hostEnd, "up"},
		[]string{"-n", ns, "addr", "add", phoneIP + "/30", "dev", phoneEnd},
		[]string{"-n", ns, "link", "set", phoneEnd, "up"},
		[]string{"link", "add", phoneR, "type", "veth", "peer", "name", relayEnd},
		[]string{"link", "set", phoneR, "netns", ns},
		[]string{"link", "set", relayEnd, "netns", st.relayNS},
		[]string{"-n", ns, "addr", "add", prIP + "/30", "dev", phoneR},
		[]string{"-n", ns, "link", "set", phoneR, "up"},
		[]string{"-n", st.relayNS, "addr", "add", rpIP + "/30", "dev", relayEnd},
		[]string{"-n", st.relayNS, "link", "set", relayEnd, "up"},
		[]string{"-n", ns, "route", "add", st.relayEP.Addr().String() + "/32", "via", rpIP},
	); err != nil {
		return []Figure{errorFigure(name, err)}
	}
	inNS := []string{"ip", "netns", "exec", ns}
	wgp, err := framework.Start(framework.Spec{Name: "wireguard-go", Path: "wireguard-go", Args: []string{"-f", iface}, Prefix: inNS, MaxOutput: 1 << 20})
	if err != nil {
		return []Figure{errorFigure(name, err)}
	}
	defer wgp.Kill()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := framework.PollContext(wctx, 20*time.Millisecond, func() bool {
		return exec.Command("ip", "-n", ns, "link", "show", iface).Run() == nil
	}); err != nil {
		return []Figure{errorFigure(name, fmt.Errorf("wireguard-go did not make %s: %w\n%s", iface, err, wgp.Output()))}
	}
	inv := st.invites[i]
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\n", inv.priv, inv.agent, wgTunnel.Masked())
	confPath, err := framework.WriteFile(st.dir, "phone.conf", conf)
	if err != nil {
		return []Figure{errorFigure(name, err)}
	}
	if err := ipRun(ctx, func() {},
		[]string{"netns", "exec", ns, "wg", "setconf", iface, confPath},
		[]string{"-n", ns, "addr", "add", inv.addr.String() + "/32", "dev", iface},
		[]string{"-n", ns, "link", "set", iface, "mtu", strconv.Itoa(wg.MTU), "up"},
		[]string{"-n", ns, "route", "add", wgTunnel.Masked().String(), "dev", iface},
	); err != nil {
		return []Figure{errorFigure(name, err)}
	}
	target := net.JoinHostPort(wgTunnel.Addr().String(), strconv.Itoa(st.ports[3]))
	var figs []Figure
	var baseline [2]float64 // plain iperf3 to the same server, each way
	for i, reverse := range []bool{false, true} {
		res, err := iperfRun(ctx, st.bins.Iperf3, st.iperfAddr, s.Seconds, 1, reverse)
		if err != nil {
			return []Figure{errorFigure(name, fmt.Errorf("direct iperf3: %w", err))}
		}
		baseline[i] = res.gbps * 1000
	}
	for _, p := range []struct{ path, ep string }{
		{"relay", st.relayEP.String()},
		{"direct", netip.AddrPortFrom(netip.MustParseAddr(hostIP), st.directEP.Port()).String()},
	} {
		if err := ipRun(ctx, func() {}, []string{"netns", "exec", ns, "wg", "set", iface, "peer", inv.agent.String(), "endpoint", p.ep}); err != nil {
			return append(figs, errorFigure(name, err))
		}
		for d, reverse := range []bool{false, true} {
			fname := fmt.Sprintf("WireGuard %s, real wireguard-go phone -> camera, iperf3", p.path)
			if reverse {
				fname = fmt.Sprintf("WireGuard %s, camera -> real wireguard-go phone, iperf3 -R", p.path)
			}
			r0, a0, _ := st.cpu()
			w0, _ := wgp.CPUTime()
			s0 := st.stack(ctx)
			res, err := iperfRunIn(ctx, inNS, st.bins.Iperf3, target, s.Seconds, 1, reverse)
			r1, a1, _ := st.cpu()
			s1 := st.stack(ctx)
			w1, _ := wgp.CPUTime()
			if err != nil {
				figs = append(figs, errorFigure(fname, err))
				continue
			}
			gb := float64(res.bytes) / 1e9
			cpu := fmt.Sprintf("agent %.2f s", (a1-a0).Seconds()/gb)
			if p.path == "relay" {
				cpu += fmt.Sprintf(", relay %.2f s", (r1-r0).Seconds()/gb)
			}
			f := Figure{Name: fname, Value: res.gbps * 1000, Unit: "Mbit/s", Direct: baseline[d], Ratio: res.gbps * 1000 / baseline[d],
				Note: fmt.Sprintf("%d MiB in %.1fs; CPU per GB: %s, the phone's wireguard-go %.2f s; iperf3 client in the phone's namespace, server on loopback behind the agent; direct = plain iperf3 to the same server; %s; %s",
					res.bytes>>20, res.secs, cpu, (w1-w0).Seconds()/gb, timeline(res.perSec), stackDelta(s0, s1))}
			if !reverse {
				f.Target, f.Pass = ">= 300 Mbit/s", f.Value >= 300
				if p.path == "direct" {
					f.Target, f.Pass = ">= 500 Mbit/s", f.Value >= 500
				}
			}
			figs = append(figs, f)
		}
	}
	return figs
}
