// Package camsim is a simulated IP camera for the demo and the tests: an HTML page, a JPEG
// snapshot and an MJPEG stream over HTTP, and the same picture over RTSP (MJPEG over RTP),
// showing a moving bar, a clock with milliseconds and the frame number. Like a real camera
// its HTTP interface can ask for a login, Basic or Digest (Config.Auth), so tests can prove
// that a proxy sends the camera's login and keeps the camera's challenge to itself.
//
// Frames are rendered and encoded once by a single encoder goroutine that runs only while
// someone watches; every viewer gets the latest frame, so a slow viewer skips frames instead
// of stalling the others or queueing them without bound.
package camsim

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// ErrClosed is returned once the camera has been closed.
var ErrClosed = errors.New("camsim: camera closed")

// Limits on the picture size. RTP/MJPEG (RFC 2435) carries width and height in units of 8
// pixels, at most 2040.
const (
	minSize = 64
	maxSize = 2040
	maxFPS  = 60
)

// Config configures a Camera. Every field is optional.
type Config struct {
	// Name is shown as the page title and in the picture. Default "Porthole camera".
	Name string
	// FPS is the frame rate of the MJPEG and RTSP streams. Default 10, at most 60.
	FPS int
	// Width and Height of the picture in pixels. Default 640x360. They are rounded down
	// to a multiple of 8 and kept within 64..2040 (RTP/MJPEG limits).
	Width, Height int
	// Quality is the JPEG quality, 1..100. Default 70.
	Quality int
	// Now tells the time drawn into the picture and drives the animation. Default time.Now.
	Now func() time.Time
	// Logger receives connection events. Nil discards them.
	Logger *slog.Logger

	// Auth protects the HTTP interface (not /healthz, not RTSP) as a real camera's login
	// does: "" (none), "basic" or "digest" (RFC 7616, qop=auth). Username and Password are
	// the camera's login; with Auth set, an empty Password is allowed but unusual.
	Auth               string
	Username, Password string
	// DigestAlgorithm is the digest challenge's algorithm: "MD5" (default) or "SHA-256".
	DigestAlgorithm string
}

// withDefaults returns cfg with zero fields defaulted and out-of-range fields clamped.
func (cfg Config) withDefaults() Config {
	if cfg.Name == "" {
		cfg.Name = "Porthole camera"
	}
	if cfg.FPS <= 0 {
		cfg.FPS = 10
	}
	cfg.FPS = min(cfg.FPS, maxFPS)
	if cfg.Width <= 0 {
		cfg.Width = 640
	}
	if cfg.Height <= 0 {
		cfg.Height = 360
	}
	cfg.Width = clampSize(cfg.Width)
	cfg.Height = clampSize(cfg.Height)
	if cfg.Quality <= 0 {
		cfg.Quality = 70
	}
	cfg.Quality = min(cfg.Quality, 100)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DigestAlgorithm == "" {
		cfg.DigestAlgorithm = "MD5"
	}
	return cfg
}

func clampSize(v int) int {
	return min(max(v, minSize), maxSize) &^ 7
}

// frame is one encoded picture. It is shared by all viewers and never modified.
type frame struct {
	seq  uint64    // frame number, from 1, increasing
	at   time.Time // when it was rendered, by the process clock (RTP timestamps)
	jpeg []byte
}

// Camera is a simulated IP camera. Create it with New; it is safe for concurrent use.
type Camera struct {
	cfg  Config
	log  *slog.Logger
	done chan struct{} // closed by Close

	wg sync.WaitGroup // the encoder goroutine

	mu       sync.Mutex // guards the fields below
	closed   bool
	viewers  int           // current subscribers
	encoding bool          // the encoder goroutine is running
	latest   *frame        // newest frame of the running encoder; nil when it is stopped
	fresh    chan struct{} // closed and replaced whenever latest changes
	seq      uint64        // last frame number handed out

	auth *authState // nil: no login

	testHookEncoderStopped func() // if set (before use), called when the encoder goroutine exits
}

// New returns a camera. Nothing runs until someone watches or Serve/ServeRTSP/Run is called.
func New(cfg Config) *Camera {
	cfg = cfg.withDefaults()
	c := &Camera{
		cfg:   cfg,
		log:   cfg.Logger,
		done:  make(chan struct{}),
		fresh: make(chan struct{}),
	}
	if cfg.Auth != "" {
		c.auth = newAuthState(cfg)
	}
	return c
}

// Name returns the camera's name after defaults.
func (c *Camera) Name() string { return c.cfg.Name }

// Close ends all streams, stops the encoder and waits for it. It is idempotent and always
// returns nil. Serve, ServeRTSP and Run return soon after.
func (c *Camera) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.done)
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Run serves HTTP on httpLn and RTSP on rtspLn (either may be nil) until ctx ends or the
// camera is closed; it returns nil then, or the first serving error. It closes the listeners.
func (c *Camera) Run(ctx context.Context, httpLn, rtspLn net.Listener) error {
	g, ctx := errgroup.WithContext(ctx)
	if httpLn != nil {
		g.Go(func() error { return c.Serve(ctx, httpLn) })
	}
	if rtspLn != nil {
		g.Go(func() error { return c.ServeRTSP(ctx, rtspLn) })
	}
	return g.Wait()
}

// Snapshot returns the current picture as a JPEG: the latest streamed frame while the
// encoder runs, otherwise a freshly rendered one.
func (c *Camera) Snapshot() ([]byte, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.latest != nil {
		f := c.latest
		c.mu.Unlock()
		return f.jpeg, nil
	}
	c.seq++
	seq := c.seq
	c.mu.Unlock()

	r := newRenderer(c.cfg)
	return r.encode(c.cfg.Now(), seq, c.cfg.Quality)
}

// subscribe registers a viewer and starts the encoder if it is not running.
func (c *Camera) subscribe() (*viewer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	c.viewers++
	if !c.encoding {
		c.encoding = true
		c.wg.Add(1)
		go c.encodeLoop()
	}
	return &viewer{c: c}, nil
}

// encodeLoop renders and encodes frames at the configured rate while anyone watches.
func (c *Camera) encodeLoop() {
	defer c.wg.Done()
	r := newRenderer(c.cfg)
	tick := time.NewTicker(time.Second / time.Duration(c.cfg.FPS))
	defer tick.Stop()
	c.log.Debug("encoder started")
	for {
		c.mu.Lock()
		if c.viewers == 0 || c.closed {
			c.encoding = false
			c.latest = nil
			c.mu.Unlock()
			c.log.Debug("encoder stopped")
			if c.testHookEncoderStopped != nil {
				c.testHookEncoderStopped()
			}
			return
		}
		c.seq++
		seq := c.seq
		c.mu.Unlock()

		buf, err := r.encode(c.cfg.Now(), seq, c.cfg.Quality)
		if err != nil {
			// Encoding an in-memory RGBA image does not fail; if it ever does, skip the frame.
			c.log.Error("encode frame", "err", err)
		} else {
			f := &frame{seq: seq, at: time.Now(), jpeg: buf}
			c.mu.Lock()
			c.latest = f
			close(c.fresh)
			c.fresh = make(chan struct{})
			c.mu.Unlock()
		}

		select {
		case <-tick.C:
		case <-c.done:
		}
	}
}

// isEncoding reports whether the encoder goroutine runs (for tests).
func (c *Camera) isEncoding() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.encoding
}

// viewer is one subscription to the camera's frames.
type viewer struct {
	c      *Camera
	last   uint64 // seq of the last frame returned; touched only by the viewer's goroutine
	closed sync.Once
}

// next returns the newest frame this viewer has not seen, waiting for one if needed.
// Frames published while the viewer was busy are skipped.
func (v *viewer) next(ctx context.Context) (*frame, error) {
	for {
		v.c.mu.Lock()
		f, fresh := v.c.latest, v.c.fresh
		v.c.mu.Unlock()
		if f != nil && f.seq > v.last {
			v.last = f.seq
			return f, nil
		}
		select {
		case <-fresh:
		case <-v.c.done:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// close unsubscribes; the encoder stops within a frame once nobody is left. Idempotent.
func (v *viewer) close() {
	v.closed.Do(func() {
		v.c.mu.Lock()
		v.c.viewers--
		v.c.mu.Unlock()
	})
}
