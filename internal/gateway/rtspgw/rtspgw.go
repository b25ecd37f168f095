package rtspgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
)

// Auth checks viewers' names and passwords. The access package's *Store
// implements it (it is the Basic method of httpgw.Auth).
//
// A lockout error implements interface{ RetryAfter() time.Duration }; any
// other error is a failed login.
type Auth interface {
	Basic(ctx context.Context, name, password string, src netip.Addr) (viewer string, err error)
}

// Credentials are a login: the camera's (camera_login). Printed or logged,
// the password shows as [redacted].
type Credentials = gateway.Credentials

// Config configures a Handler.
type Config struct {
	// Service names the service: viewers open rtsp(s)://host:port/<Service>
	// (and <Service>/low); it is also in the Basic realm ("Porthole
	// <Service>"), logs and audit events. Required; it must be a single path
	// segment.
	Service string
	// Target is the camera's host:port on the LAN (agent.yaml target:).
	// Required.
	Target string
	// Path is the camera's stream path (agent.yaml path:), with its query if
	// any, e.g. /Streaming/Channels/101. Required.
	Path string
	// LowPath is the camera's sub-stream (agent.yaml low_path:), served at
	// <Service>/low. Empty = none (that path is 404).
	LowPath string
	// CameraLogin is sent to the camera, Basic or Digest as it asks. Nil =
	// none.
	CameraLogin *Credentials
	// Auth checks viewers. Required.
	Auth Auth
	// Viewers may use this service; a logged-in viewer not on the list gets
	// 403. Nil = every viewer; empty but not nil = nobody.
	Viewers []string
	// Linger keeps a camera session open this long after its last viewer
	// left, so that a player reconnecting (or a DESCRIBE followed by a SETUP
	// on a new connection) does not make the camera start over. Zero means
	// 5s.
	Linger time.Duration
	// DialContext reaches the camera (its addr argument is Target). Nil = a
	// net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds one dial to the camera. Zero means 10s.
	DialTimeout time.Duration
	// CameraTimeout is how long the camera may take to answer a request, and
	// how long its stream may stall before the session is given up (viewers
	// are then disconnected; players reconnect). Zero means 10s.
	CameraTimeout time.Duration
	// CameraRetry is how long, after an attempt to open the camera's stream
	// failed, viewers get the same answer instead of a new attempt, so that
	// players retrying in a loop cannot hammer the camera (many lock their
	// account after a few failed logins). Zero means 2s.
	CameraRetry time.Duration
	// WriteQueueSize is each viewer's queue of outgoing packets; it must be a
	// power of two. A viewer whose queue is full loses packets. Zero means
	// 512 (about a second of a 4 Mbit/s H.264 stream).
	WriteQueueSize int
	// WriteTimeout is how long a write to a viewer may block before the
	// viewer is disconnected (one that never reads). Zero means 10s.
	WriteTimeout time.Duration
	// ReadTimeout is how long a connection that is not playing may stay
	// silent (before and between requests); a playing one may be silent for
	// as long as it watches. Zero means 10s.
	ReadTimeout time.Duration
	// Logger receives operational lines (camera unreachable, camera refused
	// the login: rate-limited). Nil discards.
	Logger *slog.Logger
	// Audit receives, per viewer connection that logged in, "open" (viewer,
	// service, src) at its first authenticated request and "close" (viewer,
	// service, src, bytes_out sent to the viewer, bytes_in, packets_dropped
	// from its full queue, duration); also
	// "login_failed" (name, service, src, locked); "live_end" (viewer,
	// service, reason live_timeout or daily_cap) when Porthole ends a
	// stream. Nil discards.
	Audit *slog.Logger
	// Meter counts each viewer's bytes and holds the daily caps: a viewer
	// over the cap gets 453 Not Enough Bandwidth (saying when it resets) and
	// their playing streams end. Nil = not counted, no caps.
	Meter *meter.Meter
	// LiveTimeout ends a viewer's connection this long after it started
	// playing (a phone left on must not burn its data plan); players may
	// reconnect. Zero = no limit.
	LiveTimeout time.Duration
}

// Paths a viewer may ask for, below /<Service>.
const (
	mainStream = ""
	lowStream  = "/low"
)

// Handler serves the viewers of one rtsp service. It implements
// gateway.Handler; Close it when the service goes away.
type Handler struct {
	cfg     Config
	log     *slog.Logger
	audit   *slog.Logger
	realm   string
	viewers map[string]bool // nil: everyone
	srv     *gortsplib.Server
	ln      *gateway.ConnListener
	streams map[string]*upstream // by viewer path: "/<Service>", "/<Service>/low"

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu     sync.Mutex // guards the fields below
	closed bool
	conns  map[*viewerConn]struct{}

	lastCamLog atomic.Int64
}

var _ gateway.Handler = (*Handler)(nil)

// New returns a Handler, serving until Close.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Service == "":
		return nil, errors.New("rtspgw: Service is required")
	case strings.ContainsAny(cfg.Service, "/?#%\"\\ \t\r\n"):
		return nil, fmt.Errorf("rtspgw: service %q: the name must be a single URL path segment", cfg.Service)
	case cfg.Auth == nil:
		return nil, fmt.Errorf("rtspgw: service %s: Auth is required", cfg.Service)
	case cfg.Target == "":
		return nil, fmt.Errorf("rtspgw: service %s: Target is required", cfg.Service)
	case cfg.Path == "":
		return nil, fmt.Errorf("rtspgw: service %s: Path is required", cfg.Service)
	}
	if _, _, err := net.SplitHostPort(cfg.Target); err != nil {
		return nil, fmt.Errorf("rtspgw: service %s: Target %q: %w", cfg.Service, cfg.Target, err)
	}
	for _, p := range []*string{&cfg.Path, &cfg.LowPath} {
		if *p != "" && !strings.HasPrefix(*p, "/") {
			*p = "/" + *p
		}
	}
	if cfg.Linger == 0 {
		cfg.Linger = 5 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.CameraTimeout == 0 {
		cfg.CameraTimeout = 10 * time.Second
	}
	if cfg.CameraRetry == 0 {
		cfg.CameraRetry = 2 * time.Second
	}
	if cfg.WriteQueueSize == 0 {
		cfg.WriteQueueSize = 512
	}
	if cfg.WriteQueueSize < 0 || cfg.WriteQueueSize&(cfg.WriteQueueSize-1) != 0 {
		return nil, fmt.Errorf("rtspgw: service %s: WriteQueueSize %d is not a power of two", cfg.Service, cfg.WriteQueueSize)
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.DialContext == nil {
		var d net.Dialer
		cfg.DialContext = d.DialContext
	}
	discard := slog.New(slog.DiscardHandler)
	h := &Handler{cfg: cfg, log: cfg.Logger, audit: cfg.Audit, conns: map[*viewerConn]struct{}{},
		realm: "Porthole " + cfg.Service}
	if h.log == nil {
		h.log = discard
	}
	h.log = h.log.With("service", cfg.Service)
	if h.audit == nil {
		h.audit = discard
	}
	if cfg.Viewers != nil {
		h.viewers = map[string]bool{}
		for _, v := range cfg.Viewers {
			h.viewers[v] = true
		}
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.streams = map[string]*upstream{
		"/" + cfg.Service + mainStream: {h: h, name: "main", path: cfg.Path},
	}
	if cfg.LowPath != "" {
		h.streams["/"+cfg.Service+lowStream] = &upstream{h: h, name: "low", path: cfg.LowPath}
	}
	h.ln = gateway.NewConnListener(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	h.srv = &gortsplib.Server{
		Handler: &serverHandler{h: h},
		// Never listened on: Listen hands over the gateway's conns. Without
		// UDPRTPAddress the server offers TCP only and answers a UDP SETUP
		// with 461.
		RTSPAddress:    "127.0.0.1:0",
		Listen:         func(string, string) (net.Listener, error) { return h.ln, nil },
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   cfg.WriteTimeout,
		WriteQueueSize: cfg.WriteQueueSize,
	}
	if err := h.srv.Start(); err != nil {
		h.cancel()
		return nil, fmt.Errorf("rtspgw: service %s: start rtsp server: %w", cfg.Service, err)
	}
	return h, nil
}

// Serve hands the viewer's connection to the handler's RTSP server and
// returns when that connection is closed (the viewer left, timeouts, ctx
// ended, Close).
func (h *Handler) Serve(ctx context.Context, v *gateway.Viewer) error {
	vc := &viewerConn{Conn: v.Conn, v: v, peeked: v.Peeked, done: make(chan struct{}), start: time.Now(),
		remote: net.TCPAddrFromAddrPort(v.Addr), idle: h.cfg.ReadTimeout, h: h}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return net.ErrClosed
	}
	h.conns[vc] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, vc)
		h.mu.Unlock()
		if name := vc.viewerName(); name != "" {
			h.audit.Info("close", "viewer", name, "service", h.cfg.Service, "src", v.Addr.Addr(),
				"bytes_out", vc.out.Load(), "bytes_in", vc.in.Load(), "packets_dropped", vc.dropped.Load(),
				"duration", time.Since(vc.start).Round(time.Millisecond))
		}
	}()
	if !h.ln.Push(ctx, vc) {
		vc.Close()
		return net.ErrClosed
	}
	select {
	case <-vc.done:
	case <-ctx.Done():
		vc.Close()
		<-vc.done
	}
	return nil
}

// Close stops serving: camera sessions end, every viewer connection is
// closed, and Close waits for gortsplib's goroutines. Idempotent.
func (h *Handler) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	for _, u := range h.streams {
		u.shutdown()
	}
	h.ln.Close()
	h.srv.Close()
	for _, u := range h.streams {
		u.wait()
	}
	return nil
}

// allowed reports whether viewer may use this service.
func (h *Handler) allowed(viewer string) bool {
	return h.viewers == nil || h.viewers[viewer]
}

// rateLimited reports whether a line guarded by last may be logged now (at
// most one a minute), and marks it logged.
func rateLimited(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	l := last.Load()
	if now-l < int64(time.Minute) || !last.CompareAndSwap(l, now) {
		return true
	}
	return false
}

// viewerConn is a viewer's connection as the RTSP server sees it: Peeked
// replayed first, bytes counted as they move, done closed at Close.
type viewerConn struct {
	net.Conn
	v       *gateway.Viewer
	peeked  []byte
	start   time.Time
	remote  *net.TCPAddr
	in      atomic.Int64
	out     atomic.Int64
	dropped atomic.Int64 // packets the viewer's full queue lost
	playing atomic.Int32 // sessions playing on this conn
	idle    time.Duration
	h       *Handler

	acct      atomic.Pointer[string] // the viewer bytes count to, once logged in
	playSince atomic.Int64           // UnixNano of the first PLAY, 0 before
	nextCheck atomic.Int64           // UnixNano of the next cap and timeout check

	once sync.Once
	done chan struct{}
	wmu  sync.Mutex // held during a write: Close ends the write side only between writes

	mu       sync.Mutex // guards the fields below
	viewer   string     // the viewer who logged in on this conn
	authHdr  string     // the Authorization value that did it
	authFail bool
}

// RemoteAddr is the viewer's address as a *net.TCPAddr, which gortsplib
// requires, also for tunnel streams whose own address is something else.
func (c *viewerConn) RemoteAddr() net.Addr { return c.remote }

func (c *viewerConn) Read(b []byte) (int, error) {
	var n int
	var err error
	if len(c.peeked) > 0 {
		// Only the server's single reader goroutine reads, so peeked needs no lock.
		n = copy(b, c.peeked)
		c.peeked = c.peeked[n:]
	} else {
		// gortsplib sets no read deadline on conns that play or only send
		// requests: the idle limit of those that don't play is set here. The
		// reader reads again only after a PLAY's answer, so a conn that
		// starts playing is never cut by a deadline set before.
		if c.playing.Load() == 0 {
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		} else {
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
		n, err = c.Conn.Read(b)
	}
	if n > 0 {
		c.in.Add(int64(n))
		c.v.Count(int64(n), 0)
		if name := c.acct.Load(); name != nil {
			c.h.cfg.Meter.Add(*name, c.h.cfg.Service, "", int64(n), 0)
		}
	}
	return n, err
}

func (c *viewerConn) Write(b []byte) (int, error) {
	if c.mustEnd() {
		c.Close()
		return 0, net.ErrClosed
	}
	c.wmu.Lock()
	n, err := c.Conn.Write(b)
	c.wmu.Unlock()
	if n > 0 {
		c.out.Add(int64(n))
		c.v.Count(0, int64(n))
		if name := c.acct.Load(); name != nil {
			c.h.cfg.Meter.Add(*name, c.h.cfg.Service, "", 0, int64(n))
		}
	}
	return n, err
}

// mustEnd reports, at most once a second, whether a playing conn has run
// past LiveTimeout or its viewer past the daily cap (audited once).
func (c *viewerConn) mustEnd() bool {
	since := c.playSince.Load()
	name := c.acct.Load()
	if since == 0 || name == nil {
		return false
	}
	now := time.Now().UnixNano()
	next := c.nextCheck.Load()
	if now < next || !c.nextCheck.CompareAndSwap(next, now+int64(time.Second)) {
		return false
	}
	reason := ""
	if over, _ := c.h.cfg.Meter.Over(*name); over {
		reason = "daily_cap"
	} else if d := c.h.cfg.LiveTimeout; d > 0 && now-since >= int64(d) {
		reason = "live_timeout"
	}
	if reason == "" {
		return false
	}
	c.h.audit.Info("live_end", "viewer", *name, "service", c.h.cfg.Service, "reason", reason,
		"duration", time.Duration(now-since).Round(time.Millisecond))
	return true
}

// Close ends the connection. With no write in flight (gortsplib closing
// after an answer, e.g. the 401 to wrong credentials) it first ends the write
// side, so that the answer arrives: a relayed viewer's tunnel stream is
// aborted by a bare Close (RESET_STREAM), and with tls: off nothing else
// would end it cleanly. During a write (a viewer cut while playing) it
// aborts.
func (c *viewerConn) Close() error {
	var err error
	c.once.Do(func() {
		if c.wmu.TryLock() {
			gateway.CloseWrite(c.Conn)
			c.wmu.Unlock()
		}
		err = c.Conn.Close()
		close(c.done)
	})
	return err
}

// loggedIn returns the viewer if auth is the Authorization value that logged
// in on this conn.
func (c *viewerConn) loggedIn(auth string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.viewer != "" && auth == c.authHdr {
		return c.viewer, true
	}
	return "", false
}

// identify records a login and reports whether it was the conn's first.
func (c *viewerConn) identify(name, auth string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	first := c.viewer == ""
	c.viewer, c.authHdr = name, auth
	if first {
		c.acct.Store(&name)
		c.h.cfg.Meter.Add(name, c.h.cfg.Service, "", c.in.Load(), c.out.Load())
	}
	return first
}

func (c *viewerConn) viewerName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.viewer
}
