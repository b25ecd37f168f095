package tunnel

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// gotDatagram is one datagram a handler received (copied: the payload is only
// valid during the call).
type gotDatagram struct {
	h       proto.DatagramHeader
	payload []byte
}

// capture returns a handler that copies datagrams into a channel, dropping
// them when the test isn't reading.
func capture() (chan gotDatagram, func(proto.DatagramHeader, []byte)) {
	ch := make(chan gotDatagram, 64)
	return ch, func(h proto.DatagramHeader, p []byte) {
		select {
		case ch <- gotDatagram{h, bytes.Clone(p)}:
		default:
		}
	}
}

// sendUntil sends (datagrams are unreliable, even on loopback) every 50 ms until
// want reports a received datagram matches, or fails the test after 10 s.
func sendUntil(t *testing.T, send func() error, got <-chan gotDatagram, want func(gotDatagram) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := send(); err != nil {
			t.Fatalf("send: %v", err)
		}
		select {
		case d := <-got:
			if want(d) {
				return
			}
		case <-tick.C:
		case <-deadline:
			t.Fatal("datagram not received within 10s")
		}
	}
}

// waitFor polls cond every 10 ms until it holds, or fails the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const (
	clientDgramLoop = "tunnel.(*Client).receiveDatagrams"
	serverDgramLoop = "tunnel.(*ServerSession).receiveDatagrams"
)

// TestDatagramsBothWays: over each real transport, a WireGuard-sized datagram
// goes agent -> relay and relay -> agent with its header intact; the largest
// payload that fits is sent, one byte more is refused; each side runs exactly
// one datagram goroutine per session, and none are left after the session.
func TestDatagramsBothWays(t *testing.T) {
	base := runtime.NumGoroutine()
	for _, tr := range []string{TransportQUIC, TransportTCP} {
		t.Run(tr, func(t *testing.T) { testDatagramsBothWays(t, tr) })
	}
	waitFor(t, "datagram goroutines to end", func() bool {
		return goroutinesIn(clientDgramLoop) == 0 && goroutinesIn(serverDgramLoop) == 0
	})
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testDatagramsBothWays(t *testing.T, tr string) {
	atRelay, relayHandler := capture()
	e := startServer(t, func(c *ServerConfig) {
		c.OnDatagram = func(ss *ServerSession, h proto.DatagramHeader, p []byte) { relayHandler(h, p) }
	})
	atAgent, agentHandler := capture()
	c, _ := startClient(t, e, "home", func(c *Config) { c.Transport = tr; c.OnDatagram = agentHandler })
	ss := nextSession(t, e)

	// OnConnect runs before the session's goroutines start: wait for them.
	waitFor(t, "one datagram goroutine on each side", func() bool {
		return goroutinesIn(clientDgramLoop) == 1 && goroutinesIn(serverDgramLoop) == 1
	})

	wg := make([]byte, 1280) // a phone's WireGuard packet at MTU 1280
	for i := range wg {
		wg[i] = byte(i * 7)
	}
	up := proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: 0xdeadbeef}
	sendUntil(t, func() error { return c.SendDatagram(up, wg) }, atRelay, func(d gotDatagram) bool {
		if d.h != up || !bytes.Equal(d.payload, wg) {
			t.Fatalf("relay got %+v, %d bytes", d.h, len(d.payload))
		}
		return true
	})
	down := proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: 42}
	sendUntil(t, func() error { return ss.SendDatagram(down, wg) }, atAgent, func(d gotDatagram) bool {
		if d.h != down || !bytes.Equal(d.payload, wg) {
			t.Fatalf("agent got %+v, %d bytes", d.h, len(d.payload))
		}
		return true
	})

	// The largest payload that fits arrives both ways.
	full := bytes.Repeat([]byte{0xa5}, MaxDatagramPayload)
	sendUntil(t, func() error { return c.SendDatagram(up, full) }, atRelay, func(d gotDatagram) bool { return len(d.payload) == len(full) })
	sendUntil(t, func() error { return ss.SendDatagram(down, full) }, atAgent, func(d gotDatagram) bool { return len(d.payload) == len(full) })

	// One byte more is refused, and a kind the header can't carry too.
	over := make([]byte, MaxDatagramPayload+1)
	if err := c.SendDatagram(up, over); !errors.Is(err, transport.ErrDatagramTooLarge) {
		t.Errorf("client oversize: %v", err)
	}
	if err := ss.SendDatagram(down, over); !errors.Is(err, transport.ErrDatagramTooLarge) {
		t.Errorf("server oversize: %v", err)
	}
	if err := c.SendDatagram(proto.DatagramHeader{Kind: 16}, wg); !errors.Is(err, proto.ErrBadDatagram) {
		t.Errorf("client bad kind: %v", err)
	}

	cs, rs := c.DatagramStats(), ss.DatagramStats()
	if cs.Sent < 2 || cs.Received < 2 || rs.Sent < 2 || rs.Received < 2 || cs.Malformed+rs.Malformed+cs.Dropped+rs.Dropped != 0 {
		t.Errorf("stats: client %+v, relay %+v", cs, rs)
	}
	select {
	case <-ss.Done():
		t.Fatal("session closed")
	default:
	}
}

// TestDatagramSendWithoutSession: a client that isn't connected refuses at once.
func TestDatagramSendWithoutSession(t *testing.T) {
	c, err := New(Config{Address: "127.0.0.1:1", Name: "home", Token: testToken, Handler: echoHandler})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard}, []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("err %v, want ErrNotConnected", err)
	}
	if err := c.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard}, make([]byte, 2000)); !errors.Is(err, transport.ErrDatagramTooLarge) {
		t.Fatalf("err %v, want ErrDatagramTooLarge", err)
	}
}

// TestNoDatagramGoroutineWithoutHandler: without OnDatagram neither side reads
// datagrams (idle agents at the relay cost no goroutine for them), and sending
// still works.
func TestNoDatagramGoroutineWithoutHandler(t *testing.T) {
	for _, tr := range []string{TransportQUIC, TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			e := startServer(t, nil)
			c, _ := startClient(t, e, "home", func(c *Config) { c.Transport = tr })
			ss := nextSession(t, e)
			for range 10 {
				if err := c.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: 1}, []byte("hello")); err != nil {
					t.Fatal(err)
				}
				if err := ss.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: 1}, []byte("hello")); err != nil {
					t.Fatal(err)
				}
			}
			if n, m := goroutinesIn("receiveDatagrams"), goroutinesIn("datagramLoop"); n+m != 0 {
				t.Fatalf("%d+%d datagram goroutines without a handler", n, m)
			}
		})
	}
}

// rawDatagramSession authenticates by hand over dial, for tests that send
// datagrams a real agent wouldn't.
func rawDatagramSession(t *testing.T, e *relayEnv, dial DialFunc) transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dial(ctx, e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	if _, _, err := Authenticate(ctx, conn, "home", testToken, "raw"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestMalformedDatagrams: garbage datagrams from an authenticated peer (too
// short, wrong version, unknown kind) are counted and dropped; the session stays
// and well-formed datagrams still arrive.
func TestMalformedDatagrams(t *testing.T) {
	for _, tr := range []string{TransportQUIC, TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			var calls, logged atomic.Int64
			loopsAtDisconnect := make(chan int, 1)
			got, handler := capture()
			e := startServer(t, func(c *ServerConfig) {
				c.HeartbeatDeadline = time.Minute // the raw peer doesn't ping
				c.OnDatagram = func(ss *ServerSession, h proto.DatagramHeader, p []byte) { calls.Add(1); handler(h, p) }
				c.Logger = slog.New(msgCounter{msg: "malformed datagrams from the peer dropped", n: &logged})
				gone := c.OnDisconnect
				c.OnDisconnect = func(ss *ServerSession, err error) {
					loopsAtDisconnect <- goroutinesIn(serverDgramLoop)
					gone(ss, err)
				}
			})
			dial := testDial
			if tr == TransportTCP {
				dial = DialTCP()
			}
			conn := rawDatagramSession(t, e, dial)
			ss := nextSession(t, e)
			garbage := [][]byte{
				{0x11},                       // shorter than the header
				{0x11, 0, 0, 0},              // still shorter
				{0x21, 0, 0, 0, 1, 'x'},      // version 2
				{0x12, 0, 0, 0, 1, 'x'},      // version 1, unknown kind 2
				{0x10, 0, 0, 0, 1},           // kind 0
				bytes.Repeat([]byte{0}, 100), // version 0
			}
			valid, _ := proto.AppendDatagram(nil, proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: 5}, []byte("ok"))
			sendUntil(t, func() error {
				for _, g := range garbage {
					if err := conn.SendDatagram(g); err != nil {
						return err
					}
				}
				return conn.SendDatagram(valid)
			}, got, func(d gotDatagram) bool {
				return d.h.Flow == 5 && string(d.payload) == "ok" && ss.DatagramStats().Malformed >= uint64(len(garbage))
			})
			st := ss.DatagramStats()
			if st.Received != uint64(calls.Load()) || st.Malformed < uint64(len(garbage)) || st.Dropped != 0 {
				t.Fatalf("stats %+v, handler calls %d", st, calls.Load())
			}
			select {
			case <-ss.Done():
				t.Fatal("malformed datagrams closed the session")
			default:
			}
			if n := logged.Load(); n != 1 {
				t.Errorf("malformed datagrams logged %d times, want once", n)
			}
			// The session's datagram goroutine has ended by the time the relay
			// hears of the disconnect.
			conn.CloseWithError(0, "")
			select {
			case n := <-loopsAtDisconnect:
				if n != 0 {
					t.Fatalf("%d datagram goroutines left at OnDisconnect", n)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no OnDisconnect")
			}
		})
	}
}

// msgCounter counts log records with one message.
type msgCounter struct {
	msg string
	n   *atomic.Int64
}

func (h msgCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h msgCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h msgCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h msgCounter) WithGroup(string) slog.Handler      { return h }

// TestDatagramFlood: datagrams over the session's budget are dropped and
// counted; the session stays.
func TestDatagramFlood(t *testing.T) {
	for _, tr := range []string{TransportQUIC, TransportTCP} {
		t.Run(tr, func(t *testing.T) {
			var calls atomic.Int64
			e := startServer(t, func(c *ServerConfig) {
				c.DatagramBudget = Budget{Every: time.Hour, Burst: 10}
				c.OnDatagram = func(*ServerSession, proto.DatagramHeader, []byte) { calls.Add(1) }
			})
			c, _ := startClient(t, e, "home", func(c *Config) { c.Transport = tr })
			ss := nextSession(t, e)
			p := make([]byte, 1280)
			waitFor(t, "datagrams over the budget dropped", func() bool {
				for range 100 {
					if err := c.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: 1}, p); err != nil {
						t.Fatal(err)
					}
				}
				st := ss.DatagramStats()
				return st.Received == 10 && st.Dropped >= 100
			})
			if n := calls.Load(); n != 10 {
				t.Fatalf("handler called %d times, budget 10", n)
			}
			select {
			case <-ss.Done():
				t.Fatal("a datagram flood closed the session")
			default:
			}
			if !c.Status().Connected {
				t.Fatal("agent disconnected")
			}
		})
	}
}
