package tunnel

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// TestFallbackToTCPAndBack: with UDP blocked the client is on TCP within
// QUICWait plus a dial, says why, and moves back to QUIC once QUIC connects again.
func TestFallbackToTCPAndBack(t *testing.T) {
	e := startServer(t, nil)
	var blocked atomic.Bool
	blocked.Store(true)
	dialBlocked := func(ctx context.Context, addr string) (transport.Conn, error) {
		if blocked.Load() {
			<-ctx.Done() // UDP blocked: no answer ever
			return nil, ctx.Err()
		}
		return testDial(ctx, addr)
	}
	start := time.Now()
	c, sess := startClient(t, e, "home", func(c *Config) {
		c.DialQUIC = dialBlocked
		c.QUICWait, c.QUICRetry = 300*time.Millisecond, 200*time.Millisecond
	})
	if sess.Transport != "tcp" || !strings.Contains(sess.TransportWhy, "QUIC did not connect within 300ms (UDP blocked?)") {
		t.Fatalf("session %s: %q", sess.Transport, sess.TransportWhy)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("on TCP after %s", took)
	}
	if st := c.Status(); st.Transport != "tcp" || st.TransportWhy != sess.TransportWhy {
		t.Fatalf("status %+v", st)
	}
	nextSession(t, e)
	// It keeps trying QUIC while on TCP.
	for c.quicRetries.Load() < 2 {
		select {
		case <-e.sessions:
			t.Fatal("moved while QUIC is blocked")
		case <-time.After(10 * time.Millisecond):
		}
	}
	blocked.Store(false)
	ss := nextSession(t, e)
	if ss.Transport() != "quic" {
		t.Fatalf("next session on %s", ss.Transport())
	}
	deadline := time.Now().Add(5 * time.Second)
	for st := c.Status(); st.Transport != "quic"; st = c.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Status(); !strings.Contains(st.TransportWhy, "QUIC connects again") {
		t.Fatalf("why %q", st.TransportWhy)
	}
}

// TestQUICFailsFast: when QUIC fails at once (ICMP unreachable), TCP starts at
// once, without waiting for QUICWait.
func TestQUICFailsFast(t *testing.T) {
	e := startServer(t, nil)
	start := time.Now()
	_, sess := startClient(t, e, "home", func(c *Config) {
		c.DialQUIC = func(ctx context.Context, addr string) (transport.Conn, error) {
			return nil, errTestRefused
		}
		c.QUICWait = time.Hour
	})
	if sess.Transport != "tcp" || !strings.Contains(sess.TransportWhy, "QUIC failed: refused") {
		t.Fatalf("session %s: %q", sess.Transport, sess.TransportWhy)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("on TCP after %s", took)
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTestRefused = testErr("refused")

// TestNoUpgradeWhileWatching: while a viewer stream runs over TCP the client
// doesn't move back to QUIC (that would cut the viewer); once the stream ends
// it does.
func TestNoUpgradeWhileWatching(t *testing.T) {
	e := startServer(t, nil)
	var blocked atomic.Bool
	blocked.Store(true)
	c, sess := startClient(t, e, "home", func(c *Config) {
		c.DialQUIC = func(ctx context.Context, addr string) (transport.Conn, error) {
			if blocked.Load() {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return testDial(ctx, addr)
		}
		c.QUICWait, c.QUICRetry = 300*time.Millisecond, 100*time.Millisecond
	})
	if sess.Transport != "tcp" {
		t.Fatalf("session on %s", sess.Transport)
	}
	ss := nextSession(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := ss.OpenStream(ctx, proto.StreamHeader{Kind: proto.StreamViewer, Service: "cam", Viewer: "198.51.100.9:5555"})
	if err != nil {
		t.Fatal(err)
	}
	echoOnce := func() {
		t.Helper()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
			t.Fatalf("viewer stream: %v", err)
		}
	}
	echoOnce() // the agent holds the stream now
	blocked.Store(false)
	// Many retry intervals pass with QUIC available: no new session, and the
	// viewer keeps being served.
	for range 10 {
		select {
		case <-e.sessions:
			t.Fatal("moved to QUIC while a viewer was watching over TCP")
		case <-time.After(100 * time.Millisecond):
		}
		echoOnce()
	}
	if n := c.quicRetries.Load(); n != 0 {
		t.Fatalf("%d QUIC attempts while watching", n)
	}
	st.CloseWrite()
	io.Copy(io.Discard, st)
	st.Close()
	if next := nextSession(t, e); next.Transport() != "quic" {
		t.Fatalf("after the viewer left: session on %s", next.Transport())
	}
}
