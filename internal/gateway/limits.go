package gateway

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
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
	// DefaultMaxPendingPerSource caps one source's connections on which no
	// byte has moved yet. Players and browsers speak at once, so a handful is
	// plenty; it is what keeps idle connections from locking a camera.
	DefaultMaxPendingPerSource = 4
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
	// MaxPendingPerSource caps one source's connections on which no byte has
	// moved yet, either way. Default DefaultMaxPendingPerSource.
	MaxPendingPerSource int
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
// every listener of a daemon the same one, so the caps are the daemon's. A
// Limiter may have a parent (the relay: one per agent under one for the
// daemon); a connection then needs room in both.
type Limiter struct {
	maxConns, maxPerSource, maxPending int
	parent                             *Limiter

	mu      sync.Mutex // guards the fields below
	total   int
	sources map[netip.Addr]*sourceCount
}

type sourceCount struct{ conns, pending int }

// NewLimiter returns a Limiter enforcing lim (zero fields: defaults) under
// parent (nil: none).
func NewLimiter(lim Limits, parent *Limiter) *Limiter {
	return &Limiter{
		maxConns:     limitOf(lim.MaxConns, DefaultMaxConns),
		maxPerSource: limitOf(lim.MaxConnsPerSource, DefaultMaxConnsPerSource),
		maxPending:   limitOf(lim.MaxPendingPerSource, DefaultMaxPendingPerSource),
		parent:       parent,
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

// acquire takes a pending slot for a connection from src (a sourceKey).
func (l *Limiter) acquire(src netip.Addr) *LimitError {
	l.mu.Lock()
	sc := l.sources[src]
	if sc == nil {
		sc = &sourceCount{}
	}
	var e *LimitError
	switch {
	case l.maxConns > 0 && l.total >= l.maxConns:
		e = &LimitError{Limit: LimitConns, Key: "all", Max: limitString(l.maxConns)}
	case l.maxPerSource > 0 && sc.conns >= l.maxPerSource:
		e = &LimitError{Limit: LimitConnsPerSource, Key: src.String(), Max: limitString(l.maxPerSource)}
	case l.maxPending > 0 && sc.pending >= l.maxPending:
		e = &LimitError{Limit: LimitPendingSource, Key: src.String(), Max: limitString(l.maxPending)}
	default:
		l.total++
		sc.conns++
		sc.pending++
		l.sources[src] = sc
	}
	l.mu.Unlock()
	if e != nil {
		return e
	}
	if l.parent != nil {
		if e := l.parent.acquire(src); e != nil {
			l.releaseOne(src, true)
			return e
		}
	}
	return nil
}

// started moves a connection from src out of the pending count.
func (l *Limiter) started(src netip.Addr) {
	l.mu.Lock()
	if sc := l.sources[src]; sc != nil {
		sc.pending--
	}
	l.mu.Unlock()
	if l.parent != nil {
		l.parent.started(src)
	}
}

// release gives back a connection's slot, here and in the parents.
func (l *Limiter) release(src netip.Addr, pending bool) {
	for ; l != nil; l = l.parent {
		l.releaseOne(src, pending)
	}
}

// releaseOne gives back a slot in l only, not in its parents.
func (l *Limiter) releaseOne(src netip.Addr, pending bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if sc := l.sources[src]; sc != nil {
		sc.conns--
		if pending {
			sc.pending--
		}
		if sc.conns == 0 {
			delete(l.sources, src)
		}
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
