package portmap

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test says so. The client's
// Run loop holds exactly one timer while it waits, so "a timer is pending"
// means "the loop is idle": waitIdle uses that to step the loop without sleeps.
type fakeClock struct {
	mu      sync.Mutex // guards the fields below
	now     time.Time
	timers  []*fakeTimer
	created int           // timers made so far
	changed chan struct{} // closed and replaced on every change
}

type fakeTimer struct {
	clk *fakeClock
	at  time.Time
	ch  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.created++
	t := &fakeTimer{clk: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
	} else {
		c.timers = append(c.timers, t)
	}
	c.notifyLocked()
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.clk
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			c.notifyLocked()
			return true
		}
	}
	return false
}

// Advance moves time forward, fires the timers that are due and reports whether any fired.
func (c *fakeClock) Advance(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	fired := false
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
		fired = true
	}
	c.timers = kept
	c.notifyLocked()
	return fired
}

// next returns when the earliest pending timer is due.
func (c *fakeClock) next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	at := c.timers[0].at
	for _, t := range c.timers[1:] {
		if t.at.Before(at) {
			at = t.at
		}
	}
	return at, true
}

func (c *fakeClock) generation() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.created
}

// waitIdle waits until the loop has armed a timer after generation gen and
// that timer is pending (the loop is waiting); it returns when that is due.
func (c *fakeClock) waitIdle(t *testing.T, gen int) time.Time {
	t.Helper()
	deadline := time.After(10 * time.Second) // failure guard only
	for {
		c.mu.Lock()
		if c.created > gen && len(c.timers) > 0 {
			at := c.timers[0].at
			c.mu.Unlock()
			return at
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("client loop never went idle")
		}
	}
}

var _ Clock = (*fakeClock)(nil)
