package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/notify"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway/access"
)

func TestEventWatch(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	st := func(path, why, v4 string, up bool) Status {
		s := Status{Path: path, PathWhy: why, PublicV4: v4}
		s.Tunnel.Connected, s.Tunnel.Relay = up, "relay.example.com:7443"
		if !up {
			s.Tunnel.LastError = "timeout: no recent network activity"
		}
		return s
	}
	steps := []struct {
		at   time.Duration
		st   Status
		want []notify.Kind
		in   string // a piece of the first event's message
	}{
		{0, st("direct", "verified", "203.0.113.7", true), nil, ""}, // the first status says nothing
		{5 * time.Second, st("relay", "the router's mapping failed", "203.0.113.7", true), []notify.Kind{notify.PathChange}, "through the relay (was direct): the router's mapping failed"},
		{10 * time.Second, st("relay", "x", "203.0.113.8", true), []notify.Kind{notify.AddressChange}, "from 203.0.113.7 to 203.0.113.8"},
		{15 * time.Second, st("unknown", "", "", false), nil, ""}, // unknown and no address: nothing
		{40 * time.Second, st("relay", "x", "203.0.113.8", false), nil, ""},
		{74 * time.Second, st("relay", "x", "203.0.113.8", false), nil, ""}, // down 59 s
		{75 * time.Second, st("relay", "x", "203.0.113.8", false), []notify.Kind{notify.TunnelDown}, "down for 1m0s: timeout"},
		{80 * time.Second, st("relay", "x", "203.0.113.8", false), nil, ""}, // said once
		{90 * time.Second, st("relay", "x", "203.0.113.8", true), []notify.Kind{notify.TunnelUp}, "up again after 1m15s"},
		{95 * time.Second, st("relay", "x", "203.0.113.8", false), nil, ""},
		{100 * time.Second, st("relay", "x", "203.0.113.8", true), nil, ""}, // a short outage says nothing
	}
	w := &eventWatch{tunnel: true}
	for i, s := range steps {
		got := w.step(s.st, t0.Add(s.at))
		var kinds []notify.Kind
		for _, e := range got {
			kinds = append(kinds, e.Kind)
		}
		if strings.Join(kindStrings(kinds), ",") != strings.Join(kindStrings(s.want), ",") {
			t.Errorf("step %d: events %v, want %v", i, kinds, s.want)
			continue
		}
		if len(got) > 0 && !strings.Contains(got[0].Message, s.in) {
			t.Errorf("step %d: message %q lacks %q", i, got[0].Message, s.in)
		}
	}
}

func kindStrings(ks []notify.Kind) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = string(k)
	}
	return out
}

func TestCamStateHysteresis(t *testing.T) {
	var c camState
	// Up from the start: known, no event.
	for i, ok := range []bool{true, true} {
		if c.observe(ok) {
			t.Fatalf("check %d: an event for a camera that was up from the start", i)
		}
	}
	seq := []struct {
		ok   bool
		flip bool
	}{{false, false}, {true, false}, {false, false}, {false, true}, {false, false}, {true, false}, {true, true}, {true, false}}
	for i, s := range seq {
		if got := c.observe(s.ok); got != s.flip {
			t.Errorf("check %d (ok=%v): flipped=%v, want %v", i, s.ok, got, s.flip)
		}
	}
	// Down from the start is said.
	var d camState
	if d.observe(false) || !d.observe(false) || d.up {
		t.Errorf("a camera down from the start: %+v", d)
	}
}

func TestLockoutAndCertEvents(t *testing.T) {
	e := lockoutEvent(access.Lockout{Source: netip.MustParseAddr("203.0.113.9"), RetryAfter: 2 * time.Second})
	if e.Kind != notify.Lockout || !strings.Contains(e.Message, "from 203.0.113.9") || e.Details["source"] != "203.0.113.9" {
		t.Errorf("source lockout: %+v", e)
	}
	e = lockoutEvent(access.Lockout{Name: "alice", RetryAfter: time.Second})
	if !strings.Contains(e.Message, `for the name "alice"`) || e.Details["name"] != "alice" {
		t.Errorf("name lockout: %+v", e)
	}
	e = certEvent([]string{"home.example.com"}, errors.New("acme: rate limited"))
	if e.Kind != notify.CertFailure || !strings.Contains(e.Message, "home.example.com could not be obtained or renewed (acme: rate limited)") {
		t.Errorf("cert: %+v", e)
	}
}

// webhookReceiver collects the events a webhook target gets.
func webhookReceiver(t *testing.T) (string, chan notify.Payload) {
	got := make(chan notify.Payload, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p notify.Payload
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &p); err != nil {
			t.Errorf("webhook body %q: %v", b, err)
		}
		got <- p
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

func nextPayload(t *testing.T, got chan notify.Payload, kind notify.Kind) notify.Payload {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case p := <-got:
			if p.Event == kind {
				return p
			}
		case <-deadline:
			t.Fatalf("no %s notification within 10 s", kind)
		}
	}
}

// A running agent with notify: checks its cameras and says when one stops
// and starts answering, and a viewer lockout reaches the webhook too.
func TestAgentNotifiesCameraAndLockout(t *testing.T) {
	url, got := webhookReceiver(t)
	hash, err := access.HashPassword("alice's password")
	if err != nil {
		t.Fatal(err)
	}
	var camOK atomic.Bool
	var dials atomic.Int64
	camOK.Store(true)
	cam := camera(t)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		if addr == cam && !camOK.Load() {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	ac := &config.Agent{
		Name: "home", StateDir: t.TempDir(),
		Relay: &config.AgentRelay{Address: "127.0.0.1:" + strconv.Itoa(int(freePort(t))), Token: config.NewToken()},
		Services: []config.Service{
			{Name: "frontdoor", Kind: config.KindHTTP, Target: cam, Port: freePort(t), AllowAny: true},
		},
		Viewers: map[string]config.Viewer{"alice": {PasswordHash: hash}},
		Notify:  []config.NotifyTarget{{Type: "webhook", URL: url}},
	}
	a, err := New(Config{Agent: ac, Logger: slog.New(slog.DiscardHandler), DialLAN: dial})
	if err != nil {
		t.Fatal(err)
	}
	a.camEvery = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "the camera known to be up", func() bool { return dials.Load() >= CameraUpAfter+1 })
	camOK.Store(false)
	p := nextPayload(t, got, notify.CameraDown)
	if p.Agent != "home" || p.Details["services"] != "frontdoor" || !strings.Contains(p.Message, "connection refused") {
		t.Errorf("camera down: %+v", p)
	}
	camOK.Store(true)
	p = nextPayload(t, got, notify.CameraUp)
	if !strings.Contains(p.Message, "frontdoor ("+cam+") answers again") {
		t.Errorf("camera up: %+v", p)
	}
	src := netip.MustParseAddr("203.0.113.9")
	for i := 0; ; i++ {
		_, _, err := a.web.store.Login(ctx, "alice", "wrong", src)
		if errors.Is(err, access.ErrLockedOut) {
			break
		}
		if i > 20 {
			t.Fatalf("not locked out after %d failures: %v", i, err)
		}
	}
	p = nextPayload(t, got, notify.Lockout)
	if p.Details["source"] != "203.0.113.9" {
		t.Errorf("lockout: %+v", p)
	}
}

func TestNotifyProblems(t *testing.T) {
	ac := &config.Agent{Notify: []config.NotifyTarget{
		{Type: "shoutrrr", URL: "telegram://123456:ABCdef@telegram?chats=42", Line: 20},
		{Type: "shoutrrr", URL: "nosuch://tok3nsecret@host", Line: 22},
	}}
	probs := NotifyProblems(ac, "agent.yaml")
	if len(probs) != 1 || !strings.HasPrefix(probs[0], "agent.yaml:22: notify[1].url: ") || strings.Contains(probs[0], "tok3nsecret") {
		t.Errorf("problems %q, want one for notify[1] without its secret", probs)
	}
}
