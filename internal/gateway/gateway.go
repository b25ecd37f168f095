package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Listener.
type Config struct {
	// Service names the service in logs and refusals. Required.
	Service string
	// Kind selects the built-in Handler (see HandlerFor); "" is tcp. Ignored
	// when Handler is set.
	Kind string
	// Handler serves admitted viewers; nil = HandlerFor(Kind).
	Handler Handler
	// Addr is the TCP address to listen on. Ignored when Listener is set.
	Addr string
	// Listener is an already-bound listener to serve; nil = listen on Addr. Its
	// conns need not be *net.TCPConn (TLS, wrappers): the kernel splice is used
	// only where both sides are TCP sockets.
	Listener net.Listener
	// Policy is the access rule; the zero Policy refuses everyone.
	Policy Policy
	// Dial reaches the backend. Required.
	Dial DialFunc
	// DialTimeout bounds Dial. Zero means 10s.
	DialTimeout time.Duration
	// Intercept, if set, sees each connection first, before the access rule. When it
	// returns handled it has taken the connection and the gateway neither dials nor
	// splices. Otherwise the connection is a viewer's like any other; replay is what
	// Intercept read from it while deciding, and the backend gets those bytes first.
	// The agent uses it to answer the relay's reachability probes.
	Intercept func(c net.Conn, viewer netip.AddrPort) (handled bool, replay []byte)
	// Limiter counts connections against the daemon's caps (global, per
	// source, idle per source); give every listener of a daemon the same
	// one. Nil = a Limiter of this listener's own with the default Limits.
	Limiter *Limiter
	// MaxConns caps this service's open connections, so that it can't take
	// the room the daemon's other services need. Zero means
	// DefaultMaxConnsPerService; negative, no limit.
	MaxConns int
	// FirstByteTimeout is how long a viewer may take to send its first byte
	// (with TLS: to start and finish its handshake) before it is reset. Zero
	// means off (with TLS: DefaultHandshakeTimeout): right for tcp, whose
	// protocol may let the server speak first. Services whose viewers must
	// speak first set it (DefaultHandshakeTimeout). Once a byte has arrived
	// (with TLS: the handshake is done) no deadline is left: video may run
	// for days.
	FirstByteTimeout time.Duration
	// TLS, if set, terminates TLS on this service (see tls.go): the first
	// byte must start a handshake, which must finish within the first-byte
	// deadline (FirstByteTimeout, or DefaultHandshakeTimeout if that is
	// zero); the Handler then gets the *tls.Conn. Its NextProtos should
	// include "acme-tls/1" when it answers TLS-ALPN-01 challenges: such
	// handshakes end the connection without reaching the Handler. Nil means
	// no TLS: the viewer's bytes go to the Handler as they are.
	TLS *tls.Config
	// Plain answers a viewer whose first bytes on a TLS service are not a
	// TLS handshake, under the same deadline (read and write); the
	// connection is closed when it returns. RedirectHTTPS suits http
	// services. Nil closes such connections at once. Ignored without TLS.
	Plain func(c net.Conn, peeked []byte)
	// Logger receives one line per refused or failed connection (refusals at
	// most one a second). Nil discards.
	Logger *slog.Logger
}

// Sentinel errors of ServeConn.
var (
	// ErrDenied: the viewer's address is not allowed by the service's rule.
	ErrDenied = errors.New("viewer not allowed by the service's access rule")
	// ErrClosed: the listener is shut down.
	ErrClosed = errors.New("gateway closed")
)

// Listener serves one service: its public port, and connections handed to it
// by ServeConn (viewer streams through the tunnel).
type Listener struct {
	cfg      Config
	ln       net.Listener // nil: ServeConn only
	log      *slog.Logger
	lim      *Limiter
	handler  Handler
	dial     Dialer
	maxConns int

	conns sync.WaitGroup // one per connection past the limits
	mu    sync.Mutex     // guards the fields below
	live  map[*conn]struct{}
	open  int // connections holding a slot
	srcs  map[netip.Addr]*sourceCount

	total    atomic.Int64
	denied   atomic.Int64
	refused  atomic.Int64
	pending  atomic.Int64
	bytesIn  atomic.Int64 // viewer to backend, counted per chunk as it moves
	bytesOut atomic.Int64
	closing  atomic.Bool

	tlsFailed atomic.Int64
	plain     atomic.Int64

	lastRefusal atomic.Int64 // unix nanos of the last logged refusal
	unlogged    atomic.Int64 // refusals since then
	lastDeny    atomic.Int64
	lastTLSFail atomic.Int64
}

// Stats are a listener's counters. Bytes move while connections run.
type Stats struct {
	// Active are open connections (past the limits; some may not have
	// reached the backend yet); Pending those on which no byte has moved.
	Active, Pending int64
	// Total counts accepted connections; Denied those refused by the access
	// rule; Refused those refused by a limit.
	Total, Denied, Refused int64
	// BytesIn went viewer to backend, BytesOut backend to viewer.
	BytesIn, BytesOut int64
	// TLSFailed counts TLS handshakes that failed or did not finish in
	// time; Plain, viewers whose first bytes on a TLS service were not a
	// handshake (answered by Config.Plain, or closed).
	TLSFailed, Plain int64
}

// Listen binds the listener (on cfg.Listener or cfg.Addr); Serve then accepts.
func Listen(cfg Config) (*Listener, error) {
	if cfg.Listener == nil {
		ln, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("gateway: service %s: %w", cfg.Service, err)
		}
		cfg.Listener = ln
	}
	l, err := New(cfg)
	if err != nil {
		cfg.Listener.Close()
		return nil, err
	}
	return l, nil
}

// New returns a Listener for cfg without binding Addr: with cfg.Listener nil it
// serves only what ServeConn hands it.
func New(cfg Config) (*Listener, error) {
	if cfg.Dial == nil {
		return nil, errors.New("gateway: Dial is required")
	}
	h := cfg.Handler
	if h == nil {
		var err error
		if h, err = HandlerFor(cfg.Kind); err != nil {
			return nil, fmt.Errorf("gateway: service %s: %w", cfg.Service, err)
		}
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim := cfg.Limiter
	if lim == nil {
		lim = NewLimiter(Limits{})
	}
	return &Listener{
		cfg: cfg, ln: cfg.Listener, log: log.With("service", cfg.Service), lim: lim,
		handler: h, dial: cfg.Dial, maxConns: limitOf(cfg.MaxConns, DefaultMaxConnsPerService),
		live: map[*conn]struct{}{}, srcs: map[netip.Addr]*sourceCount{},
	}, nil
}

// Addr is the bound address; nil for a Listener without a socket.
func (l *Listener) Addr() net.Addr {
	if l.ln == nil {
		return nil
	}
	return l.ln.Addr()
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	active := int64(l.open)
	l.mu.Unlock()
	return Stats{Active: active, Pending: l.pending.Load(), Total: l.total.Load(), Denied: l.denied.Load(),
		Refused: l.refused.Load(), BytesIn: l.bytesIn.Load(), BytesOut: l.bytesOut.Load(),
		TLSFailed: l.tlsFailed.Load(), Plain: l.plain.Load()}
}

// Sources returns this service's n busiest sources (n <= 0: all), most
// connections first.
func (l *Listener) Sources(n int) []SourceCount {
	l.mu.Lock()
	out := make([]SourceCount, 0, len(l.srcs))
	for a, sc := range l.srcs {
		out = append(out, SourceCount{Source: a, Conns: sc.conns, Pending: sc.pending})
	}
	l.mu.Unlock()
	return topSources(out, n)
}

// Serve accepts until Close or ctx ends, handling each viewer in its own goroutine.
// Connections still open when it returns keep running; Shutdown waits for them.
func (l *Listener) Serve(ctx context.Context) error {
	if l.ln == nil {
		return errors.New("gateway: service " + l.cfg.Service + " has no listener to serve")
	}
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stop()
	var delay time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.closing.Load() || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", "err", err, "in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		// Limits are checked here, before a goroutine exists: a flood costs
		// an accept and a reset per connection, nothing that stays.
		c, err := l.admitConn(nc, peerAddr(nc))
		if errors.Is(err, ErrClosed) {
			return nil
		}
		if err != nil {
			continue
		}
		go func() {
			defer l.finish(c)
			l.pipeline(ctx, c)
		}()
	}
}

// ServeConn runs the pipeline on a connection accepted elsewhere (a viewer
// stream through the tunnel; viewer is the address the relay saw) and returns
// when it ends. The error says why a viewer was refused: a *LimitError,
// ErrDenied, ErrClosed, or the handler's error.
func (l *Listener) ServeConn(ctx context.Context, nc net.Conn, viewer netip.AddrPort) error {
	c, err := l.admitConn(nc, viewer)
	if err != nil {
		return err
	}
	defer l.finish(c)
	return l.pipeline(ctx, c)
}

// conn is one viewer connection holding a slot.
type conn struct {
	l      *Listener
	nc     net.Conn
	viewer netip.AddrPort
	src    netip.Addr   // sourceKey(viewer)
	state  atomic.Int32 // statePending...; written under the Limiter's mu
	idle   *time.Timer  // fires after the grace while pending; nil: no pending cap
}

// pending reports whether nothing has moved on c yet.
func (c *conn) pending() bool { s := c.state.Load(); return s == statePending || s == stateIdle }

// start marks c as no longer idle: it leaves the pending counts.
func (c *conn) start() {
	l := c.l
	if !l.lim.start(c.src, &c.state) {
		return
	}
	if c.idle != nil {
		c.idle.Stop()
	}
	l.pending.Add(-1)
	l.mu.Lock()
	if sc := l.srcs[c.src]; sc != nil {
		sc.pending--
	}
	l.mu.Unlock()
}

// overdue runs when c has been pending for the grace: it is idle now, and
// reset if its source keeps too many idle connections.
func (c *conn) overdue() {
	if lerr := c.l.lim.overdue(c.src, &c.state); lerr != nil {
		c.l.refuse(c.nc, c.viewer, lerr)
	}
}

// admitConn is the limits step: it takes a slot for nc in this service and in
// the Limiter, or resets nc and says why.
func (l *Listener) admitConn(nc net.Conn, viewer netip.AddrPort) (*conn, error) {
	l.total.Add(1)
	src := sourceKey(viewer.Addr())
	// Take the slot under mu, ordered against Shutdown's Wait: a WaitGroup
	// must not grow from zero while someone waits on it.
	l.mu.Lock()
	if l.closing.Load() {
		l.mu.Unlock()
		nc.Close()
		return nil, ErrClosed
	}
	var lerr *LimitError
	if l.maxConns > 0 && l.open >= l.maxConns {
		lerr = &LimitError{Limit: LimitConnsPerService, Key: l.cfg.Service, Max: limitString(l.maxConns)}
	} else {
		lerr = l.lim.acquire(src)
	}
	if lerr != nil {
		l.mu.Unlock()
		l.refuse(nc, viewer, lerr)
		return nil, lerr
	}
	c := &conn{l: l, nc: nc, viewer: viewer, src: src}
	l.open++
	l.pending.Add(1)
	sc := l.srcs[src]
	if sc == nil {
		sc = &sourceCount{}
		l.srcs[src] = sc
	}
	sc.conns++
	sc.pending++
	l.live[c] = struct{}{}
	l.conns.Add(1)
	l.mu.Unlock()
	if l.lim.maxPending > 0 {
		c.idle = time.AfterFunc(l.lim.grace, c.overdue)
	}
	return c, nil
}

// finish closes c's connection and gives back its slot.
func (l *Listener) finish(c *conn) {
	c.nc.Close()
	if c.idle != nil {
		c.idle.Stop()
	}
	old := l.lim.release(c.src, &c.state)
	pending := old == statePending || old == stateIdle
	l.mu.Lock()
	l.open--
	delete(l.live, c)
	if sc := l.srcs[c.src]; sc != nil {
		sc.conns--
		if pending {
			sc.pending--
		}
		if sc.conns == 0 {
			delete(l.srcs, c.src)
		}
	}
	l.mu.Unlock()
	if pending {
		l.pending.Add(-1)
	}
	l.conns.Done()
}

// pipeline takes an admitted connection through sniff, TLS and the access
// rule to the service's handler.
func (l *Listener) pipeline(ctx context.Context, c *conn) error {
	nc := c.nc
	var peeked []byte

	// Sniff: first the Intercept (the relay's probes), which may read.
	if l.cfg.Intercept != nil {
		handled, replay := l.cfg.Intercept(nc, c.viewer)
		if handled {
			return nil
		}
		if len(replay) > 0 {
			c.start()
			peeked = replay
		}
	}

	// Admit by address as soon as it is known, before reading anything a
	// refused viewer sends. (Viewer logins, which need TLS, come after it.)
	if !l.cfg.Policy.Allows(c.viewer.Addr()) {
		l.denied.Add(1)
		l.logDenied(c.viewer)
		reset(nc)
		return ErrDenied
	}

	// Sniff: the first-byte deadline, for protocols whose viewer speaks
	// first. With TLS it also bounds the handshake: a viewer that starts one
	// and stalls must not hold its slot.
	wait := l.cfg.FirstByteTimeout
	if l.cfg.TLS != nil && wait <= 0 {
		wait = DefaultHandshakeTimeout
	}
	deadline := time.Now().Add(wait)
	if wait > 0 && len(peeked) == 0 {
		b, err := firstBytes(nc, deadline, l.cfg.TLS != nil)
		if err != nil {
			if os.IsTimeout(err) {
				lerr := &LimitError{Limit: LimitFirstByte, Key: c.viewer.Addr().String(), Max: wait.String()}
				l.refuse(nc, c.viewer, lerr)
				return lerr
			}
			return nil // gone before saying anything
		}
		if l.cfg.TLS == nil {
			c.start() // with TLS: once the handshake is done
		}
		peeked = b
	}

	// TLS terminates here, under the same deadline; the handler gets the
	// *tls.Conn and the sniffed bytes went into the handshake.
	if l.cfg.TLS != nil {
		tc, err := l.handshake(ctx, c, peeked, deadline)
		if tc == nil {
			return err
		}
		nc, peeked = tc, nil
	}

	v := &Viewer{Conn: nc, Addr: c.viewer, Service: l.cfg.Service, Peeked: peeked, Log: l.log, c: c,
		Authenticated: authenticatedViewer(c.nc)}
	return l.handler.Serve(ctx, v)
}

// firstBytes waits until deadline for the viewer's first bytes and returns
// them; the deadline is cleared afterwards unless keep.
func firstBytes(nc net.Conn, deadline time.Time, keep bool) ([]byte, error) {
	nc.SetReadDeadline(deadline)
	b := make([]byte, 2048)
	n, err := nc.Read(b)
	if n > 0 {
		err = nil
	} else if err == nil {
		err = io.ErrNoProgress
	}
	if err != nil {
		return nil, err
	}
	if !keep {
		if err := nc.SetReadDeadline(time.Time{}); err != nil {
			return nil, err
		}
	}
	return b[:n], nil
}

// refuse resets a viewer a limit refused, and logs why at most once a second.
func (l *Listener) refuse(nc net.Conn, viewer netip.AddrPort, e *LimitError) {
	l.refused.Add(1)
	reset(nc)
	now := time.Now().UnixNano()
	last := l.lastRefusal.Load()
	if now-last < int64(time.Second) || !l.lastRefusal.CompareAndSwap(last, now) {
		l.unlogged.Add(1)
		return
	}
	l.log.Warn("viewer refused: limit reached", "limit", e.Limit, "key", e.Key, "value", e.Max,
		"viewer", viewer.Addr(), "fix", e.Fix(), "refused_since_last_line", l.unlogged.Swap(0))
}

// A Refuser is a connection that can tell its peer it was refused in a way the
// peer can't take for the end of the stream: a tunnel stream aborts with
// proto.StreamRefused, and the relay then resets the viewer. The gateway
// refuses such a conn with Refuse instead of closing it; Refuse must release
// it as Close does.
type Refuser interface {
	Refuse()
}

// reset closes nc with a TCP reset where nc is (or wraps) a TCP socket, so the
// refused peer learns at once and no TIME_WAIT is left; with Refuse where nc is
// a Refuser; a plain Close otherwise.
func reset(nc net.Conn) {
	if r, ok := nc.(Refuser); ok {
		r.Refuse()
		return
	}
	inner := nc
	for {
		if tc, ok := inner.(*net.TCPConn); ok {
			tc.SetLinger(0)
			tc.Close()
			break
		}
		w, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = w.NetConn()
	}
	nc.Close()
}

// logDenied logs refused viewers at most once a second, so a scanner can't flood the log.
func (l *Listener) logDenied(viewer netip.AddrPort) {
	now := time.Now().UnixNano()
	last := l.lastDeny.Load()
	if now-last < int64(time.Second) || !l.lastDeny.CompareAndSwap(last, now) {
		return
	}
	l.log.Info("viewer refused by the service's allow rule", "viewer", viewer.Addr(), "denied_total", l.denied.Load())
}

// peerAddr is nc's remote address as a plain (unmapped) AddrPort; the zero
// AddrPort if nc's address is not an IP one.
func peerAddr(nc net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	switch a := nc.RemoteAddr().(type) {
	case nil:
		return ap
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Close stops accepting. Open connections continue; see Shutdown.
func (l *Listener) Close() error {
	l.mu.Lock()
	already := l.closing.Swap(true)
	l.mu.Unlock()
	if already || l.ln == nil {
		return nil
	}
	return l.ln.Close()
}

// Shutdown stops accepting, waits for open connections until ctx ends, then closes
// whatever is left and waits for its goroutines.
func (l *Listener) Shutdown(ctx context.Context) error {
	l.Close()
	done := make(chan struct{})
	go func() { l.conns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	for c := range l.live {
		c.nc.Close()
	}
	l.mu.Unlock()
	<-done
	return ctx.Err()
}
