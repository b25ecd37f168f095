package relay

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// DefaultGCHeadroom is the relay's default for LimitGCHeadroom: what the heap
// may grow by between collections once the relay holds more than this much live
// state. Below that, Go's GOGC=100 rule (grow by the live heap) is the smaller
// bound and applies unchanged, so a relay with few agents moving bulk data
// collects exactly as often as with Go's defaults.
const DefaultGCHeadroom = 4 << 20

// headroomShare: the headroom is at least 1/headroomShare of what the relay
// holds, so a large busy relay collects at most as often as with GOGC=12.5
// rather than once per few MiB over hundreds of MiB. It adds 1/8 to each
// agent's marginal RSS (about 11 KiB).
const headroomShare = 8

// gcTuner is the state of LimitGCHeadroom; one per process, as the limit is.
var gcTuner struct {
	mu       sync.Mutex // guards the fields below
	headroom int64
	gen      uint64 // bumped by each start and stop; a stale cleanup chain ends
	running  atomic.Uint64
}

// LimitGCHeadroom caps the heap's growth between garbage collections at
// headroom bytes over what the relay holds after the last collection, by
// setting a soft memory limit (debug.SetMemoryLimit) again after each one.
//
// Why: with GOGC alone the heap grows by as much as is live before the next
// collection, and the pages stay resident, so idle state costs twice its size
// in RSS. A relay's live state is mostly idle tunnels (quic-go connection and
// TLS state, goroutine stacks): make bench measured 89-122 KiB of RSS per idle
// agent at GOGC=100 against 75-90 KiB of live heap and stacks. GOGC=25 bought
// the difference with four times as many collections while data moves; this
// bounds the headroom instead of scaling it, so a relay with little live state
// (the usual bulk transfer: one agent, pooled buffers) collects as often as with
// Go's defaults, and many idle agents no longer double in RSS.
//
// The headroom is at least 1/8 of what the relay holds (see headroomShare): with
// thousands of idle agents and data moving, collections cost CPU in proportion
// to the live state, and a fixed headroom would make them ever more frequent.
//
// GOGC still applies (the lower of both goals wins). Call the returned stop to
// restore the limit that was set before. Calling it again replaces the headroom.
func LimitGCHeadroom(headroom int64) (stop func()) {
	gcTuner.mu.Lock()
	gcTuner.headroom = headroom
	gcTuner.gen++
	gen := gcTuner.gen
	gcTuner.mu.Unlock()
	prev := debug.SetMemoryLimit(-1)
	gcTuner.running.Store(gen)
	updateMemoryLimit(gen)
	armGCHook(gen)
	var once sync.Once
	return func() {
		once.Do(func() {
			gcTuner.mu.Lock()
			defer gcTuner.mu.Unlock()
			if gcTuner.gen != gen {
				return // replaced by a later call
			}
			gcTuner.gen++
			gcTuner.running.Store(0)
			debug.SetMemoryLimit(prev)
		})
	}
}

// gcSentinel is allocated once per GC cycle; its cleanup runs after the
// collection that found it unreachable. It has a pointer and is over 16 bytes
// so it is not batched by the tiny allocator (whose cleanups may never run).
type gcSentinel struct {
	_ [2]*byte
	_ [16]byte
}

// armGCHook schedules updateMemoryLimit after the next collection, and again
// after each following one, until gen is no longer the running generation.
func armGCHook(gen uint64) {
	s := &gcSentinel{}
	runtime.AddCleanup(s, func(gen uint64) {
		if gcTuner.running.Load() != gen {
			return
		}
		updateMemoryLimit(gen)
		armGCHook(gen)
	}, gen)
}

var gcSamples = []metrics.Sample{
	{Name: "/memory/classes/total:bytes"},
	{Name: "/memory/classes/heap/released:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/gc/heap/live:bytes"},
}

// updateMemoryLimit sets the limit to what the process holds now (all the
// memory the runtime has mapped, less pages it could hand back and less heap
// objects that are dead) plus the headroom.
func updateMemoryLimit(gen uint64) {
	gcTuner.mu.Lock()
	defer gcTuner.mu.Unlock()
	if gcTuner.gen != gen {
		return
	}
	held := heldMemory()
	limit := held + max(gcTuner.headroom, held/headroomShare)
	if limit <= 0 {
		limit = math.MaxInt64
	}
	debug.SetMemoryLimit(limit)
}

// heldMemory is what the runtime holds that the GC can't give back: mapped
// memory less free and released pages and less heap objects found dead by the
// last collection (stacks, runtime metadata and fragmentation stay in).
func heldMemory() int64 {
	s := make([]metrics.Sample, len(gcSamples))
	copy(s, gcSamples)
	metrics.Read(s)
	v := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	total, released, free, objects, live := v(0), v(1), v(2), v(3), v(4)
	dead := max(objects-live, 0)
	return total - released - free - dead
}
