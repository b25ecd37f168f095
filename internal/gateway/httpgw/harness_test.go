package httpgw

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
)

// fakeAuth is a viewer store: passwords, sessions, lockout, link tokens.
type fakeAuth struct {
	mu        sync.Mutex
	passwords map[string]string
	locked    map[string]time.Duration // name -> retry after
	sessions  map[string]string
	links     map[string]string
	loggedOut []string
	n         int
}

type lockedErr struct{ d time.Duration }

func (e lockedErr) Error() string             { return "locked" }
func (e lockedErr) RetryAfter() time.Duration { return e.d }

var errWrong = errors.New("wrong name or password")

func newFakeAuth() *fakeAuth {
	return &fakeAuth{
		passwords: map[string]string{"alice": "alice-pw", "bob": "bob-pw", "mallory": "m-pw"},
		locked:    map[string]time.Duration{"mallory": 30 * time.Second},
		sessions:  map[string]string{},
		links:     map[string]string{"good-token": "alice"},
	}
}

func (a *fakeAuth) check(name, password string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if d, ok := a.locked[name]; ok {
		return lockedErr{d}
	}
	if p, ok := a.passwords[name]; !ok || p != password {
		return errWrong
	}
	return nil
}

func (a *fakeAuth) Login(_ context.Context, name, password string, _ netip.Addr) (string, time.Time, error) {
	if err := a.check(name, password); err != nil {
		return "", time.Time{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	id := "sess-" + name + "-" + strings.Repeat("x", a.n)
	a.sessions[id] = name
	return id, time.Now().Add(time.Hour), nil
}

func (a *fakeAuth) Basic(_ context.Context, name, password string, _ netip.Addr) (string, error) {
	if err := a.check(name, password); err != nil {
		return "", err
	}
	return name, nil
}

func (a *fakeAuth) Session(id string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.sessions[id]
	return v, ok
}

func (a *fakeAuth) Logout(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sessions, id)
	a.loggedOut = append(a.loggedOut, id)
}

func (a *fakeAuth) Link(token string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.links[token]
	return v, ok
}

var _ Auth = (*fakeAuth)(nil)

// syncBuffer is a log sink for assertions.
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

// gw is a Handler served through a real gateway.Listener on loopback.
type gw struct {
	h      *Handler
	l      *gateway.Listener
	base   string // http://127.0.0.1:port
	auth   *fakeAuth
	log    *syncBuffer
	audit  *syncBuffer
	client *http.Client // follows no redirects
	stop   func()
}

// start serves cfg in front of target (host:port). cfg.Target and Auth are
// filled in when empty; PlainHTTP is set.
func start(t testing.TB, cfg Config, target string) *gw {
	t.Helper()
	cfg.PlainHTTP = true
	return startWith(t, cfg, target, nil, nil)
}

// startWith is start with the gateway's listener (nil: plain TCP) and the
// client's transport (nil: a default one) given.
func startWith(t testing.TB, cfg Config, target string, ln net.Listener, tr *http.Transport) *gw {
	t.Helper()
	g := &gw{auth: newFakeAuth(), log: &syncBuffer{}, audit: &syncBuffer{}}
	if cfg.Auth == nil {
		cfg.Auth = g.auth
	}
	if cfg.Service == "" {
		cfg.Service = "cam"
	}
	cfg.Target = target
	cfg.Logger = slog.New(slog.NewTextHandler(g.log, nil))
	cfg.Audit = slog.New(slog.NewTextHandler(g.audit, nil))
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.h = h
	anyRule, _ := gateway.ParsePolicy([]string{"any"})
	l, err := gateway.Listen(gateway.Config{
		Service: cfg.Service, Handler: h, Policy: anyRule, Addr: "127.0.0.1:0", Listener: ln, DialTimeout: 5 * time.Second,
		Dial: func(ctx context.Context, _ netip.AddrPort) (gateway.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				return nil, err
			}
			return c.(*net.TCPConn), nil
		},
	})
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	g.l = l
	g.base = "http://" + l.Addr().String()
	if ln != nil {
		g.base = "https://" + l.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Serve(ctx); close(done) }()
	if tr == nil {
		tr = &http.Transport{}
	}
	g.client = &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			tr.CloseIdleConnections()
			cancel()
			<-done
			h.Close()
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			l.Shutdown(sctx)
		})
	}
	t.Cleanup(g.stop)
	return g
}

// req builds a request to the gateway.
func (g *gw) req(t testing.TB, method, path string, body string) *http.Request {
	t.Helper()
	var r *http.Request
	var err error
	if body != "" {
		r, err = http.NewRequest(method, g.base+path, strings.NewReader(body))
	} else {
		r, err = http.NewRequest(method, g.base+path, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do sends r and returns the response with its body read (for short answers).
func (g *gw) do(t *testing.T, r *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := g.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp, b.String()
}

// recorder is a fake camera that records what it was sent.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (rc *recorder) add(r *http.Request) {
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, r.Clone(context.Background()))
	rc.mu.Unlock()
}

func (rc *recorder) last(t *testing.T) *http.Request {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		t.Fatal("the camera got no request")
	}
	return rc.reqs[len(rc.reqs)-1]
}

// camera serves h on loopback, recording requests; it returns host:port.
func camera(t *testing.T, h http.HandlerFunc) (string, *recorder) {
	t.Helper()
	rc := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.add(r)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), rc
}

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("camera says hello " + r.URL.Path))
}
