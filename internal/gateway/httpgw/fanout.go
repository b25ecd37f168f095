package httpgw

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Reconnect backoff of the camera's MJPEG stream.
const (
	backoffMin = 200 * time.Millisecond
	backoffMax = 5 * time.Second
)

// fanout is the one MJPEG stream from the camera shared by every viewer of
// the service. It starts with the first viewer, reconnects with backoff when
// the camera drops or stalls, and stops Config.MJPEGLinger after the last
// viewer has left (a viewer switching presets or a page reload does not
// reconnect to the camera).
//
// Frames are handed to viewers without ever blocking: each viewer has its own
// bounded queue (see sub), so one that reads slowly or not at all costs the
// others nothing.
type fanout struct {
	h    *Handler
	path string

	requests atomic.Int64 // GETs sent to the camera, for tests and metrics
	frames   atomic.Int64 // frames received from the camera

	mu      sync.Mutex // guards the fields below
	closed  bool
	subs    map[*sub]struct{}
	running bool
	gen     uint64             // the run goroutine's generation; bumped at each start
	cancel  context.CancelFunc // ends the running goroutine
	idle    *time.Timer        // stops the stream after the last viewer; nil: none armed
	latest  *frame             // newest frame of the running stream; nil: none yet
	fail    chan struct{}      // closed and replaced at each failed attempt
	lastErr error              // of the last failed attempt
	dialVC  *viewerConn        // a viewer whose gateway dialer reaches the camera

	wg sync.WaitGroup // the run goroutine
}

func newFanout(h *Handler, path string) *fanout {
	return &fanout{h: h, path: path, subs: map[*sub]struct{}{}, fail: make(chan struct{})}
}

// sub is one viewer of a fanout: a queue of at most max frames. When it is
// full the oldest frame is dropped: a viewer that falls behind catches up
// with the newest picture, which is what a live view should show.
type sub struct {
	vc       *viewerConn
	interval time.Duration // fps limit: at most one frame per interval; 0 = every frame
	max      int
	ready    chan struct{} // a frame was queued (capacity 1)
	fail     <-chan struct{}

	mu      sync.Mutex // guards the fields below
	next    time.Time  // the fps limiter's next due time
	q       []*frame
	dropped int64 // frames dropped because the queue was full
}

// subscribe adds a viewer, starting the stream if it is not running. The
// stream's latest frame, if any, is queued at once.
func (f *fanout) subscribe(vc *viewerConn, interval time.Duration, queue int) (*sub, error) {
	s := &sub{vc: vc, interval: interval, max: queue, ready: make(chan struct{}, 1), q: make([]*frame, 0, queue)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("shutting down")
	}
	f.subs[s] = struct{}{}
	s.fail = f.fail
	if vc != nil {
		f.dialVC = vc
	}
	if f.idle != nil {
		f.idle.Stop()
		f.idle = nil
	}
	if !f.running {
		f.running = true
		f.gen++
		f.latest = nil
		ctx, cancel := context.WithCancel(f.h.ctx)
		f.cancel = cancel
		f.wg.Add(1)
		go f.run(ctx, f.gen)
	} else if l := f.latest; l != nil && f.h.cfg.Now().Sub(l.at) < f.h.cfg.MJPEGStallTimeout {
		s.offer(l)
	}
	return s, nil
}

// unsubscribe removes a viewer; the last one arms the linger timer.
func (f *fanout) unsubscribe(s *sub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, s)
	if len(f.subs) > 0 || !f.running || f.closed {
		return
	}
	gen := f.gen
	if f.idle != nil {
		f.idle.Stop()
	}
	f.idle = time.AfterFunc(f.h.cfg.MJPEGLinger, func() { f.stopIdle(gen) })
}

// stopIdle stops the stream of generation gen if still nobody watches.
func (f *fanout) stopIdle(gen uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen || !f.running || len(f.subs) > 0 {
		return
	}
	f.stopLocked()
}

func (f *fanout) stopLocked() {
	if f.running {
		f.cancel()
		f.running = false
		f.gen++ // frames of the stopped goroutine are ignored from now on
		f.latest = nil
	}
	if f.idle != nil {
		f.idle.Stop()
		f.idle = nil
	}
}

// close stops the stream and waits for its goroutine. Idempotent.
func (f *fanout) close() {
	f.mu.Lock()
	f.closed = true
	f.stopLocked()
	f.mu.Unlock()
	f.wg.Wait()
}

// latestFrame returns the running stream's newest frame if it is fresh.
func (f *fanout) latestFrame() *frame {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.latest; f.running && l != nil && f.h.cfg.Now().Sub(l.at) < f.h.cfg.MJPEGStallTimeout {
		return l
	}
	return nil
}

// failure returns the error of the last failed attempt.
func (f *fanout) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// run holds the camera's stream until ctx ends, reconnecting with backoff.
func (f *fanout) run(ctx context.Context, gen uint64) {
	defer f.wg.Done()
	backoff := backoffMin
	for {
		frames, err := f.stream(ctx, gen)
		if ctx.Err() != nil {
			return
		}
		if frames > 0 {
			backoff = backoffMin
		}
		f.failed(gen, err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// failed records a failed attempt and tells the viewers waiting for a first frame.
func (f *fanout) failed(gen uint64, err error) {
	if errors.Is(err, errCameraRefused) {
		if !f.h.rateLimited(&f.h.lastRefuseLog) {
			f.h.log.Warn("the camera refused the agent's login: check camera_login of this service",
				"target", f.h.cfg.Target, "camera_login_set", f.h.cfg.CameraLogin != nil)
		}
	} else if !f.h.rateLimited(&f.h.lastStreamLog) {
		f.h.log.Warn("the camera's MJPEG stream failed; reconnecting", "path", f.path, "err", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen {
		return
	}
	f.lastErr = err
	close(f.fail)
	f.fail = make(chan struct{})
}

// stream makes one GET of the camera's MJPEG and publishes its frames until
// it fails, stalls (no frame for MJPEGStallTimeout) or ctx ends.
func (f *fanout) stream(ctx context.Context, gen uint64) (frames int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.Lock()
	vc := f.dialVC
	f.mu.Unlock()
	if vc != nil {
		ctx = context.WithValue(ctx, viewerKey{}, vc)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+f.h.cfg.Target+f.path, nil)
	if err != nil {
		return 0, err
	}
	req.Host = f.h.cfg.Target
	stalled := atomic.Bool{}
	watchdog := time.AfterFunc(f.h.cfg.MJPEGStallTimeout, func() { stalled.Store(true); cancel() })
	defer watchdog.Stop()

	f.requests.Add(1)
	resp, err := f.h.camRT.RoundTrip(req)
	if err != nil {
		if stalled.Load() {
			return 0, fmt.Errorf("no answer within %v", f.h.cfg.MJPEGStallTimeout)
		}
		return 0, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return 0, errCameraRefused
	case resp.StatusCode != http.StatusOK:
		return 0, &pathError{key: "mjpeg", path: f.path, problem: "the camera answered " + resp.Status}
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" || params["boundary"] == "" {
		return 0, &pathError{key: "mjpeg", path: f.path, problem: fmt.Sprintf("the camera sent %q, not an MJPEG stream (multipart/x-mixed-replace)", resp.Header.Get("Content-Type"))}
	}
	pr := newPartReader(resp.Body, params["boundary"], maxFrame)
	for {
		b, err := pr.next()
		if err != nil {
			if stalled.Load() {
				return frames, fmt.Errorf("no frame for %v", f.h.cfg.MJPEGStallTimeout)
			}
			return frames, err
		}
		fr, err := newFrame(b, f.h.cfg.Now())
		if err != nil {
			continue // not every part of every camera is a picture
		}
		watchdog.Reset(f.h.cfg.MJPEGStallTimeout)
		frames++
		f.frames.Add(1)
		f.publish(gen, fr)
	}
}

// publish offers fr to every viewer.
func (f *fanout) publish(gen uint64, fr *frame) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen {
		return
	}
	f.latest = fr
	for s := range f.subs {
		s.offer(fr)
	}
}

// offer queues fr unless the fps limit says not yet; never blocks.
func (s *sub) offer(fr *frame) {
	s.mu.Lock()
	if s.interval > 0 {
		// A little slack so that a camera's jitter does not skip a whole frame.
		if !s.next.IsZero() && fr.at.Before(s.next.Add(-s.interval/10)) {
			s.mu.Unlock()
			return
		}
		if s.next.IsZero() || fr.at.Sub(s.next) >= s.interval {
			s.next = fr.at.Add(s.interval) // first frame, or after a gap: start afresh
		} else {
			s.next = s.next.Add(s.interval)
		}
	}
	if len(s.q) == s.max {
		copy(s.q, s.q[1:])
		s.q[len(s.q)-1] = nil
		s.q = s.q[:len(s.q)-1]
		s.dropped++
	}
	s.q = append(s.q, fr)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// pop returns the oldest queued frame, waiting until there is one or ctx
// ends.
func (s *sub) pop(ctx context.Context) (*frame, error) {
	for {
		if fr := s.take(); fr != nil {
			return fr, nil
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *sub) take() *frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.q) == 0 {
		return nil
	}
	fr := s.q[0]
	copy(s.q, s.q[1:])
	s.q[len(s.q)-1] = nil
	s.q = s.q[:len(s.q)-1]
	return fr
}

// queued returns the queue's length and the frames dropped so far.
func (s *sub) queued() (n int, dropped int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.q), s.dropped
}
