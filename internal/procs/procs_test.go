package procs

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPolicy(t *testing.T) {
	quiet := sample{CPU: 0.1}
	for _, tc := range []struct {
		name    string
		max     int
		samples []sample
		want    []int
	}{
		{"one stream keeps one core busy but nothing waits", 2,
			[]sample{{CPU: 0.95, Waited: 0.007}, {CPU: 1.0, Waited: 0.002}}, []int{1, 1}},
		{"many connections wait for the core", 2,
			[]sample{{CPU: 0.7, Waited: 0.7}}, []int{2}},
		{"a start-up blip: waits, but little CPU", 4,
			[]sample{{CPU: 0.01, Waited: 0.11}}, []int{1}},
		{"waits under the share", 2,
			[]sample{{CPU: 0.9, Waited: 0.04}}, []int{1}},
		{"back to one after ten quiet intervals", 2,
			append([]sample{{CPU: 0.8, Waited: 0.3}}, repeat(quiet, 10)...), append([]int{2}, append(repeat(2, 9), 1)...)},
		{"a busy interval restarts the quiet count", 2,
			append(append([]sample{{CPU: 0.8, Waited: 0.3}}, repeat(quiet, 9)...), append([]sample{{CPU: 0.3}}, repeat(quiet, 10)...)...),
			append(append([]int{2}, repeat(2, 9)...), append([]int{2}, append(repeat(2, 9), 1)...)...)},
		{"one core: nothing to decide", 1,
			[]sample{{CPU: 1, Waited: 0.9}}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPolicy(tc.max)
			for i, s := range tc.samples {
				if got := p.next(s); got != tc.want[i] {
					t.Fatalf("sample %d %+v: %d Ps, want %d", i, s, got, tc.want[i])
				}
			}
		})
	}
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// TestMeterSeesWaits: goroutines that compete for one P show up as CPU used and
// as scheduling waits over 1 ms: spinners hold the P for their time slices, and
// yielders queue behind them (many short runs, as the runtime tracks only some
// wake-ups).
func TestMeterSeesWaits(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	m := newMeter()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var x uint64
			for !stop.Load() {
				x += spin()
			}
			_ = x
		})
	}
	for range 20 {
		wg.Go(func() {
			for !stop.Load() {
				runtime.Gosched()
			}
		})
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	var x uint64
	for time.Now().Before(deadline) {
		x += spin()
	}
	_ = x
	stop.Store(true)
	wg.Wait()
	s := m.sample()
	if s.CPU <= 0 {
		t.Errorf("CPU %.2f cores, want > 0", s.CPU)
	}
	if s.Waited < waitShare {
		t.Errorf("%.3f of wake-ups waited over %v, want at least %.2f", s.Waited, waitThreshold, waitShare)
	}
}

// spin burns about a millisecond of CPU.
func spin() uint64 {
	x := uint64(1)
	for i := range 100000 {
		x += uint64(i) * x
	}
	return x
}

// TestRunAppliesPolicy runs the loop on scripted samples: one P at start, all
// of them under load, one again after the quiet spell, the default at the end.
func TestRunAppliesPolicy(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: nothing to size")
	}
	def := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(def)
	samples := make(chan sample)
	seen := make(chan int)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx, Config{Interval: time.Millisecond, Logger: slog.New(slog.DiscardHandler)}, func() sample {
			select {
			case seen <- runtime.GOMAXPROCS(0):
			case <-ctx.Done():
				return sample{}
			}
			select {
			case s := <-samples:
				return s
			case <-ctx.Done():
				return sample{}
			}
		})
	}()
	step := func(s sample) int {
		n := <-seen
		samples <- s
		return n
	}
	if n := step(sample{CPU: 0.8, Waited: 0.5}); n != 1 {
		t.Fatalf("at start: %d Ps, want 1", n)
	}
	for i := range quietIntervals {
		if n := step(sample{CPU: 0.1}); n != def {
			t.Fatalf("quiet interval %d under load: %d Ps, want %d", i, n, def)
		}
	}
	if n := step(sample{CPU: 0.1}); n != 1 {
		t.Fatalf("after the quiet spell: %d Ps, want 1", n)
	}
	cancel()
	<-done
	if n := runtime.GOMAXPROCS(0); n != def {
		t.Fatalf("after Run: %d Ps, want the default %d", n, def)
	}
}

// TestRunLeavesOperatorsChoice: GOMAXPROCS in the environment turns Run off:
// it returns at once instead of running until ctx ends.
func TestRunLeavesOperatorsChoice(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	before := runtime.GOMAXPROCS(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Interval: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept running with GOMAXPROCS set")
	}
	if n := runtime.GOMAXPROCS(0); n != before {
		t.Fatalf("GOMAXPROCS %d, want %d untouched", n, before)
	}
}
