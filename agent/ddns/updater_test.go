package ddns

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/fakecloudflare"
	"github.com/porthole-dev/porthole/test/fakedyndns"
)

type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// memProvider is an in-memory Provider that counts calls and fails on demand.
type memProvider struct {
	mu        sync.Mutex // guards the fields below
	have      Records
	writeOnly bool
	caps      Capabilities // what Capabilities says when capsSet
	capsSet   bool
	gets      int
	sets      int
	dels      int
	getErrs   []error
	setErrs   []error
}

var _ Provider = (*memProvider)(nil)

func newMem() *memProvider { return &memProvider{have: Records{NoV4: true, NoV6: true}} }

func (m *memProvider) Name() string { return "mem" }

func (m *memProvider) Capabilities() Capabilities {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.caps
	if !m.capsSet {
		c = Capabilities{Read: !m.writeOnly, RemoveA: true, RemoveAAAA: true, Delete: true, TTL: true}
	}
	return c
}

func (m *memProvider) Get(context.Context, string) (Records, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writeOnly {
		return Records{}, ErrUnsupported
	}
	m.gets++
	if len(m.getErrs) > 0 {
		err := m.getErrs[0]
		m.getErrs = m.getErrs[1:]
		return Records{}, err
	}
	return m.have, nil
}

func (m *memProvider) Set(_ context.Context, _ string, want Records, _ time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sets++
	if len(m.setErrs) > 0 {
		err := m.setErrs[0]
		m.setErrs = m.setErrs[1:]
		return err
	}
	m.have = m.have.apply(want)
	return nil
}

func (m *memProvider) Delete(context.Context, string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dels++
	m.have = Records{NoV4: true, NoV6: true}
	return nil
}

func (m *memProvider) counts() (gets, sets int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gets, m.sets
}

func (m *memProvider) records() Records {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.have
}

type logBuf struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newUpdater(t *testing.T, cfg UpdaterConfig) *Updater {
	t.Helper()
	if cfg.Hostname == "" {
		cfg.Hostname = "home.example.com"
	}
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 }
	}
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustUpdate(t *testing.T, u *Updater, want Records, action Action) Outcome {
	t.Helper()
	o, err := u.Update(context.Background(), want)
	if err != nil || o.Action != action {
		t.Fatalf("Update(%v) = %+v, %v; want %s", want, o, err, action)
	}
	return o
}

func TestUpdaterSteadyStateMakesNoWrites(t *testing.T) {
	clk := newClock()
	m := newMem()
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now, StateDir: t.TempDir()})
	want := Records{V4: v4a, V6: v6a}
	mustUpdate(t, u, want, ActionUpdated)
	for range 100 {
		clk.Advance(5 * time.Minute)
		o := mustUpdate(t, u, want, ActionUnchanged)
		if o.Published != want {
			t.Fatalf("published %v", o.Published)
		}
	}
	gets, sets := m.counts()
	if sets != 1 {
		t.Fatalf("%d writes over 100 steady cycles, want the 1 initial write", sets)
	}
	// First read, read-back after the write, then one an hour (500 min).
	if gets > 11 {
		t.Fatalf("%d reads over 100 cycles", gets)
	}

	// A change is exactly one write.
	clk.Advance(5 * time.Minute)
	mustUpdate(t, u, Records{V4: v4b, V6: v6a}, ActionUpdated)
	for range 10 {
		clk.Advance(5 * time.Minute)
		mustUpdate(t, u, Records{V4: v4b, V6: v6a}, ActionUnchanged)
	}
	if _, sets := m.counts(); sets != 2 {
		t.Fatalf("%d writes after one change, want 2", sets)
	}
	if m.records() != (Records{V4: v4b, V6: v6a}) {
		t.Fatalf("provider has %v", m.records())
	}
}

func TestUpdaterCloudflareSteadyState(t *testing.T) {
	clk := newClock()
	srv := fakecloudflare.New(t, cfToken, "example.com")
	logs := &logBuf{}
	p := newCloudflareForTest(t, srv, cfToken, "example.com")
	u := newUpdater(t, UpdaterConfig{Provider: p, Now: clk.Now, StateDir: t.TempDir(), Logger: logs.logger()})
	want := Records{V4: v4a}
	mustUpdate(t, u, want, ActionUpdated)
	writes := srv.Writes()
	for range 100 {
		clk.Advance(5 * time.Minute)
		mustUpdate(t, u, want, ActionUnchanged)
	}
	if w := srv.Writes(); w != writes {
		t.Fatalf("%d provider write calls in 100 steady cycles", w-writes)
	}
	if strings.Contains(logs.String(), cfToken) {
		t.Fatal("token logged")
	}
}

func TestUpdaterMinInterval(t *testing.T) {
	clk := newClock()
	m := newMem()
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now, MinInterval: time.Minute})
	mustUpdate(t, u, Records{V4: v4a}, ActionUpdated)
	clk.Advance(10 * time.Second)
	o := mustUpdate(t, u, Records{V4: v4b}, ActionDeferred)
	if want := clk.Now().Add(50 * time.Second); !o.RetryAt.Equal(want) {
		t.Fatalf("RetryAt %v, want %v", o.RetryAt, want)
	}
	if m.records().V4 != v4a {
		t.Fatal("deferred change was written")
	}
	clk.Advance(50 * time.Second)
	mustUpdate(t, u, Records{V4: v4b}, ActionUpdated)
}

func TestUpdaterBackoff(t *testing.T) {
	clk := newClock()
	m := newMem()
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now, Rand: func() float64 { return 0.999 }})
	mustUpdate(t, u, Records{V4: v4a}, ActionUpdated)
	clk.Advance(time.Hour)

	// Exponential, jittered into [d/2, d), capped at 30 min.
	for i, max := range []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute,
		8 * time.Minute, 16 * time.Minute, 30 * time.Minute, 30 * time.Minute} {
		m.mu.Lock()
		m.setErrs = []error{&HTTPError{Provider: "mem", StatusCode: 500}}
		m.mu.Unlock()
		o, err := u.Update(context.Background(), Records{V4: v4b})
		if err == nil || o.Action != ActionDeferred {
			t.Fatalf("failure %d: %+v %v", i, o, err)
		}
		d := o.RetryAt.Sub(clk.Now())
		if d < max/2 || d > max {
			t.Fatalf("failure %d: backoff %v, want in [%v, %v]", i, d, max/2, max)
		}
		// Calls before RetryAt don't reach the provider.
		_, before := m.counts()
		mustUpdate(t, u, Records{V4: v4b}, ActionDeferred)
		if _, after := m.counts(); after != before {
			t.Fatal("provider called during backoff")
		}
		if m.records().V4 != v4a {
			t.Fatalf("failed write changed the record")
		}
		clk.Advance(d)
	}
	// Success resets; the read-back after failures happens first.
	mustUpdate(t, u, Records{V4: v4b}, ActionUpdated)
	if s := u.Status(); s.LastError != "" || !s.NextAttempt.IsZero() {
		t.Fatalf("status after success %+v", s)
	}
}

func TestUpdaterRetryAfterAndCloudflareFaults(t *testing.T) {
	clk := newClock()
	srv := fakecloudflare.New(t, cfToken, "example.com")
	srv.AddRecord("example.com", "A", "home", v4a.String(), 60)
	logs := &logBuf{}
	p := newCloudflareForTest(t, srv, cfToken, "example.com")
	u := newUpdater(t, UpdaterConfig{Provider: p, Now: clk.Now, Logger: logs.logger()})
	mustUpdate(t, u, Records{V4: v4a}, ActionUnchanged)

	srv.Inject(fakecloudflare.Fault{Status: 429, RetryAfter: "600"}, 1)
	clk.Advance(2 * time.Minute)
	o, err := u.Update(context.Background(), Records{V4: v4b})
	if he, ok := errorsAsHTTP(err); !ok || he.StatusCode != 429 || o.Action != ActionDeferred {
		t.Fatalf("429: %+v %v", o, err)
	}
	if d := o.RetryAt.Sub(clk.Now()); d < 10*time.Minute {
		t.Fatalf("Retry-After 600 not honoured: %v", d)
	}
	if got := srv.Lookup("home.example.com", "A"); len(got) != 1 || got[0] != v4a.String() {
		t.Fatalf("record after 429: %v", got)
	}
	clk.Advance(10 * time.Minute)
	srv.Inject(fakecloudflare.Fault{Status: 500}, 1)
	if _, err := u.Update(context.Background(), Records{V4: v4b}); err == nil {
		t.Fatal("500 not reported")
	}
	if got := srv.Lookup("home.example.com", "A"); len(got) != 1 || got[0] != v4a.String() {
		t.Fatalf("record after 500: %v", got)
	}
	clk.Advance(time.Hour)
	mustUpdate(t, u, Records{V4: v4b}, ActionUpdated)
	if got := srv.Lookup("home.example.com", "A"); len(got) != 1 || got[0] != v4b.String() {
		t.Fatalf("record after recovery: %v", got)
	}
	if l := logs.String(); !strings.Contains(l, "HTTP 429") || !strings.Contains(l, "HTTP 500") {
		t.Fatalf("logs don't name the failures:\n%s", l)
	}
}

func TestUpdaterReadFailureWritesNothing(t *testing.T) {
	clk := newClock()
	m := newMem()
	m.getErrs = []error{errors.New("connection reset")}
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now})
	if o, err := u.Update(context.Background(), Records{V4: v4a}); err == nil || o.Action != ActionDeferred {
		t.Fatalf("%+v %v", o, err)
	}
	if _, sets := m.counts(); sets != 0 {
		t.Fatal("wrote after a failed read")
	}
}

func TestUpdaterFatalStops(t *testing.T) {
	clk := newClock()
	srv := fakedyndns.New(t, "alice", "s3cret", "home.example.com")
	logs := &logBuf{}
	u := newUpdater(t, UpdaterConfig{Provider: newDynDNSForTest(t, srv, "alice", "s3cret"), Now: clk.Now, Logger: logs.logger()})
	srv.Script(fakedyndns.Answer{Body: "badauth"})
	o, err := u.Update(context.Background(), Records{V4: v4a})
	if !errors.Is(err, ErrRejected) || o.Action != ActionSkipped {
		t.Fatalf("badauth: %+v %v", o, err)
	}
	for range 5 {
		clk.Advance(time.Hour)
		o, err := u.Update(context.Background(), Records{V4: v4a})
		if !errors.Is(err, ErrStopped) || o.Action != ActionSkipped || !strings.Contains(o.Reason, "badauth") {
			t.Fatalf("after badauth: %+v %v", o, err)
		}
	}
	if n := len(srv.Requests()); n != 1 {
		t.Fatalf("%d requests after a fatal answer, want 1", n)
	}
	if !u.Status().Stopped {
		t.Fatal("status not stopped")
	}
	if l := logs.String(); strings.Count(l, "updates stopped until") != 1 || strings.Contains(l, "s3cret") {
		t.Fatalf("want one log line saying what to do, no password:\n%s", l)
	}

	// abuse stops too; 911 backs off at least 30 minutes.
	srv2 := fakedyndns.New(t, "alice", "s3cret", "home.example.com")
	u2 := newUpdater(t, UpdaterConfig{Provider: newDynDNSForTest(t, srv2, "alice", "s3cret"), Now: clk.Now})
	srv2.Script(fakedyndns.Answer{Body: "911"})
	o, err = u2.Update(context.Background(), Records{V4: v4a})
	if err == nil || o.Action != ActionDeferred || o.RetryAt.Sub(clk.Now()) < 30*time.Minute {
		t.Fatalf("911: %+v %v", o, err)
	}
	clk.Advance(30 * time.Minute)
	srv2.Script(fakedyndns.Answer{Body: "abuse"})
	if _, err := u2.Update(context.Background(), Records{V4: v4a}); !errors.Is(err, ErrRejected) {
		t.Fatalf("abuse: %v", err)
	}
	if _, err := u2.Update(context.Background(), Records{V4: v4a}); !errors.Is(err, ErrStopped) {
		t.Fatalf("after abuse: %v", err)
	}
}

func TestUpdaterStateSurvivesRestart(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	srv := fakedyndns.New(t, "alice", "s3cret", "home.example.com", "other.example.com")
	mk := func(host string) *Updater {
		return newUpdater(t, UpdaterConfig{Provider: newDynDNSForTest(t, srv, "alice", "s3cret"), Hostname: host, Now: clk.Now, StateDir: dir})
	}
	mustUpdate(t, mk("home.example.com"), Records{V4: v4a, V6: v6a}, ActionUpdated)
	clk.Advance(time.Hour)
	u := mk("home.example.com")
	o := mustUpdate(t, u, Records{V4: v4a, V6: v6a}, ActionUnchanged)
	if o.Published != (Records{V4: v4a, V6: v6a}) {
		t.Fatalf("published after restart %v", o.Published)
	}
	mustUpdate(t, u, Records{V4: v4a}, ActionUnchanged) // AAAA left alone
	if n := len(srv.Requests()); n != 1 {
		t.Fatalf("%d requests, want 1 (restart must not rewrite)", n)
	}
	// Min interval holds across restarts.
	u = mk("home.example.com")
	mustUpdate(t, u, Records{V4: v4b}, ActionUpdated)
	u = mk("home.example.com")
	if o := mustUpdate(t, u, Records{V4: v4a}, ActionDeferred); o.Reason == "" {
		t.Fatal("no reason")
	}
	// State of another hostname is ignored.
	mustUpdate(t, mk("other.example.com"), Records{V4: v4b}, ActionUpdated)
}

func TestUpdaterUnwritableStateDir(t *testing.T) {
	clk := newClock()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	m := newMem()
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now, StateDir: filepath.Join(file, "state"), Logger: logs.logger()})
	mustUpdate(t, u, Records{V4: v4a}, ActionUpdated)
	for range 3 {
		clk.Advance(time.Hour)
		mustUpdate(t, u, Records{V4: v4b}, ActionUpdated)
		clk.Advance(time.Hour)
		mustUpdate(t, u, Records{V4: v4a}, ActionUpdated)
	}
	if n := strings.Count(logs.String(), "state file can't be written"); n != 1 {
		t.Fatalf("state dir problem logged %d times, want once:\n%s", n, logs.String())
	}
	if u.Status().StateSaved {
		t.Fatal("status says state saved")
	}
	clk.Advance(time.Hour)
	mustUpdate(t, u, Records{V4: v4a}, ActionUnchanged) // still works from memory
}

func TestUpdaterUnknownZone(t *testing.T) {
	clk := newClock()
	srv := fakecloudflare.New(t, cfToken, "example.com")
	logs := &logBuf{}
	p := newCloudflareForTest(t, srv, cfToken, "example.org")
	u := newUpdater(t, UpdaterConfig{Provider: p, Hostname: "home.example.org", Now: clk.Now, Logger: logs.logger()})
	o, err := u.Update(context.Background(), Records{V4: v4a})
	if !errors.Is(err, ErrUnknownZone) || o.Action != ActionDeferred {
		t.Fatalf("%+v %v", o, err)
	}
	if d := o.RetryAt.Sub(clk.Now()); d < 30*time.Minute {
		t.Fatalf("unknown zone retried after %v", d)
	}
	if l := logs.String(); !strings.Contains(l, "zone not found") || !strings.Contains(l, "example.org") {
		t.Fatalf("log doesn't name the zone problem:\n%s", l)
	}
	if srv.Writes() != 0 {
		t.Fatal("wrote something")
	}
}

func TestUpdaterAuthErrorWaitsLong(t *testing.T) {
	clk := newClock()
	srv := fakecloudflare.New(t, cfToken, "example.com")
	p := newCloudflareForTest(t, srv, "wrong-token", "example.com")
	u := newUpdater(t, UpdaterConfig{Provider: p, Now: clk.Now})
	o, err := u.Update(context.Background(), Records{V4: v4a})
	if he, ok := errorsAsHTTP(err); !ok || !he.Auth() || o.RetryAt.Sub(clk.Now()) < 30*time.Minute {
		t.Fatalf("%+v %v", o, err)
	}
}

func TestUpdaterInputs(t *testing.T) {
	clk := newClock()
	m := newMem()
	m.have = Records{V4: v4a, V6: v6a}
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now})
	mustUpdate(t, u, Records{}, ActionSkipped)
	for _, bad := range []Records{
		{V4: v6a},
		{V6: v4a},
		{V4: netip.MustParseAddr("0.0.0.0")},
		{V6: netip.MustParseAddr("::ffff:203.0.113.5")},
		{V6: netip.MustParseAddr("fe80::1")},
		{V4: netip.MustParseAddr("224.0.0.1")},
		{V4: v4a, NoV4: true},
	} {
		o, err := u.Update(context.Background(), bad)
		if !errors.Is(err, ErrInvalidRecords) || o.Action != ActionSkipped {
			t.Errorf("%v: %+v %v", bad, o, err)
		}
	}
	// A family without an opinion is left alone; NoV6 removes.
	mustUpdate(t, u, Records{V4: v4a}, ActionUnchanged)
	mustUpdate(t, u, Records{V4: v4a, NoV6: true}, ActionUpdated)
	if m.records() != (Records{V4: v4a, NoV6: true}) {
		t.Fatalf("provider has %v", m.records())
	}
	if _, sets := m.counts(); sets != 1 {
		t.Fatalf("%d writes", sets)
	}
}

func TestUpdaterRepairsOutOfBandChange(t *testing.T) {
	clk := newClock()
	m := newMem()
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now})
	mustUpdate(t, u, Records{V4: v4a}, ActionUpdated)
	clk.Advance(time.Minute)
	mustUpdate(t, u, Records{V4: v4a}, ActionUnchanged) // read-back after write
	m.mu.Lock()
	m.have.V4 = v4b // someone edits the record in the dashboard
	m.mu.Unlock()
	clk.Advance(30 * time.Minute)
	mustUpdate(t, u, Records{V4: v4a}, ActionUnchanged) // not re-read yet
	clk.Advance(31 * time.Minute)
	mustUpdate(t, u, Records{V4: v4a}, ActionUpdated)
	if m.records().V4 != v4a {
		t.Fatal("not repaired")
	}
}

func TestUpdaterDelete(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	m := newMem()
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now, StateDir: dir})
	mustUpdate(t, u, Records{V4: v4a, V6: v6a}, ActionUpdated)
	if err := u.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.records() != (Records{NoV4: true, NoV6: true}) {
		t.Fatalf("after delete %v", m.records())
	}
	s, _, err := readState(dir)
	if err != nil || s.Published != (Records{NoV4: true, NoV6: true}) {
		t.Fatalf("state after delete %+v %v", s, err)
	}

	srv := fakedyndns.New(t, "alice", "s3cret", "home.example.com")
	u2 := newUpdater(t, UpdaterConfig{Provider: newDynDNSForTest(t, srv, "alice", "s3cret"), Now: clk.Now})
	if err := u2.Delete(context.Background()); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("dyndns2 delete: %v", err)
	}
}

func TestUpdaterCancelledContextNoBackoff(t *testing.T) {
	clk := newClock()
	m := newMem()
	m.getErrs = []error{context.Canceled}
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := u.Update(ctx, Records{V4: v4a}); err == nil {
		t.Fatal("no error")
	}
	if s := u.Status(); !s.NextAttempt.IsZero() {
		t.Fatalf("backoff after cancellation: %+v", s)
	}
}

func TestNewUpdaterConfig(t *testing.T) {
	if _, err := New(UpdaterConfig{Hostname: "home.example.com"}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("no provider: %v", err)
	}
	if _, err := New(UpdaterConfig{Provider: newMem(), Hostname: "bad host"}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("bad host: %v", err)
	}
	// A corrupt state file is ignored, not fatal.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, StateFile), []byte("{garbage"), 0o600)
	logs := &logBuf{}
	if _, err := New(UpdaterConfig{Provider: newMem(), Hostname: "home.example.com", StateDir: dir, Logger: logs.logger()}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "state file unusable") {
		t.Fatalf("corrupt state not logged: %s", logs.String())
	}
}

// The updater asks the provider what it can do instead of finding out by
// failing: a write-only provider is never read, and one that can't delete
// isn't asked to.
func TestUpdaterAsksCapabilities(t *testing.T) {
	clk := newClock()
	m := newMem()
	m.caps, m.capsSet = Capabilities{RemoveAAAA: true}, true
	u := newUpdater(t, UpdaterConfig{Provider: m, Now: clk.Now})
	mustUpdate(t, u, Records{V4: v4a, NoV6: true}, ActionUpdated)
	clk.Advance(2 * time.Hour) // past VerifyInterval
	mustUpdate(t, u, Records{V4: v4a, NoV6: true}, ActionUnchanged)
	if gets, sets := m.counts(); gets != 0 || sets != 1 {
		t.Fatalf("write-only provider: %d gets, %d sets; want 0 and 1", gets, sets)
	}
	if err := u.Delete(context.Background()); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Delete = %v, want ErrUnsupported", err)
	}
	m.mu.Lock()
	dels := m.dels
	m.mu.Unlock()
	if dels != 0 {
		t.Fatalf("provider asked to delete %d times although it says it can't", dels)
	}
	if got := u.Capabilities(); got != m.caps {
		t.Fatalf("Updater.Capabilities = %+v, want the provider's %+v", got, m.caps)
	}
}

// Each provider type's capabilities are declared once: what a built provider
// says equals what TypeCapabilities says without credentials.
func TestProviderCapabilities(t *testing.T) {
	for _, tc := range []struct {
		cfg  ProviderConfig
		want Capabilities
	}{
		{ProviderConfig{Type: "cloudflare", Zone: "example.com", APIToken: "t"}, Capabilities{Read: true, RemoveA: true, RemoveAAAA: true, Delete: true, TTL: true, TXT: true}},
		{ProviderConfig{Type: "rfc2136", Server: "127.0.0.1:53", Zone: "example.com"}, Capabilities{Read: true, RemoveA: true, RemoveAAAA: true, Delete: true, TTL: true, TXT: true}},
		{ProviderConfig{Type: "duckdns", Token: "t"}, Capabilities{RemoveAAAA: true, Delete: true, TXT: true}},
		{ProviderConfig{Type: "dyndns2", BaseURL: "https://dyn.example.net", Username: "u", Password: "p"}, Capabilities{}},
		{ProviderConfig{Type: "NoIP", Username: "u", Password: "p"}, Capabilities{}},
		{ProviderConfig{Type: "dynu", Username: "u", Password: "p"}, Capabilities{}},
	} {
		p, err := NewProvider(tc.cfg, ProviderOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.cfg.Type, err)
		}
		if got := p.Capabilities(); got != tc.want {
			t.Errorf("%s: Capabilities() = %+v, want %+v", tc.cfg.Type, got, tc.want)
		}
		if got, err := TypeCapabilities(tc.cfg.Type); err != nil || got != tc.want {
			t.Errorf("TypeCapabilities(%s) = %+v, %v; want %+v", tc.cfg.Type, got, err, tc.want)
		}
	}
	if _, err := TypeCapabilities("carrier-pigeon"); !errors.Is(err, ErrBadConfig) {
		t.Errorf("unknown type: %v", err)
	}
	if got := strings.Join(ProviderTypes(), ","); got != "cloudflare,duckdns,dyndns2,dynu,noip,rfc2136" {
		t.Errorf("ProviderTypes() = %s", got)
	}
}

func TestProviderConfigStringHidesSecrets(t *testing.T) {
	c := ProviderConfig{Type: "cloudflare", APIToken: "tok-secret", Password: "pw-secret", Token: "dk-secret", Key: "tsig-secret"}
	s := c.String()
	for _, secret := range []string{"tok-secret", "pw-secret", "dk-secret", "tsig-secret"} {
		if strings.Contains(s, secret) {
			t.Errorf("String() shows %s: %s", secret, s)
		}
	}
}
