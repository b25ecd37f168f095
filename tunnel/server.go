package tunnel

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"golang.org/x/time/rate"
)

// Budget is a token bucket: Burst messages at once, then one per Every.
type Budget struct {
	Every time.Duration
	Burst int
}

func (b Budget) limiter() *rate.Limiter { return rate.NewLimiter(rate.Every(b.Every), b.Burst) }

// Budgets are what one session may send of each control message kind. A session
// over a budget is closed with [proto.CloseOverBudget]. Zero fields take the
// defaults in [DefaultBudgets].
type Budgets struct {
	Ping     Budget // per session
	Register Budget // per session
	// Probe is per service: an agent re-verifies each direct path about every 30 s.
	Probe Budget
	// Probes bounds ProbeRequests of all services together.
	Probes Budget
	// Other covers every other message kind (unexpected ones are ignored, within it).
	Other Budget
}

// DefaultBudgets are generous for an agent that behaves: it pings once a second,
// registers once per session, and probes each service about every 30 s (more
// while a path changes).
var DefaultBudgets = Budgets{
	Ping:     Budget{Every: 100 * time.Millisecond, Burst: 20}, // 10/s
	Register: Budget{Every: 10 * time.Second, Burst: 5},        // 6/min after 5
	Probe:    Budget{Every: 2 * time.Second, Burst: 5},         // 5 per 10 s per service
	Probes:   Budget{Every: 250 * time.Millisecond, Burst: 20},
	Other:    Budget{Every: time.Second, Burst: 10},
}

func (b *Budgets) fill() {
	d := DefaultBudgets
	for _, p := range []struct{ b, def *Budget }{{&b.Ping, &d.Ping}, {&b.Register, &d.Register}, {&b.Probe, &d.Probe}, {&b.Probes, &d.Probes}, {&b.Other, &d.Other}} {
		if p.b.Every == 0 {
			p.b.Every = p.def.Every
		}
		if p.b.Burst == 0 {
			p.b.Burst = p.def.Burst
		}
	}
}

// DefaultProbeTimeout bounds one reachability probe when
// ServerConfig.ProbeTimeout is zero.
const DefaultProbeTimeout = 5 * time.Second

// ServerConfig configures a Server, the relay's half of the protocol.
type ServerConfig struct {
	// Token returns the named agent's token; ok is false for an unknown name. Required.
	Token func(name string) (token []byte, ok bool)
	// OnConnect is called with each authenticated session before its control loop
	// starts (the relay registers it, replacing an older session of the same agent).
	// An error closes the session with proto.CloseShuttingDown. Nil accepts.
	OnConnect func(*ServerSession) error
	// Register answers the agent's service registration. Nil refuses every service.
	Register func(*ServerSession, []proto.Service) []proto.ServiceResult
	// ProbeDial dials the target of a reachability probe, refusing targets this
	// agent may not ask for. Nil refuses every probe.
	ProbeDial func(ctx context.Context, s *ServerSession, addr string) (net.Conn, error)
	// ProbeDialUDP is ProbeDial for probes of a UDP port (ProbeRequest.Proto
	// "udp", the WireGuard port): a connected UDP socket to addr. Nil refuses
	// them.
	ProbeDialUDP func(ctx context.Context, s *ServerSession, addr string) (net.Conn, error)
	// OnDisconnect is called once for every session OnConnect accepted, after its
	// connection closed, with why. Nil: nothing.
	OnDisconnect func(*ServerSession, error)
	// PublicIP is told to agents (the DNS target in relayed mode); zero: none.
	PublicIP netip.Addr
	// Heartbeat is how often agents are told to ping. Zero means 1s.
	Heartbeat time.Duration
	// HeartbeatDeadline: a session without a Ping for this long is closed with
	// proto.CloseHeartbeatTimeout, so a dead agent's listeners go within seconds
	// instead of at the transport's idle timeout. Zero means three heartbeats, at
	// most 5s.
	HeartbeatDeadline time.Duration
	// AuthTimeout bounds the handshake, from the connection's acceptance to
	// Welcome. Zero means 3s.
	AuthTimeout time.Duration
	// MaxUnauthenticated caps connections that are still authenticating; beyond
	// it new ones are closed at once with proto.CloseBusy. Zero means 64.
	MaxUnauthenticated int
	// RetryAbove: RequireRetry reports true while more than this many connections
	// are authenticating. Zero means MaxUnauthenticated/4.
	RetryAbove int
	// ProbeTimeout bounds one reachability probe. Zero means
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// MaxProbes caps a session's probes in flight (besides one per service). Zero means 4.
	MaxProbes int
	// Budgets per control message kind; zero fields take DefaultBudgets.
	Budgets Budgets
	// OnDatagram is called with each datagram from an agent, in that session's
	// one datagram goroutine; payload is valid only during the call. It should
	// not block: datagrams queue behind it and the session's end waits for it.
	// Nil: datagrams are not read at all (no goroutine per session).
	OnDatagram func(ss *ServerSession, h proto.DatagramHeader, payload []byte)
	// OnDatagramsFlush, if set, is called in the same goroutine after a burst
	// of OnDatagram calls, when no more datagrams are waiting (or after each
	// one, on a transport that can't tell): a handler that batches its sends
	// sends them then.
	OnDatagramsFlush func(ss *ServerSession)
	// DatagramBudget bounds the datagrams a session reads; over it they are
	// dropped and counted, the session stays. Zero fields take DefaultDatagramBudget.
	DatagramBudget Budget
	// Logger; nil discards.
	Logger *slog.Logger
}

// Server is the relay's half of the tunnel protocol: it authenticates agents on
// the connections its listeners accept and runs each session's control loop.
type Server struct {
	cfg    ServerConfig
	log    *slog.Logger
	unauth atomic.Int64
	busy   *logLimiter // refusals for MaxUnauthenticated
	refuse *logLimiter // failed handshakes
}

// Errors a session ends with (see ServerConfig.OnDisconnect).
var (
	ErrHeartbeatTimeout = errors.New("tunnel: no heartbeat from the agent")
	ErrOverBudget       = errors.New("tunnel: control message budget exceeded")
)

// NewServer checks cfg and fills in its defaults.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Token == nil {
		return nil, errors.New("tunnel: ServerConfig.Token is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.HeartbeatDeadline == 0 {
		cfg.HeartbeatDeadline = min(3*cfg.Heartbeat, 5*time.Second)
	}
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = 3 * time.Second
	}
	if cfg.MaxUnauthenticated == 0 {
		cfg.MaxUnauthenticated = 64
	}
	if cfg.RetryAbove == 0 {
		cfg.RetryAbove = cfg.MaxUnauthenticated / 4
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.MaxProbes == 0 {
		cfg.MaxProbes = 4
	}
	cfg.Budgets.fill()
	cfg.DatagramBudget = fillDatagramBudget(cfg.DatagramBudget)
	return &Server{cfg: cfg, log: cfg.Logger, busy: newLogLimiter(1, 10*time.Second), refuse: newLogLimiter(10, time.Second)}, nil
}

// Heartbeat is the ping interval agents are told.
func (s *Server) Heartbeat() time.Duration { return s.cfg.Heartbeat }

// Unauthenticated is the number of connections still authenticating.
func (s *Server) Unauthenticated() int { return int(s.unauth.Load()) }

// RequireRetry reports whether unauthenticated connections pile up, so the QUIC
// listener should validate source addresses (Retry) before handshaking.
func (s *Server) RequireRetry() bool { return s.unauth.Load() > int64(s.cfg.RetryAbove) }

// Serve accepts connections from ln and serves each until ctx ends or ln fails;
// then it waits for the connections it started to end (they end with ctx).
func (s *Server) Serve(ctx context.Context, ln transport.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// One watcher of ctx for all of ln's sessions rather than one per session:
	// an idle agent's session holds no context of its own.
	live := &sessionSet{}
	stop := context.AfterFunc(ctx, live.closeAll)
	defer stop()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("tunnel: accept: %w", err)
		}
		if s.unauth.Add(1) > int64(s.cfg.MaxUnauthenticated) {
			s.unauth.Add(-1)
			// Closed here, without a goroutine: a flood costs nothing but the TLS
			// handshake the transport already did.
			c.CloseWithError(uint64(proto.CloseBusy), "too many connections authenticating; try again")
			if ok, n := s.busy.allow(); ok {
				s.log.Warn("connection refused: too many connections are authenticating", "max", s.cfg.MaxUnauthenticated, "remote", c.RemoteAddr().String(), "refused_since_last_log", n)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c, live)
		}()
	}
}

// sessionSet holds a listener's running sessions, to close them when its
// Serve's context ends.
type sessionSet struct {
	mu     sync.Mutex // guards the fields below
	m      map[*ServerSession]struct{}
	closed bool
}

// add reports false once closeAll ran: the session must not start.
func (set *sessionSet) add(ss *ServerSession) bool {
	set.mu.Lock()
	defer set.mu.Unlock()
	if set.closed {
		return false
	}
	if set.m == nil {
		set.m = map[*ServerSession]struct{}{}
	}
	set.m[ss] = struct{}{}
	return true
}

func (set *sessionSet) remove(ss *ServerSession) {
	set.mu.Lock()
	defer set.mu.Unlock()
	delete(set.m, ss)
}

func (set *sessionSet) closeAll() {
	set.mu.Lock()
	set.closed = true
	m := set.m
	set.m = nil
	set.mu.Unlock()
	for ss := range m {
		ss.Close(proto.CloseShuttingDown, "relay shutting down")
	}
}

// serveConn authenticates c and runs its session until either side closes it
// or ctx ends (live closes it then). The caller has counted c as
// unauthenticated (Serve does).
func (s *Server) serveConn(ctx context.Context, c transport.Conn, live *sessionSet) {
	ss, err := s.authenticate(ctx, c)
	s.unauth.Add(-1)
	if err != nil {
		if ok, n := s.refuse.allow(); ok {
			s.log.Warn("agent refused", "remote", c.RemoteAddr().String(), "transport", c.Transport(), "err", err, "refused_since_last_log", n)
		}
		return
	}
	if s.cfg.OnConnect != nil {
		if err := s.cfg.OnConnect(ss); err != nil {
			ss.Close(proto.CloseShuttingDown, err.Error())
			return
		}
	}
	if !live.add(ss) {
		ss.Close(proto.CloseShuttingDown, "relay shutting down")
	}
	defer live.remove(ss)
	ss.log.Info("agent connected", "remote", ss.observed.String(), "transport", c.Transport())
	waitDatagrams := ss.startDatagrams()
	err = ss.run()
	ss.Close(proto.CloseNormal, "")
	waitDatagrams()
	ss.log.Info("agent disconnected", "reason", describeClose(err))
	if s.cfg.OnDisconnect != nil {
		s.cfg.OnDisconnect(ss, err)
	}
}

// preAuthFrame bounds frames before authentication: Hello and AgentProof are small.
const preAuthFrame = 4 << 10

// authenticate runs the handshake of the proto package doc: Hello, the relay's
// proof first, then the agent's proof, then Welcome.
func (s *Server) authenticate(ctx context.Context, c transport.Conn) (*ServerSession, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AuthTimeout)
	defer cancel()
	fail := func(code proto.CloseCode, msg string, err error) (*ServerSession, error) {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			code, msg = proto.CloseAuthTimeout, fmt.Sprintf("authentication not finished within %s", s.cfg.AuthTimeout)
			err = fmt.Errorf("%s: %w", msg, err)
		}
		c.CloseWithError(uint64(code), msg)
		return nil, err
	}
	ctrl, err := c.AcceptStream(ctx)
	if err != nil {
		return fail(proto.CloseProtocol, "no control stream", fmt.Errorf("no control stream: %w", err))
	}
	deadline, _ := ctx.Deadline()
	ctrl.SetDeadline(deadline)
	m, err := proto.ReadMessageMax(ctrl, preAuthFrame)
	if err != nil {
		return fail(proto.CloseProtocol, "bad hello", fmt.Errorf("reading hello: %w", err))
	}
	hello, ok := m.(*proto.Hello)
	if !ok {
		return fail(proto.CloseProtocol, "expected hello", fmt.Errorf("expected hello, got %T", m))
	}
	if hello.Version != proto.Version {
		reason := fmt.Sprintf("protocol version %d not supported (relay speaks %d): upgrade the older side", hello.Version, proto.Version)
		proto.WriteMessage(ctrl, &proto.Refused{Reason: reason})
		return fail(proto.CloseProtocol, "version", fmt.Errorf("agent %q: %s", hello.Name, reason))
	}
	token, known := s.cfg.Token(hello.Name)
	if !known {
		// Prove with a random key so unknown names look like wrong tokens.
		token = make([]byte, 32)
		rand.Read(token)
	}
	exporter, err := proto.Exporter(c)
	if err != nil {
		return fail(proto.CloseProtocol, "exporter", err)
	}
	if err := proto.WriteMessage(ctrl, &proto.RelayProof{MAC: proto.RelayProofMAC(token, hello.Name, exporter)}); err != nil {
		return fail(proto.CloseProtocol, "write", err)
	}
	m, err = proto.ReadMessageMax(ctrl, preAuthFrame)
	if err != nil {
		var ce *transport.CloseError
		if errors.As(connErr(c, err), &ce) && ce.Remote && proto.CloseCode(ce.Code) == proto.CloseAuthFailed {
			if !known {
				return nil, fmt.Errorf("unknown agent name %q (add it under agents: in relay.yaml)", hello.Name)
			}
			return nil, fmt.Errorf("agent %q rejected the relay's proof: the tokens in relay.yaml and agent.yaml differ", hello.Name)
		}
		return fail(proto.CloseProtocol, "no proof", fmt.Errorf("agent %q: reading proof: %w", hello.Name, err))
	}
	ap, ok := m.(*proto.AgentProof)
	if !ok {
		return fail(proto.CloseProtocol, "expected proof", fmt.Errorf("agent %q: expected proof, got %T", hello.Name, m))
	}
	if !known || !proto.VerifyMAC(ap.MAC, proto.AgentProofMAC(token, hello.Name, exporter)) {
		proto.WriteMessage(ctrl, &proto.Refused{Reason: "authentication failed"})
		if !known {
			return fail(proto.CloseAuthFailed, "authentication failed", fmt.Errorf("unknown agent name %q (add it under agents: in relay.yaml)", hello.Name))
		}
		return fail(proto.CloseAuthFailed, "authentication failed", fmt.Errorf("agent %q: wrong token", hello.Name))
	}
	observed := addrPort(c.RemoteAddr())
	w := &proto.Welcome{Observed: observed.String(), HeartbeatMillis: int(s.cfg.Heartbeat / time.Millisecond)}
	if s.cfg.PublicIP.IsValid() {
		w.PublicIP = s.cfg.PublicIP.String()
	}
	// The relay reads bare datagrams from here on; the agent sends them
	// once it has the Welcome.
	if bare, ok := c.(transport.BareDatagrams); ok && slices.Contains(hello.Features, proto.FeatureBareDatagrams) {
		bare.EnableBareDatagrams()
		w.Features = append(w.Features, proto.FeatureBareDatagrams)
	}
	if err := proto.WriteMessage(ctrl, w); err != nil {
		return fail(proto.CloseProtocol, "write", err)
	}
	ctrl.SetDeadline(time.Time{})
	b := s.cfg.Budgets
	return &ServerSession{
		srv: s, name: hello.Name, conn: c, ctrl: ctrl, exporter: exporter, observed: observed,
		log:      s.log.With("agent", hello.Name),
		ping:     b.Ping.limiter(),
		register: b.Register.limiter(),
		probes:   b.Probes.limiter(),
		other:    b.Other.limiter(),
	}, nil
}

// ServerSession is one authenticated agent at the relay.
type ServerSession struct {
	srv      *Server
	name     string
	conn     transport.Conn
	ctrl     transport.Stream
	exporter []byte
	observed netip.AddrPort
	log      *slog.Logger

	wmu sync.Mutex // serializes control-stream writes

	// Budgets; used by the control loop only.
	ping, register, probes, other *rate.Limiter

	// The maps and refused are made on first use: most sessions are idle agents
	// that register once and rarely probe, and the relay holds thousands.
	mu       sync.Mutex               // guards the fields below
	services map[string]bool          // accepted at the last Register
	inflight map[string]bool          // services with a probe running
	perSvc   map[string]*rate.Limiter // probe budget per registered service ("" for the rest)
	lastOK   map[string]bool          // last probe verdict per service, to log changes only
	refused  *logLimiter              // probe refusals

	dgrams dgramCounters
}

// Name is the agent's name.
func (ss *ServerSession) Name() string { return ss.name }

// Observed is the agent's address as the relay sees it.
func (ss *ServerSession) Observed() netip.AddrPort { return ss.observed }

// Transport names the transport of the session ("quic" or "tcp").
func (ss *ServerSession) Transport() string { return ss.conn.Transport() }

// Done is closed when the session's connection is closed.
func (ss *ServerSession) Done() <-chan struct{} { return ss.conn.Context().Done() }

// Close closes the session's connection with code; idempotent.
func (ss *ServerSession) Close(code proto.CloseCode, msg string) {
	ss.conn.CloseWithError(uint64(code), msg)
}

// OpenStream opens a stream to the agent and writes its header.
func (ss *ServerSession) OpenStream(ctx context.Context, hdr proto.StreamHeader) (transport.Stream, error) {
	st, err := ss.conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent %s offline: %w", ss.name, connErr(ss.conn, err))
	}
	b, err := hdr.MarshalBinary()
	if err == nil {
		_, err = st.Write(b)
	}
	if err != nil {
		st.Abort(uint64(proto.StreamAborted))
		return nil, err
	}
	return st, nil
}

// send writes one control message; a peer that doesn't read gets 5 s.
func (ss *ServerSession) send(m proto.Message) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ss.ctrl.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return proto.WriteMessage(ss.ctrl, m)
}

// overBudget closes the session because of kind.
func (ss *ServerSession) overBudget(kind string) error {
	msg := "too many " + kind + " messages"
	ss.log.Warn("closing the session: control message budget exceeded", "kind", kind)
	ss.Close(proto.CloseOverBudget, msg)
	return fmt.Errorf("%w: %s", ErrOverBudget, msg)
}

// run reads control messages until the connection ends, the agent goes silent
// or exceeds a budget. The connection is closed when it returns.
func (ss *ServerSession) run() error {
	// Probes end with the connection, which is closed before waiting for them.
	ctx := ss.conn.Context()
	var probes sync.WaitGroup
	defer probes.Wait()
	defer ss.Close(proto.CloseNormal, "")
	deadline := ss.srv.cfg.HeartbeatDeadline
	lastPing := time.Now()
	for {
		ss.ctrl.SetReadDeadline(lastPing.Add(deadline))
		m, err := proto.ReadFrame(ss.ctrl, proto.MaxFrame)
		if errors.Is(err, proto.ErrUnknownType) {
			// A newer agent's message: skipped, within the budget for other kinds.
			if !ss.other.Allow() {
				return ss.overBudget("unknown")
			}
			continue
		}
		if err != nil {
			if cause := context.Cause(ss.conn.Context()); cause != nil {
				return cause
			}
			// The connection closed (by either side) before its context says
			// so: not a bad message.
			if ce := (*transport.CloseError)(nil); errors.As(err, &ce) {
				return err
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				ss.log.Warn("closing the session: no heartbeat from the agent", "for", deadline)
				ss.Close(proto.CloseHeartbeatTimeout, fmt.Sprintf("no heartbeat for %s", deadline))
				return fmt.Errorf("%w for %s", ErrHeartbeatTimeout, deadline)
			}
			if !errors.Is(err, io.EOF) {
				ss.log.Warn("bad control message; closing the session", "err", err)
				ss.Close(proto.CloseProtocol, "bad control message")
			}
			return err
		}
		switch m := m.(type) {
		case *proto.Ping:
			if !ss.ping.Allow() {
				return ss.overBudget("Ping")
			}
			lastPing = time.Now()
			err = ss.send(&proto.Pong{Seq: m.Seq, Observed: ss.observed.String()})
		case *proto.Register:
			if !ss.register.Allow() {
				return ss.overBudget("Register")
			}
			err = ss.send(ss.handleRegister(m.Services))
		case *proto.ProbeRequest:
			if !ss.probes.Allow() || !ss.probeBudget(m.Service).Allow() {
				return ss.overBudget("ProbeRequest")
			}
			err = ss.startProbe(ctx, &probes, m)
		default:
			if !ss.other.Allow() {
				return ss.overBudget(fmt.Sprintf("%T", m))
			}
			ss.log.Debug("unexpected control message ignored", "type", fmt.Sprintf("%T", m))
		}
		if err != nil {
			return connErr(ss.conn, err)
		}
	}
}

func (ss *ServerSession) handleRegister(want []proto.Service) *proto.Registered {
	res := &proto.Registered{}
	if ss.srv.cfg.Register != nil {
		res.Results = ss.srv.cfg.Register(ss, want)
	} else {
		for _, s := range want {
			res.Results = append(res.Results, proto.ServiceResult{Name: s.Name, Port: s.Port, Reason: "this relay exposes no services"})
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	clear(ss.services)
	for _, r := range res.Results {
		if r.Accepted {
			if ss.services == nil {
				ss.services = make(map[string]bool, len(res.Results))
			}
			ss.services[r.Name] = true
		}
	}
	return res
}

// probeBudget is the per-service bucket. Names the agent didn't register share
// one, so made-up names can't multiply the budget (or the map).
func (ss *ServerSession) probeBudget(service string) *rate.Limiter {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.services[service] {
		service = ""
	}
	l := ss.perSvc[service]
	if l == nil {
		l = ss.srv.cfg.Budgets.Probe.limiter()
		if ss.perSvc == nil {
			ss.perSvc = map[string]*rate.Limiter{}
		}
		ss.perSvc[service] = l
	}
	return l
}

// startProbe runs req in its own goroutine, unless a probe of that service is
// already running or the session has MaxProbes running: then it is refused at once.
func (ss *ServerSession) startProbe(ctx context.Context, wg *sync.WaitGroup, req *proto.ProbeRequest) error {
	ss.mu.Lock()
	var why string
	switch {
	case ss.inflight[req.Service]:
		why = "a probe of this service is already running"
	case len(ss.inflight) >= ss.srv.cfg.MaxProbes:
		why = fmt.Sprintf("%d probes are already running", len(ss.inflight))
	default:
		if ss.inflight == nil {
			ss.inflight = map[string]bool{}
		}
		ss.inflight[req.Service] = true
	}
	logIt, n := false, 0
	if why != "" {
		if ss.refused == nil {
			ss.refused = newLogLimiter(1, 10*time.Second)
		}
		logIt, n = ss.refused.allow()
	}
	ss.mu.Unlock()
	if why != "" {
		if logIt {
			ss.log.Info("probe refused", "service", req.Service, "reason", why, "refused_since_last_log", n)
		}
		return ss.send(&proto.ProbeResult{ID: req.ID, Reason: why})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		res := ss.probe(ctx, req)
		ss.mu.Lock()
		delete(ss.inflight, req.Service)
		ss.mu.Unlock()
		if err := ss.send(res); err != nil {
			ss.log.Debug("sending probe result", "err", err)
		}
	}()
	return nil
}

// probe verifies a direct path: dial the agent's public address from here and
// check that the listener there answers this session's challenge.
func (ss *ServerSession) probe(ctx context.Context, req *proto.ProbeRequest) *proto.ProbeResult {
	res := &proto.ProbeResult{ID: req.ID}
	start := time.Now()
	var err error
	switch req.Proto {
	case "", "tcp":
		err = ss.runProbe(ctx, req.Addr)
	case "udp":
		err = ss.runUDPProbe(ctx, req.Addr)
	default:
		err = fmt.Errorf("probe protocol %q not supported (tcp or udp)", req.Proto)
	}
	res.Millis = int(time.Since(start) / time.Millisecond)
	if err != nil {
		res.Reason = err.Error()
	} else {
		res.OK = true
	}
	ss.mu.Lock()
	last, seen := ss.lastOK[req.Service]
	if ss.services[req.Service] {
		if ss.lastOK == nil {
			ss.lastOK = map[string]bool{}
		}
		ss.lastOK[req.Service] = res.OK
	}
	ss.mu.Unlock()
	// The agent re-verifies every ~30 s: log changes, not every probe.
	level := slog.LevelDebug
	if !seen || last != res.OK {
		level = slog.LevelInfo
	}
	if err != nil {
		ss.log.Log(ctx, level, "direct path probe failed", "addr", req.Addr, "service", req.Service, "proto", req.Proto, "err", err)
	} else {
		ss.log.Log(ctx, level, "direct path verified", "addr", req.Addr, "service", req.Service, "proto", req.Proto, "ms", res.Millis)
	}
	return res
}

func (ss *ServerSession) runProbe(ctx context.Context, addr string) error {
	if ss.srv.cfg.ProbeDial == nil {
		return errors.New("this relay does not probe")
	}
	ctx, cancel := context.WithTimeout(ctx, ss.srv.cfg.ProbeTimeout)
	defer cancel()
	c, err := ss.srv.cfg.ProbeDial(ctx, ss, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	nonce := make([]byte, proto.ProbeNonceLen)
	rand.Read(nonce)
	if _, err := io.WriteString(c, proto.ProbeLine(nonce)); err != nil {
		return fmt.Errorf("write challenge: %w", err)
	}
	want := proto.ProbeAnswer(ss.exporter, nonce) + "\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("no answer to the challenge from %s (something else answers there, or the mapping leads elsewhere): %w", addr, err)
	}
	if string(got) != want {
		return fmt.Errorf("wrong answer to the challenge from %s: not this agent", addr)
	}
	return nil
}

// udpProbeTries is how many times a UDP probe is sent (UDP may lose one); the
// tries are spread over the probe's timeout.
const udpProbeTries = 4

// runUDPProbe verifies a direct path to a UDP port: send proto.UDPProbe to addr
// and wait for the reply carrying its nonce (see proto.UDPProbeReply).
func (ss *ServerSession) runUDPProbe(ctx context.Context, addr string) error {
	if ss.srv.cfg.ProbeDialUDP == nil {
		return errors.New("this relay does not probe UDP ports")
	}
	ctx, cancel := context.WithTimeout(ctx, ss.srv.cfg.ProbeTimeout)
	defer cancel()
	c, err := ss.srv.cfg.ProbeDialUDP(ctx, ss, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	nonce := make([]byte, proto.ProbeNonceLen)
	rand.Read(nonce)
	probe := proto.UDPProbe(nonce)
	every := ss.srv.cfg.ProbeTimeout / udpProbeTries
	buf := make([]byte, 2*proto.UDPProbeLen)
	others := 0
	for try := 0; ctx.Err() == nil; try++ {
		if try < udpProbeTries {
			if _, err := c.Write(probe); err != nil {
				return fmt.Errorf("send the UDP probe to %s: %w", addr, err)
			}
		}
		c.SetReadDeadline(time.Now().Add(every))
		for {
			n, err := c.Read(buf)
			if err != nil {
				if os.IsTimeout(err) {
					break // send again
				}
				if ctx.Err() == nil {
					// An ICMP unreachable: nothing listens there (yet); retry.
					continue
				}
				break
			}
			if proto.IsUDPProbeReply(buf[:n], nonce) {
				return nil
			}
			others++
		}
	}
	if others > 0 {
		return fmt.Errorf("no answer to the UDP probe from %s, but %d other packets (something else answers there, or the mapping leads elsewhere)", addr, others)
	}
	return fmt.Errorf("no answer to the UDP probe from %s (the mapping leads nowhere, or a firewall drops it)", addr)
}
