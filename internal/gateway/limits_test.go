package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds or 10 s have passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition with a deadline
	}
}

// expectReset reads from c and wants the gateway's reset (or close), not data
// and not a timeout.
func expectReset(t testing.TB, c net.Conn, why string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n > 0 || err == nil || os.IsTimeout(err) {
		t.Fatalf("%s: read %d bytes, err %v; want a reset", why, n, err)
	}
}

// expectRefused connects from src and wants a reset: at connect, or at the
// first read (the kernel completes the handshake before the gateway accepts).
func expectRefused(t testing.TB, src, addr, why string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if os.IsTimeout(err) {
			t.Fatalf("%s: %v; want a reset", why, err)
		}
		return
	}
	defer c.Close()
	expectReset(t, c, why)
}

// holdOpen connects from src and sends a byte, so the connection is started
// and stays open (the echo backend answers only after EOF).
func holdOpen(t testing.TB, src, addr string) *net.TCPConn {
	t.Helper()
	c := dialFrom(t, src, addr)
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	return c
}

// records collects log records for assertions.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	r.mu.Lock()
	r.msgs = append(r.msgs, b.String())
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) matching(s string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.msgs {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

var anyPolicy, _ = ParsePolicy([]string{"any"})

func TestPerSourceCap(t *testing.T) {
	lim := NewLimiter(Limits{MaxConnsPerSource: 3})
	l := serveListener(t, Config{Service: "cam", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: tcpDial(echoAfterEOF(t)), Limiter: lim})
	addr := l.Addr().String()
	held := []*net.TCPConn{holdOpen(t, "127.0.0.2", addr), holdOpen(t, "127.0.0.2", addr), holdOpen(t, "127.0.0.2", addr)}
	waitFor(t, "three started connections", func() bool { s := l.Stats(); return s.Active == 3 && s.Pending == 0 })

	expectRefused(t, "127.0.0.2", addr, "fourth connection from one source")
	if err := echoOnce(dialFrom(t, "127.0.0.3", addr), "other source", 5*time.Second); err != nil {
		t.Fatalf("another source refused: %v", err)
	}
	// The echo has ended for the viewer; the gateway lets go of it just after.
	waitFor(t, "the other source gone", func() bool { return len(l.Sources(0)) == 1 })
	if got := l.Sources(0); got[0] != (SourceCount{Source: netip.MustParseAddr("127.0.0.2"), Conns: 3}) {
		t.Errorf("Sources = %+v", got)
	}
	// A slot given back can be taken again.
	held[0].Close()
	waitFor(t, "the slot back", func() bool { return lim.Open() == 2 })
	if err := echoOnce(dialFrom(t, "127.0.0.2", addr), "again", 5*time.Second); err != nil {
		t.Fatalf("source refused after closing one: %v", err)
	}
	if s := l.Stats(); s.Refused != 1 {
		t.Errorf("stats %+v, want one refusal", s)
	}
}

// TestPendingCap: a source keeps few idle connections (nothing moved either
// way for the grace); its connections that speak are not held back by them.
func TestPendingCap(t *testing.T) {
	const grace = 50 * time.Millisecond
	l := serveListener(t, Config{Service: "cam", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: tcpDial(echoAfterEOF(t)),
		Limiter: NewLimiter(Limits{MaxPendingPerSource: 4, PendingGrace: grace})})
	addr := l.Addr().String()
	var idle []*net.TCPConn
	for range 6 {
		c := dialFrom(t, "127.0.0.2", addr)
		t.Cleanup(func() { c.Close() })
		idle = append(idle, c)
	}
	// A burst is admitted; after the grace two of the six are reset.
	waitFor(t, "two idle connections reset", func() bool { s := l.Stats(); return s.Refused == 2 && s.Active == 4 })
	if s := l.Stats(); s.Pending != 4 {
		t.Errorf("stats %+v, want 4 pending", s)
	}
	reset := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(grace))
		if _, err := c.Read(make([]byte, 1)); !os.IsTimeout(err) {
			reset++
		}
	}
	if reset != 2 {
		t.Errorf("%d viewers saw a reset, want 2", reset)
	}
	// Another source is not affected, nor a connection of this one that speaks.
	for _, src := range []string{"127.0.0.3", "127.0.0.2"} {
		if err := echoOnce(dialFrom(t, src, addr), "hello", 5*time.Second); err != nil {
			t.Fatalf("viewer from %s: %v", src, err)
		}
	}
}

// TestGlobalCap: a Limiter shared by two services caps them together, and the
// refusals are logged once, with the limit and what to change.
func TestGlobalCap(t *testing.T) {
	rec := &records{}
	lim := NewLimiter(Limits{MaxConns: 2})
	target := echoAfterEOF(t)
	a := serveListener(t, Config{Service: "a", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: tcpDial(target), Limiter: lim, Logger: slog.New(rec)})
	b := serveListener(t, Config{Service: "b", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: tcpDial(target), Limiter: lim, Logger: slog.New(rec)})
	holdOpen(t, "127.0.0.2", a.Addr().String())
	holdOpen(t, "127.0.0.3", b.Addr().String())
	waitFor(t, "two connections", func() bool { return lim.Open() == 2 })
	for i := range 5 {
		expectRefused(t, "127.0.0.4", []*Listener{a, b}[i%2].Addr().String(), "connection over the global cap")
	}
	if s := a.Stats().Refused + b.Stats().Refused; s != 5 {
		t.Errorf("%d refusals counted, want 5", s)
	}
	lines := rec.matching("limit reached")
	// One line a second per listener: two listeners, a burst well under a second.
	if len(lines) < 1 || len(lines) > 2 {
		t.Fatalf("refusal log lines: %q", lines)
	}
	for _, want := range []string{"limit=max_conns", "key=all", "viewer=127.0.0.4", "fix=", "limits.max_conns"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("refusal line %q lacks %q", lines[0], want)
		}
	}
}

// TestPerServiceCap: one service at its cap leaves the others their room.
func TestPerServiceCap(t *testing.T) {
	lim := NewLimiter(Limits{})
	target := echoAfterEOF(t)
	a := serveListener(t, Config{Service: "a", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: tcpDial(target), Limiter: lim, MaxConns: 2})
	b := serveListener(t, Config{Service: "b", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: tcpDial(target), Limiter: lim, MaxConns: 2})
	holdOpen(t, "127.0.0.2", a.Addr().String())
	holdOpen(t, "127.0.0.3", a.Addr().String())
	waitFor(t, "service a full", func() bool { return a.Stats().Active == 2 })
	expectRefused(t, "127.0.0.4", a.Addr().String(), "third viewer of a full service")
	if err := echoOnce(dialFrom(t, "127.0.0.4", b.Addr().String()), "b", 5*time.Second); err != nil {
		t.Fatalf("the other service refused: %v", err)
	}
}

// TestManySourcesFloodOneService is the flood of TestIdleFloodSparesOtherService
// from many addresses: the per-source caps don't stop it, the per-service cap
// keeps the budget's remaining streams for the other service.
func TestManySourcesFloodOneService(t *testing.T) {
	target := echoAfterEOF(t)
	budget := make(streamBudget, 64)
	lim := NewLimiter(Limits{})
	a := serveListener(t, Config{Service: "a", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: budget.dial(target), Limiter: lim, MaxConns: 48})
	b := serveListener(t, Config{Service: "b", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: budget.dial(target), Limiter: lim, MaxConns: 48})
	for i := range 200 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/50), byte(1+i%50))}, Timeout: 5 * time.Second}
		if c, err := d.Dial("tcp", a.Addr().String()); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	waitFor(t, "service a at its cap", func() bool { return a.Stats().Active == 48 })
	if err := echoOnce(dialFrom(t, "127.0.0.3", b.Addr().String()), "still served", 5*time.Second); err != nil {
		t.Fatalf("viewer of the other service not served: %v", err)
	}
}

func TestFirstByteDeadline(t *testing.T) {
	const deadline = 100 * time.Millisecond
	var dials atomic.Int64
	dial := tcpDial(echoAfterEOF(t))
	l := serveListener(t, Config{Service: "rtsp", Addr: "127.0.0.1:0", Policy: anyPolicy, FirstByteTimeout: deadline,
		Dial: func(ctx context.Context, v netip.AddrPort) (Conn, error) { dials.Add(1); return dial(ctx, v) }})
	start := time.Now()
	c := dialFrom(t, "127.0.0.2", l.Addr().String())
	defer c.Close()
	expectReset(t, c, "silent viewer")
	if d := time.Since(start); d < deadline {
		t.Errorf("reset after %v, before the deadline", d)
	}
	if s := l.Stats(); s.Refused != 1 || dials.Load() != 0 {
		t.Errorf("stats %+v, %d dials; want one refusal and no dial", s, dials.Load())
	}
	// A viewer that speaks in time is served, its first bytes included.
	if err := echoOnce(dialFrom(t, "127.0.0.2", l.Addr().String()), "DESCRIBE rtsp://x RTSP/1.0\r\n\r\n", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// pacedCamera sends a chunk every tick, pausing for pause after every tenth,
// until the viewer goes away: a video stream with gaps longer than any deadline.
func pacedCamera(t *testing.T, tick, pause time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tk := time.NewTicker(tick)
				defer tk.Stop()
				chunk := make([]byte, 1000)
				for i := 1; ; i++ {
					<-tk.C
					if _, err := c.Write(chunk); err != nil {
						return
					}
					if i%10 == 0 {
						<-time.After(pause)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestLongStreamSurvives: video runs for longer than every deadline, with
// gaps longer than them, and is never cut: a viewer that speaks once (under a
// first-byte deadline) and then only watches, and one that never speaks at all
// (the camera speaks first), on the splice path and on the buffered path.
func TestLongStreamSurvives(t *testing.T) {
	const deadline = 50 * time.Millisecond
	for _, wrap := range []bool{false, true} {
		for _, speaks := range []bool{true, false} {
			dial := tcpDial(pacedCamera(t, 5*time.Millisecond, 3*deadline))
			if wrap {
				inner := dial
				dial = func(ctx context.Context, v netip.AddrPort) (Conn, error) {
					c, err := inner(ctx, v)
					if err != nil {
						return nil, err
					}
					return pipeConn{c.(*net.TCPConn)}, nil
				}
			}
			cfg := Config{Service: "cam", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: dial, DialTimeout: deadline,
				Limiter: NewLimiter(Limits{MaxPendingPerSource: 1, PendingGrace: deadline})}
			if speaks {
				cfg.FirstByteTimeout = deadline
			}
			l := serveListener(t, cfg)
			c := dialFrom(t, "127.0.0.2", l.Addr().String())
			if speaks {
				c.Write([]byte("PLAY"))
			}
			start := time.Now()
			buf := make([]byte, 64<<10)
			var got int
			for time.Since(start) < 20*deadline {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(buf)
				got += n
				if err != nil {
					t.Fatalf("wrap=%v speaks=%v: stream cut after %v and %d bytes: %v", wrap, speaks, time.Since(start), got, err)
				}
			}
			c.Close()
			// The splice path counts per chunk: at most one chunk behind.
			if s := l.Stats(); s.Refused != 0 || s.BytesOut+spliceChunk < int64(got) {
				t.Errorf("wrap=%v speaks=%v: stats %+v after %d bytes", wrap, speaks, s, got)
			}
		}
	}
}

// TestShutdownGoroutines: after Shutdown every goroutine the listener started
// has ended, for served, refused and lingering connections alike.
func TestShutdownGoroutines(t *testing.T) {
	target := echoAfterEOF(t)
	base := runtime.NumGoroutine()
	l, err := Listen(Config{Service: "cam", Addr: "127.0.0.1:0", Policy: anyPolicy, Dial: tcpDial(target),
		Limiter: NewLimiter(Limits{MaxConnsPerSource: 4})})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { l.Serve(context.Background()); close(served) }()
	var conns []net.Conn
	for range 8 { // four held, four refused
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		if c, err := d.Dial("tcp", l.Addr().String()); err == nil { // refused ones may fail here
			c.Write([]byte("x"))
			conns = append(conns, c)
		}
	}
	waitFor(t, "held connections", func() bool { s := l.Stats(); return s.Active == 4 && s.Refused == 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	l.Shutdown(ctx)
	<-served
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base })
	if s := l.Stats(); s.Active != 0 || s.Pending != 0 {
		t.Errorf("stats after Shutdown: %+v", s)
	}
}

// TestServeConn: a connection from elsewhere (a tunnel stream) goes through
// the same limits and rule; refusals say why.
func TestServeConn(t *testing.T) {
	p, _ := ParsePolicy([]string{"192.0.2.0/24"})
	echo := func(ctx context.Context, _ netip.AddrPort) (Conn, error) {
		a, b := net.Pipe()
		go func() { io.Copy(b, b); b.Close() }()
		return closeOnCloseWrite{a}, nil
	}
	l, err := New(Config{Service: "cam", Policy: p, Dial: echo, Limiter: NewLimiter(Limits{MaxConnsPerSource: 1})})
	if err != nil {
		t.Fatal(err)
	}
	viewer := netip.MustParseAddrPort("192.0.2.7:50000")
	v, g := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- l.ServeConn(context.Background(), g, viewer) }()
	v.Write([]byte("ping"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(v, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo through ServeConn: %q, %v", b, err)
	}
	// A second stream from the same source is over its cap.
	_, g2 := net.Pipe()
	var lerr *LimitError
	if err := l.ServeConn(context.Background(), g2, viewer); !errors.As(err, &lerr) || lerr.Limit != LimitConnsPerSource {
		t.Errorf("second stream: %v, want %s", err, LimitConnsPerSource)
	}
	_, g3 := net.Pipe()
	if err := l.ServeConn(context.Background(), g3, netip.MustParseAddrPort("198.51.100.1:1")); !errors.Is(err, ErrDenied) {
		t.Errorf("stream from outside the rule: %v, want ErrDenied", err)
	}
	v.Close()
	<-done
	if s := l.Stats(); s.Active != 0 || s.BytesIn != 4 || s.BytesOut != 4 {
		t.Errorf("stats %+v", s)
	}
	l.Shutdown(context.Background())
	_, g4 := net.Pipe()
	if err := l.ServeConn(context.Background(), g4, viewer); !errors.Is(err, ErrClosed) {
		t.Errorf("after Shutdown: %v, want ErrClosed", err)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":               "192.0.2.7",
		"::ffff:192.0.2.7":        "192.0.2.7",
		"2001:db8:1:2:aaaa::1":    "2001:db8:1:2::",
		"2001:db8:1:2:bbbb::9999": "2001:db8:1:2::",
	} {
		if got := sourceKey(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("sourceKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestLimiterCounts: the counts behind the caps and Sources.
func TestLimiterCounts(t *testing.T) {
	lim := NewLimiter(Limits{MaxConns: 3, MaxConnsPerSource: 2, MaxPendingPerSource: 1})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	var st [3]atomic.Int32
	for i, c := range []struct {
		src  netip.Addr
		want string
	}{{a, ""}, {a, ""}, {a, LimitConnsPerSource}, {b, ""}, {b, LimitConns}} {
		e := lim.acquire(c.src)
		if (e == nil) != (c.want == "") || (e != nil && e.Limit != c.want) {
			t.Fatalf("acquire %d: %v, want %q", i, e, c.want)
		}
	}
	// a's two connections go idle: the second is one too many.
	if e := lim.overdue(a, &st[0]); e != nil {
		t.Fatal(e)
	}
	if e := lim.overdue(a, &st[1]); e == nil || e.Limit != LimitPendingSource {
		t.Fatalf("second idle connection: %v", e)
	}
	if !lim.start(a, &st[0]) || lim.start(a, &st[0]) {
		t.Fatal("start of an idle connection")
	}
	if e := lim.overdue(a, &st[0]); e != nil {
		t.Fatal("a started connection went idle")
	}
	if got := lim.Sources(0); len(got) != 2 || got[0] != (SourceCount{Source: a, Conns: 2, Pending: 1}) || got[1] != (SourceCount{Source: b, Conns: 1, Pending: 1}) {
		t.Fatalf("Sources = %+v", got)
	}
	for i, src := range []netip.Addr{a, a, b} {
		lim.release(src, &st[i])
	}
	if lim.Open() != 0 || len(lim.Sources(0)) != 0 {
		t.Fatalf("after release: %d open, %+v", lim.Open(), lim.Sources(0))
	}
}

// repeatReader yields n chunks of bufSize, then EOF.
type repeatReader struct{ n int }

func (r *repeatReader) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	r.n--
	return len(b), nil
}

// TestCopyNoAllocPerChunk: counting bytes costs no allocation per chunk.
func TestCopyNoAllocPerChunk(t *testing.T) {
	var n atomic.Int64
	copyBuffered(io.Discard, &repeatReader{n: 1}, meter{n: &n}, false) // warm the pool
	allocs := testing.AllocsPerRun(20, func() {
		copyBuffered(io.Discard, &repeatReader{n: 100}, meter{n: &n}, false)
	})
	if allocs > 1 { // the repeatReader itself
		t.Errorf("%v allocations per 100 chunks", allocs)
	}
}
