package tunnel

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// maxJitter is the worst case for the delay: the top of [cur/2, cur].
func maxJitter(d time.Duration) time.Duration { return d }

// outageDelay simulates a relay that was fine until t0 and is down for
// outage, each dial failing at once; it returns how long after the relay is
// back the next dial comes, and the longest wait seen.
func outageDelay(b backoff, outage time.Duration) (delay, longest time.Duration) {
	t0 := time.Unix(1_000_000, 0)
	b.lastUp = t0
	now := t0
	for now.Before(t0.Add(outage)) {
		w := b.next(now, maxJitter)
		longest = max(longest, w)
		now = now.Add(w)
	}
	return now.Sub(t0.Add(outage)), longest
}

func defaultBackoff() backoff {
	return backoff{min: 250 * time.Millisecond, max: 30 * time.Second, recentMax: 5 * time.Second, recent: 5 * time.Minute}
}

// TestBackoffRecentRelay: a relay outage of 40 s (a restart, a reboot) costs
// at most BackoffRecentMax once the relay is back, not the 30 s cap; a relay
// down for long is dialed about every BackoffMax.
func TestBackoffRecentRelay(t *testing.T) {
	for _, outage := range []time.Duration{5 * time.Second, 40 * time.Second, 4 * time.Minute} {
		delay, longest := outageDelay(defaultBackoff(), outage)
		if delay > 5*time.Second || longest > 5*time.Second {
			t.Errorf("outage %s: the next dial %s after the relay is back, longest wait %s; want <= 5s", outage, delay, longest)
		}
	}
	if _, longest := outageDelay(defaultBackoff(), time.Hour); longest != 30*time.Second {
		t.Errorf("relay down for an hour: longest wait %s, want the 30s cap", longest)
	}
	// Never connected (a typo in relay.address): the long cap from the start.
	b := defaultBackoff()
	now, longest := time.Unix(1_000_000, 0), time.Duration(0)
	for range 20 {
		w := b.next(now, maxJitter)
		longest = max(longest, w)
		now = now.Add(w)
	}
	if longest != 30*time.Second {
		t.Errorf("never connected: longest wait %s, want 30s", longest)
	}
	// An auth failure waits the full cap even when the relay was up a moment ago.
	b = defaultBackoff()
	b.lastUp, b.cur = time.Unix(1_000_000, 0), b.max
	if w := b.next(b.lastUp, maxJitter); w != 30*time.Second {
		t.Errorf("after an auth failure: %s", w)
	}
	// Jitter keeps the wait in [cur/2, cur].
	b = defaultBackoff()
	if w := b.next(time.Unix(0, 0), func(time.Duration) time.Duration { return 0 }); w != 125*time.Millisecond {
		t.Errorf("least first wait %s", w)
	}
}

// lockedBuffer is a log sink for several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestUnreachableSaysWhatToCheck: when neither UDP nor TCP reaches the relay
// the error (and the log) says in plain words what to check, not only the
// QUIC library's message.
func TestUnreachableSaysWhatToCheck(t *testing.T) {
	for _, tc := range []struct{ transport, over string }{
		{TransportAuto, "UDP and TCP"}, {TransportQUIC, "UDP"}, {TransportTCP, "TCP"},
	} {
		refused := func(context.Context, string) (transport.Conn, error) {
			return nil, errors.New("timeout: no recent network activity")
		}
		var logs lockedBuffer
		got := firstRetry(t, Config{Address: "127.0.0.1:7443", Name: "home", Token: testToken, Handler: echoHandler,
			Transport: tc.transport, DialQUIC: refused, DialTCP: refused, BackoffMin: time.Hour,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		want := "relay unreachable (" + tc.over + "): is porthole-relay running at 127.0.0.1:7443 and its firewall open for " + tc.over + " 7443?"
		if !errors.Is(got, ErrUnreachable) || !strings.Contains(got.Error(), want) || !strings.Contains(got.Error(), "no recent network activity") {
			t.Errorf("%s: error %q, want %q and the dialer's error", tc.transport, got, want)
		}
		if !strings.Contains(logs.String(), "is porthole-relay running at 127.0.0.1:7443") {
			t.Errorf("%s: log %q", tc.transport, logs.String())
		}
	}
}

// TestUDPBlockedHint: TCP connects but QUIC does not: the log says once, in
// plain words, that UDP seems blocked and what to open.
func TestUDPBlockedHint(t *testing.T) {
	e := startServer(t, nil)
	var logs lockedBuffer
	blocked := func(ctx context.Context, _ string) (transport.Conn, error) {
		<-ctx.Done() // UDP blocked: no answer ever
		return nil, ctx.Err()
	}
	startClient(t, e, "home", func(c *Config) {
		c.DialQUIC = blocked
		c.QUICWait = 100 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	if n := strings.Count(logs.String(), "UDP to the relay seems blocked"); n != 1 {
		t.Fatalf("hint logged %d times: %s", n, logs.String())
	}
	_, port, _ := net.SplitHostPort(e.ln.Addr().String())
	if !strings.Contains(logs.String(), "open UDP "+port+" in the relay's firewall") {
		t.Errorf("hint without the port: %s", logs.String())
	}
}

// TestRefusalLoggedOnce: a service the relay refuses is logged with the
// relay's reason at the first connect, not again at each reconnect with the
// same answer; the session's Results keep it for the status.
func TestRefusalLoggedOnce(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) {
		c.Register = func(s *ServerSession, svcs []proto.Service) []proto.ServiceResult {
			var res []proto.ServiceResult
			for _, sv := range svcs {
				res = append(res, proto.ServiceResult{Name: sv.Name, Port: sv.Port, Reason: "port 10554 is outside this agent's range 10000-10099 in relay.yaml"})
			}
			return res
		}
	})
	var logs lockedBuffer
	connected := make(chan Session, 4)
	c, _ := startClient(t, e, "home", func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		prev := c.OnConnect // startClient's (its channel holds 4: enough for 3 sessions)
		c.OnConnect = func(s Session) { prev(s); connected <- s }
	})
	<-connected
	for range 2 {
		nextSession(t, e).Close(proto.CloseNormal, "test: reconnect")
		select { // the client's side of the next session: registered and logged
		case <-connected:
		case <-time.After(10 * time.Second):
			t.Fatalf("no reconnect: %+v", c.Status())
		}
	}
	if n := strings.Count(logs.String(), "service refused by the relay"); n != 1 {
		t.Errorf("refusal logged %d times over 3 sessions:\n%s", n, logs.String())
	}
	if r := c.Status().Session.Results; len(r) != 1 || r[0].Accepted || !strings.Contains(r[0].Reason, "outside this agent's range") {
		t.Errorf("results %+v", r)
	}
}
