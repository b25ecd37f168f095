package relay_test

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/relay"
)

func heapGoal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// sink keeps the test's "live state" reachable.
var sink [][]byte

// TestGCHeadroomCapped is the finding of issue #7 that the relay needed GOGC=25
// for its memory target: with GOGC=100 the heap may grow by as much as is live
// before the next collection, so idle state costs twice its size. With
// LimitGCHeadroom the goal is the live heap plus the headroom (at least 1/8 of
// the live state), while GOGC stays 100. (Without the cap this test fails: the
// goal is about twice the live heap.)
func TestGCHeadroomCapped(t *testing.T) {
	for _, live := range []int{24 << 20, 96 << 20} {
		t.Run(fmt.Sprintf("%dMiB", live>>20), func(t *testing.T) { testGCHeadroom(t, live) })
	}
}

func testGCHeadroom(t *testing.T, live int) {
	const headroom = 4 << 20
	// slack: what the runtime holds besides the heap (stacks, metadata) is in
	// the limit but not in the heap goal
	want := uint64(live + max(headroom, live/8) + 2<<20)
	if pct := debug.SetGCPercent(100); pct != 100 {
		defer debug.SetGCPercent(pct)
	}
	sink = make([][]byte, live>>20)
	for i := range sink {
		sink[i] = make([]byte, 1<<20)
	}
	defer func() { sink = nil }()
	runtime.GC()
	uncapped := heapGoal()
	if uncapped < uint64(2*live*9/10) {
		t.Fatalf("without a cap the heap goal is %d MiB; expected about twice the %d MiB live", uncapped>>20, live>>20)
	}

	prev := debug.SetMemoryLimit(-1)
	stop := relay.LimitGCHeadroom(headroom)
	// The limit follows each collection (a cleanup runs after it): wait for one.
	deadline := time.Now().Add(10 * time.Second)
	var goal uint64
	for {
		runtime.GC()
		goal = heapGoal()
		if goal <= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // let the cleanup goroutine run
	}
	t.Logf("heap goal with %d MiB live: %d MiB uncapped, %d MiB with %d MiB headroom", live>>20, uncapped>>20, goal>>20, headroom>>20)
	if goal > want {
		t.Errorf("heap goal %d MiB with the cap, want at most %d MiB (live %d MiB + headroom)", goal>>20, want>>20, live>>20)
	}
	if goal < uint64(live) {
		t.Errorf("heap goal %d MiB is below the live heap %d MiB: the GC would run without pause", goal>>20, live>>20)
	}

	// The limit follows the live state: more of it raises the limit at the next
	// collection (the hook, not only the first computation, is at work).
	before := debug.SetMemoryLimit(-1)
	more := make([][]byte, 16)
	for i := range more {
		more[i] = make([]byte, 1<<20)
	}
	sink = append(sink, more...)
	var after int64
	for deadline := time.Now().Add(10 * time.Second); ; {
		runtime.GC()
		after = debug.SetMemoryLimit(-1)
		if after >= before+12<<20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if after < before+12<<20 {
		t.Errorf("memory limit went from %d to %d MiB after 16 MiB more live state; want it to follow", before>>20, after>>20)
	}
	stop()
	if got := debug.SetMemoryLimit(-1); got != prev {
		t.Errorf("after stop the memory limit is %d, want the previous %d", got, prev)
	}
	if prev != math.MaxInt64 {
		t.Logf("memory limit before the test: %d", prev)
	}
}
