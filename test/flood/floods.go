package flood

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
)

// ProbeConfig configures Probes.
type ProbeConfig struct {
	// Relay is where agents connect; Agent the identity to authenticate with.
	// Required.
	Relay string
	Agent Identity
	// Target is the address every ProbeRequest names. Required.
	Target string
	// Transport is "quic" (zero) or "tcp".
	Transport string
	// Sessions stops after this many authenticated sessions; zero: until ctx ends.
	Sessions int
}

// ProbeResult is what a probe flood did and how the relay answered.
type ProbeResult struct {
	// Sessions is the number of authenticated sessions.
	Sessions int
	// Requests is the number of ProbeRequests written.
	Requests int
	// Answers is the number of ProbeResults read back (refusals included).
	Answers int
	// OverBudget counts sessions the relay closed with proto.CloseOverBudget.
	OverBudget int
	// Reset counts sessions that ended with a stateless reset (QUIC) or a TCP
	// reset: the relay closed the connection and dropped its state before its
	// close reached us, which a loaded machine can do to the flooder.
	Reset int
	// Errors are the first few other ends of a session (dial, authentication,
	// closes with another code).
	Errors []string
}

func (r ProbeResult) String() string {
	s := fmt.Sprintf("%d sessions, %d ProbeRequests, %d answers, %d sessions closed over budget, %d reset", r.Sessions, r.Requests, r.Answers, r.OverBudget, r.Reset)
	if len(r.Errors) > 0 {
		s += fmt.Sprintf("; %d other ends, first: %s", len(r.Errors), r.Errors[0])
	}
	return s
}

// Probes authenticates as cfg.Agent and writes ProbeRequests as fast as the
// control stream takes them, session after session, until ctx ends (or
// cfg.Sessions). It never registers a service and never pings.
func Probes(ctx context.Context, cfg ProbeConfig) ProbeResult {
	dial := tunnel.DialQUIC(nil)
	if cfg.Transport == "tcp" {
		dial = tunnel.DialTCP()
	}
	var res ProbeResult
	note := func(format string, args ...any) {
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, fmt.Sprintf(format, args...))
		}
	}
	for ctx.Err() == nil && (cfg.Sessions == 0 || res.Sessions < cfg.Sessions) {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		conn, err := dial(actx, cfg.Relay)
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				note("dial: %v", err)
				pause(ctx, 100*time.Millisecond)
			}
			continue
		}
		ctrl, _, err := tunnel.Authenticate(actx, conn, cfg.Agent.Name, cfg.Agent.Token, "flood")
		cancel()
		if err != nil {
			conn.CloseWithError(0, "")
			if ctx.Err() == nil {
				note("authenticate: %v", err)
				pause(ctx, 100*time.Millisecond)
			}
			continue
		}
		res.Sessions++
		sent, answers, cause := probeSession(ctx, conn, ctrl, cfg.Target)
		res.Requests += sent
		res.Answers += answers
		var ce *transport.CloseError
		switch {
		case errors.As(cause, &ce) && ce.Remote && proto.CloseCode(ce.Code) == proto.CloseOverBudget:
			res.OverBudget++
		case errors.Is(cause, transport.ErrPeerRestarted):
			res.Reset++
		case ctx.Err() != nil:
		default:
			note("session %d: %v", res.Sessions, cause)
		}
	}
	return res
}

// probeSession floods one session; it returns when the connection ends (the
// relay closes it), or 10 s after writing stopped, or when ctx ends.
func probeSession(ctx context.Context, conn transport.Conn, ctrl transport.Stream, target string) (sent, answers int, cause error) {
	defer conn.CloseWithError(0, "")
	var read atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			m, err := proto.ReadMessage(ctrl)
			if err != nil {
				return
			}
			if _, ok := m.(*proto.ProbeResult); ok {
				read.Add(1)
			}
		}
	})
	stop := context.AfterFunc(ctx, func() { conn.CloseWithError(0, "") })
	defer stop()
	for id := uint64(1); ; id++ {
		ctrl.SetWriteDeadline(time.Now().Add(5 * time.Second))
		req := &proto.ProbeRequest{ID: id, Addr: target, Service: "svc" + strconv.Itoa(int(id%8))}
		if err := proto.WriteMessage(ctrl, req); err != nil {
			break
		}
		sent++
		if conn.Context().Err() != nil {
			break
		}
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
	}
	cause = context.Cause(conn.Context())
	if cause == nil {
		cause = errors.New("the relay kept the session open after the flood")
	}
	conn.CloseWithError(0, "")
	wg.Wait()
	return sent, int(read.Load()), cause
}

// pause waits d or until ctx ends: backoff between failed attempts.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// IdleConfig configures StartIdle.
type IdleConfig struct {
	// From is the one local IP every connection comes from; "" = any.
	From string
	// Addr is the relay's listener to flood. Required.
	Addr string
	// Conns is how many connections to hold open; the ones the relay closes
	// are dialled again. Required.
	Conns int
	// Parallel dialers; zero means 32.
	Parallel int
	// Rate bounds dials per second once Conns have been dialled once, so the
	// flood keeps knocking without spinning a core on connect/reset; zero
	// means 1000.
	Rate float64
}

// IdleResult is what an idle flood did.
type IdleResult struct {
	// Dialed counts completed TCP handshakes; DialErrors failed ones.
	Dialed, DialErrors int
	// Closed counts held connections the relay closed (reset or end of stream).
	Closed int
	// MaxHeld is the most connections held open at once.
	MaxHeld int
	// FirstError is the first dial error, if any.
	FirstError string
}

func (r IdleResult) String() string {
	s := fmt.Sprintf("%d connections dialled (%d dial errors), %d closed by the relay, at most %d open at once", r.Dialed, r.DialErrors, r.Closed, r.MaxHeld)
	if r.FirstError != "" {
		s += "; first dial error: " + r.FirstError
	}
	return s
}

// IdleFlood is a running idle flood; see StartIdle.
type IdleFlood struct {
	cfg    IdleConfig
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex // guards the fields below
	res   IdleResult
	conns map[net.Conn]bool
	dials int // dials started
}

// StartIdle opens cfg.Conns connections that never send a byte and holds
// them, dialling again those the relay closes, until Stop.
func StartIdle(ctx context.Context, cfg IdleConfig) *IdleFlood {
	if cfg.Parallel == 0 {
		cfg.Parallel = 32
	}
	if cfg.Rate == 0 {
		cfg.Rate = 1000
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &IdleFlood{cfg: cfg, cancel: cancel, done: make(chan struct{}), conns: map[net.Conn]bool{}}
	go f.run(ctx)
	return f
}

// Stats is what the flood did so far.
func (f *IdleFlood) Stats() IdleResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.res
}

// Stop closes every connection of the flood and returns what it did.
func (f *IdleFlood) Stop() IdleResult {
	f.cancel()
	<-f.done
	return f.Stats()
}

func (f *IdleFlood) run(ctx context.Context) {
	defer close(f.done)
	cfg := f.cfg
	lim := rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Parallel)
	slots := make(chan struct{}, cfg.Conns) // one per connection held or being dialled
	var holders sync.WaitGroup
	hold := func(c net.Conn) {
		defer holders.Done()
		io.Copy(io.Discard, c) // ends when the relay closes c, or we do
		f.mu.Lock()
		if ctx.Err() == nil {
			f.res.Closed++
		}
		delete(f.conns, c)
		f.mu.Unlock()
		c.Close()
		<-slots
	}
	var dialers sync.WaitGroup
	for range cfg.Parallel {
		dialers.Go(func() {
			for {
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
				f.mu.Lock()
				f.dials++
				first := f.dials <= cfg.Conns
				f.mu.Unlock()
				if !first && lim.Wait(ctx) != nil {
					<-slots
					return
				}
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				c, err := DialFrom(dctx, cfg.From, cfg.Addr)
				cancel()
				f.mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						f.res.DialErrors++
						if f.res.FirstError == "" {
							f.res.FirstError = err.Error()
						}
					}
					f.mu.Unlock()
					<-slots
					pause(ctx, 10*time.Millisecond)
					continue
				}
				f.res.Dialed++
				f.conns[c] = true
				f.res.MaxHeld = max(f.res.MaxHeld, len(f.conns))
				f.mu.Unlock()
				holders.Add(1)
				go hold(c)
			}
		})
	}
	<-ctx.Done()
	dialers.Wait()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	holders.Wait()
}

// PreAuthConfig configures PreAuth.
type PreAuthConfig struct {
	// Relay is where agents connect. Required.
	Relay string
	// QUIC handshakes (ALPN porthole/1, never a stream) and TCP connects (never
	// a byte) to make in all.
	QUIC, TCP int
	// Parallel connections of each kind at once; zero means 50.
	Parallel int
	// Hold is how long each connection waits for the relay to close it before
	// closing it itself; zero means 10s.
	Hold time.Duration
}

// PreAuthResult is what a pre-authentication flood did.
type PreAuthResult struct {
	// QUICHandshakes completed the QUIC (TLS) handshake; QUICErrors didn't
	// (refused, or the relay's Retry/timeout); QUICClosed were then closed by
	// the relay before Hold.
	QUICHandshakes, QUICErrors, QUICClosed int
	// TCPConnects completed the TCP handshake; TCPClosed were closed by the
	// relay before Hold.
	TCPConnects, TCPErrors, TCPClosed int
	// FirstQUICError and FirstTCPError are examples of the errors.
	FirstQUICError, FirstTCPError string
}

func (r PreAuthResult) String() string {
	s := fmt.Sprintf("QUIC: %d handshakes, %d failed, %d closed by the relay; TCP: %d connects, %d failed, %d closed by the relay",
		r.QUICHandshakes, r.QUICErrors, r.QUICClosed, r.TCPConnects, r.TCPErrors, r.TCPClosed)
	if r.FirstQUICError != "" {
		s += "; first QUIC error: " + r.FirstQUICError
	}
	if r.FirstTCPError != "" {
		s += "; first TCP error: " + r.FirstTCPError
	}
	return s
}

// PreAuth makes cfg.QUIC QUIC handshakes that never open a stream and cfg.TCP
// TCP connections that never send a byte to the relay's agent port, each held
// until the relay closes it (or Hold), and returns when all are done or ctx
// ends.
func PreAuth(ctx context.Context, cfg PreAuthConfig) PreAuthResult {
	if cfg.Parallel == 0 {
		cfg.Parallel = 50
	}
	if cfg.Hold == 0 {
		cfg.Hold = 10 * time.Second
	}
	var (
		mu  sync.Mutex // guards res
		res PreAuthResult
	)
	raddr, err := net.ResolveUDPAddr("udp", cfg.Relay)
	if err != nil {
		res.FirstQUICError = err.Error()
		res.QUICErrors = cfg.QUIC
		return res
	}
	quicOne := func() {
		hctx, cancel := context.WithTimeout(ctx, cfg.Hold)
		defer cancel()
		conn, err := quictransport.Dial(hctx, nil, raddr, tunnel.ClientTLS(), nil)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if ctx.Err() == nil {
				res.QUICErrors++
				if res.FirstQUICError == "" {
					res.FirstQUICError = err.Error()
				}
			}
			return
		}
		res.QUICHandshakes++
		mu.Unlock()
		select {
		case <-conn.Context().Done():
		case <-hctx.Done():
		}
		closed := conn.Context().Err() != nil
		conn.CloseWithError(0, "")
		mu.Lock()
		if closed {
			res.QUICClosed++
		}
	}
	tcpOne := func() {
		hctx, cancel := context.WithTimeout(ctx, cfg.Hold)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(hctx, "tcp", cfg.Relay)
		if err != nil {
			mu.Lock()
			if ctx.Err() == nil {
				res.TCPErrors++
				if res.FirstTCPError == "" {
					res.FirstTCPError = err.Error()
				}
			}
			mu.Unlock()
			return
		}
		mu.Lock()
		res.TCPConnects++
		mu.Unlock()
		dl, _ := hctx.Deadline()
		c.SetReadDeadline(dl)
		_, err = io.Copy(io.Discard, c)
		var ne net.Error
		closed := !(errors.As(err, &ne) && ne.Timeout())
		c.Close()
		if closed {
			mu.Lock()
			res.TCPClosed++
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	run := func(n int, one func()) {
		var next atomic.Int64
		for range min(cfg.Parallel, n) {
			wg.Go(func() {
				for next.Add(1) <= int64(n) && ctx.Err() == nil {
					one()
				}
			})
		}
	}
	run(cfg.QUIC, quicOne)
	run(cfg.TCP, tcpOne)
	wg.Wait()
	return res
}
