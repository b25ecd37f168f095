// Package access decides who may connect through the agent's gateway to http
// and rtsp services: viewers and their passwords, login sessions, lockout of
// password guessers, URL tokens for embeds (links), and an audit log.
//
// Passwords are argon2id hashes in PHC form (HashPassword, CheckHash). A wrong
// password and an unknown viewer name give the same ErrBadLogin after the same
// work: unknown names are verified against a dummy hash with a viewer's cost.
// At most MaxHashes verifications run at once, because each takes the hash's
// memory (19 MiB with the default parameters); others wait their turn. One
// source's attempts take turns among themselves, so a storm from one address
// holds one slot at most, and a viewer elsewhere waits for no more than the
// hashes already running.
//
// Lockout has two counters, and a locked attempt is refused (LockedError)
// without hashing:
//   - per source (an IPv4 address or an IPv6 /64): 5 free failures, then
//     delays doubling from 1 s to 15 min. The attacker's own address pays.
//   - per name as typed: delays doubling from 1 s to only 1 min, after 10
//     failures, where one source counts at most 3 times. So a storm from one
//     address, at a viewer's name or at random names, locks that address and
//     never the viewer: the viewer logs in from anywhere else at once. Only a
//     crowd of addresses guessing one name slows that name down, and even then
//     a source the viewer logged in from in the last 30 days is exempt.
//
// Both are forgiven after an hour without failures, and by a success: the
// name's failures, and the source's when they were all for that name (a
// guesser who is a viewer too can't wipe his count by logging in as himself). Every table a stranger can grow is
// bounded (sources, names that are not viewers, the addresses remembered per
// name); when full, stale entries go first, then the oldest.
//
// Sessions live in memory only, for SessionTTL (default 30 days): a restart
// of the agent logs every viewer out, which costs a viewer one login and
// keeps no session secret on disk. Each login gets a fresh random ID; a
// viewer keeps at most 32 sessions (the oldest goes), the Store 4096.
//
// Links are URL tokens for players that cannot log in (a Home Assistant
// picture card). CreateLink, ListLinks and RevokeLink edit StateDir/links.json,
// which holds only SHA-256 hashes of the tokens; a running Store notices the
// file's changes within a second, so a revoke takes effect without a restart.
package access

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// Config configures a Store.
type Config struct {
	// Viewers maps a viewer's name to the argon2id hash of their password
	// (PHC form, as HashPassword makes it). Empty: nobody can log in.
	Viewers map[string]string
	// StateDir holds links.json (the links); "" = no links.
	StateDir string
	// SessionTTL is how long a session lasts after login; zero = 30 days,
	// so a phone stays logged in for a month of casual use.
	SessionTTL time.Duration
	// BasicTTL is how long a successful HTTP Basic check is remembered, so a
	// player fetching every second does not run argon2 each time; zero = 5 min.
	BasicTTL time.Duration
	// MaxHashes bounds the argon2 verifications running at once; zero = 2.
	MaxHashes int
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// Logger gets operational messages (a damaged links.json); nil = discard.
	Logger *slog.Logger
	// Audit gets one record per login, failure, lockout, logout and link use
	// (never a password or token); nil = discard.
	Audit *slog.Logger
	// OnLockout, if set, is called once when a source or a name gets locked
	// out (when the lockout is audited). It is called with the Store's lock
	// held: it must return at once (queue, don't send).
	OnLockout func(Lockout)
}

// Lockout says who was locked out: a source address, or a name as typed
// (truncated, not necessarily a viewer's).
type Lockout struct {
	Source     netip.Addr // valid for a source's lockout
	Name       string     // set for a name's lockout
	RetryAfter time.Duration
}

const (
	defaultSessionTTL = 30 * 24 * time.Hour
	defaultBasicTTL   = 5 * time.Minute
	defaultMaxHashes  = 2
)

// ErrBadLogin is the one answer to a wrong password and to an unknown name.
var ErrBadLogin = errors.New("wrong viewer name or password")

// ErrLockedOut is matched (errors.Is) by every *LockedError.
var ErrLockedOut = errors.New("too many failed logins")

// LockedError refuses an attempt from a source or for a name that failed too
// often; the caller should answer "try again later" (HTTP 429, Retry-After).
type LockedError struct {
	// Delay is how long until the next attempt is considered.
	Delay time.Duration
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%s: try again in %s", ErrLockedOut, e.Delay.Round(time.Second))
}

// RetryAfter is Delay, for callers that know only interface{ RetryAfter() time.Duration }.
func (e *LockedError) RetryAfter() time.Duration { return e.Delay }

// Is makes errors.Is(err, ErrLockedOut) true.
func (e *LockedError) Is(target error) bool { return target == ErrLockedOut }

// Store answers who a viewer is. Its methods are safe for concurrent use.
type Store struct {
	viewers    map[string]parsedHash
	dummy      parsedHash
	stateDir   string
	sessionTTL time.Duration
	basicTTL   time.Duration
	now        func() time.Time
	log        *slog.Logger
	audit      *slog.Logger
	sem        chan struct{}
	cacheKey   [32]byte
	lim        tableLimits

	hashes atomic.Int64     // argon2 verifications run, for tests
	onHash func(netip.Addr) // tests: called inside each verification's slot

	onLockout func(Lockout) // Config.OnLockout

	mu        sync.Mutex // guards the fields below
	sources   map[netip.Prefix]*failures
	names     map[string]*nameState      // viewers: never evicted
	strangers map[string]*nameState      // other names: bounded
	sessions  map[[32]byte]*sessionEntry // by SHA-256 of the ID
	basic     map[[32]byte]basicEntry
	turns     map[netip.Prefix]*turn // sources with attempts in check

	links linkCache
}

type sessionEntry struct {
	viewer           string
	created, expires time.Time
}

type basicEntry struct {
	viewer  string
	expires time.Time
}

// New checks every viewer's hash and loads the links.
func New(cfg Config) (*Store, error) {
	s := &Store{
		viewers:    make(map[string]parsedHash, len(cfg.Viewers)),
		stateDir:   cfg.StateDir,
		sessionTTL: cfg.SessionTTL,
		basicTTL:   cfg.BasicTTL,
		now:        cfg.Now,
		log:        cfg.Logger,
		audit:      cfg.Audit,
		sources:    make(map[netip.Prefix]*failures),
		names:      make(map[string]*nameState),
		strangers:  make(map[string]*nameState),
		sessions:   make(map[[32]byte]*sessionEntry),
		basic:      make(map[[32]byte]basicEntry),
		lim:        defaultLimits,
		turns:      make(map[netip.Prefix]*turn),
		onLockout:  cfg.OnLockout,
	}
	if s.sessionTTL <= 0 {
		s.sessionTTL = defaultSessionTTL
	}
	if s.basicTTL <= 0 {
		s.basicTTL = defaultBasicTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	if s.log == nil {
		s.log = discard
	}
	if s.audit == nil {
		s.audit = discard
	}
	n := cfg.MaxHashes
	if n <= 0 {
		n = defaultMaxHashes
	}
	s.sem = make(chan struct{}, n)
	if _, err := rand.Read(s.cacheKey[:]); err != nil {
		return nil, err
	}
	dummy := defaultParams
	for name, h := range cfg.Viewers {
		if name == "" {
			return nil, errors.New("a viewer has an empty name")
		}
		p, err := parseHash(h)
		if err != nil {
			return nil, fmt.Errorf("viewer %q: password_hash: %w", name, err)
		}
		s.viewers[name] = p
		s.names[name] = &nameState{}
		if p.params.cost() > dummy.cost() || len(s.viewers) == 1 {
			dummy = p.params
		}
	}
	s.dummy = dummyHash(dummy)
	s.links.dir = cfg.StateDir
	if err := s.links.load(s.now()); err != nil {
		return nil, err
	}
	return s, nil
}

// Login checks name and password from src and starts a new session (a fresh random ID each time: rotated at login).
func (s *Store) Login(ctx context.Context, name, password string, src netip.Addr) (session string, expires time.Time, err error) {
	viewer, err := s.check(ctx, name, password, src, "login", nil)
	if err != nil {
		return "", time.Time{}, err
	}
	id, sum := newSessionID()
	now := s.now()
	expires = now.Add(s.sessionTTL)
	s.mu.Lock()
	s.addSessionLocked(sum, &sessionEntry{viewer: viewer, created: now, expires: expires}, now)
	s.mu.Unlock()
	return id, expires, nil
}

// Basic checks HTTP Basic credentials (apps, scripts) without starting a session. A successful check is cached
// for a few minutes (keyed by a keyed hash of name+password, never the password itself) so that a player fetching
// every second does not run argon2 each time; lockout rules apply to failures.
func (s *Store) Basic(ctx context.Context, name, password string, src netip.Addr) (viewer string, err error) {
	key := s.basicKey(name, password)
	now := s.now()
	s.mu.Lock()
	// The lock comes first: a cache hit answers "this is the password", so a
	// locked guesser must not get to ask.
	err = s.lockedLocked(name, sourceKey(src), src, now)
	if err == nil {
		if e, ok := s.basic[key]; ok && now.Before(e.expires) {
			s.mu.Unlock()
			return e.viewer, nil
		}
	}
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	return s.check(ctx, name, password, src, "basic", &key)
}

// basicKey is an HMAC, under a key made at New, of name, password and the
// viewer's stored hash: no password is kept, and a changed hash misses.
func (s *Store) basicKey(name, password string) [32]byte {
	m := hmac.New(sha256.New, s.cacheKey[:])
	fmt.Fprintf(m, "%d:%s%d:%s", len(name), name, len(password), password)
	if h, ok := s.viewers[name]; ok {
		m.Write(h.key)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// Session returns the viewer of a live, unexpired session.
func (s *Store) Session(id string) (viewer string, ok bool) {
	sum := sha256.Sum256([]byte(id))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.sessions[sum]
	if !ok {
		return "", false
	}
	if !now.Before(se.expires) {
		delete(s.sessions, sum)
		return "", false
	}
	return se.viewer, true
}

// Logout ends a session (unknown id: no-op).
func (s *Store) Logout(id string) {
	sum := sha256.Sum256([]byte(id))
	s.mu.Lock()
	se, ok := s.sessions[sum]
	delete(s.sessions, sum)
	s.mu.Unlock()
	if ok {
		s.audit.Info("logout", "viewer", se.viewer)
	}
}

// newSessionID returns a random 256-bit ID and its SHA-256.
func newSessionID() (string, [32]byte) {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	id := base64.RawURLEncoding.EncodeToString(b)
	return id, sha256.Sum256([]byte(id))
}

// addSessionLocked adds se, first dropping expired sessions and, at the
// limits, the viewer's (or anybody's) oldest.
func (s *Store) addSessionLocked(sum [32]byte, se *sessionEntry, now time.Time) {
	var mine int
	var oldestMine, oldest [32]byte
	var omt, ot time.Time
	for k, v := range s.sessions {
		if !now.Before(v.expires) {
			delete(s.sessions, k)
			continue
		}
		if ot.IsZero() || v.created.Before(ot) {
			oldest, ot = k, v.created
		}
		if v.viewer == se.viewer {
			mine++
			if omt.IsZero() || v.created.Before(omt) {
				oldestMine, omt = k, v.created
			}
		}
	}
	switch {
	case mine >= s.lim.sessionsPerViewer:
		delete(s.sessions, oldestMine)
	case len(s.sessions) >= s.lim.sessions:
		delete(s.sessions, oldest)
	}
	s.sessions[sum] = se
}

// check verifies a password, with the lockout rules, and audits the result.
// basic, when not nil, is the Basic cache key to look up once this attempt's
// turn comes (parallel requests of one player wait for the first one's hash).
func (s *Store) check(ctx context.Context, name, password string, src netip.Addr, method string, basic *[32]byte) (string, error) {
	sk := sourceKey(src)
	s.mu.Lock()
	err := s.lockedLocked(name, sk, src, s.now())
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	// One source hashes one password at a time, so a storm from one
	// address holds one of the MaxHashes slots and everybody else gets the
	// others; its other attempts queue here.
	release, err := s.sourceTurn(ctx, sk)
	if err != nil {
		return "", err
	}
	defer release()
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting to check a password: %w", ctx.Err())
	}
	// Look again: failures may have come in while this attempt waited
	// (a storm queues many), and each costs a hash.
	s.mu.Lock()
	now := s.now()
	err = s.lockedLocked(name, sk, src, now)
	var hit basicEntry
	if err == nil && basic != nil {
		hit = s.basic[*basic]
	}
	s.mu.Unlock()
	if err != nil || now.Before(hit.expires) {
		<-s.sem
		return hit.viewer, err
	}
	h, known := s.viewers[name]
	if !known || len(password) > maxPassword {
		h, password = s.dummy, ""
	}
	ok := h.verify(password) && known
	s.hashes.Add(1)
	if s.onHash != nil {
		s.onHash(src)
	}
	<-s.sem

	now = s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.failLocked(name, sk, now)
		s.audit.Info("login_failed", "name", clean(name), "src", src.String(), "method", method)
		return "", ErrBadLogin
	}
	if f := s.sources[sk]; f != nil && !f.mixed && f.name == name {
		delete(s.sources, sk)
	}
	ns := s.names[name]
	ns.failures, ns.from = failures{}, nil
	ns.remember(sk, now)
	if basic != nil {
		// Cached before this attempt's turn ends: the next one in line finds it.
		if _, ok := s.basic[*basic]; !ok {
			evict(s.basic, s.lim.basic, func(e basicEntry) time.Time { return e.expires },
				func(e basicEntry) bool { return !now.Before(e.expires) })
		}
		s.basic[*basic] = basicEntry{viewer: name, expires: now.Add(s.basicTTL)}
	}
	s.audit.Info("login", "viewer", name, "src", src.String(), "method", method)
	return name, nil
}

// turn lets one attempt of a source hash at a time.
type turn struct {
	ch    chan struct{} // holds a token while an attempt has the turn
	users int           // attempts holding or waiting for the turn
}

// sourceTurn waits for sk's turn; release ends it. The table holds only
// sources with attempts in progress, so it is bounded by those.
func (s *Store) sourceTurn(ctx context.Context, sk netip.Prefix) (release func(), err error) {
	s.mu.Lock()
	t := s.turns[sk]
	if t == nil {
		t = &turn{ch: make(chan struct{}, 1)}
		s.turns[sk] = t
	}
	t.users++
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		if t.users--; t.users == 0 {
			delete(s.turns, sk)
		}
		s.mu.Unlock()
	}
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, fmt.Errorf("waiting to check a password: %w", ctx.Err())
	}
}

// lockedLocked returns a *LockedError when src or name is locked at now.
func (s *Store) lockedLocked(name string, sk netip.Prefix, src netip.Addr, now time.Time) error {
	if f := s.sources[sk]; f != nil {
		if d := f.wait(now); d > 0 {
			if !f.reported {
				f.reported = true
				s.audit.Info("locked_out", "src", src.String(), "retry_after", d.Round(time.Second).String())
				if s.onLockout != nil {
					s.onLockout(Lockout{Source: src, RetryAfter: d})
				}
			}
			return &LockedError{Delay: d}
		}
	}
	ns := s.nameLocked(name, false)
	if ns == nil {
		return nil
	}
	if d := ns.wait(now); d > 0 && !ns.knows(sk, now) {
		if !ns.reported {
			ns.reported = true
			s.audit.Info("locked_out", "name", clean(name), "retry_after", d.Round(time.Second).String())
			if s.onLockout != nil {
				s.onLockout(Lockout{Name: clean(name), RetryAfter: d})
			}
		}
		return &LockedError{Delay: d}
	}
	return nil
}

// nameLocked returns name's state; nil when there is none and !create.
func (s *Store) nameLocked(name string, create bool) *nameState {
	if ns, ok := s.names[name]; ok {
		return ns
	}
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	ns := s.strangers[name]
	if ns == nil && create {
		now := s.now()
		evict(s.strangers, s.lim.strangers, func(n *nameState) time.Time { return n.last },
			func(n *nameState) bool { return namePolicy.stale(&n.failures, now) })
		ns = &nameState{}
		s.strangers[name] = ns
	}
	return ns
}

// failLocked counts a failure against the source and the name.
func (s *Store) failLocked(name string, sk netip.Prefix, now time.Time) {
	f := s.sources[sk]
	if f == nil {
		evict(s.sources, s.lim.sources, func(f *failures) time.Time { return f.last },
			func(f *failures) bool { return sourcePolicy.stale(f, now) })
		f = &failures{}
		s.sources[sk] = f
	}
	sourcePolicy.fail(f, now)
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	if f.n == 1 {
		f.name = name
	} else if f.name != name {
		f.mixed = true
	}
	s.nameLocked(name, true).count(sk, now)
}

// clean makes a name as typed safe to log: valid UTF-8, no control
// characters, at most maxNameLen bytes.
func clean(name string) string {
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(name, "?"))
}
