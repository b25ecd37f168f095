package access

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var realParams = defaultParams

func TestMain(m *testing.M) {
	// Cheap hashes: the tests run thousands of verifications.
	defaultParams = hashParams{memory: 64, time: 1, threads: 1}
	os.Exit(m.Run())
}

// clock is an injected clock that tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const alicePW = "correct horse battery"

var (
	src1 = netip.MustParseAddr("192.0.2.1")
	src2 = netip.MustParseAddr("198.51.100.2")
)

func mustHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// newStore makes a Store with viewers alice and bob, an injected clock, and
// the audit log in the returned buffer.
func newStore(t testing.TB, mod func(*Config)) (*Store, *clock, *syncBuffer) {
	t.Helper()
	clk := newClock()
	audit := &syncBuffer{}
	cfg := Config{
		Viewers: map[string]string{"alice": mustHash(t, alicePW), "bob": mustHash(t, "bob's password")},
		Now:     clk.Now,
		Audit:   slog.New(slog.NewTextHandler(audit, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk, audit
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestHashRoundTrip(t *testing.T) {
	h := mustHash(t, "pass word")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Errorf("hash %q", h)
	}
	if err := CheckHash(h); err != nil {
		t.Fatal(err)
	}
	p, err := parseHash(h)
	if err != nil {
		t.Fatal(err)
	}
	if !p.verify("pass word") || p.verify("pass word ") || p.verify("") {
		t.Error("verify is wrong")
	}
	if h2 := mustHash(t, "pass word"); h2 == h {
		t.Error("two hashes of one password are equal: no salt?")
	}
	if realParams != (hashParams{memory: 19 * 1024, time: 2, threads: 1}) {
		t.Errorf("default params %+v, want OWASP's m=19MiB t=2 p=1 (the doc comment says why)", realParams)
	}
}

// A hash made with other parameters (stronger, or the old default) still verifies.
func TestHashParamsFromHash(t *testing.T) {
	saved := defaultParams
	defaultParams = hashParams{memory: 128, time: 3, threads: 2}
	h := mustHash(t, "x")
	defaultParams = saved
	if !strings.Contains(h, "$m=128,t=3,p=2$") {
		t.Fatalf("hash %q", h)
	}
	s, _, _ := newStore(t, func(c *Config) { c.Viewers = map[string]string{"carol": h} })
	if v, err := s.Basic(context.Background(), "carol", "x", src1); err != nil || v != "carol" {
		t.Errorf("Basic = %q, %v", v, err)
	}
	if s.dummy.params != (hashParams{memory: 128, time: 3, threads: 2}) {
		t.Errorf("the dummy hash costs %+v, not what carol's costs", s.dummy.params)
	}
}

func TestCheckHashMalformed(t *testing.T) {
	good := mustHash(t, "x")
	parts := strings.Split(good, "$")
	for _, h := range []string{
		"",
		"hunter2",
		"$argon2i$v=19$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=16$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=64,t=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$t=1,m=64,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=0,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=64,t=1,p=100$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=99999999,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=64,t=1000,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=8,t=1,p=2$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$" + parts[5] + "$",
		"$argon2id$v=19$m=64,t=1,p=1$!!!$" + parts[5],
		"$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$c2hvcnQ",
		good + "!",
		" " + good,
	} {
		err := CheckHash(h)
		if !errors.Is(err, ErrBadHash) {
			t.Errorf("CheckHash(%q) = %v, want ErrBadHash", h, err)
		}
	}
	_, err := New(Config{Viewers: map[string]string{"alice": good, "dave": "$argon2id$v=19$oops"}})
	if !errors.Is(err, ErrBadHash) || !strings.Contains(err.Error(), `viewer "dave"`) {
		t.Errorf("New = %v, want ErrBadHash naming dave", err)
	}
}

func TestUnknownNameAndWrongPasswordAlike(t *testing.T) {
	s, _, audit := newStore(t, nil)
	ctx := context.Background()
	_, _, errWrong := s.Login(ctx, "alice", "wrong password", src1)
	if n := s.hashes.Load(); n != 1 {
		t.Errorf("wrong password ran %d hashes, want 1", n)
	}
	_, _, errUnknown := s.Login(ctx, "mallory", "wrong password", src1)
	if n := s.hashes.Load(); n != 2 {
		t.Errorf("unknown name ran %d hashes in all, want 2", n)
	}
	if errWrong != ErrBadLogin || errUnknown != ErrBadLogin {
		t.Errorf("errors %v, %v; want ErrBadLogin for both", errWrong, errUnknown)
	}
	_, _, err := s.Login(ctx, "mallory", strings.Repeat("x", 5000), src1)
	if err != ErrBadLogin || s.hashes.Load() != 3 {
		t.Errorf("long password: %v, %d hashes", err, s.hashes.Load())
	}
	a := audit.String()
	if !strings.Contains(a, "msg=login_failed name=alice src=192.0.2.1") || !strings.Contains(a, "name=mallory") {
		t.Errorf("audit:\n%s", a)
	}
	if strings.Contains(a, "wrong password") {
		t.Error("the audit log holds a password")
	}
}

func TestLockoutGrowsAndResets(t *testing.T) {
	s, clk, audit := newStore(t, nil)
	ctx := context.Background()
	fail := func() error {
		_, _, err := s.Login(ctx, "alice", "nope", src1)
		return err
	}
	for i := range sourcePolicy.free {
		if err := fail(); err != ErrBadLogin {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		hashes := s.hashes.Load()
		err := fail()
		var le *LockedError
		if !errors.As(err, &le) || le.RetryAfter() != want || !errors.Is(err, ErrLockedOut) {
			t.Fatalf("got %v, want locked for %s", err, want)
		}
		var ra interface{ RetryAfter() time.Duration }
		if !errors.As(err, &ra) {
			t.Fatal("the handler can't see RetryAfter")
		}
		if s.hashes.Load() != hashes {
			t.Fatal("a locked attempt ran a hash")
		}
		clk.Add(want - time.Millisecond)
		if err := fail(); !errors.Is(err, ErrLockedOut) {
			t.Fatalf("still locked 1ms before the end: %v", err)
		}
		clk.Add(time.Millisecond)
		if err := fail(); err != ErrBadLogin {
			t.Fatalf("after the delay: %v", err)
		}
	}
	// The delay is capped.
	for range 30 {
		var le *LockedError
		if err := fail(); errors.As(err, &le) {
			if le.Delay > sourcePolicy.max {
				t.Fatalf("delay %s over the cap", le.Delay)
			}
			clk.Add(le.Delay)
		}
	}
	if got := s.sources[sourceKey(src1)].wait(clk.Now()); got != sourcePolicy.max {
		t.Errorf("after many failures: locked for %s, want the cap %s", got, sourcePolicy.max)
	}
	// Correct password once the delay has passed: forgiven.
	clk.Add(sourcePolicy.max)
	if _, _, err := s.Login(ctx, "alice", alicePW, src1); err != nil {
		t.Fatal(err)
	}
	if err := fail(); err != ErrBadLogin {
		t.Errorf("after a success: %v, want a plain failure", err)
	}
	if err := fail(); err != ErrBadLogin {
		t.Errorf("after a success: %v, want a plain failure", err)
	}
	// A success as another viewer forgives nothing: else a guesser who is
	// a viewer too would log in as himself between guesses.
	for range sourcePolicy.free - 3 { // 4 failures since the last success: one short of a lock
		fail()
	}
	if _, _, err := s.Login(ctx, "bob", "bob's password", src1); err != nil {
		t.Fatal(err)
	}
	if err := fail(); !errors.Is(err, ErrLockedOut) {
		if err := fail(); !errors.Is(err, ErrLockedOut) {
			t.Errorf("bob's login forgave the failures for alice: %v", err)
		}
	}
	clk.Add(sourcePolicy.max)
	if _, _, err := s.Login(ctx, "alice", alicePW, src1); err != nil {
		t.Fatal(err)
	}
	// An hour's quiet forgives too.
	for range 3 {
		fail()
	}
	clk.Add(sourcePolicy.forget)
	if err := fail(); err != ErrBadLogin {
		t.Errorf("after an hour: %v", err)
	}
	if err := fail(); err != ErrBadLogin {
		t.Errorf("after an hour, failures were not forgiven: %v", err)
	}
	if a := audit.String(); !strings.Contains(a, "msg=locked_out src=192.0.2.1 retry_after=1s") {
		t.Errorf("audit lacks locked_out:\n%s", a)
	}
}

// A storm from one address must not keep the viewer out from another: not a
// fast one (all at once), nor a patient one that waits out every delay.
func TestStormFromOneAddress(t *testing.T) {
	for _, patient := range []bool{false, true} {
		t.Run(fmt.Sprintf("patient=%v", patient), func(t *testing.T) {
			s, clk, _ := newStore(t, nil)
			ctx := context.Background()
			for i := range 1000 {
				name := "alice"
				if i%2 == 1 {
					name = fmt.Sprintf("user%d", i)
				}
				_, _, err := s.Login(ctx, name, fmt.Sprint("guess", i), src1)
				var le *LockedError
				if errors.As(err, &le) && patient {
					clk.Add(le.Delay)
				} else if err != ErrBadLogin && le == nil {
					t.Fatalf("attempt %d: %v", i, err)
				}
			}
			if n := s.hashes.Load(); !patient && n > int64(sourcePolicy.free) {
				t.Errorf("the storm ran %d hashes, want at most %d", n, sourcePolicy.free)
			}
			if _, _, err := s.Login(ctx, "alice", "nope", src1); !patient && !errors.Is(err, ErrLockedOut) {
				t.Errorf("the storming address: %v, want locked", err)
			}
			id, _, err := s.Login(ctx, "alice", alicePW, src2)
			if err != nil {
				t.Fatalf("alice from elsewhere: %v", err)
			}
			if v, ok := s.Session(id); !ok || v != "alice" {
				t.Errorf("Session = %q, %v", v, ok)
			}
			if _, err := s.Basic(ctx, "alice", alicePW, netip.MustParseAddr("2001:db8::7")); err != nil {
				t.Errorf("alice by Basic from elsewhere: %v", err)
			}
		})
	}
}

// Many addresses guessing one name slow that name down, but not for an
// address alice logged in from before.
func TestCrowdLocksName(t *testing.T) {
	s, _, _ := newStore(t, nil)
	ctx := context.Background()
	home := netip.MustParseAddr("203.0.113.9")
	if _, _, err := s.Login(ctx, "alice", alicePW, home); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		src := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		_, _, err := s.Login(ctx, "alice", "guess", src)
		if err != ErrBadLogin && !errors.Is(err, ErrLockedOut) {
			t.Fatal(err)
		}
	}
	_, _, err := s.Login(ctx, "alice", alicePW, src2)
	var le *LockedError
	if !errors.As(err, &le) || le.Delay > namePolicy.max {
		t.Fatalf("alice from a new address during a crowd attack: %v, want locked for at most %s", err, namePolicy.max)
	}
	if _, _, err := s.Login(ctx, "alice", alicePW, home); err != nil {
		t.Errorf("alice from home: %v", err)
	}
	if _, _, err := s.Login(ctx, "bob", "bob's password", src2); err != nil {
		t.Errorf("bob: %v", err)
	}
}

func TestSourceKeyIPv6Per64(t *testing.T) {
	s, _, _ := newStore(t, nil)
	ctx := context.Background()
	for i := range sourcePolicy.free {
		s.Login(ctx, "alice", "nope", netip.MustParseAddr(fmt.Sprintf("2001:db8:0:1::%x", i+1)))
	}
	if _, _, err := s.Login(ctx, "bob", "bob's password", netip.MustParseAddr("2001:db8:0:1:ffff::1")); !errors.Is(err, ErrLockedOut) {
		t.Errorf("same /64: %v, want locked", err)
	}
	if _, _, err := s.Login(ctx, "bob", "bob's password", netip.MustParseAddr("2001:db8:0:2::1")); err != nil {
		t.Errorf("next /64: %v", err)
	}
	if sourceKey(netip.MustParseAddr("::ffff:192.0.2.1")) != sourceKey(src1) {
		t.Error("an IPv4-mapped address is another source")
	}
}

func TestLockoutStateBounded(t *testing.T) {
	s, clk, _ := newStore(t, nil)
	s.lim.sources, s.lim.strangers = 256, 64
	lim := s.lim
	s.mu.Lock()
	defer s.mu.Unlock()
	// What check does after a failed hash, without the hashes: the tables
	// are what is tested here.
	for i := range lim.sources + 500 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		s.failLocked(fmt.Sprintf("stranger%d-%s", i, strings.Repeat("x", 100)), sourceKey(src), clk.Now())
		clk.Add(time.Millisecond)
	}
	// One name from many sources remembers only maxNameSources of them.
	for i := range 100 {
		s.failLocked("alice", sourceKey(netip.AddrFrom4([4]byte{10, 200, 0, byte(i)})), clk.Now())
	}
	if n := len(s.names["alice"].from); n != maxNameSources {
		t.Errorf("alice remembers %d sources, want %d", n, maxNameSources)
	}
	if len(s.sources) > lim.sources || len(s.strangers) > lim.strangers || len(s.names) != 2 {
		t.Errorf("%d sources, %d strangers, %d names", len(s.sources), len(s.strangers), len(s.names))
	}
	for name, ns := range s.strangers {
		if len(name) > maxNameLen || len(ns.from) > maxNameSources {
			t.Fatalf("stranger %q: %d sources", name, len(ns.from))
		}
	}
	// The newest source survived eviction: the oldest went first.
	n := lim.sources + 499
	last := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
	if s.sources[sourceKey(last)] == nil {
		t.Error("the newest source was evicted")
	}
	if s.sources[sourceKey(netip.AddrFrom4([4]byte{10, 0, 0, 0}))] != nil {
		t.Error("eviction did not drop the oldest")
	}
}

func TestSessions(t *testing.T) {
	s, clk, audit := newStore(t, func(c *Config) { c.SessionTTL = time.Hour })
	ctx := context.Background()
	id1, exp, err := s.Login(ctx, "alice", alicePW, src1)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(clk.Now().Add(time.Hour)) || len(id1) < 40 {
		t.Errorf("expires %s, id %q", exp, id1)
	}
	id2, _, _ := s.Login(ctx, "alice", alicePW, src1)
	if id2 == id1 {
		t.Fatal("a login reused the session ID")
	}
	if v, ok := s.Session(id1); !ok || v != "alice" {
		t.Errorf("Session(id1) = %q, %v", v, ok)
	}
	if _, ok := s.Session("made-up"); ok {
		t.Error("a made-up session is live")
	}
	s.Logout(id1)
	s.Logout("made-up")
	if _, ok := s.Session(id1); ok {
		t.Error("logged out, still live")
	}
	if _, ok := s.Session(id2); !ok {
		t.Error("logging out one session ended another")
	}
	clk.Add(time.Hour - time.Second)
	if _, ok := s.Session(id2); !ok {
		t.Error("expired early")
	}
	clk.Add(time.Second)
	if _, ok := s.Session(id2); ok {
		t.Error("live after its TTL")
	}
	if a := audit.String(); !strings.Contains(a, "msg=logout viewer=alice") || strings.Count(a, "msg=logout") != 1 ||
		!strings.Contains(a, "msg=login viewer=alice src=192.0.2.1 method=login") {
		t.Errorf("audit:\n%s", a)
	}
}

func TestSessionsBounded(t *testing.T) {
	s, clk, _ := newStore(t, nil)
	ctx := context.Background()
	var ids []string
	perViewer := s.lim.sessionsPerViewer
	for range perViewer + 5 {
		id, _, err := s.Login(ctx, "alice", alicePW, src1)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		clk.Add(time.Second)
	}
	bobID, _, _ := s.Login(ctx, "bob", "bob's password", src1)
	if len(s.sessions) != perViewer+1 {
		t.Errorf("%d sessions, want %d", len(s.sessions), perViewer+1)
	}
	if _, ok := s.Session(ids[0]); ok {
		t.Error("the oldest session survived")
	}
	if _, ok := s.Session(ids[len(ids)-1]); !ok {
		t.Error("the newest session was dropped")
	}
	if _, ok := s.Session(bobID); !ok {
		t.Error("alice's logins dropped bob's session")
	}
}

func TestSessionsBoundedInTotal(t *testing.T) {
	s, clk, _ := newStore(t, nil)
	s.lim.sessions = 100
	s.mu.Lock()
	defer s.mu.Unlock()
	var first [32]byte
	for i := range s.lim.sessions + 10 {
		_, sum := newSessionID()
		if i == 0 {
			first = sum
		}
		now := clk.Now()
		// As many viewers as it takes: each stays under its own limit.
		s.addSessionLocked(sum, &sessionEntry{viewer: fmt.Sprint("v", i%200), created: now, expires: now.Add(time.Hour)}, now)
		clk.Add(time.Millisecond)
	}
	if len(s.sessions) != s.lim.sessions {
		t.Errorf("%d sessions, want %d", len(s.sessions), s.lim.sessions)
	}
	if s.sessions[first] != nil {
		t.Error("the oldest session survived")
	}
	// Expired sessions are dropped when a new one comes.
	clk.Add(time.Hour)
	_, sum := newSessionID()
	now := clk.Now()
	s.addSessionLocked(sum, &sessionEntry{viewer: "alice", created: now, expires: now.Add(time.Hour)}, now)
	if len(s.sessions) != 1 {
		t.Errorf("%d sessions after all expired and one login, want 1", len(s.sessions))
	}
}

func TestBasicCache(t *testing.T) {
	s, clk, _ := newStore(t, func(c *Config) { c.BasicTTL = time.Minute })
	ctx := context.Background()
	for i := range 3 {
		v, err := s.Basic(ctx, "alice", alicePW, src1)
		if err != nil || v != "alice" {
			t.Fatalf("Basic %d = %q, %v", i, v, err)
		}
	}
	if n := s.hashes.Load(); n != 1 {
		t.Errorf("3 Basic checks ran %d hashes, want 1", n)
	}
	if _, err := s.Basic(ctx, "alice", alicePW+"!", src1); err != ErrBadLogin || s.hashes.Load() != 2 {
		t.Errorf("another password: %v after %d hashes", err, s.hashes.Load())
	}
	if _, err := s.Basic(ctx, "bob", alicePW, src1); err != ErrBadLogin {
		t.Errorf("alice's password as bob: %v", err)
	}
	clk.Add(time.Minute)
	if _, err := s.Basic(ctx, "alice", alicePW, src1); err != nil || s.hashes.Load() != 4 {
		t.Errorf("after the TTL: %v, %d hashes (want a new hash)", err, s.hashes.Load())
	}
	if len(s.sessions) != 0 {
		t.Error("Basic started a session")
	}
	// A changed password: the old one misses the cache and fails.
	s2, _, _ := newStore(t, func(c *Config) { c.Viewers["alice"] = mustHash(t, "new password!") })
	if _, err := s2.Basic(ctx, "alice", alicePW, src1); err != ErrBadLogin {
		t.Errorf("old password after a change: %v", err)
	}
	if s.basicKey("alice", alicePW) == s2.basicKey("alice", alicePW) {
		t.Error("the cache key does not depend on the store's key")
	}
	// A locked source is refused even with cached credentials: a cache hit
	// would tell a guesser it guessed right.
	for range sourcePolicy.free + 1 {
		s.Basic(ctx, "alice", "guess", src1)
	}
	if _, err := s.Basic(ctx, "alice", alicePW, src1); !errors.Is(err, ErrLockedOut) {
		t.Errorf("cached credentials from a locked source: %v", err)
	}
}

func TestConcurrentHashesBounded(t *testing.T) {
	s, _, _ := newStore(t, func(c *Config) { c.MaxHashes = 2 })
	var mu sync.Mutex
	cur, peak := 0, 0
	s.onHash = func(netip.Addr) {
		mu.Lock()
		cur++
		peak = max(peak, cur)
		mu.Unlock()
		for range 100 {
			// Give the others every chance to pile in.
			runtime.Gosched()
		}
		mu.Lock()
		cur--
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			src := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
			if i%2 == 0 {
				s.Login(context.Background(), "alice", alicePW, src)
			} else {
				s.Login(context.Background(), "bob", "bob's password", src)
			}
		})
	}
	wg.Wait()
	if peak > 2 || peak < 1 {
		t.Errorf("%d verifications at once, want at most 2", peak)
	}
	if n := s.hashes.Load(); n != 40 {
		t.Errorf("%d hashes, want 40", n)
	}
}

// A storm from one address holds at most one hash slot: the viewer gets
// another at once, even while the storm's hashes are slow.
func TestStormHoldsOneHashSlot(t *testing.T) {
	s, _, _ := newStore(t, func(c *Config) { c.MaxHashes = 2 })
	entered, unblock := make(chan struct{}, 100), make(chan struct{})
	s.onHash = func(src netip.Addr) {
		if src == src1 {
			entered <- struct{}{}
			<-unblock
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(unblock)
	for i := range 20 {
		wg.Go(func() { s.Login(context.Background(), fmt.Sprint("user", i), "guess", src1) })
	}
	<-entered // one storm hash is running, and stuck
	done := make(chan error, 1)
	go func() {
		_, _, err := s.Login(context.Background(), "alice", alicePW, src2)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("alice: %v", err)
		}
	case <-time.After(30 * time.Second): // a deadlock detector, not a timing assertion
		t.Fatal("alice waited for the storm's hashes: the storm holds every slot")
	}
	if n := len(entered); n != 0 {
		t.Errorf("%d more storm hashes started while one was running", n)
	}
}

// A player's parallel requests with the same Basic credentials cost one hash.
func TestParallelBasicHashesOnce(t *testing.T) {
	s, _, _ := newStore(t, nil)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := s.Basic(context.Background(), "alice", alicePW, src1); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := s.hashes.Load(); n != 1 {
		t.Errorf("%d hashes, want 1", n)
	}
	if len(s.turns) != 0 {
		t.Errorf("%d source turns left over", len(s.turns))
	}
}

func TestWaitForHashHonoursContext(t *testing.T) {
	s, _, _ := newStore(t, func(c *Config) { c.MaxHashes = 1 })
	s.sem <- struct{}{} // the one slot is busy
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Login(ctx, "alice", alicePW, src1)
	if !errors.Is(err, context.Canceled) || s.hashes.Load() != 0 {
		t.Errorf("Login = %v after %d hashes, want context.Canceled", err, s.hashes.Load())
	}
	<-s.sem
	if _, _, err := s.Login(context.Background(), "alice", alicePW, src1); err != nil {
		t.Errorf("a cancelled wait counted as a failure: %v", err)
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"alice":                  "alice",
		"a\nb\x00c":              "a?b?c",
		"\xff\xfeé":              "?é",
		strings.Repeat("x", 100): strings.Repeat("x", maxNameLen),
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

// The http gateway's interface: the Store must keep this method set.
var _ interface {
	Login(ctx context.Context, name, password string, src netip.Addr) (session string, expires time.Time, err error)
	Basic(ctx context.Context, name, password string, src netip.Addr) (viewer string, err error)
	Session(id string) (viewer string, ok bool)
	Logout(id string)
	Link(token string) (viewer string, ok bool)
} = (*Store)(nil)

func FuzzCheckHash(f *testing.F) {
	f.Add(mustHash(f, "x"))
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA")
	f.Add("$argon2id$v=19$m=,t=,p=$$")
	f.Fuzz(func(t *testing.T, h string) {
		p, err := parseHash(h)
		if err != nil {
			return
		}
		if p.params.memory > maxMemory || p.params.time > maxTime || p.params.threads > maxThreads || p.params.threads == 0 {
			t.Fatalf("%q: params %+v accepted", h, p.params)
		}
		if again, err := parseHash(format(p.params, p.salt, p.key)); err != nil || again.params != p.params {
			t.Fatalf("%q: does not round-trip: %v", h, err)
		}
	})
}
