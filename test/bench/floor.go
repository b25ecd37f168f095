package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
)

// FloorPkg is cmd/floor: the smallest relay and agent on a tunnel library
// alone (quic-go, or TLS over TCP with yamux), measured beside Porthole so that
// the report says how much of the added round trip is the library's own.
const FloorPkg = "test/bench/cmd/floor"

// floorLabel names the library a transport's floor pair runs on.
func floorLabel(transport string) string {
	if transport == "tcp" {
		return "TLS+yamux alone"
	}
	return "quic-go alone"
}

// FloorPair is a running cmd/floor relay and agent.
type FloorPair struct {
	// ViewerAddr is where viewers connect, as a Stack's.
	ViewerAddr string

	relay, agent *framework.Process
}

// Close stops both processes.
func (f *FloorPair) Close() {
	if f.agent != nil {
		f.agent.Kill()
	}
	if f.relay != nil {
		f.relay.Kill()
	}
}

// StartFloor starts cmd/floor's relay and agent over transport ("quic" or
// "tcp"), each stream connected to target. Like the daemons they run without
// CAP_NET_ADMIN, and with GOMAXPROCS=1: what internal/procs gives the daemons
// at a ping-pong's load.
func StartFloor(ctx context.Context, bins Bins, target, transport string) (*FloorPair, error) {
	fail := func(f *FloorPair, err error) (*FloorPair, error) {
		f.Close()
		return nil, fmt.Errorf("bench: floor %s: %w", transport, err)
	}
	f := &FloorPair{}
	network := map[string]string{"quic": "udp", "tcp": "tcp"}[transport]
	if network == "" {
		return fail(f, fmt.Errorf("unknown transport"))
	}
	viewerPort, err := framework.FreePort("tcp")
	if err != nil {
		return fail(f, err)
	}
	tunnelPort, err := framework.FreePort(network)
	if err != nil {
		return fail(f, err)
	}
	f.ViewerAddr = framework.Addr(viewerPort)
	tunnel := framework.Addr(tunnelPort)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	spec := func(role string, args ...string) framework.Spec {
		return framework.Spec{Name: "floor-" + role, Path: bins.Floor, Env: []string{"GOMAXPROCS=1"}, Prefix: dropNetAdmin(), MaxOutput: 1 << 20,
			Args: append([]string{"-role", role, "-transport", transport, "-tunnel", tunnel}, args...)}
	}
	if f.relay, err = framework.Start(spec("relay", "-listen", f.ViewerAddr)); err != nil {
		return fail(f, err)
	}
	if err := f.relay.WaitOutput(wctx, "floor relay ready"); err != nil {
		return fail(f, err)
	}
	if f.agent, err = framework.Start(spec("agent", "-target", target)); err != nil {
		return fail(f, err)
	}
	if err := f.agent.WaitOutput(wctx, "floor agent ready"); err != nil {
		return fail(f, err)
	}
	if !framework.EchoWorks(f.ViewerAddr) {
		return fail(f, fmt.Errorf("no echo through the pair"))
	}
	return f, nil
}

// floorLatency is one run of the added round trip of cmd/floor's pair over
// transport, measured as latencyFor measures Porthole's.
func floorLatency(ctx context.Context, bins Bins, echoAddr, transport string, n int) []Figure {
	name := fmt.Sprintf("added RTT p50, %s, %s", strings.ToUpper(transport), floorLabel(transport))
	f, err := StartFloor(ctx, bins, echoAddr, transport)
	if err != nil {
		return []Figure{errorFigure(name, err)}
	}
	defer f.Close()
	direct, through, err := rttHalves(ctx, echoAddr, f.ViewerAddr, n, func(measure func() error) error { return measure() })
	if err != nil {
		return []Figure{errorFigure(name, err)}
	}
	d, t := percentile(direct, 50), percentile(through, 50)
	return []Figure{{Name: name, Value: micros(t - d), Unit: "µs", Direct: micros(d), Ratio: float64(t) / float64(d),
		Note: fmt.Sprintf("the smallest relay and agent on %s (test/bench/cmd/floor: io.Copy per stream, GOMAXPROCS=1), same run; through %.0f µs; %d samples each",
			floorLabel(transport), micros(t), len(through))}}
}

// AddedRTT is one added round-trip p50, in µs, of variant on fresh processes
// and a fresh echo backend: "porthole" or "porthole-tcp" for the daemons as
// make bench starts them, "quic" or "tcp" for cmd/floor's pair. cmd/floor's
// compare mode interleaves variants with it.
func AddedRTT(ctx context.Context, bins Bins, variant string, n int) (float64, error) {
	echoP, echoAddr, err := startEchoProcess(ctx, bins)
	if err != nil {
		return 0, err
	}
	defer echoP.Kill()
	viewerAddr := ""
	if tr, ok := strings.CutPrefix(variant, "porthole"); ok {
		if tr = strings.TrimPrefix(tr, "-"); tr == "" {
			tr = "quic"
		}
		st, err := StartStack(ctx, StackConfig{Bins: bins, Target: echoAddr, Transport: tr})
		if err != nil {
			return 0, err
		}
		defer st.Close()
		viewerAddr = st.ViewerAddr
	} else {
		f, err := StartFloor(ctx, bins, echoAddr, variant)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		viewerAddr = f.ViewerAddr
	}
	direct, through, err := rttHalves(ctx, echoAddr, viewerAddr, n, func(measure func() error) error { return measure() })
	if err != nil {
		return 0, err
	}
	return micros(percentile(through, 50) - percentile(direct, 50)), nil
}
