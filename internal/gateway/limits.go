package gateway

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Default viewer limits. They are sized for a home: a few viewers at a time,
// cameras that take 4 to 16 clients, and a tunnel that carries 4096 streams
// per agent. A video stream is never cut by them: once a byte has moved a
// connection has no deadline left and only counts against the caps.
const (
	// DefaultMaxConns caps the open viewer connections of every listener
	// sharing one Limiter (a daemon).
	DefaultMaxConns = 4096
	// DefaultMaxConnsPerSource caps one source's open connections across
	// those listeners: a family behind one NAT stays far below it.
	DefaultMaxConnsPerSource = 64
	// DefaultMaxPendingPerSource is how many idle connections (nothing moved
	// either way for PendingGrace) one source may keep; newer idle ones are
	// reset. It is what keeps a few idle connections from locking a camera
	// that takes 8 clients, while a browser's burst of parallel connections,
	// which all speak at once, never counts.
	DefaultMaxPendingPerSource = 4
	// DefaultPendingGrace is how long a connection may take to move its first
	// byte before it counts as idle: the backend dial (through the tunnel, to
	// the camera) fits in it.
	DefaultPendingGrace = 5 * time.Second
	// DefaultMaxConnsPerService caps one service's open connections, so that
	// one service can't take all of an agent's 4096 tunnel streams: a quarter
	// each leaves room for the others.
	DefaultMaxConnsPerService = 1024
	// DefaultHandshakeTimeout is the first-byte deadline for service kinds
	// whose viewer must speak first (TLS, HTTP, RTSP). Plain tcp does not know
	// who speaks first, so there it is off unless configured.
	DefaultHandshakeTimeout = 10 * time.Second
)

// Limit names, as the config keys under limits: that set them.
const (
	LimitConns           = "max_conns"
	LimitConnsPerSource  = "max_conns_per_source"
	LimitPendingSource   = "max_pending_per_source"
	LimitConnsPerService = "max_conns_per_service"
	LimitFirstByte       = "first_byte_timeout"
)

// LimitError says why a viewer was refused: which limit, for which key (a
// source, a service, or "all"), and the limit's value.
type LimitError struct {
	Limit string // one of the Limit* names
	Key   string
	Max   string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("viewer refused: %s reached for %s (%s)", e.Limit, e.Key, e.Max)
}

// Fix tells the operator what to change when the refused viewer was legitimate.
func (e *LimitError) Fix() string {
	if e.Limit == LimitFirstByte {
		return "the viewer sent nothing in time; raise " + e.Limit + " for the service, or 0 to turn it off"
	}
	return "if this is a real viewer, raise limits." + e.Limit + " in the config (-1: no limit)"
}

// Limits bound the viewer connections of every Listener that shares a
// Limiter. Zero fields take the defaults above; a negative field means no limit.
type Limits struct {
	// MaxConns caps the open connections in total. Default DefaultMaxConns.
	MaxConns int
	// MaxConnsPerSource caps one source's open connections. A source is an
	// IPv4 address or an IPv6 /64 (what one subscriber gets). Default
	// DefaultMaxConnsPerSource.
	MaxConnsPerSource int
	// MaxPendingPerSource caps one source's idle connections: those on which
	// no byte has moved, either way, for PendingGrace. Default
	// DefaultMaxPendingPerSource.
	MaxPendingPerSource int
	// PendingGrace: see MaxPendingPerSource. Default DefaultPendingGrace.
	PendingGrace time.Duration
}

func limitOf(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0 // no limit
	}
	return v
}

func limitString(v int) string {
	if v <= 0 {
		return "no limit"
	}
	return fmt.Sprintf("max %d", v)
}

// A Limiter counts viewer connections for the listeners that share it: give
// every listener of a daemon the same one, so the caps are the daemon's.
type Limiter struct {
	maxConns, maxPerSource, maxPending int
	grace                              time.Duration

	mu      sync.Mutex // guards the fields below and every conn's state
	total   int
	sources map[netip.Addr]*sourceCount
}

// sourceCount is one source's connections: open, pending (nothing moved
// yet), and of those the idle ones (pending for longer than the grace).
type sourceCount struct{ conns, pending, idle int }

// Connection states, in conn.state.
const (
	statePending int32 = iota // nothing has moved yet
	stateIdle                 // still nothing, after the grace
	stateStarted              // a byte has moved
	stateDone                 // released
)

// NewLimiter returns a Limiter enforcing lim (zero fields: defaults).
func NewLimiter(lim Limits) *Limiter {
	grace := lim.PendingGrace
	if grace == 0 {
		grace = DefaultPendingGrace
	}
	return &Limiter{
		maxConns:     limitOf(lim.MaxConns, DefaultMaxConns),
		maxPerSource: limitOf(lim.MaxConnsPerSource, DefaultMaxConnsPerSource),
		maxPending:   limitOf(lim.MaxPendingPerSource, DefaultMaxPendingPerSource),
		grace:        grace,
		sources:      map[netip.Addr]*sourceCount{},
	}
}

// sourceKey is what per-source limits count by: the IPv4 address, or the
// IPv6 /64, since one subscriber gets a whole /64.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// acquire takes a slot for a connection from src (a sourceKey); the
// connection starts out pending.
func (l *Limiter) acquire(src netip.Addr) *LimitError {
	l.mu.Lock()
	defer l.mu.Unlock()
	sc := l.sources[src]
	switch {
	case l.maxConns > 0 && l.total >= l.maxConns:
		return &LimitError{Limit: LimitConns, Key: "all", Max: limitString(l.maxConns)}
	case l.maxPerSource > 0 && sc != nil && sc.conns >= l.maxPerSource:
		return &LimitError{Limit: LimitConnsPerSource, Key: src.String(), Max: limitString(l.maxPerSource)}
	}
	if sc == nil {
		sc = &sourceCount{}
		l.sources[src] = sc
	}
	l.total++
	sc.conns++
	sc.pending++
	return nil
}

// start moves a pending or idle connection to started; false if it was not
// pending.
func (l *Limiter) start(src netip.Addr, state *atomic.Int32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := state.Load()
	if old != statePending && old != stateIdle {
		return false
	}
	state.Store(stateStarted)
	l.leavePendingLocked(src, old)
	return true
}

// overdue marks a connection still pending after the grace as idle. It
// returns a LimitError when that leaves its source over MaxPendingPerSource:
// the caller resets the connection.
func (l *Limiter) overdue(src netip.Addr, state *atomic.Int32) *LimitError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if state.Load() != statePending {
		return nil
	}
	state.Store(stateIdle)
	sc := l.sources[src]
	sc.idle++
	if l.maxPending > 0 && sc.idle > l.maxPending {
		return &LimitError{Limit: LimitPendingSource, Key: src.String(), Max: limitString(l.maxPending)}
	}
	return nil
}

// release gives back a connection's slot and returns the state it had.
func (l *Limiter) release(src netip.Addr, state *atomic.Int32) int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := state.Swap(stateDone)
	l.leavePendingLocked(src, old)
	l.total--
	if sc := l.sources[src]; sc != nil {
		sc.conns--
		if sc.conns == 0 {
			delete(l.sources, src)
		}
	}
	return old
}

func (l *Limiter) leavePendingLocked(src netip.Addr, old int32) {
	sc := l.sources[src]
	if sc == nil {
		return
	}
	switch old {
	case stateIdle:
		sc.idle--
		fallthrough
	case statePending:
		sc.pending--
	}
}

// Open returns the number of open connections counted by l.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// SourceCount is one source's open and not yet started connections.
type SourceCount struct {
	Source         netip.Addr
	Conns, Pending int
}

// Sources returns the n sources with the most open connections (n <= 0: all),
// most first: what the status page shows.
func (l *Limiter) Sources(n int) []SourceCount {
	l.mu.Lock()
	out := make([]SourceCount, 0, len(l.sources))
	for a, sc := range l.sources {
		out = append(out, SourceCount{Source: a, Conns: sc.conns, Pending: sc.pending})
	}
	l.mu.Unlock()
	return topSources(out, n)
}

func topSources(s []SourceCount, n int) []SourceCount {
	slices.SortFunc(s, func(a, b SourceCount) int {
		if c := cmp.Compare(b.Conns, a.Conns); c != 0 {
			return c
		}
		return a.Source.Compare(b.Source)
	})
	if n > 0 && len(s) > n {
		s = s[:n]
	}
	return s
}
