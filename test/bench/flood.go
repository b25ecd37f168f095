package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/porthole-dev/porthole/test/flood"
	"github.com/porthole-dev/porthole/test/framework"
)

// FloodScale sizes the "floods" step.
type FloodScale struct {
	// Window is how long the viewers are measured without a flood, and at
	// least how long each flood runs while they are measured again.
	Window time.Duration
	// IdleConns is the idle flood's connections from one address.
	IdleConns int
	// Handshakes is the pre-authentication flood's QUIC handshakes, and as
	// many TCP connects.
	Handshakes int
}

// floodViewers are the two viewers each flood must not disturb: one of
// another agent, one of another service of the flooded agent, each from an
// address of its own.
var floodViewers = []struct {
	label, from string
	addr        func(*flood.Rig) string
}{
	{"viewer of another agent", "127.0.0.3", func(r *flood.Rig) string { return r.B1 }},
	{"viewer of another service", "127.0.0.2", func(r *flood.Rig) string { return r.A2 }},
}

// Floods runs each flood of issue #7 (probe flood, idle connections from one
// address, unauthenticated handshakes) against a fresh relay with two agents
// and reports, for a viewer of another agent and of another service, the echo
// round trip's p50 and p99 during the flood beside the same viewer's just
// before it, in the same run. PASS means every round trip of that viewer
// succeeded throughout (no timing target).
func Floods(ctx context.Context, bins Bins, s FloodScale) []Figure {
	var figs []Figure
	for _, f := range []struct {
		name string
		run  func(ctx context.Context, r *flood.Rig, window time.Duration) (string, error)
	}{
		{"probe flood", func(ctx context.Context, r *flood.Rig, window time.Duration) (string, error) {
			fctx, cancel := context.WithTimeout(ctx, window)
			defer cancel()
			res := flood.Probes(fctx, flood.ProbeConfig{Relay: r.RelayAddr, Agent: r.Flooder, Target: r.ProbeTarget})
			if res.Sessions == 0 {
				return "", fmt.Errorf("probe flood: no session: %s", res)
			}
			return res.String(), nil
		}},
		{fmt.Sprintf("%d idle conns, one address", s.IdleConns), func(ctx context.Context, r *flood.Rig, window time.Duration) (string, error) {
			fl := flood.StartIdle(ctx, flood.IdleConfig{From: "127.0.0.1", Addr: r.A1, Conns: s.IdleConns})
			start := time.Now()
			err := framework.PollContext(ctx, 50*time.Millisecond, func() bool {
				return fl.Stats().Dialed >= s.IdleConns && time.Since(start) >= window
			})
			res := fl.Stop()
			if err != nil {
				return "", fmt.Errorf("idle flood: %w: %s", err, res)
			}
			return res.String(), nil
		}},
		{fmt.Sprintf("%d+%d unauthenticated handshakes", s.Handshakes, s.Handshakes), func(ctx context.Context, r *flood.Rig, window time.Duration) (string, error) {
			start := time.Now()
			res := flood.PreAuth(ctx, flood.PreAuthConfig{Relay: r.RelayAddr, QUIC: s.Handshakes, TCP: s.Handshakes, Parallel: s.Handshakes})
			if err := ctx.Err(); err != nil {
				return "", err
			}
			// measure at least a full window, like the baseline
			framework.Sleep(ctx, window-time.Since(start))
			return res.String(), nil
		}},
	} {
		figs = append(figs, floodFigures(ctx, bins, s.Window, f.name, f.run)...)
	}
	return figs
}

// floodFigures measures the viewers for window without a flood, then during
// run, on a rig of its own.
func floodFigures(ctx context.Context, bins Bins, window time.Duration, name string,
	run func(context.Context, *flood.Rig, time.Duration) (string, error)) []Figure {
	figName := func(v, p string) string { return fmt.Sprintf("%s: %s echo RTT %s", name, v, p) }
	fail := func(err error) []Figure {
		var figs []Figure
		for _, v := range floodViewers {
			figs = append(figs, errorFigure(figName(v.label, "p50"), err))
		}
		return figs
	}
	dir, err := os.MkdirTemp("", "porthole-bench-flood-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	rig, err := flood.StartRig(ctx, flood.RigConfig{Relay: bins.Relay, Agent: bins.Agent, Dir: dir, Prefix: dropNetAdmin()})
	if err != nil {
		return fail(err)
	}
	defer rig.Close()
	viewers := make([]*flood.Viewer, len(floodViewers))
	for i, v := range floodViewers {
		viewers[i] = flood.WatchViewer(ctx, flood.ViewerConfig{From: v.from, Addr: v.addr(rig), Every: time.Millisecond})
		defer viewers[i].Stop()
	}
	if err := framework.Sleep(ctx, window); err != nil {
		return fail(err)
	}
	quiet := make([]flood.ViewerReport, len(viewers))
	for i, v := range viewers {
		quiet[i] = v.Report()
		v.Reset()
	}
	what, err := run(ctx, rig, window)
	if err != nil {
		return fail(errors.Join(err, errors.New(framework.TailLines(rig.Relay.Output(), 5))))
	}
	var figs []Figure
	for i, v := range floodViewers {
		during := viewers[i].Stop()
		for _, p := range []float64{50, 99} {
			f := Figure{Name: figName(v.label, fmt.Sprintf("p%.0f", p)), Unit: "µs",
				Value:  micros(percentile(during.RTTs, p)),
				Direct: micros(percentile(quiet[i].RTTs, p)),
				Target: "served throughout", Pass: during.Served() && quiet[i].Served(),
				Note: "DIRECT = the same viewer just before the flood"}
			if p == 50 {
				f.Note += fmt.Sprintf("; during: %s; before: %s; flood: %s", during, quiet[i], what)
			}
			f.Ratio = f.Value / f.Direct
			if len(during.RTTs) == 0 || len(quiet[i].RTTs) == 0 {
				f.Value, f.Ratio = math.NaN(), math.NaN()
			}
			figs = append(figs, f)
		}
	}
	return figs
}
