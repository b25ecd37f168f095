package httpgw

import (
	"testing"
	"time"
)

// The fps limit passes about fps frames a second whatever the camera's
// rate and jitter, and starts afresh after a gap.
func TestFPSLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		camFPS float64
		jitter time.Duration
		fps    float64
	}{
		{"10 to 2", 10, 0, 2},
		{"10 to 2 jittery", 10, 7 * time.Millisecond, 2},
		{"30 to 10", 30, 3 * time.Millisecond, 10},
		{"25 to 30: every frame", 25, 0, 30},
		{"10 to 0.5", 10, 0, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &sub{interval: time.Duration(float64(time.Second) / tc.fps), max: 1 << 20, ready: make(chan struct{}, 1)}
			const secs = 20
			camInterval := time.Duration(float64(time.Second) / tc.camFPS)
			for i := range int(tc.camFPS * secs) {
				j := tc.jitter
				if i%2 == 0 {
					j = -j
				}
				s.offer(&frame{at: t0.Add(time.Duration(i)*camInterval + j)})
			}
			n, _ := s.queued()
			want := int(min(tc.fps, tc.camFPS) * secs)
			if d := n - want; d < -1 || d > 1 {
				t.Errorf("%d frames in %ds, want %d", n, secs, want)
			}
			// Evenly: no two passed frames closer than half the interval.
			var last time.Time
			for fr := s.take(); fr != nil; fr = s.take() {
				if !last.IsZero() && fr.at.Sub(last) < s.interval/2 && tc.fps < tc.camFPS {
					t.Fatalf("frames %v apart at fps %v", fr.at.Sub(last), tc.fps)
				}
				last = fr.at
			}
		})
	}
	// After a gap (the camera stalled) the limiter does not burst.
	s := &sub{interval: 500 * time.Millisecond, max: 100, ready: make(chan struct{}, 1)}
	s.offer(&frame{at: t0})
	for i := range 10 {
		s.offer(&frame{at: t0.Add(time.Minute + time.Duration(i)*100*time.Millisecond)})
	}
	if n, _ := s.queued(); n != 3 {
		t.Errorf("%d frames after a gap, want 3 (t0, +1m, +1m0.5s)", n)
	}
}

// A full queue drops its oldest frame.
func TestQueueDropsOldest(t *testing.T) {
	s := &sub{max: 2, ready: make(chan struct{}, 1)}
	a, b, c := &frame{}, &frame{}, &frame{}
	s.offer(a)
	s.offer(b)
	s.offer(c)
	if n, dropped := s.queued(); n != 2 || dropped != 1 {
		t.Fatalf("queue %d, dropped %d", n, dropped)
	}
	if s.take() != b || s.take() != c || s.take() != nil {
		t.Error("the queue did not keep the newest frames in order")
	}
}
