package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

const testToken = "0123456789abcdef0123456789abcdef"

// countingHandler counts log records (and prints them with -v).
type countingHandler struct {
	n    *atomic.Int64
	next slog.Handler
}

func (h countingHandler) Enabled(ctx context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.n.Add(1)
	if h.next != nil {
		return h.next.Handle(ctx, r)
	}
	return nil
}
func (h countingHandler) WithAttrs(a []slog.Attr) slog.Handler {
	if h.next != nil {
		return countingHandler{h.n, h.next.WithAttrs(a)}
	}
	return h
}
func (h countingHandler) WithGroup(g string) slog.Handler {
	if h.next != nil {
		return countingHandler{h.n, h.next.WithGroup(g)}
	}
	return h
}

func testLogger(t *testing.T, n *atomic.Int64) *slog.Logger {
	if n == nil {
		n = new(atomic.Int64)
	}
	h := countingHandler{n: n}
	if testing.Verbose() {
		h.next = slog.NewTextHandler(os.Stderr, nil)
	}
	return slog.New(h)
}

type relayEnv struct {
	srv      *Server
	ln       transport.Listener
	sessions chan *ServerSession
	gone     chan error
	logLines atomic.Int64
}

// startServer runs a Server on a loopback listener; mod adjusts its config.
func startServer(t *testing.T, mod func(*ServerConfig)) *relayEnv {
	t.Helper()
	e := &relayEnv{sessions: make(chan *ServerSession, 16), gone: make(chan error, 16)}
	cfg := ServerConfig{
		Token: func(name string) ([]byte, bool) {
			if strings.HasPrefix(name, "home") {
				return []byte(testToken), true
			}
			return nil, false
		},
		OnConnect:    func(s *ServerSession) error { e.sessions <- s; return nil },
		OnDisconnect: func(s *ServerSession, err error) { e.gone <- err },
		Register: func(s *ServerSession, svcs []proto.Service) []proto.ServiceResult {
			var res []proto.ServiceResult
			for _, sv := range svcs {
				res = append(res, proto.ServiceResult{Name: sv.Name, Port: sv.Port, Accepted: true})
			}
			return res
		},
		ProbeDial: func(ctx context.Context, s *ServerSession, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		Logger: testLogger(t, &e.logLines),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	var tln transport.Listener
	e.ln, tln = testListen(t, srv.RequireRetry)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { srv.Serve(ctx, e.ln); done <- struct{}{} }()
	go func() { srv.Serve(ctx, tln); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); e.ln.Close(); tln.Close(); <-done; <-done })
	return e
}

// echoHandler echoes every viewer stream.
func echoHandler(ctx context.Context, hdr proto.StreamHeader, st transport.Stream) {
	defer st.Close()
	io.Copy(st, st)
	st.CloseWrite()
}

// startClient runs a Client against e and waits for its first session.
func startClient(t *testing.T, e *relayEnv, name string, mod func(*Config)) (*Client, Session) {
	t.Helper()
	connected := make(chan Session, 4)
	cfg := Config{
		Address: e.ln.Addr().String(), Name: name, Token: testToken,
		Services:  []Service{{Name: "cam", Port: 10554, Allow: []string{"any"}}},
		Handler:   echoHandler,
		DialQUIC:  testDial,
		Logger:    testLogger(t, nil),
		OnConnect: func(s Session) { connected <- s },
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case s := <-connected:
		return c, s
	case <-time.After(10 * time.Second):
		t.Fatalf("client did not connect: %+v", c.Status())
	}
	panic("unreachable")
}

func nextSession(t *testing.T, e *relayEnv) *ServerSession {
	t.Helper()
	select {
	case s := <-e.sessions:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no session at the server")
	}
	return nil
}

// TestClientAgainstServer runs both halves over a real transport on loopback:
// handshake, registration, a viewer stream with half-close, a probe answered by
// AnswerProbe on a direct listener, heartbeats.
func TestClientAgainstServer(t *testing.T) {
	for _, tr := range []string{TransportQUIC, TransportTCP} {
		t.Run(tr, func(t *testing.T) { testClientAgainstServer(t, tr) })
	}
}

func testClientAgainstServer(t *testing.T, tr string) {
	e := startServer(t, nil)
	c, sess := startClient(t, e, "home", func(c *Config) { c.Transport = tr })
	ss := nextSession(t, e)
	if ss.Name() != "home" || !ss.Observed().IsValid() || sess.Observed != ss.Observed() {
		t.Fatalf("session %s observed %v, client saw %v", ss.Name(), ss.Observed(), sess.Observed)
	}
	if len(sess.Results) != 1 || !sess.Results[0].Accepted || sess.Transport != tr || ss.Transport() != tr || sess.Heartbeat != time.Second {
		t.Fatalf("session %+v", sess)
	}
	if st := c.Status(); !st.Connected || st.Transport != tr || st.TransportWhy != "relay.transport: "+tr {
		t.Fatalf("status %+v", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := ss.OpenStream(ctx, proto.StreamHeader{Kind: proto.StreamViewer, Service: "cam", Viewer: "198.51.100.9:5555"})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("porthole"), 64<<10)
	go func() { st.Write(data); st.CloseWrite() }()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	st.Close()

	// A stream for a service the relay didn't accept is refused by the agent
	// (the refusal may already hit the header's write).
	st, err = ss.OpenStream(ctx, proto.StreamHeader{Kind: proto.StreamViewer, Service: "other", Viewer: "198.51.100.9:5555"})
	if err == nil {
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = st.Read(make([]byte, 1))
	}
	var se *transport.StreamError
	if !errors.As(err, &se) || se.Code != uint64(proto.StreamRefused) {
		t.Fatalf("unregistered service: %v", err)
	}

	// A probe of a direct listener that answers with AnswerProbe.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if handled, _ := c.AnswerProbe(conn, addrPort(conn.RemoteAddr())); !handled {
				conn.Close()
			}
		}
	}()
	r, err := c.Probe(ctx, netip.MustParseAddrPort(ln.Addr().String()), "cam")
	if err != nil || !r.OK {
		t.Fatalf("probe: %+v %v", r, err)
	}
	// Something that answers wrongly fails the probe.
	bad, _ := net.Listen("tcp", "127.0.0.1:0")
	defer bad.Close()
	go func() {
		conn, err := bad.Accept()
		if err == nil {
			io.WriteString(conn, strings.Repeat("0", proto.ProbeAnswerLen-1)+"\n")
			conn.Close()
		}
	}()
	r, err = c.Probe(ctx, netip.MustParseAddrPort(bad.Addr().String()), "cam")
	if err != nil || r.OK || !strings.Contains(r.Reason, "not this agent") {
		t.Fatalf("probe of an impostor: %+v %v", r, err)
	}
}

// TestWrongToken: both sides refuse and say why; the client reports ErrAuth.
func TestWrongToken(t *testing.T) {
	e := startServer(t, nil)
	err := firstRetry(t, Config{Address: e.ln.Addr().String(), Name: "home", Token: "wrong-token-wrong-token-wrong!!", Handler: echoHandler,
		DialQUIC: testDial})
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("err %v, want ErrAuth", err)
	}
}

// firstRetry runs a Client with cfg until its first failed attempt and
// returns that attempt's error.
func firstRetry(t *testing.T, cfg Config) error {
	t.Helper()
	retried := make(chan error, 1)
	cfg.OnRetry = func(err error, _ time.Duration) {
		select {
		case retried <- err:
		default:
		}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	select {
	case err := <-retried:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no failed attempt")
	}
	return nil
}

// rawSession authenticates by hand and returns the control stream, for tests
// that misbehave as an agent.
func rawSession(t *testing.T, e *relayEnv, name string) (transport.Conn, transport.Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := testDial(ctx, e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctrl, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proto.WriteMessage(ctrl, &proto.Hello{Version: proto.Version, Name: name})
	if m, err := proto.ReadMessage(ctrl); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*proto.RelayProof); !ok {
		t.Fatalf("got %T", m)
	}
	exp, _ := proto.Exporter(conn)
	proto.WriteMessage(ctrl, &proto.AgentProof{MAC: proto.AgentProofMAC([]byte(testToken), name, exp)})
	if m, err := proto.ReadMessage(ctrl); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*proto.Welcome); !ok {
		t.Fatalf("got %T", m)
	}
	return conn, ctrl
}

// goroutinesIn counts goroutines whose stack includes fn.
func goroutinesIn(fn string) int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// TestProbeFlood: an authenticated agent sending 100k ProbeRequests (aimed at a
// port that never answers) gets its session closed for exceeding the budget;
// probes in flight, goroutines, memory and log lines stay bounded, and another
// agent's session is unaffected. The relay before this change started a goroutine
// per probe (95k goroutines, 1.2 GB RSS and 210k log lines for 100k probes).
func TestProbeFlood(t *testing.T) {
	var dials, maxInFlight, inFlight atomic.Int64
	var flooding atomic.Bool
	flooding.Store(true)
	e := startServer(t, func(c *ServerConfig) {
		c.ProbeDial = func(ctx context.Context, s *ServerSession, addr string) (net.Conn, error) {
			if !flooding.Load() {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			}
			dials.Add(1)
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
			}
			<-ctx.Done() // a port that never accepts
			return nil, ctx.Err()
		}
	})
	good, _ := startClient(t, e, "home-good", nil)
	nextSession(t, e)
	conn, ctrl := rawSession(t, e, "home-bad")
	nextSession(t, e)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	baseG := runtime.NumGoroutine()
	logBefore := e.logLines.Load()

	var buf []byte
	sent := 0
	for i := range 100_000 {
		buf, _ = proto.AppendFrame(buf[:0], &proto.ProbeRequest{ID: uint64(i), Addr: "127.0.0.1:9", Service: "cam"})
		ctrl.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := ctrl.Write(buf); err != nil {
			break
		}
		sent++
		if i%1000 == 0 && runtime.NumGoroutine() > baseG+100 {
			t.Fatalf("after %d probes: %d goroutines (baseline %d)", i, runtime.NumGoroutine(), baseG)
		}
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("flooding session still open after %d probes", sent)
	}
	if code, ok := closeCode(context.Cause(conn.Context())); !ok || code != proto.CloseOverBudget {
		t.Fatalf("flooding session closed with %v, want CloseOverBudget", context.Cause(conn.Context()))
	}
	if err := <-e.gone; !errors.Is(err, ErrOverBudget) {
		t.Fatalf("server saw %v", err)
	}
	if m := maxInFlight.Load(); m > 4 {
		t.Fatalf("%d probes in flight at once", m)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 32<<20 {
		t.Fatalf("heap grew by %d MiB", grew>>20)
	}
	if n := e.logLines.Load() - logBefore; n > 20 {
		t.Fatalf("%d log lines for the flood", n)
	}
	t.Logf("flood: %d probes written before the close, %d dialed, %d log lines", sent, dials.Load(), e.logLines.Load()-logBefore)

	// The good agent's session was never disturbed and still works.
	if st := good.Status(); !st.Connected || st.Reconnects != 0 {
		t.Fatalf("other agent: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	flooding.Store(false)
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			good.AnswerProbe(conn, addrPort(conn.RemoteAddr()))
		}
	}()
	if r, err := good.Probe(ctx, netip.MustParseAddrPort(ln.Addr().String()), "cam"); err != nil || !r.OK {
		t.Fatalf("other agent's probe: %+v %v", r, err)
	}
}

// TestOneProbePerService: a second probe of a service while one runs is refused
// at once (not queued, not a goroutine), and the session stays up.
func TestOneProbePerService(t *testing.T) {
	release := make(chan struct{})
	e := startServer(t, func(c *ServerConfig) {
		c.ProbeDial = func(ctx context.Context, s *ServerSession, addr string) (net.Conn, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, errors.New("refused")
		}
	})
	c, _ := startClient(t, e, "home", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := make(chan *proto.ProbeResult, 1)
	go func() {
		r, _ := c.Probe(ctx, netip.MustParseAddrPort("127.0.0.1:9"), "cam")
		first <- r
	}()
	for goroutinesIn("(*ServerSession).probe") == 0 {
		if ctx.Err() != nil {
			t.Fatal("first probe never started")
		}
		runtime.Gosched()
	}
	r, err := c.Probe(ctx, netip.MustParseAddrPort("127.0.0.1:9"), "cam")
	if err != nil || r.OK || !strings.Contains(r.Reason, "already running") {
		t.Fatalf("second probe: %+v %v", r, err)
	}
	close(release)
	if r := <-first; r == nil || r.OK {
		t.Fatalf("first probe: %+v", r)
	}
	if !c.Status().Connected {
		t.Fatal("session closed")
	}
}

// TestHeartbeatDeadline: an agent that stops pinging (hung, or its network gone
// without a trace) has its session closed by the relay within the deadline, not at
// the transport's 30 s idle timeout.
func TestHeartbeatDeadline(t *testing.T) {
	for _, tr := range []string{TransportQUIC, TransportTCP} {
		t.Run(tr, func(t *testing.T) { testHeartbeatDeadline(t, tr) })
	}
}

func testHeartbeatDeadline(t *testing.T, tr string) {
	e := startServer(t, nil)
	c, _ := startClient(t, e, "home", func(c *Config) {
		c.BackoffMin, c.BackoffMax, c.Transport = time.Hour, time.Hour, tr
	})
	ss := nextSession(t, e)
	start := time.Now()
	c.PauseHeartbeat(true)
	select {
	case err := <-e.gone:
		if !errors.Is(err, ErrHeartbeatTimeout) {
			t.Fatalf("session ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("silent agent's session still open after 10s")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("closed after %s, want within 5s", took)
	}
	select {
	case <-ss.Done(): // the transport finishes closing in the background
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed")
	}
}

// TestUnauthenticatedFlood: 1000 connections that complete the transport handshake
// and never speak. The server keeps at most MaxUnauthenticated of them (closing
// the rest at once with CloseBusy, no goroutine each), closes the ones it keeps at
// the auth deadline, asks for Retry while they pile up, and an agent still
// connects. Before, each got a goroutine and 10 s.
func TestUnauthenticatedFlood(t *testing.T) {
	// A long auth deadline, so the silent connections pile up past the cap even
	// when dialing is slow (race detector, busy machine); TestAuthDeadline checks
	// the deadline itself.
	e := startServer(t, func(c *ServerConfig) { c.AuthTimeout = 10 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var mu sync.Mutex
	var conns []transport.Conn
	defer func() {
		for _, c := range conns {
			c.CloseWithError(0, "")
		}
	}()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	maxServing, sawRetry := 0, false
	for range floodConns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := testDial(ctx, e.ln.Addr().String())
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
		mu.Lock()
		maxServing = max(maxServing, goroutinesIn("(*Server).serveConn"))
		sawRetry = sawRetry || e.srv.RequireRetry()
		mu.Unlock()
	}
	wg.Wait()
	if maxServing > e.srv.cfg.MaxUnauthenticated {
		t.Fatalf("%d connections being served unauthenticated, cap %d", maxServing, e.srv.cfg.MaxUnauthenticated)
	}
	if !sawRetry {
		t.Error("the server never asked for Retry while unauthenticated connections piled up")
	}
	if u := e.srv.Unauthenticated(); u > e.srv.cfg.MaxUnauthenticated {
		t.Fatalf("%d unauthenticated", u)
	}
	// A real agent gets in despite the flood (it retries past CloseBusy).
	startClient(t, e, "home", func(c *Config) { c.BackoffMax = time.Second })
	// And the silent ones are closed at the auth deadline.
	var busy, timedOut int
	for _, c := range conns {
		select {
		case <-c.Context().Done():
		case <-ctx.Done():
			t.Fatal("a silent connection outlived the auth deadline")
		}
		switch code, _ := closeCode(context.Cause(c.Context())); code {
		case proto.CloseBusy:
			busy++
		case proto.CloseAuthTimeout:
			timedOut++
		}
	}
	t.Logf("%d connections: %d refused as busy, %d closed at the auth deadline", len(conns), busy, timedOut)
	if busy == 0 || timedOut == 0 {
		t.Fatalf("busy %d, timed out %d", busy, timedOut)
	}
}

// TestAuthDeadline: a connection that opens its control stream and says nothing
// is closed with CloseAuthTimeout at AuthTimeout.
func TestAuthDeadline(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) { c.AuthTimeout = 500 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := testDial(ctx, e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	st, _ := conn.OpenStream(ctx)
	st.Write([]byte{0, 0, 1, 0}) // a frame header declaring 256 bytes, then nothing
	start := time.Now()
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
		t.Fatal("not closed")
	}
	if code, ok := closeCode(context.Cause(conn.Context())); !ok || code != proto.CloseAuthTimeout {
		t.Fatalf("closed with %v", context.Cause(conn.Context()))
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("closed after %s", took)
	}
}

// TestUnknownFrameFlood: frames of a type the relay doesn't know are skipped (a
// newer agent may send them), but within a budget like every other kind: a flood
// of them closes the session.
func TestUnknownFrameFlood(t *testing.T) {
	e := startServer(t, nil)
	conn, ctrl := rawSession(t, e, "home")
	nextSession(t, e)
	frame := []byte{0, 0, 0, 3, 200, '{', '}'}
	for range 10_000 {
		ctrl.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := ctrl.Write(frame); err != nil {
			break
		}
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("session still open")
	}
	if code, ok := closeCode(context.Cause(conn.Context())); !ok || code != proto.CloseOverBudget {
		t.Fatalf("closed with %v", context.Cause(conn.Context()))
	}
}
