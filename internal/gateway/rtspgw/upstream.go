package rtspgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/pion/rtp"
)

// errClosed: the Handler is closing.
var errClosed = errors.New("rtspgw: handler closed")

// errEnded: the camera session ended while a viewer was joining it.
var errEnded = errors.New("rtspgw: the camera's stream ended")

// upstream is one camera stream (Path or LowPath) and its current session
// with the camera, if any.
type upstream struct {
	h    *Handler
	name string // "main" or "low", for logs
	path string // the camera's

	wg sync.WaitGroup // running runs and their client watchers

	mu      sync.Mutex // guards the fields below and every run's counters
	cur     *run
	closed  bool
	failErr error     // the last failed start, answered until failEnd
	failEnd time.Time // ... this time
}

// run is one session with the camera, shared by the viewers who joined it.
type run struct {
	u      *upstream
	ready  chan struct{} // closed once stream or err is set
	stream *gortsplib.ServerStream
	err    error
	ctx    context.Context // ends the session
	cancel context.CancelFunc

	// guarded by u.mu
	readers   int
	ended     bool
	lingerGen int         // a linger timer acts only if this is still its generation
	linger    *time.Timer // nil until first armed
}

// get returns the running session, starting one if there is none, once it
// has the camera's stream (or failed to).
func (u *upstream) get() (*run, error) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil, errClosed
	}
	r := u.cur
	if r == nil && u.failErr != nil && time.Now().Before(u.failEnd) {
		err := u.failErr
		u.mu.Unlock()
		return nil, err
	}
	if r == nil {
		r = &run{u: u, ready: make(chan struct{})}
		r.ctx, r.cancel = context.WithCancel(u.h.ctx)
		u.cur = r
		u.wg.Add(1)
		go r.run()
	}
	u.mu.Unlock()
	select {
	case <-r.ready:
	case <-u.h.ctx.Done():
		return nil, errClosed
	}
	if r.err != nil {
		return nil, r.err
	}
	return r, nil
}

// describe returns the camera's stream for a DESCRIBE. A session that no
// viewer joins ends after Linger.
func (u *upstream) describe() (*gortsplib.ServerStream, error) {
	r, err := u.get()
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	if r.readers == 0 && !r.ended {
		u.armLinger(r)
	}
	u.mu.Unlock()
	return r.stream, nil
}

// join adds a viewer to the camera's session, starting it if need be.
func (u *upstream) join() (*run, error) {
	// A session can end between get and the lock (Linger ran out, the
	// camera hung up): then one more try with a fresh one.
	for range 2 {
		r, err := u.get()
		if err != nil {
			return nil, err
		}
		u.mu.Lock()
		if r.ended {
			u.mu.Unlock()
			continue
		}
		r.readers++
		r.lingerGen++ // disarms a pending linger
		u.mu.Unlock()
		return r, nil
	}
	return nil, errEnded
}

// leave removes a viewer; the last one arms the linger timer.
func (u *upstream) leave(r *run) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r.readers--
	if r.readers == 0 && !r.ended {
		u.armLinger(r)
	}
}

// armLinger ends r after Linger unless a viewer joins first (or another
// DESCRIBE re-arms it). u.mu is held. One timer a run: DESCRIBEs in a loop
// leave nothing behind.
func (u *upstream) armLinger(r *run) {
	r.lingerGen++
	gen := r.lingerGen
	if r.linger != nil {
		r.linger.Stop()
	}
	r.linger = time.AfterFunc(u.h.cfg.Linger, func() {
		u.mu.Lock()
		if r.lingerGen != gen || r.readers > 0 || r.ended {
			u.mu.Unlock()
			return
		}
		u.endLocked(r)
		u.mu.Unlock()
		u.h.log.Debug("camera session closed: no viewers", "stream", u.name)
		r.cancel()
	})
}

// endLocked marks r ended, so that the next viewer starts a new session.
func (u *upstream) endLocked(r *run) {
	r.ended = true
	if r.linger != nil {
		r.linger.Stop()
	}
	if u.cur == r {
		u.cur = nil
	}
}

// shutdown ends the current session for good (Handler.Close).
func (u *upstream) shutdown() {
	u.mu.Lock()
	u.closed = true
	r := u.cur
	if r != nil {
		u.endLocked(r)
	}
	u.mu.Unlock()
	if r != nil {
		r.cancel()
	}
}

func (u *upstream) wait() { u.wg.Wait() }

// run opens the camera's stream, feeds its packets to the viewers' stream
// until the camera ends or r.ctx does, then closes both.
func (r *run) run() {
	u := r.u
	h := u.h
	defer u.wg.Done()
	defer r.cancel()
	c, err := r.start()
	if err != nil {
		r.err = err
		u.mu.Lock()
		u.endLocked(r)
		if r.ctx.Err() == nil {
			u.failErr, u.failEnd = err, time.Now().Add(h.cfg.CameraRetry)
		}
		u.mu.Unlock()
		close(r.ready)
		return
	}
	u.mu.Lock()
	u.failErr = nil
	u.mu.Unlock()
	// Logged before the viewers can see it happen.
	h.log.Debug("camera session open", "stream", u.name, "medias", len(r.stream.Desc.Medias))
	close(r.ready)
	err = c.Wait()
	u.mu.Lock()
	u.endLocked(r)
	u.mu.Unlock()
	c.Close()
	if r.ctx.Err() == nil {
		h.log.Warn("camera stream ended", "stream", u.name, "err", err)
	}
	// Viewers still watching are disconnected: players reconnect, and get a
	// new session with the camera.
	r.stream.Close()
}

// start connects to the camera and plays its stream into r.stream. On
// success the returned client runs until r.ctx ends.
func (r *run) start() (*gortsplib.Client, error) {
	u := r.u
	h := u.h
	cfg := &h.cfg
	ur, err := base.ParseURL("rtsp://" + cfg.Target + u.path)
	if err != nil {
		return nil, fmt.Errorf("camera url: %w", err)
	}
	if cfg.CameraLogin != nil {
		ur.User = url.UserPassword(cfg.CameraLogin.Username, cfg.CameraLogin.Password)
	}
	c := &gortsplib.Client{
		ReadTimeout:  cfg.CameraTimeout,
		WriteTimeout: cfg.CameraTimeout,
		UserAgent:    "Porthole",
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
			defer cancel()
			return cfg.DialContext(ctx, network, addr)
		},
		OnTransportSwitch: func(err error) {
			h.log.Debug("camera transport switched", "stream", u.name, "err", err)
		},
		OnPacketsLost: func(lost uint64) {
			h.log.Debug("packets lost from the camera", "stream", u.name, "lost", lost)
		},
		OnDecodeError: func(err error) {
			h.log.Debug("malformed packet from the camera", "stream", u.name, "err", err)
		},
	}
	if err := c.Start(ur.Scheme, ur.Host); err != nil {
		return nil, err
	}
	// From here on, the end of r.ctx closes the client, even mid-request.
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		<-r.ctx.Done()
		c.Close()
	}()
	desc, _, err := c.Describe(ur)
	if err != nil {
		c.Close()
		return nil, err
	}
	if len(desc.Medias) == 0 {
		c.Close()
		return nil, errors.New("the camera's stream has no media")
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		c.Close()
		return nil, err
	}
	st := &gortsplib.ServerStream{Server: h.srv, Desc: desc}
	if err := st.Initialize(); err != nil {
		c.Close()
		return nil, err
	}
	for _, medi := range desc.Medias {
		for _, forma := range medi.Formats {
			track := paramsTracker(forma)
			c.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
				if track != nil {
					track(pkt)
				}
				// The stream stamps packets with their arrival time for the
				// sender reports it sends the viewers.
				_ = st.WritePacketRTP(medi, pkt)
			})
		}
	}
	if _, err := c.Play(nil); err != nil {
		c.Close()
		st.Close()
		return nil, err
	}
	r.stream = st
	return c, nil
}
