package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// ErrAuth means the relay and the agent don't share the token (or the relay is forged).
var ErrAuth = errors.New("authentication failed")

// ErrReplaced means another agent with the same name connected and the relay
// dropped this session: two agents share a config. The loser backs off hard.
var ErrReplaced = errors.New("replaced by another agent with the same name")

// ErrNotConnected is returned by Probe when there is no session.
var ErrNotConnected = errors.New("tunnel not connected")

// Service is one service the agent asks the relay to expose.
type Service struct {
	Name  string
	Port  uint16
	Allow []string // the access rule: CIDR prefixes, or ["any"]
	// Proto is "tcp" (empty means tcp: viewer streams) or "udp": the WireGuard
	// port, whose packets come and go as datagrams (Config.OnDatagram,
	// SendDatagram), never as streams.
	Proto string
}

// proto is s's protocol as registered: "tcp" or "udp".
func (s Service) proto() string {
	if s.Proto == "" {
		return "tcp"
	}
	return s.Proto
}

// StreamHandler serves one viewer stream the relay opened for a service the relay
// accepted. It owns st: it must close or abort it. ctx ends when the Client stops.
type StreamHandler func(ctx context.Context, hdr proto.StreamHeader, st transport.Stream)

// DialFunc opens a transport connection to the relay at addr (host:port).
type DialFunc func(ctx context.Context, addr string) (transport.Conn, error)

// Transport choices for Config.Transport.
const (
	TransportAuto = "auto" // QUIC, TCP when QUIC doesn't connect; back to QUIC when it works again
	TransportQUIC = "quic"
	TransportTCP  = "tcp"
)

// Config configures a Client, the agent's half of the protocol.
type Config struct {
	// Address is the relay's host:port (the same port number for UDP and TCP). Required.
	Address string
	// Name is the agent's name in relay.yaml. Required.
	Name string
	// Token is the shared secret. Required.
	Token string
	// Services are registered after each connect.
	Services []Service
	// Handler serves viewer streams. Required.
	Handler StreamHandler
	// Transport is TransportAuto, TransportQUIC or TransportTCP. Empty means auto.
	Transport string
	// DialQUIC and DialTCP open transport connections. Nil means DialQUIC(nil) and
	// DialTCP(), the real transports.
	DialQUIC, DialTCP DialFunc
	// QUICWait: in auto mode TCP is dialed too when QUIC has not connected within
	// this. Zero means 2s.
	QUICWait time.Duration
	// QUICRetry: in auto mode, while on TCP, QUIC is tried again about this often
	// (jittered), while no viewer stream is open, and the tunnel moves back when
	// it connects. Zero means 60s.
	QUICRetry time.Duration
	// Software is told to the relay in Hello. Empty means "porthole-agent".
	Software string
	// Logger; nil discards.
	Logger *slog.Logger
	// OnConnect is called after each successful handshake with what the relay said.
	OnConnect func(Session)
	// OnObserved is called when the relay reports a new observed address.
	OnObserved func(netip.AddrPort)
	// OnDisconnect is called when an established session ends.
	OnDisconnect func(error)
	// OnRetry is called after each failed or ended session, before the backoff wait.
	OnRetry func(err error, wait time.Duration)
	// BackoffMin and BackoffMax bound reconnect delays. Zero means 250ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// BackoffRecentMax caps the reconnect delay instead of BackoffMax while a
	// session ended less than RecentWindow ago: a relay that was fine a moment
	// ago (restarted, rebooting, a short network cut) is dialed often, so the
	// tunnel is back within seconds of it; a relay down longer is dialed less
	// often. Zero means 5s and 5m.
	BackoffRecentMax, RecentWindow time.Duration
	// PongTimeout: a session with no pong for this long is dropped and redialed. Zero
	// means 3s: QUIC retransmissions back off exponentially while the relay is down,
	// so after a relay restart the old session may not draw its stateless reset for
	// many seconds; a fresh dial is quicker.
	PongTimeout time.Duration
	// OnDatagram is called with each datagram from the relay, in the session's one
	// datagram goroutine; payload is valid only during the call. It should not
	// block: datagrams queue behind it and the session's end waits for it. Nil:
	// datagrams are not read at all (no goroutine).
	OnDatagram func(h proto.DatagramHeader, payload []byte)
	// DatagramBudget bounds the datagrams a session reads; over it they are
	// dropped and counted. Zero fields take DefaultDatagramBudget.
	DatagramBudget Budget
}

// Session is what the relay told the agent about an established session.
type Session struct {
	Observed netip.AddrPort
	// RelayPublicIP is the relay's configured public_ip, or zero.
	RelayPublicIP netip.Addr
	// RelayAddr is the relay's address as dialed.
	RelayAddr netip.AddrPort
	// Results is the relay's answer to the service registration.
	Results []proto.ServiceResult
	// Heartbeat is the ping interval the relay asked for.
	Heartbeat time.Duration
	// Transport is "quic" or "tcp"; TransportWhy says why that one.
	Transport, TransportWhy string
	// BareDatagrams: datagrams travel as bare UDP packets beside the QUIC
	// connection (transport.BareDatagrams), not inside it.
	BareDatagrams bool
}

// Status is a snapshot for the status command.
type Status struct {
	Connected  bool
	Since      time.Time
	Session    Session
	LastError  string
	Reconnects int
	// Transport in use ("quic", "tcp"; empty when down) and why.
	Transport, TransportWhy string
}

// Client keeps the tunnel up.
type Client struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // guards the fields below
	status   Status
	cur      *clientConn
	probeSeq uint64

	streams     sync.WaitGroup // one per served stream
	active      atomic.Int64
	pauseHB     atomic.Bool
	quicRetries atomic.Int64 // QUIC attempts while on TCP (tests)
	udpHinted   atomic.Bool  // the UDP-blocked hint was logged
	dgrams      dgramCounters

	// refused is each refused service's last logged reason, so a refusal is
	// logged once, not at every reconnect. Owned by Run's goroutine.
	refused map[string]string
	// quicWaitSaid: "trying TCP too" was logged since the last session.
	// Owned by Run's goroutine.
	quicWaitSaid bool
}

// New checks cfg and returns a Client; Run starts it.
func New(cfg Config) (*Client, error) {
	if cfg.Address == "" || cfg.Name == "" || cfg.Token == "" {
		return nil, errors.New("tunnel: Address, Name and Token are required")
	}
	if cfg.Handler == nil {
		return nil, errors.New("tunnel: Handler is required")
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = TransportAuto
	case TransportAuto, TransportQUIC, TransportTCP:
	default:
		return nil, fmt.Errorf("tunnel: transport %q: want auto, quic or tcp", cfg.Transport)
	}
	if cfg.DialQUIC == nil {
		cfg.DialQUIC = DialQUIC(nil)
	}
	if cfg.DialTCP == nil {
		cfg.DialTCP = DialTCP()
	}
	if cfg.QUICWait == 0 {
		cfg.QUICWait = 2 * time.Second
	}
	if cfg.QUICRetry == 0 {
		cfg.QUICRetry = 60 * time.Second
	}
	if cfg.Software == "" {
		cfg.Software = "porthole-agent"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 250 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.BackoffRecentMax == 0 {
		cfg.BackoffRecentMax = min(5*time.Second, cfg.BackoffMax)
	}
	if cfg.RecentWindow == 0 {
		cfg.RecentWindow = 5 * time.Minute
	}
	if cfg.PongTimeout == 0 {
		cfg.PongTimeout = 3 * time.Second
	}
	cfg.DatagramBudget = fillDatagramBudget(cfg.DatagramBudget)
	return &Client{cfg: cfg, log: cfg.Logger.With("relay", cfg.Address), refused: map[string]string{}}, nil
}

// Status returns a snapshot.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// ActiveStreams is the number of viewer streams being served.
func (c *Client) ActiveStreams() int64 { return c.active.Load() }

// PauseHeartbeat stops (true) or resumes the pings, as a hung agent would: for
// tests of the relay's heartbeat deadline.
func (c *Client) PauseHeartbeat(pause bool) { c.pauseHB.Store(pause) }

// Run keeps the tunnel up until ctx ends, then closes it and waits for the viewer
// streams it handed out to end.
func (c *Client) Run(ctx context.Context) error {
	defer c.streams.Wait()
	bo := backoff{min: c.cfg.BackoffMin, max: c.cfg.BackoffMax, recentMax: c.cfg.BackoffRecentMax, recent: c.cfg.RecentWindow}
	var lastErr string
	var next transport.Conn // a QUIC connection found while on TCP: used at once
	for {
		start := time.Now()
		conn, why, err := next, "QUIC connects again", error(nil)
		next = nil
		if conn == nil {
			conn, why, err = c.dial(ctx)
		}
		if err == nil {
			next, err = c.session(ctx, conn, why)
		}
		if ctx.Err() != nil {
			if next != nil {
				next.CloseWithError(uint64(proto.CloseNormal), "agent shutting down")
			}
			return nil
		}
		if next != nil {
			bo.cur = 0
			continue
		}
		since := c.Status().Since
		established := since.After(start)
		now := time.Now()
		if established {
			bo.lastUp = now
		}
		wait := time.Duration(-1)
		switch {
		case errors.Is(err, ErrAuth), errors.Is(err, ErrReplaced):
			bo.cur = c.cfg.BackoffMax
		case established && errors.Is(err, transport.ErrPeerRestarted):
			// Only a restarted relay sends a stateless reset (or a TCP reset after
			// losing the connection): it is back, so reconnect at once.
			bo.cur, wait = 0, 0
		case established && now.Sub(since) > 5*time.Second:
			// A session that worked for a while starts the backoff afresh.
			bo.cur = 0
		}
		if wait < 0 {
			wait = bo.next(now, func(d time.Duration) time.Duration { return rand.N(d + 1) })
		}
		if msg := err.Error(); msg != lastErr {
			c.log.Warn("tunnel down; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
			lastErr = msg
		} else {
			c.log.Debug("tunnel still down", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		c.mu.Lock()
		c.status.LastError = err.Error()
		c.status.Reconnects++
		c.mu.Unlock()
		if c.cfg.OnRetry != nil {
			c.cfg.OnRetry(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is the reconnect delay: doubling from min, capped at recentMax
// while the last session ended less than recent ago, else at max.
type backoff struct {
	min, max, recentMax, recent time.Duration
	cur                         time.Duration // the last delay's cap; 0 = start afresh
	lastUp                      time.Time     // when the last established session ended
}

// next returns the wait before the next dial, jittered in [cur/2, cur];
// jitter(d) returns a random duration in [0, d].
func (b *backoff) next(now time.Time, jitter func(time.Duration) time.Duration) time.Duration {
	limit := b.max
	if !b.lastUp.IsZero() && now.Sub(b.lastUp) < b.recent {
		limit = b.recentMax
	}
	switch {
	case b.cur == 0:
		b.cur = b.min
	case b.cur >= b.max:
		// An auth failure or a replaced session waits the full cap.
	default:
		b.cur = min(2*b.cur, limit)
	}
	return b.cur/2 + jitter(b.cur/2)
}

// clientConn is one established session.
type clientConn struct {
	conn     transport.Conn
	ctrl     transport.Stream
	exporter []byte
	wmu      sync.Mutex // serializes control writes
	services map[string]bool
	relayIP  netip.Addr

	pmu    sync.Mutex // guards probes
	probes map[uint64]chan *proto.ProbeResult
}

func (cn *clientConn) send(m proto.Message) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	cn.ctrl.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return proto.WriteMessage(cn.ctrl, m)
}

// errUpgrade ends a TCP session because QUIC connects again.
var errUpgrade = errors.New("QUIC connects again")

// session authenticates on conn and serves the session until it ends. It returns
// a QUIC connection to continue on when a TCP session ended because QUIC works again.
func (c *Client) session(ctx context.Context, conn transport.Conn, why string) (transport.Conn, error) {
	raddr := addrPort(conn.RemoteAddr())
	cn, sess, err := c.handshake(ctx, conn)
	if err != nil {
		if code, ok := closeCode(connErr(conn, err)); ok && code == proto.CloseAuthFailed {
			err = fmt.Errorf("%w: the relay refused our proof: wrong token, or agent name %q unknown to the relay", ErrAuth, c.cfg.Name)
		}
		conn.CloseWithError(uint64(proto.CloseProtocol), "handshake failed")
		return nil, fmt.Errorf("%s: %w", conn.Transport(), err)
	}
	sess.RelayAddr = raddr
	sess.Transport, sess.TransportWhy = conn.Transport(), why
	cn.relayIP = raddr.Addr()
	c.mu.Lock()
	c.cur = cn
	c.status.Connected = true
	c.status.Since = time.Now()
	c.status.Session = sess
	c.status.LastError = ""
	c.status.Transport, c.status.TransportWhy = sess.Transport, why
	c.mu.Unlock()
	c.quicWaitSaid = false
	c.log.Info("tunnel up", "observed", sess.Observed, "transport", sess.Transport, "why", why, "bare_datagrams", sess.BareDatagrams)
	for _, r := range sess.Results {
		switch {
		case r.Accepted:
			delete(c.refused, r.Name)
			c.log.Info("service exposed on the relay", "service", r.Name, "port", r.Port)
		case c.refused[r.Name] == r.Reason:
			// Said at an earlier connect; Status().Session.Results keeps it.
			c.log.Debug("service still refused by the relay", "service", r.Name, "port", r.Port, "reason", r.Reason)
		default:
			c.refused[r.Name] = r.Reason
			c.log.Warn("service refused by the relay", "service", r.Name, "port", r.Port, "reason", r.Reason)
		}
	}
	if c.cfg.OnConnect != nil {
		c.cfg.OnConnect(sess)
	}

	next, err := c.serve(ctx, cn, sess)

	c.mu.Lock()
	c.cur = nil
	c.status.Connected = false
	c.status.Transport, c.status.TransportWhy = "", ""
	c.mu.Unlock()
	cn.pmu.Lock()
	for id, ch := range cn.probes {
		close(ch)
		delete(cn.probes, id)
	}
	cn.pmu.Unlock()
	if ctx.Err() != nil {
		conn.CloseWithError(uint64(proto.CloseNormal), "agent shutting down")
		return nil, ctx.Err()
	}
	if next != nil {
		c.log.Info("QUIC connects again; moving the tunnel from TCP to QUIC")
		conn.CloseWithError(uint64(proto.CloseNormal), "moving to QUIC")
	} else {
		conn.CloseWithError(uint64(proto.CloseNormal), "")
	}
	if c.cfg.OnDisconnect != nil {
		c.cfg.OnDisconnect(err)
	}
	return next, fmt.Errorf("tunnel lost: %w", err)
}

// Authenticate runs the agent's side of the handshake on conn (Hello, check the
// relay's proof, AgentProof, Welcome; see proto's doc) and returns the control
// stream and the relay's Welcome. A wrong relay proof closes conn with
// proto.CloseAuthFailed and returns an error wrapping ErrAuth.
func Authenticate(ctx context.Context, conn transport.Conn, name, token, software string) (transport.Stream, *proto.Welcome, error) {
	ctrl, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		ctrl.SetDeadline(dl)
		defer ctrl.SetDeadline(time.Time{})
	}
	hello := &proto.Hello{Version: proto.Version, Name: name, Software: software}
	bare, _ := conn.(transport.BareDatagrams)
	if bare != nil {
		hello.Features = append(hello.Features, proto.FeatureBareDatagrams)
	}
	if err := proto.WriteMessage(ctrl, hello); err != nil {
		return nil, nil, err
	}
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return nil, nil, fmt.Errorf("reading relay proof: %w", connErr(conn, err))
	}
	if r, ok := m.(*proto.Refused); ok {
		return nil, nil, fmt.Errorf("relay refused: %s", r.Reason)
	}
	rp, ok := m.(*proto.RelayProof)
	if !ok {
		return nil, nil, fmt.Errorf("expected relay proof, got %T", m)
	}
	exporter, err := proto.Exporter(conn)
	if err != nil {
		return nil, nil, err
	}
	if !proto.VerifyMAC(rp.MAC, proto.RelayProofMAC([]byte(token), name, exporter)) {
		conn.CloseWithError(uint64(proto.CloseAuthFailed), "relay proof invalid")
		return nil, nil, fmt.Errorf("%w: the relay could not prove it knows our token: wrong token, agent name %q unknown to the relay, or not our relay", ErrAuth, name)
	}
	if err := proto.WriteMessage(ctrl, &proto.AgentProof{MAC: proto.AgentProofMAC([]byte(token), name, exporter)}); err != nil {
		return nil, nil, err
	}
	m, err = proto.ReadMessage(ctrl)
	if err != nil {
		return nil, nil, fmt.Errorf("reading welcome: %w", connErr(conn, err))
	}
	switch m := m.(type) {
	case *proto.Welcome:
		if bare != nil && slices.Contains(m.Features, proto.FeatureBareDatagrams) {
			bare.EnableBareDatagrams()
		}
		return ctrl, m, nil
	case *proto.Refused:
		return nil, nil, fmt.Errorf("%w: relay says %s", ErrAuth, m.Reason)
	}
	return nil, nil, fmt.Errorf("expected welcome, got %T", m)
}

func (c *Client) handshake(ctx context.Context, conn transport.Conn) (*clientConn, Session, error) {
	var sess Session
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctrl, w, err := Authenticate(hctx, conn, c.cfg.Name, c.cfg.Token, c.cfg.Software)
	if err != nil {
		return nil, sess, err
	}
	dl, _ := hctx.Deadline()
	ctrl.SetDeadline(dl)
	sess.Observed, _ = netip.ParseAddrPort(w.Observed)
	sess.RelayPublicIP, _ = netip.ParseAddr(w.PublicIP)
	sess.BareDatagrams = slices.Contains(w.Features, proto.FeatureBareDatagrams)
	// Clamp what the relay asks for to something sane.
	sess.Heartbeat = min(max(time.Duration(w.HeartbeatMillis)*time.Millisecond, 250*time.Millisecond), 15*time.Second)
	exporter, err := proto.Exporter(conn)
	if err != nil {
		return nil, sess, err
	}
	cn := &clientConn{conn: conn, ctrl: ctrl, exporter: exporter, services: map[string]bool{}, probes: map[uint64]chan *proto.ProbeResult{}}
	reg := &proto.Register{Services: []proto.Service{}}
	for _, s := range c.cfg.Services {
		reg.Services = append(reg.Services, proto.Service{Name: s.Name, Port: s.Port, Proto: s.proto(), Allow: s.Allow})
	}
	if err := proto.WriteMessage(ctrl, reg); err != nil {
		return nil, sess, err
	}
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return nil, sess, fmt.Errorf("reading registration result: %w", connErr(conn, err))
	}
	regd, ok := m.(*proto.Registered)
	if !ok {
		return nil, sess, fmt.Errorf("expected registration result, got %T", m)
	}
	sess.Results = regd.Results
	for _, r := range regd.Results {
		if !r.Accepted {
			continue
		}
		for _, s := range c.cfg.Services {
			if s.Name == r.Name && s.Port == r.Port && s.proto() == "tcp" {
				cn.services[s.Name] = true
			}
		}
	}
	ctrl.SetDeadline(time.Time{})
	return cn, sess, nil
}

// serve runs the heartbeat, the control reader, the stream acceptor and, on TCP
// in auto mode, the QUIC retry. It returns a QUIC connection when that retry
// succeeded.
func (c *Client) serve(ctx context.Context, cn *clientConn, sess Session) (transport.Conn, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Unblock the control reader when the session ends for another reason.
	stop := context.AfterFunc(sctx, func() { cn.ctrl.SetReadDeadline(time.Now()) })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()

	observed := sess.Observed
	var lastPong atomic.Int64
	lastPong.Store(time.Now().UnixNano())
	wg.Add(2)
	go func() { // control reader
		defer wg.Done()
		for {
			m, err := proto.ReadMessage(cn.ctrl)
			if err != nil {
				cancel(fmt.Errorf("control stream: %w", c.connErr(cn.conn, err)))
				return
			}
			switch m := m.(type) {
			case *proto.Pong:
				lastPong.Store(time.Now().UnixNano())
				if ap, err := netip.ParseAddrPort(m.Observed); err == nil && ap != observed {
					observed = ap
					c.mu.Lock()
					c.status.Session.Observed = ap
					c.mu.Unlock()
					c.log.Info("relay observes a new address", "observed", ap)
					if c.cfg.OnObserved != nil {
						c.cfg.OnObserved(ap)
					}
				}
			case *proto.ProbeResult:
				cn.pmu.Lock()
				ch := cn.probes[m.ID]
				delete(cn.probes, m.ID)
				cn.pmu.Unlock()
				if ch != nil {
					ch <- m
				}
			case *proto.Registered:
			default:
				c.log.Debug("unexpected control message", "type", fmt.Sprintf("%T", m))
			}
		}
	}()
	go func() { // heartbeat
		defer wg.Done()
		t := time.NewTicker(sess.Heartbeat)
		defer t.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			if c.pauseHB.Load() {
				lastPong.Store(time.Now().UnixNano())
				continue
			}
			if time.Since(time.Unix(0, lastPong.Load())) > c.cfg.PongTimeout {
				cancel(fmt.Errorf("no heartbeat answer from the relay for %s", c.cfg.PongTimeout))
				cn.conn.CloseWithError(uint64(proto.CloseNormal), "heartbeat timeout")
				return
			}
			if err := cn.send(&proto.Ping{Seq: seq, Pad: proto.PingPad}); err != nil {
				cancel(fmt.Errorf("heartbeat: %w", c.connErr(cn.conn, err)))
				return
			}
		}
	}()
	if c.cfg.OnDatagram != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.receiveDatagrams(sctx, cn)
		}()
	}
	upgrade := make(chan transport.Conn, 1)
	if sess.Transport == TransportTCP && c.cfg.Transport == TransportAuto && c.cfg.DialQUIC != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if qc := c.retryQUIC(sctx); qc != nil {
				upgrade <- qc
				cancel(errUpgrade)
			}
		}()
	}
	for {
		st, err := cn.conn.AcceptStream(sctx)
		if err != nil {
			cause := context.Cause(sctx)
			if cause == nil || errors.Is(cause, context.Canceled) && ctx.Err() == nil {
				cause = c.connErr(cn.conn, err)
			}
			cancel(cause)
			wg.Wait()
			select {
			case qc := <-upgrade:
				return qc, cause
			default:
			}
			return nil, cause
		}
		c.streams.Add(1)
		c.active.Add(1)
		go func() {
			defer c.streams.Done()
			defer c.active.Add(-1)
			c.serveStream(ctx, cn, st)
		}()
	}
}

// retryQUIC tries QUIC about every QUICRetry (jittered), while no viewer stream
// is open, until it connects or ctx ends.
func (c *Client) retryQUIC(ctx context.Context) transport.Conn {
	for {
		wait := c.cfg.QUICRetry/2 + rand.N(c.cfg.QUICRetry)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		// Moving to QUIC replaces the session and cuts the viewer streams
		// running over TCP: wait until nobody is watching. TCP serves them
		// well meanwhile.
		if n := c.active.Load(); n > 0 {
			c.log.Debug("QUIC retry postponed: viewers are watching over TCP", "streams", n)
			continue
		}
		c.quicRetries.Add(1)
		dctx, cancel := context.WithTimeout(ctx, 2*c.cfg.QUICWait)
		qc, err := c.cfg.DialQUIC(dctx, c.cfg.Address)
		cancel()
		if err == nil {
			if ctx.Err() != nil {
				qc.CloseWithError(uint64(proto.CloseNormal), "not needed")
				return nil
			}
			return qc
		}
		c.log.Debug("QUIC still does not connect; staying on TCP", "err", err)
	}
}

// connErr is connErr with the relay's close codes turned into sentinels.
func (c *Client) connErr(conn transport.Conn, err error) error {
	err = connErr(conn, err)
	if code, ok := closeCode(err); ok && code == proto.CloseReplaced {
		return fmt.Errorf("%w: is a second agent running with this config? each agent needs its own name and token", ErrReplaced)
	}
	return err
}

// serveStream reads a viewer stream's header, checks that it names a service the
// relay accepted, and hands it to the Handler.
func (c *Client) serveStream(ctx context.Context, cn *clientConn, st transport.Stream) {
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr, err := proto.ReadStreamHeader(st)
	if err != nil {
		var se *transport.StreamError
		if errors.As(err, &se) && se.Remote {
			// The viewer left before the stream started; nothing wrong.
			c.log.Debug("viewer stream canceled before its header", "err", err)
		} else {
			c.log.Warn("bad stream from the relay", "err", err)
		}
		st.Abort(uint64(proto.StreamRefused))
		return
	}
	st.SetReadDeadline(time.Time{})
	if !cn.services[hdr.Service] {
		c.log.Warn("stream for an unknown or unregistered service refused", "service", hdr.Service)
		st.Abort(uint64(proto.StreamRefused))
		return
	}
	c.cfg.Handler(ctx, hdr, st)
}

// Probe asks the relay to verify the direct path to addr for service (see
// proto.ProbeMagic). It returns the relay's verdict.
func (c *Client) Probe(ctx context.Context, addr netip.AddrPort, service string) (*proto.ProbeResult, error) {
	return c.probe(ctx, addr, service, "")
}

// ProbeUDP asks the relay to verify the direct path to the UDP port at addr of
// service (the WireGuard port): the relay sends proto.UDPProbe there and expects
// the answer of proto.UDPProbeReply.
func (c *Client) ProbeUDP(ctx context.Context, addr netip.AddrPort, service string) (*proto.ProbeResult, error) {
	return c.probe(ctx, addr, service, "udp")
}

func (c *Client) probe(ctx context.Context, addr netip.AddrPort, service, network string) (*proto.ProbeResult, error) {
	c.mu.Lock()
	cn := c.cur
	c.probeSeq++
	id := c.probeSeq
	c.mu.Unlock()
	if cn == nil {
		return nil, ErrNotConnected
	}
	ch := make(chan *proto.ProbeResult, 1)
	cn.pmu.Lock()
	cn.probes[id] = ch
	cn.pmu.Unlock()
	if err := cn.send(&proto.ProbeRequest{ID: id, Addr: addr.String(), Service: service, Proto: network}); err != nil {
		cn.pmu.Lock()
		delete(cn.probes, id)
		cn.pmu.Unlock()
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, ErrNotConnected
		}
		return r, nil
	case <-ctx.Done():
		cn.pmu.Lock()
		delete(cn.probes, id)
		cn.pmu.Unlock()
		return nil, ctx.Err()
	}
}

// ProbeSniff is how long AnswerProbe waits for the first bytes of a connection
// from the relay's address before deciding it is a viewer: the relay writes its
// challenge at once, while a player whose protocol lets the server speak first
// writes nothing.
const ProbeSniff = time.Second

// AnswerProbe handles a connection on a direct listener if it is a relay probe for
// the current session: it reads the challenge and writes the answer. A connection
// from anywhere but the relay's address is not touched. One from the relay's
// address that doesn't start with [proto.ProbeMagic] is a viewer sharing that
// address (a player on the VPS, or behind the same NAT): AnswerProbe returns
// handled=false and the bytes it read, which the gateway passes on.
func (c *Client) AnswerProbe(conn net.Conn, from netip.AddrPort) (handled bool, replay []byte) {
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil || from.Addr().Unmap() != cn.relayIP {
		return false, nil
	}
	line := make([]byte, proto.ProbeLineLen)
	n, err := sniffProbe(conn, line)
	if !proto.ProbePrefix(line[:n]) || n < len(proto.ProbeMagic) {
		if n == 0 && err != nil && !os.IsTimeout(err) {
			conn.Close() // gone before saying anything
			return true, nil
		}
		return false, line[:n]
	}
	defer conn.Close()
	nonce, ok := proto.ParseProbeLine(line[:n])
	if err != nil || !ok {
		c.log.Warn("malformed or incomplete reachability probe dropped", "from", from, "err", err)
		return true, nil
	}
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, proto.ProbeAnswer(cn.exporter, nonce)+"\n")
	return true, nil
}

// sniffProbe reads into line until it is full or cannot be a probe any more (see
// proto.ProbePrefix), waiting ProbeSniff for the first bytes and up to 5s for the
// whole line once the magic has arrived. It clears the deadline.
func sniffProbe(conn net.Conn, line []byte) (int, error) {
	defer conn.SetReadDeadline(time.Time{})
	conn.SetReadDeadline(time.Now().Add(ProbeSniff))
	n := 0
	for n < len(line) {
		m, err := conn.Read(line[n:])
		n += m
		if !proto.ProbePrefix(line[:n]) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if n >= len(proto.ProbeMagic) {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		}
	}
	return n, nil
}
