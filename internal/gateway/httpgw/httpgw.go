package httpgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
)

// Auth checks viewers: names and passwords, sessions, lockout and link tokens.
// The access package's *Store implements it.
//
// Login and Basic errors: a lockout error implements
// interface{ RetryAfter() time.Duration }; any other error is a failed login.
type Auth interface {
	Login(ctx context.Context, name, password string, src netip.Addr) (session string, expires time.Time, err error)
	Basic(ctx context.Context, name, password string, src netip.Addr) (viewer string, err error)
	Session(id string) (viewer string, ok bool)
	Logout(id string)
	Link(token string) (viewer string, ok bool)
}

// Credentials are a login: the camera's (camera_login). Printed or logged,
// the password shows as [redacted].
type Credentials = gateway.Credentials

// Config configures a Handler.
type Config struct {
	// Service names the service in pages, logs, audit events and the Basic
	// realm ("Porthole <service>"). Required.
	Service string
	// Target is the camera's host:port on the LAN (agent.yaml target:). The
	// camera gets it as Host, Origin and Referer; redirects to it are
	// rewritten to the public host. Required, unless Site is set.
	Target string
	// Site, when set, serves every authenticated request outside /.porthole/
	// instead of a camera (the phone page, kind portal): ViewerOf tells it
	// who asks. Target, the proxy and the live paths are then unused.
	Site http.Handler
	// Meter counts each viewer's bytes on this service (per login session
	// too) and holds the daily caps: a viewer over the cap gets 429 for
	// anything that costs camera data, and their live streams end. Nil =
	// not counted, no caps.
	Meter *meter.Meter
	// LiveTimeout ends a live MJPEG stream after this long (a phone left on
	// must not burn its data plan); the viewer starts it again. Zero = no
	// limit (the agent's default is DefaultLiveTimeout).
	LiveTimeout time.Duration
	// DialContext reaches Target. Nil = the gateway's backend dialer of the
	// viewer whose request needs the connection (Viewer.DialBackend, bounded
	// by the listener's DialTimeout): the agent wires it to the camera. Its
	// addr argument is always Target. Connections to the camera are pooled
	// across viewers of the service.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds DialContext (not the gateway's dialer, which has its
	// own). Zero means 10s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout is how long the camera may take to start its
	// answer (its headers; bodies and streams have no limit) before the
	// viewer gets "the camera is not answering". Zero means 1 minute.
	ResponseHeaderTimeout time.Duration
	// Auth checks viewers. Required.
	Auth Auth
	// Viewers may use this service; a logged-in viewer not on the list gets
	// 403. Nil = every viewer; empty but not nil = nobody.
	Viewers []string
	// CameraLogin is sent to the camera with Basic or Digest, whichever its
	// 401 asks for. Nil = none.
	CameraLogin *Credentials
	// PlainHTTP says viewers reach this handler without TLS (tests; the
	// WireGuard address): cookies lose their Secure flag and rewritten
	// redirects say http. False (the default) = served over TLS.
	PlainHTTP bool
	// ReadHeaderTimeout is how long a viewer may take to send a request's
	// headers. Zero means 10s. No timeout ever applies to bodies: streams run
	// as long as the viewer watches.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle between requests. Zero
	// means 2 minutes.
	IdleTimeout time.Duration
	// MaxJars bounds the server-side cookie jars (one per session, or per
	// viewer and source for Basic and link users); the least recently used
	// goes first. Zero means 1000.
	MaxJars int
	// JarIdle forgets a jar unused this long (sessions' jars also go at
	// logout or when the session is no longer valid). Zero means 12h.
	JarIdle time.Duration
	// Logger receives operational lines (camera unreachable, camera refused
	// the login: rate-limited). Nil discards.
	Logger *slog.Logger
	// Audit receives, per viewer connection that got as far as an
	// authenticated request, "open" (viewer, service, src) at the first one
	// and "close" (bytes_out sent to the viewer, bytes_in, duration); also
	// "login", "login_failed" (name, src, locked) and "logout". Connections
	// that never logged in (scanners) leave no audit event. Nil discards.
	Audit *slog.Logger
	// Now tells the time (jar expiry, frame arrival for ?fps=). Nil = time.Now.
	Now func() time.Time

	// MJPEGPath is the camera's MJPEG stream (agent.yaml mjpeg:, e.g.
	// /video.mjpg), served to viewers at /.porthole/mjpeg?fps=&width= from
	// one shared connection to the camera. Empty = that path answers 404.
	MJPEGPath string
	// SnapshotPath is the camera's JPEG snapshot (agent.yaml snapshot:, e.g.
	// /snapshot.jpg), served at /.porthole/snapshot.jpg?width= when no stream
	// is running (a running stream's latest frame is used first). Empty with
	// MJPEGPath set = a frame of the stream; both empty = 404.
	SnapshotPath string
	// MaxResizes bounds the decode-scale-encode jobs of ?width= running at
	// once for this service; a stream viewer whose frame finds every slot
	// busy skips that frame. Zero = min(2, GOMAXPROCS).
	MaxResizes int
	// QueueFrames is each stream viewer's queue of frames waiting to be sent;
	// when full the oldest is dropped. Zero = 2.
	QueueFrames int
	// MJPEGStallTimeout: a camera stream that sends no frame this long is
	// reconnected, and a viewer waits this long for a first frame. Zero = 10s.
	MJPEGStallTimeout time.Duration
	// MJPEGLinger keeps the camera stream open this long after its last
	// viewer has left. Zero = 5s.
	MJPEGLinger time.Duration
}

// Handler serves the viewers of one http service. It implements
// gateway.Handler; Close it when the service goes away.
type Handler struct {
	cfg     Config
	log     *slog.Logger
	audit   *slog.Logger
	viewers map[string]bool // nil: everyone
	srv     *http.Server
	ln      *gateway.ConnListener
	tr      *http.Transport
	proxy   *httputil.ReverseProxy
	camRT   http.RoundTripper // to the camera, with camera_login
	jars    *jars
	mjpeg   *fanout // nil: no MJPEGPath
	rz      *resizer

	testHookSub atomic.Pointer[func(*sub)] // if set, called with each stream viewer's queue

	ctx    context.Context // ends at Close: request contexts derive from it
	cancel context.CancelFunc
	served chan struct{} // closed when srv.Serve returns

	wg     sync.WaitGroup // running ServeHTTP calls
	mu     sync.Mutex     // guards the fields below
	closed bool
	conns  map[*viewerConn]struct{}

	lastDialLog   atomic.Int64
	lastRefuseLog atomic.Int64
	lastStreamLog atomic.Int64
}

var _ gateway.Handler = (*Handler)(nil)

// New returns a Handler, serving until Close.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Service == "":
		return nil, errors.New("httpgw: Service is required")
	case cfg.Auth == nil:
		return nil, fmt.Errorf("httpgw: service %s: Auth is required", cfg.Service)
	case cfg.Target == "" && cfg.Site == nil:
		return nil, fmt.Errorf("httpgw: service %s: Target is required", cfg.Service)
	}
	if _, _, err := net.SplitHostPort(cfg.Target); err != nil && cfg.Site == nil {
		return nil, fmt.Errorf("httpgw: service %s: Target %q: %w", cfg.Service, cfg.Target, err)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.ResponseHeaderTimeout == 0 {
		cfg.ResponseHeaderTimeout = time.Minute
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.MaxJars == 0 {
		cfg.MaxJars = 1000
	}
	if cfg.JarIdle == 0 {
		cfg.JarIdle = 12 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, p := range []struct{ key, v string }{{"MJPEGPath", cfg.MJPEGPath}, {"SnapshotPath", cfg.SnapshotPath}} {
		if p.v != "" && (p.v[0] != '/' || strings.ContainsAny(p.v, " \r\n\t#")) {
			return nil, fmt.Errorf("httpgw: service %s: %s %q: want a path on the camera, like /video.mjpg", cfg.Service, p.key, p.v)
		}
	}
	if cfg.MaxResizes <= 0 {
		cfg.MaxResizes = min(2, runtime.GOMAXPROCS(0))
	}
	if cfg.QueueFrames <= 0 {
		cfg.QueueFrames = 2
	}
	if cfg.MJPEGStallTimeout <= 0 {
		cfg.MJPEGStallTimeout = 10 * time.Second
	}
	if cfg.MJPEGLinger <= 0 {
		cfg.MJPEGLinger = 5 * time.Second
	}
	discard := slog.New(slog.DiscardHandler)
	h := &Handler{cfg: cfg, log: cfg.Logger, audit: cfg.Audit, conns: map[*viewerConn]struct{}{},
		served: make(chan struct{})}
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
	h.jars = newJars(cfg.MaxJars, cfg.JarIdle, cfg.Now)
	h.tr = h.transport()
	h.camRT = h.tr
	if l := cfg.CameraLogin; l != nil {
		h.camRT = &cameraAuth{next: h.tr, user: l.Username, pass: l.Password}
	}
	h.proxy = h.newProxy()
	h.rz = newResizer(cfg.MaxResizes)
	if cfg.MJPEGPath != "" {
		h.mjpeg = newFanout(h, cfg.MJPEGPath)
	}
	h.ln = gateway.NewConnListener(nil)
	h.srv = &http.Server{
		Handler:           http.HandlerFunc(h.serveHTTP),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return h.ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if vc, ok := c.(*viewerConn); ok {
				return context.WithValue(ctx, viewerKey{}, vc)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(h.served)
		_ = h.srv.Serve(h.ln)
	}()
	return h, nil
}

// Serve hands the viewer's connection to the handler's HTTP server and returns
// when that connection is closed (the viewer left, idle or header timeout, ctx
// ended, Close).
func (h *Handler) Serve(ctx context.Context, v *gateway.Viewer) error {
	vc := &viewerConn{Conn: v.Conn, v: v, done: make(chan struct{}), start: h.cfg.Now(), meter: h.cfg.Meter, svc: h.cfg.Service}
	if len(v.Peeked) > 0 {
		vc.peeked = v.Peeked
	}
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
				"bytes_out", vc.out.Load(), "bytes_in", vc.in.Load(), "duration", h.cfg.Now().Sub(vc.start).Round(time.Millisecond))
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
	}
	return nil
}

// Close stops serving: every viewer connection is closed, running requests
// end, and Close waits for them. Idempotent.
func (h *Handler) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	conns := make([]*viewerConn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	h.cancel()
	h.ln.Close()
	_ = h.srv.Close()
	// Hijacked connections (WebSocket) are not the server's any more.
	for _, c := range conns {
		c.Close()
	}
	<-h.served
	h.wg.Wait()
	if h.mjpeg != nil {
		h.mjpeg.close()
	}
	h.tr.CloseIdleConnections()
	return nil
}

// allowed reports whether viewer may use this service.
func (h *Handler) allowed(viewer string) bool {
	return h.viewers == nil || h.viewers[viewer]
}

// rateLimited reports whether a line guarded by last may be logged now (at
// most one a minute), and marks it logged.
func (h *Handler) rateLimited(last *atomic.Int64) bool {
	now := h.cfg.Now().UnixNano()
	l := last.Load()
	if now-l < int64(time.Minute) || !last.CompareAndSwap(l, now) {
		return true
	}
	return false
}

type viewerKey struct{}

// viewerConn is a viewer's connection as the HTTP server sees it: Peeked
// replayed first, bytes counted as they move, done closed at Close.
type viewerConn struct {
	net.Conn
	v      *gateway.Viewer
	peeked []byte
	start  time.Time
	in     atomic.Int64
	out    atomic.Int64

	wmu  sync.Mutex // held during a write: Close ends the write side only between writes
	once sync.Once
	done chan struct{}

	meter *meter.Meter
	svc   string
	acct  atomic.Pointer[identity] // the first authenticated viewer: counted to them from then on

	mu     sync.Mutex // guards viewer
	viewer string     // the first authenticated viewer on this conn, for audit
}

func (c *viewerConn) Read(b []byte) (int, error) {
	var n int
	var err error
	if len(c.peeked) > 0 {
		// Only the server's single reader goroutine reads, so peeked needs no lock.
		n = copy(b, c.peeked)
		c.peeked = c.peeked[n:]
	} else {
		n, err = c.Conn.Read(b)
	}
	if n > 0 {
		c.in.Add(int64(n))
		c.v.Count(int64(n), 0)
		if id := c.acct.Load(); id != nil {
			c.meter.Add(id.viewer, c.svc, id.session, int64(n), 0)
		}
	}
	return n, err
}

func (c *viewerConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	n, err := c.Conn.Write(b)
	c.wmu.Unlock()
	if n > 0 {
		c.out.Add(int64(n))
		c.v.Count(0, int64(n))
		if id := c.acct.Load(); id != nil {
			c.meter.Add(id.viewer, c.svc, id.session, 0, int64(n))
		}
	}
	return n, err
}

// Close ends the connection. With no write in flight (the HTTP server
// closing after its last response, e.g. to a "Connection: close" request)
// it first ends the write side as TCP's close would, so that what was written
// arrives: a relayed viewer's tunnel stream is aborted by a Close without
// that (RESET_STREAM), and its last response with it. During a write (a
// shutdown, a WebSocket's end) it aborts, as before.
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

// identify records the conn's viewer at its first authenticated request and
// reports whether it was the first. From then on the conn's bytes count
// towards that viewer in the meter, those before (the login) included.
func (c *viewerConn) identify(id identity) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.viewer != "" {
		return false
	}
	c.viewer = id.viewer
	// Requests on a conn are served one at a time: no write runs now.
	c.acct.Store(&identity{viewer: id.viewer, session: id.session})
	c.meter.Add(id.viewer, c.svc, id.session, c.in.Load(), c.out.Load())
	return true
}

func (c *viewerConn) viewerName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.viewer
}

type chanAddr struct{}

func (chanAddr) Network() string { return "gateway" }
func (chanAddr) String() string  { return "gateway" }
