package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// Scale sizes a run.
type Scale struct {
	// ThroughputBytes is the size of one bulk download (three per path).
	ThroughputBytes int64
	// Pings is the number of ping-pong round trips per path.
	Pings int
	// Agents is the number of idle agents for the memory figure.
	Agents int
	// Viewers and ViewerTime size the paced-camera run.
	Viewers    int
	ViewerTime time.Duration
	// Restarts is how many SIGKILL restarts to time; RestartJitter is the most
	// it waits before each kill, to hit different points of the heartbeat cycle.
	Restarts      int
	RestartJitter time.Duration
	// Settle is how long the relay process is left alone before each RSS reading.
	Settle time.Duration
}

// Full is the scale of `make bench`, the figures of the issue.
var Full = Scale{
	ThroughputBytes: 1 << 30, Pings: 20000, Agents: 200, Viewers: 200, ViewerTime: 10 * time.Second,
	Restarts: 5, RestartJitter: 2 * time.Second, Settle: 3 * time.Second,
}

// Smoke is small enough for CI; its numbers only show that everything runs.
var Smoke = Scale{
	ThroughputBytes: 16 << 20, Pings: 200, Agents: 10, Viewers: 10, ViewerTime: time.Second,
	Restarts: 1, RestartJitter: 0, Settle: 200 * time.Millisecond,
}

// Run measures every figure at scale s and prints the table to w, with progress
// lines to progress (nil = none).
func Run(ctx context.Context, s Scale, w, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	var figs []Figure
	step := func(what string, f func() []Figure) {
		fmt.Fprintf(progress, "measuring %s...\n", what)
		start := time.Now()
		figs = append(figs, f()...)
		fmt.Fprintf(progress, "  done in %.1fs\n", time.Since(start).Seconds())
	}
	step("bulk throughput", func() []Figure { return []Figure{Throughput(ctx, s.ThroughputBytes)} })
	step("ping-pong latency", func() []Figure { return Latency(ctx, s.Pings) })
	step("paced viewers", func() []Figure { return []Figure{Viewers(ctx, s.Viewers, s.ViewerTime)} })
	dir, err := os.MkdirTemp("", "porthole-bench-bin-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(progress, "building porthole-relay...")
	bin, err := BuildRelay(ctx, dir)
	if err != nil {
		figs = append(figs, errorFigure("relay binary", err))
	} else {
		step("relay memory per agent", func() []Figure { return []Figure{MemoryPerAgent(ctx, bin, s.Agents, s.Settle)} })
		step("relay restart", func() []Figure { return Restart(ctx, bin, s.Restarts, s.RestartJitter) })
	}
	return WriteTable(w, figs)
}
