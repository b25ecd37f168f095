package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Scale sizes a run.
type Scale struct {
	// IperfSeconds is the length of one iperf3 run; Parallels and Reverses
	// choose the runs (-P values; false/true for viewer->camera and -R,
	// camera->viewer).
	IperfSeconds float64
	Parallels    []int
	Reverses     []bool
	// ThroughputRounds is how many times the throughput step measures each
	// transport, each time on a fresh relay and agent; it reports each
	// figure's median (see medianRuns).
	ThroughputRounds int
	// Pings is the number of ping-pong round trips per path; LatencyRounds
	// how many times the latency step measures each transport, each time on
	// a fresh relay and agent, reporting each figure's median.
	Pings         int
	LatencyRounds int
	// Agents is the number of idle agents for the memory figure.
	Agents int
	// IdleViewers is the number of idle viewer connections for the memory figure.
	IdleViewers int
	// Viewers and ViewerTime size the paced-camera run.
	Viewers    int
	ViewerTime time.Duration
	// Restarts is how many SIGKILL restarts to time; RestartJitter is the most
	// it waits before each kill, to hit different points of the heartbeat cycle.
	Restarts      int
	RestartJitter time.Duration
	// AgentKills is how many agent SIGKILLs to time, each wait cut at AgentKillLimit.
	AgentKills     int
	AgentKillLimit time.Duration
	// UDPBuffers measures QUIC throughput at two net.core.rmem_max/wmem_max
	// settings (root only; changes the host's sysctl for the run).
	UDPBuffers bool
	// Settle is how long the relay process is left alone before each RSS reading.
	Settle time.Duration
	// Floods sizes the "floods" step.
	Floods FloodScale
	// HTTPS sizes the "https" and "login-storm" steps.
	HTTPS HTTPSScale
	// RTSP sizes the "rtsp-viewers", "rtsp-slow" and "data-cost" steps.
	RTSP RTSPScale
	// WireGuard sizes the "wireguard" step.
	WireGuard WireGuardScale
	// FRP measures frp (built from test/bench/frp) beside Porthole in the
	// throughput and latency steps, and judges Porthole's targets against it.
	FRP bool
	// Only, if set, names the steps to run (see Steps); empty runs all.
	Only []string
}

// Steps are the names of Run's measurements, in order, for Scale.Only.
var Steps = []string{"throughput", "latency", "viewers", "memory", "idle-viewers", "restart", "agent-killed", "udp-buffers", "floods", "https", "login-storm", "rtsp-viewers", "rtsp-slow", "data-cost", "wireguard"}

// Full is the scale of `make bench`, the figures of the issue.
var Full = Scale{
	IperfSeconds: 5, Parallels: []int{1, 4}, Reverses: []bool{true, false}, ThroughputRounds: 3,
	Pings: 20000, LatencyRounds: 3, Agents: 200, IdleViewers: 2000, Viewers: 200, ViewerTime: 10 * time.Second,
	Restarts: 5, RestartJitter: 2 * time.Second, AgentKills: 3, AgentKillLimit: 40 * time.Second,
	UDPBuffers: true, Settle: 3 * time.Second, FRP: true,
	Floods: FloodScale{Window: 5 * time.Second, IdleConns: 4000, Handshakes: 1000},
	HTTPS: HTTPSScale{FirstFrames: 50, Viewers: 100, ViewerTime: 10 * time.Second, FPS: 10, DownloadMiB: 128, Downloads: 6,
		StormAttempts: 1000, StormParallel: 50},
	RTSP:      RTSPScale{Viewers: 20, Bitrate: 4_000_000, FPS: 25, Fast: 10, SlowBitrate: 1_000_000, SlowMax: 60 * time.Second, Window: 10 * time.Second, DataWindow: 20 * time.Second},
	WireGuard: WireGuardScale{Seconds: 5, Pings: 2000, Peers: 20},
}

// Smoke is small enough for CI; its numbers only show that everything runs.
var Smoke = Scale{
	IperfSeconds: 1, Parallels: []int{1}, Reverses: []bool{true}, ThroughputRounds: 1,
	Pings: 200, LatencyRounds: 1, Agents: 5, IdleViewers: 50, Viewers: 10, ViewerTime: time.Second,
	Restarts: 1, AgentKills: 1, AgentKillLimit: 6 * time.Second, Settle: 200 * time.Millisecond,
	Floods: FloodScale{Window: 500 * time.Millisecond, IdleConns: 200, Handshakes: 50},
	HTTPS: HTTPSScale{FirstFrames: 3, Viewers: 3, ViewerTime: time.Second, FPS: 10, DownloadMiB: 4, Downloads: 1,
		StormAttempts: 20, StormParallel: 5},
	RTSP:      RTSPScale{Viewers: 3, Bitrate: 4_000_000, FPS: 25, Fast: 2, SlowBitrate: 1_000_000, SlowMax: time.Second, Window: time.Second, DataWindow: 2 * time.Second},
	WireGuard: WireGuardScale{Seconds: 1, Pings: 100, Peers: 2},
}

// Run builds the binaries, measures every figure at scale s and prints the
// table to w, with progress lines to progress (nil = none).
func Run(ctx context.Context, s Scale, w, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	load, started := loadAvg(), time.Now()
	fmt.Fprintln(progress, "building porthole-relay, porthole-agent and the echo backend...")
	bins, err := BuildBins()
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer removeFRP()
	if bins.Iperf3 == "" {
		fmt.Fprintf(progress, "\n*** %v ***\n\n", ErrNoIperf3)
	}
	fmt.Fprintf(progress, "transports: %s (tcp is measured once the agent accepts relay.transport: tcp)\n", strings.Join(bins.Transports, ", "))
	var figs []Figure
	step := func(what string, f func() []Figure) {
		if len(s.Only) > 0 && !slices.Contains(s.Only, what) {
			return
		}
		fmt.Fprintf(progress, "measuring %s...\n", what)
		start := time.Now()
		figs = append(figs, f()...)
		fmt.Fprintf(progress, "  done in %.1fs\n", time.Since(start).Seconds())
	}
	step("throughput", func() []Figure {
		return Throughput(ctx, bins, s.IperfSeconds, s.ThroughputRounds, s.Parallels, s.Reverses, s.FRP)
	})
	step("latency", func() []Figure { return Latency(ctx, bins, s.Pings, s.LatencyRounds, s.FRP) })
	step("viewers", func() []Figure { return []Figure{Viewers(ctx, bins, s.Viewers, s.ViewerTime)} })
	step("memory", func() []Figure { return MemoryPerAgent(ctx, bins, s.Agents, s.Settle) })
	step("idle-viewers", func() []Figure { return IdleViewers(ctx, bins, s.IdleViewers, s.Settle) })
	step("restart", func() []Figure { return Restart(ctx, bins, s.Restarts, s.RestartJitter) })
	step("agent-killed", func() []Figure { return AgentKilled(ctx, bins, s.AgentKills, s.AgentKillLimit) })
	if s.UDPBuffers {
		step("udp-buffers", func() []Figure { return UDPBuffers(ctx, bins, s.IperfSeconds) })
	}
	step("floods", func() []Figure { return Floods(ctx, bins, s.Floods) })
	step("https", func() []Figure { return HTTPS(ctx, bins, s.HTTPS) })
	step("login-storm", func() []Figure { return LoginStorm(ctx, bins, s.HTTPS.StormAttempts, s.HTTPS.StormParallel) })
	step("rtsp-viewers", func() []Figure { return RTSPViewers(ctx, bins, s.RTSP) })
	step("rtsp-slow", func() []Figure { return RTSPSlow(ctx, bins, s.RTSP) })
	step("data-cost", func() []Figure { return DataCost(ctx, bins, s.RTSP) })
	step("wireguard", func() []Figure { return WireGuard(ctx, bins, s.WireGuard) })
	fmt.Fprintf(w, "Porthole bench, %s; load average before the run: %s\n", started.UTC().Format("2006-01-02 15:04 MST"), load)
	if err := WriteTable(w, figs); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nfrp as issue #7 measured it (same kind of 2-core machine, another run; the rows above labelled frp are this run's): default TCP+TLS+yamux %.2f Gbit/s, QUIC %.2f Gbit/s, added RTT p50 %.0f µs (TCP) / %.0f µs (QUIC); Porthole before issue #7 %.2f Gbit/s; direct there %.1f Gbit/s.\n",
		frpTCPGbps, frpQUICGbps, frpTCPRTT, frpQUICRTT, issueOldGbps, issueDirect)
	return nil
}
