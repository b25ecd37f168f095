// Package gateway is the viewer-facing side of Porthole: a TCP listener per exposed
// service that checks each viewer against the service's access rule and splices the
// connection to wherever Dial leads. The relay dials a QUIC stream through the
// agent's tunnel; the agent's direct listeners dial the camera on the LAN. Both use
// this one package, so the policy code facing the internet is the same on both paths.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DialFunc connects a viewer (at viewer) to the service's backend.
type DialFunc func(ctx context.Context, viewer netip.AddrPort) (Conn, error)

// Config configures a Listener.
type Config struct {
	// Service names the service in logs. Required.
	Service string
	// Addr is the TCP address to listen on. Ignored when Listener is set.
	Addr string
	// Listener is an already-bound listener to serve; nil = listen on Addr.
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
	Intercept func(c *net.TCPConn, viewer netip.AddrPort) (handled bool, replay []byte)
	// Logger receives one line per refused or failed connection. Nil discards.
	Logger *slog.Logger
}

// Listener serves one service's public port.
type Listener struct {
	cfg Config
	ln  net.Listener
	log *slog.Logger

	conns sync.WaitGroup // one per accepted connection
	mu    sync.Mutex     // guards the fields below
	live  map[net.Conn]struct{}

	active   atomic.Int64
	total    atomic.Int64
	denied   atomic.Int64
	bytesIn  atomic.Int64 // viewer to backend, counted when a connection ends
	bytesOut atomic.Int64
	lastDeny atomic.Int64 // unix nanos of the last logged denial
	closing  atomic.Bool
}

// Stats are a listener's counters. Bytes are counted when a connection ends.
type Stats struct {
	Active, Total, Denied int64
	BytesIn, BytesOut     int64
}

// Listen binds the listener; Serve then accepts.
func Listen(cfg Config) (*Listener, error) {
	if cfg.Dial == nil {
		return nil, errors.New("gateway: Dial is required")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("gateway: service %s: %w", cfg.Service, err)
		}
	}
	return &Listener{cfg: cfg, ln: ln, log: log.With("service", cfg.Service), live: map[net.Conn]struct{}{}}, nil
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	return Stats{Active: l.active.Load(), Total: l.total.Load(), Denied: l.denied.Load(),
		BytesIn: l.bytesIn.Load(), BytesOut: l.bytesOut.Load()}
}

// Serve accepts until Close or ctx ends, handling each viewer in its own goroutine.
// Connections still open when it returns keep running; Shutdown waits for them.
func (l *Listener) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	defer stop()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
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
		// Add under mu, ordered against Shutdown's Wait: a WaitGroup must not
		// grow from zero while someone waits on it.
		l.mu.Lock()
		if l.closing.Load() {
			l.mu.Unlock()
			c.Close()
			return nil
		}
		l.conns.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.conns.Done()
			l.handle(ctx, c)
		}()
	}
}

func (l *Listener) track(c net.Conn, add bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if add {
		l.live[c] = struct{}{}
	} else {
		delete(l.live, c)
	}
}

func (l *Listener) handle(ctx context.Context, c net.Conn) {
	tc := c.(*net.TCPConn)
	viewer := tc.RemoteAddr().(*net.TCPAddr).AddrPort()
	viewer = netip.AddrPortFrom(viewer.Addr().Unmap(), viewer.Port())
	l.total.Add(1)
	var replay []byte
	if l.cfg.Intercept != nil {
		var handled bool
		if handled, replay = l.cfg.Intercept(tc, viewer); handled {
			return
		}
	}
	if !l.cfg.Policy.Allows(viewer.Addr()) {
		l.denied.Add(1)
		l.logDenied(viewer)
		tc.SetLinger(0)
		tc.Close()
		return
	}
	l.active.Add(1)
	defer l.active.Add(-1)
	l.track(tc, true)
	defer l.track(tc, false)
	tc.SetKeepAlive(true)
	tc.SetNoDelay(true)

	dctx, cancel := context.WithTimeout(ctx, l.cfg.DialTimeout)
	back, err := l.cfg.Dial(dctx, viewer)
	cancel()
	if err != nil {
		l.log.Warn("viewer could not be connected", "viewer", viewer, "err", err)
		tc.Close()
		return
	}
	if len(replay) > 0 {
		if _, err := back.Write(replay); err != nil {
			l.log.Debug("viewer connection ended with error", "viewer", viewer, "err", err)
			tc.Close()
			back.Close()
			return
		}
	}
	aToB, bToA, err := Splice(tc, back)
	l.bytesIn.Add(aToB)
	l.bytesOut.Add(bToA)
	if err != nil {
		l.log.Debug("viewer connection ended with error", "viewer", viewer, "in", aToB, "out", bToA, "err", err)
	} else {
		l.log.Debug("viewer connection ended", "viewer", viewer, "in", aToB, "out", bToA)
	}
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

// Close stops accepting. Open connections continue; see Shutdown.
func (l *Listener) Close() error {
	l.mu.Lock()
	already := l.closing.Swap(true)
	l.mu.Unlock()
	if already {
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
		c.Close()
	}
	l.mu.Unlock()
	<-done
	return ctx.Err()
}
