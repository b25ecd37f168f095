package access

import (
	"net/netip"
	"slices"
	"time"
)

// policy is how failures turn into delays.
type policy struct {
	free   int           // failures before the first delay
	base   time.Duration // the first delay; each further failure doubles it
	max    time.Duration
	forget time.Duration // failures are forgiven after this long without one
}

var (
	// A source (an IPv4 address, an IPv6 /64) gets few tries, then long
	// delays: it is the attacker's own address that pays.
	sourcePolicy = policy{free: 5, base: time.Second, max: 15 * time.Minute, forget: time.Hour}
	// A name's delays are short, because the real viewer pays them too, and
	// they start only after failures from several sources (perSourceToName).
	namePolicy = policy{free: 10, base: time.Second, max: time.Minute, forget: time.Hour}
)

const (
	// perSourceToName is how many of one source's failures count against a
	// name: one address alone can never lock a viewer's name.
	perSourceToName = 3

	maxNameSources  = 32 // sources remembered per name entry
	maxKnownSources = 16 // per viewer: sources of recent successful logins
	knownFor        = 30 * 24 * time.Hour
	maxNameLen      = 64 // a stranger's name is kept (and audited) truncated
)

// tableLimits bound the Store's tables (a field, so tests can fill them fast).
type tableLimits struct {
	sources           int // per-source lockout entries
	strangers         int // per-name lockout entries for names that are not viewers
	sessions          int
	sessionsPerViewer int
	basic             int // cached Basic checks
}

var defaultLimits = tableLimits{sources: 4096, strangers: 1024, sessions: 4096, sessionsPerViewer: 32, basic: 1024}

// failures counts the failed attempts of one source or one name.
type failures struct {
	n        int
	last     time.Time // the last failure
	until    time.Time // locked until
	reported bool      // locked_out was audited for this lock
	// A source's failures are forgiven by a success only when they were all
	// for that viewer (a mistyped password): otherwise a guesser who is a
	// viewer too could wipe the count by logging in as himself.
	name  string // the name of the first failure (sources only)
	mixed bool   // failures for more than one name
}

// wait is how long f stays locked at now; 0 when it is not.
func (f *failures) wait(now time.Time) time.Duration {
	if now.Before(f.until) {
		return f.until.Sub(now)
	}
	return 0
}

// stale reports whether f holds nothing worth keeping at now.
func (p policy) stale(f *failures, now time.Time) bool {
	return !now.Before(f.until) && now.Sub(f.last) >= p.forget
}

// fail records a failure at now; it reports whether a new lock began.
func (p policy) fail(f *failures, now time.Time) bool {
	if p.stale(f, now) {
		*f = failures{}
	}
	f.n++
	f.last = now
	if f.n < p.free {
		return false
	}
	d := p.base << min(f.n-p.free, 30)
	if d > p.max || d <= 0 {
		d = p.max
	}
	f.until, f.reported = now.Add(d), false
	return true
}

// nameState is the lockout state of one name as typed.
type nameState struct {
	failures
	from  map[netip.Prefix]int       // failures counted per source, up to perSourceToName
	known map[netip.Prefix]time.Time // viewers only: sources that logged in as this viewer
}

// count records a failure from src; it reports whether it counted against the name.
func (n *nameState) count(src netip.Prefix, now time.Time) bool {
	if namePolicy.stale(&n.failures, now) {
		n.from = nil
	}
	if n.from == nil {
		n.from = make(map[netip.Prefix]int)
	}
	c, seen := n.from[src]
	if c >= perSourceToName {
		return false
	}
	// Past maxNameSources distinct sources it is a crowd: count every
	// failure, remember no more addresses.
	if seen || len(n.from) < maxNameSources {
		n.from[src] = c + 1
	}
	namePolicy.fail(&n.failures, now)
	return true
}

// knows reports whether src logged in as this viewer recently.
func (n *nameState) knows(src netip.Prefix, now time.Time) bool {
	t, ok := n.known[src]
	return ok && now.Sub(t) < knownFor
}

func (n *nameState) remember(src netip.Prefix, now time.Time) {
	if n.known == nil {
		n.known = make(map[netip.Prefix]time.Time)
	}
	if _, ok := n.known[src]; !ok && len(n.known) >= maxKnownSources {
		var oldest netip.Prefix
		var ot time.Time
		for k, t := range n.known {
			if ot.IsZero() || t.Before(ot) {
				oldest, ot = k, t
			}
		}
		delete(n.known, oldest)
	}
	n.known[src] = now
}

// sourceKey is the unit a source is limited by: an IPv4 address, or an IPv6
// /64 (one subscriber's usual allocation, where a host picks addresses freely).
func sourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p
	}
	p, _ := a.Prefix(a.BitLen()) // an invalid Addr gives the zero Prefix: one shared key
	return p
}

// evict makes room in m for one more entry: stale entries go first, then
// the oldest sixteenth, so that a full table is sorted once per limit/16
// insertions, not scanned at each.
func evict[K comparable, V any](m map[K]V, limit int, last func(V) time.Time, stale func(V) bool) {
	if len(m) < limit {
		return
	}
	type entry struct {
		k K
		t time.Time
	}
	all := make([]entry, 0, len(m))
	for k, v := range m {
		if stale(v) {
			delete(m, k)
			continue
		}
		all = append(all, entry{k, last(v)})
	}
	if len(m) < limit {
		return
	}
	slices.SortFunc(all, func(a, b entry) int { return a.t.Compare(b.t) })
	for _, e := range all[:max(1, len(all)/16)] {
		delete(m, e.k)
	}
}
