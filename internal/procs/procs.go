// Package procs sizes the Go scheduler to a daemon's load: one P
// (GOMAXPROCS=1) while the work fits on one core, every core the runtime
// would use by default once it doesn't.
//
// Why: the relay and the agent move bytes through a pipeline of goroutines
// (socket reader, tunnel stream, QUIC's send loop, the other socket). With one
// P each hand-off runs the next goroutine on the same thread; with more, the
// runtime wakes another thread for it, and on a small VM every such wake-up is
// a context switch. make bench's benchab measured, Go's default on 2 cores
// against this, interleaved: one QUIC stream 1.31 -> 2.01 Gbit/s
// camera->viewer and 1.52 -> 1.84 viewer->camera, 18-25% less CPU per GB,
// added round trips 290 -> 218 µs (QUIC) and 297 -> 207 µs (TCP): 25-30%
// shorter. One P also caps a busy relay at one core, so Run watches how the
// daemon does and gives it all cores when one is not enough: when the process
// used half a core or more over a second and over 5% of its goroutines waited
// over 1 ms for the P (the runtime's scheduling latencies), and back to one
// after 10 s in a row under a quarter of a core.
//
// A GOMAXPROCS in the environment is the operator's choice: Run then does
// nothing.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/metrics"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval = time.Second
	// busyCPU is the share of one core (user and system time) over an
	// interval from which one P may be too few. Not a whole core: on a small
	// machine the daemon shares its core with others and never gets all of
	// it; whether it needs more shows in how long its goroutines wait.
	busyCPU = 0.5
	// waitThreshold and waitShare: one P counts as too few when more than
	// waitShare of the goroutines made runnable in the interval waited longer
	// than waitThreshold for it. A pipeline that fits on one core hands its
	// goroutines over in microseconds; many connections competing for the
	// core wait milliseconds.
	waitThreshold = 1 * time.Millisecond
	waitShare     = 0.05
	// quietCPU and quietIntervals: back to one P after quietIntervals in a
	// row below quietCPU of one core.
	quietCPU       = 0.25
	quietIntervals = 10
)

// Config says how Run samples.
type Config struct {
	// Interval between samples; DefaultInterval if zero.
	Interval time.Duration
	// Logger gets one line per change; nil: slog.Default().
	Logger *slog.Logger
}

// sample is the daemon's load over one interval.
type sample struct {
	// CPU is the cores the process used (user and system time over the
	// interval's length).
	CPU float64
	// Waited is the share of goroutine wake-ups that waited longer than
	// waitThreshold for a P.
	Waited float64
}

// policy is the decision, apart from its inputs: next takes a sample and says
// how many Ps to use.
type policy struct {
	// max is the count under load (the runtime's default).
	max int
	// procs is the count now; quiet counts intervals in a row below quietCPU.
	procs, quiet int
}

// newPolicy starts at one P.
func newPolicy(max int) *policy { return &policy{max: max, procs: 1} }

// next returns the P count for the coming interval after s.
func (p *policy) next(s sample) int {
	switch {
	case p.max <= 1:
		p.procs = 1
	case p.procs == 1:
		if s.CPU >= busyCPU && s.Waited >= waitShare {
			p.procs, p.quiet = p.max, 0
		}
	default:
		if s.CPU < quietCPU {
			p.quiet++
		} else {
			p.quiet = 0
		}
		if p.quiet >= quietIntervals {
			p.procs, p.quiet = 1, 0
		}
	}
	return p.procs
}

// Run applies the policy until ctx ends, then restores the runtime's default.
// It returns at once, doing nothing, when GOMAXPROCS is set in the
// environment or the runtime would use one P anyway.
func Run(ctx context.Context, cfg Config) {
	if os.Getenv("GOMAXPROCS") != "" || runtime.GOMAXPROCS(0) <= 1 {
		return
	}
	run(ctx, cfg, newMeter().sample)
}

// run is Run with the samples from measure.
func run(ctx context.Context, cfg Config, measure func() sample) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	pol := newPolicy(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(1)
	defer runtime.SetDefaultGOMAXPROCS()
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := measure()
		before := pol.procs
		n := pol.next(s)
		switch {
		case n == before:
		case n > 1:
			// the runtime's default again, which also follows later changes
			// of the CPU quota or affinity
			runtime.SetDefaultGOMAXPROCS()
			pol.max = runtime.GOMAXPROCS(0)
			pol.procs = pol.max
			log.Info("scheduler: one core is not enough, using all", "cores", pol.max,
				"cpu", round2(s.CPU), "waited_over_1ms", round2(s.Waited))
		default:
			runtime.GOMAXPROCS(1)
			log.Info("scheduler: the load fits on one core again, using one", "cpu", round2(s.CPU))
		}
	}
}

func round2(f float64) float64 { return float64(int(f*100+0.5)) / 100 }

// meter reads the process's CPU time and the runtime's scheduling latencies
// and turns their growth since the last read into a sample.
type meter struct {
	at      time.Time
	cpu     time.Duration
	latency []metrics.Sample
	counts  []uint64
}

func newMeter() *meter {
	m := &meter{latency: []metrics.Sample{{Name: "/sched/latencies:seconds"}}}
	m.sample()
	return m
}

func (m *meter) sample() sample {
	now, cpu := time.Now(), processCPU()
	metrics.Read(m.latency)
	var s sample
	if el := now.Sub(m.at); !m.at.IsZero() && el > 0 {
		s.CPU = float64(cpu-m.cpu) / float64(el)
	}
	m.at, m.cpu = now, cpu
	if m.latency[0].Value.Kind() != metrics.KindFloat64Histogram {
		return s
	}
	h := m.latency[0].Value.Float64Histogram()
	var total, slow uint64
	for i, c := range h.Counts {
		var d uint64
		if i < len(m.counts) {
			d = c - m.counts[i]
		}
		total += d
		// Buckets[i] is bucket i's lower bound
		if h.Buckets[i] >= waitThreshold.Seconds() {
			slow += d
		}
	}
	m.counts = append(m.counts[:0], h.Counts...)
	if total > 0 {
		s.Waited = float64(slow) / float64(total)
	}
	return s
}

// processCPU is the user and system time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
