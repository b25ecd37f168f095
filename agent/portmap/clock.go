package portmap

import "time"

// Clock is the time source for leases, renewals, checks and backoff. Network
// timeouts use real time regardless (they bound how long we wait for a packet).
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d (at once if d <= 0).
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the client uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

var _ Clock = realClock{}
