package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/publicip"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/fakecloudflare"
	"github.com/porthole-dev/porthole/test/fakedyndns"
)

// In-process tests of the agent's DDNS path (issue 3): a plain DNS updater
// (no relay, no services) with injected address sources and a fake Cloudflare.

const (
	cfToken  = "test-token-0123456789abcdefghijklmnopqrstuv"
	testZone = "example.com"
	testHost = "home.example.com"
)

var (
	oldAddr = netip.MustParseAddr("203.0.113.10")
	newAddr = netip.MustParseAddr("203.0.113.77")
)

// addrBox is what the fake address sources answer; tests change it.
type addrBox struct {
	mu   sync.Mutex // guards addr
	addr netip.Addr
}

func (b *addrBox) set(a netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addr = a
}

func (b *addrBox) get() netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// boxSources are two independent sources that both answer box's address.
func boxSources(box *addrBox) []publicip.Source {
	var out []publicip.Source
	for _, name := range []string{"echo-a", "echo-b"} {
		out = append(out, publicip.NewFuncSource(name, func(ctx context.Context, fam publicip.Family) (netip.Addr, error) {
			if fam != publicip.IPv4 {
				return netip.Addr{}, publicip.ErrNoAnswer
			}
			return box.get(), nil
		}))
	}
	return out
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeSignal wraps a transport and reports when each write request (not GET)
// to the provider was sent.
type writeSignal struct {
	next   http.RoundTripper
	writes chan time.Time
}

func (w *writeSignal) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet {
		select {
		case w.writes <- time.Now():
		default:
		}
	}
	return w.next.RoundTrip(r)
}

// harness is a running agent against a fake Cloudflare.
type harness struct {
	t      *testing.T
	a      *Agent
	cf     *fakecloudflare.Server
	box    *addrBox
	logs   *syncBuffer
	passes chan passReport
	writes chan time.Time
	done   chan error
	cancel context.CancelFunc
}

type harnessOpts struct {
	sources     []publicip.Source // nil: boxSources
	stateDir    string            // "": a temp dir
	minInterval time.Duration     // 0: the config default (1m)
	seed        netip.Addr        // a record the provider already holds
	addr        netip.Addr        // what boxSources answer at start
	before      func(*fakecloudflare.Server)
	provider    *config.Provider    // nil: the fake Cloudflare
	client      *http.Client        // with provider
	configure   func(*config.Agent) // edits the config before New
	setup       func(*Agent)        // edits the agent before Run (path sources)
}

func startAgent(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	cf := fakecloudflare.New(t, cfToken, testZone)
	if o.seed.IsValid() {
		cf.AddRecord(testZone, "A", testHost, o.seed.String(), 60)
	}
	if o.before != nil {
		o.before(cf)
	}
	h := &harness{t: t, cf: cf, box: &addrBox{}, logs: &syncBuffer{},
		passes: make(chan passReport, 1), writes: make(chan time.Time, 16), done: make(chan error, 1)}
	h.box.set(o.addr)
	srcs := o.sources
	if srcs == nil {
		srcs = boxSources(h.box)
	}
	if o.stateDir == "" {
		o.stateDir = t.TempDir()
	}
	if o.minInterval == 0 {
		o.minInterval = config.DefaultDDNSMinInterval
	}
	client := cf.Client()
	prov := config.Provider{Type: "cloudflare", Zone: testZone, APIToken: cfToken, BaseURL: cf.URL}
	if o.provider != nil {
		prov, client = *o.provider, o.client
	}
	client.Transport = &writeSignal{next: client.Transport, writes: h.writes}
	ac := &config.Agent{
		Name:     "home",
		StateDir: o.stateDir,
		PublicIP: config.PublicIP{
			MinAgree: 2,
			Accept:   []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
			Interval: time.Hour, // cycles are driven by the test
		},
		DDNS: &config.DDNS{
			Hostname: testHost, TTL: time.Minute, MinInterval: o.minInterval,
			Provider: prov,
		},
	}
	if o.configure != nil {
		o.configure(ac)
	}
	a, err := New(Config{
		Agent:      ac,
		Logger:     slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HTTPClient: client,
		Sources:    srcs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.setup != nil {
		o.setup(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.a, h.cancel = a, cancel
	a.onPass = func(r passReport) {
		select {
		case h.passes <- r:
		case <-ctx.Done():
		}
	}
	go func() { h.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", h.logs.String())
		}
	})
	return h
}

// pass waits for the next completed path-loop pass.
func (h *harness) pass() passReport {
	h.t.Helper()
	select {
	case r := <-h.passes:
		return r
	case err := <-h.done:
		h.t.Fatalf("agent stopped: %v", err)
	case <-time.After(10 * time.Second):
		h.t.Fatalf("no pass within 10s; log:\n%s", h.logs.String())
	}
	return passReport{}
}

// cycle asks for a re-check (as the tunnel's observed-address hook does) and
// waits for the pass.
func (h *harness) cycle() passReport {
	h.t.Helper()
	h.a.poke()
	return h.pass()
}

// alive fails if Run has returned.
func (h *harness) alive() {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.t.Fatalf("agent stopped: %v", err)
	default:
	}
}

func (h *harness) published() []string { return h.cf.Lookup(testHost, "A") }

func TestAgentDDNSPublishesAndStaysQuiet(t *testing.T) {
	h := startAgent(t, harnessOpts{addr: newAddr})
	if r := h.pass(); r.action != "updated" || !r.ok {
		t.Fatalf("first pass: %+v, want updated", r)
	}
	if got := h.published(); !slices.Equal(got, []string{newAddr.String()}) {
		t.Fatalf("A records = %v, want [%s]", got, newAddr)
	}
	writes, reads := h.cf.Writes(), h.cf.Reads()
	const cycles = 100
	for i := range cycles {
		if r := h.cycle(); r.action != "unchanged" || !r.ok {
			t.Fatalf("cycle %d: %+v, want unchanged", i, r)
		}
	}
	if w := h.cf.Writes() - writes; w != 0 {
		t.Errorf("%d provider writes in %d steady cycles, want 0; log: %v", w, cycles, h.cf.Log())
	}
	t.Logf("steady state: %d cycles, %d provider writes, %d provider reads", cycles, h.cf.Writes()-writes, h.cf.Reads()-reads)
	st := h.a.Status()
	if st.Path != "home" || st.PublicV4 != newAddr.String() || !strings.HasPrefix(st.DNSAction, "unchanged") {
		t.Errorf("status = %+v", st)
	}
}

// TestAgentDDNSChangeLatency measures the time from an address change being
// signalled (the hook the tunnel's observed-address callback and the router's
// mapping changes call) to the provider write.
func TestAgentDDNSChangeLatency(t *testing.T) {
	h := startAgent(t, harnessOpts{seed: oldAddr, addr: oldAddr})
	if r := h.pass(); r.action != "unchanged" {
		t.Fatalf("first pass: %+v, want unchanged", r)
	}
	if n := h.cf.Writes(); n != 0 {
		t.Fatalf("%d writes while the provider already served the address", n)
	}
	drain(h.writes)
	h.box.set(newAddr)
	start := time.Now()
	h.a.poke()
	var wrote time.Time
	select {
	case wrote = <-h.writes:
	case <-time.After(10 * time.Second):
		t.Fatalf("no provider write within 10s of the signal; log:\n%s", h.logs.String())
	}
	elapsed := wrote.Sub(start)
	t.Logf("address change signalled -> provider write: %v", elapsed)
	if elapsed > 2*time.Second {
		t.Errorf("signal -> write took %v, want < 2s", elapsed)
	}
	for r := h.pass(); r.action != "updated"; r = h.pass() {
	}
	if got := h.published(); !slices.Equal(got, []string{newAddr.String()}) {
		t.Fatalf("A records = %v, want [%s]", got, newAddr)
	}
}

// TestAgentDDNSDeferredWriteWakesUp: a change inside min_interval is written
// when the interval ends, without waiting for the next regular check.
func TestAgentDDNSDeferredWriteWakesUp(t *testing.T) {
	const minInterval = 300 * time.Millisecond
	h := startAgent(t, harnessOpts{minInterval: minInterval, addr: oldAddr})
	if r := h.pass(); r.action != "updated" {
		t.Fatalf("first pass: %+v, want updated", r)
	}
	h.box.set(newAddr)
	r := h.cycle()
	if r.action != "deferred" {
		t.Fatalf("change right after a write: %+v, want deferred", r)
	}
	// No poke: the loop must wake up by itself at RetryAt (the regular interval is 1h).
	r = h.pass()
	if r.action != "updated" {
		t.Fatalf("after min_interval: %+v, want updated", r)
	}
	if got := h.published(); !slices.Equal(got, []string{newAddr.String()}) {
		t.Fatalf("A records = %v, want [%s]", got, newAddr)
	}
}

// echoServer answers body to every request.
func echoServer(t *testing.T, body string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

func echoSources(t *testing.T, bodies ...string) []publicip.Source {
	t.Helper()
	var urls []string
	for _, b := range bodies {
		urls = append(urls, echoServer(t, b))
	}
	srcs, err := publicip.HTTPSources(urls, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srcs
}

func TestAgentDDNSLyingSources(t *testing.T) {
	cases := []struct {
		name   string
		bodies []string
	}{
		{"private", []string{"192.168.1.1\n", "192.168.1.1\n"}},
		{"cgnat", []string{"100.64.1.2", "100.64.1.2"}},
		{"loopback", []string{"127.0.0.1", "127.0.0.1"}},
		{"html", []string{"<html><body>203.0.113.77</body></html>", "<html>blocked</html>"}},
		{"empty", []string{"", ""}},
		{"garbage", []string{"\x00\xff203.0.113.77\x01", "203.0.113.77 203.0.113.78"}},
		{"one honest", []string{"203.0.113.77", "10.0.0.1"}},
		{"disagree", []string{"203.0.113.77", "203.0.113.78"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := startAgent(t, harnessOpts{seed: oldAddr, sources: echoSources(t, c.bodies...)})
			for range 3 {
				r := h.cycle()
				if r.ok || r.action == "updated" {
					t.Fatalf("pass with lying sources: %+v", r)
				}
			}
			h.alive()
			if got := h.published(); !slices.Equal(got, []string{oldAddr.String()}) {
				t.Errorf("A records = %v, want the old [%s] untouched", got, oldAddr)
			}
			if n := h.cf.Writes(); n != 0 {
				t.Errorf("%d provider writes", n)
			}
			if st := h.a.Status(); st.Path != "unknown" || !strings.Contains(st.PathWhy, "public address not detected") {
				t.Errorf("status path %q (%s), want unknown: public address not detected", st.Path, st.PathWhy)
			}
			if !strings.Contains(h.logs.String(), "publicip") {
				t.Errorf("no publicip log line about the bad answers:\n%s", h.logs.String())
			}
		})
	}
}

func TestAgentDDNSProviderErrors(t *testing.T) {
	cases := []struct {
		name  string
		fault fakecloudflare.Fault
		log   string
	}{
		{"401", fakecloudflare.Fault{Status: 401}, "ddns:"},
		{"403 html", fakecloudflare.Fault{Status: 403, HTML: true}, "ddns:"},
		{"429", fakecloudflare.Fault{Status: 429, RetryAfter: "120"}, "ddns:"},
		{"500", fakecloudflare.Fault{Status: 500}, "ddns:"},
		{"500 on write", fakecloudflare.Fault{Status: 500, WritesOnly: true}, "ddns:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := startAgent(t, harnessOpts{seed: oldAddr, addr: newAddr,
				before: func(cf *fakecloudflare.Server) { cf.Inject(c.fault, 100) }})
			if r := h.pass(); r.ok || r.action != "deferred" && r.action != "skipped" {
				t.Fatalf("first pass against a failing provider: %+v", r)
			}
			calls := len(h.cf.Log())
			for range 3 {
				// ok may be true: a pass that waits for the backoff is not an error.
				if r := h.cycle(); r.action == "updated" || r.action == "unchanged" {
					t.Fatalf("pass against a failing provider: %+v", r)
				}
			}
			// Passes during the backoff must not hammer the provider.
			if n := len(h.cf.Log()) - calls; n != 0 {
				t.Errorf("%d provider requests during the backoff: %v", n, h.cf.Log()[calls:])
			}
			h.alive()
			for _, rec := range h.cf.All() {
				if rec.Type == "A" && rec.Name == testHost && rec.Content != oldAddr.String() {
					t.Errorf("wrong record published: %+v", rec)
				}
			}
			logs := h.logs.String()
			if !strings.Contains(logs, "level=WARN") && !strings.Contains(logs, "level=ERROR") {
				t.Errorf("no warning or error logged:\n%s", logs)
			}
			if !strings.Contains(logs, c.log) {
				t.Errorf("log lacks %q:\n%s", c.log, logs)
			}
			if strings.Contains(logs, cfToken) {
				t.Errorf("the API token was logged")
			}
			if st := h.a.Status(); st.DNSAction == "" || strings.HasPrefix(st.DNSAction, "updated") {
				t.Errorf("status dns action %q", st.DNSAction)
			}
		})
	}
}

func TestAgentDDNSDynDNS2Refusals(t *testing.T) {
	const user, pass = "porthole", "dyndns-secret-0123456789"
	for _, body := range []string{"abuse", "badauth", "nohost", "911"} {
		t.Run(body, func(t *testing.T) {
			dd := fakedyndns.New(t, user, pass, testHost)
			dd.Script(fakedyndns.Answer{Body: body})
			h := startAgent(t, harnessOpts{addr: newAddr, client: dd.Client(), provider: &config.Provider{
				Type: "dyndns2", BaseURL: dd.URL, Username: user, Password: pass}})
			if r := h.pass(); r.ok || r.action == "updated" {
				t.Fatalf("first pass answered %q: %+v", body, r)
			}
			for range 3 {
				if r := h.cycle(); r.action == "updated" || r.action == "unchanged" {
					t.Fatalf("pass after %q: %+v", body, r)
				}
			}
			h.alive()
			if n := len(dd.Requests()); n != 1 {
				t.Errorf("%d update requests after %q, want 1 (no retry storm)", n, body)
			}
			if v4, _ := dd.Published(testHost); v4.IsValid() {
				t.Errorf("published %s despite %q", v4, body)
			}
			logs := h.logs.String()
			if !strings.Contains(logs, "level=ERROR") && !strings.Contains(logs, "level=WARN") {
				t.Errorf("nothing logged about %q:\n%s", body, logs)
			}
			if strings.Contains(logs, pass) {
				t.Errorf("the dyndns2 password was logged")
			}
		})
	}
}

func TestAgentDDNSUnwritableStateDir(t *testing.T) {
	f := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := startAgent(t, harnessOpts{stateDir: filepath.Join(f, "state"), addr: newAddr})
	if r := h.pass(); r.action != "updated" {
		t.Fatalf("first pass: %+v, want updated", r)
	}
	if got := h.published(); !slices.Equal(got, []string{newAddr.String()}) {
		t.Fatalf("A records = %v, want [%s]", got, newAddr)
	}
	writes := h.cf.Writes()
	for range 5 {
		if r := h.cycle(); r.action != "unchanged" {
			t.Fatalf("steady pass: %+v", r)
		}
	}
	if n := h.cf.Writes() - writes; n != 0 {
		t.Errorf("%d writes in steady state without a state file", n)
	}
	h.alive()
	logs := h.logs.String()
	for _, want := range []string{"state_dir is not writable", "state file can't be written"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func drain[T any](c chan T) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}
