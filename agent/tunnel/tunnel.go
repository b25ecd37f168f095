// Package tunnel is the agent's side of the QUIC tunnel: it dials the relay,
// authenticates with the token (proto's channel-bound proofs, relay first), registers
// the agent's services, keeps a heartbeat, and serves each stream the relay opens by
// dialing the service's LAN target and splicing. It reconnects forever with
// exponential backoff and jitter, resolving the relay's name again each time.
package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/quic-go/quic-go"
)

// Application error codes, shared with the relay (relay.Code*).
const (
	codeNormal     quic.ApplicationErrorCode = 0
	codeAuthFailed quic.ApplicationErrorCode = 1
	codeReplaced   quic.ApplicationErrorCode = 2
	codeProtocol   quic.ApplicationErrorCode = 4
)

// ErrAuth means the relay and the agent don't share the token (or the relay is forged).
var ErrAuth = errors.New("authentication failed")

// ErrReplaced means another agent with the same name connected and the relay
// dropped this session: two agents share a config. The loser backs off hard.
var ErrReplaced = errors.New("replaced by another agent with the same name")

// Service is one LAN service offered through the tunnel.
type Service struct {
	Name   string
	Port   uint16
	Target string // LAN host:port
	Policy gateway.Policy
}

// Config configures a Client.
type Config struct {
	// Address is the relay's host:port (UDP). Required.
	Address string
	// Name is the agent's name in relay.yaml. Required.
	Name string
	// Token is the shared secret. Required.
	Token string
	// Services are registered after each connect.
	Services []Service
	// DialLAN dials a service's target; nil uses net.Dialer.
	DialLAN func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds DialLAN. Zero means 5s.
	DialTimeout time.Duration
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
	// PongTimeout: a session with no pong for this long is dropped and redialed. Zero
	// means 3s: QUIC retransmissions back off exponentially while the relay is down,
	// so after a relay restart the old session may not draw its stateless reset for
	// many seconds; a fresh dial is quicker.
	PongTimeout time.Duration
	// Resolve resolves the relay address each attempt; nil uses net.ResolveUDPAddr.
	Resolve func(ctx context.Context, addr string) (*net.UDPAddr, error)
	// PacketConn, if set, is the socket used for all attempts (tests); nil = a new one each time.
	PacketConn net.PacketConn
}

// Session is what the relay told the agent about an established session.
type Session struct {
	Observed netip.AddrPort
	// RelayPublicIP is the relay's configured public_ip, or zero.
	RelayPublicIP netip.Addr
	// RelayAddr is the UDP address dialed.
	RelayAddr netip.AddrPort
	// Results is the relay's answer to the service registration.
	Results []proto.ServiceResult
	// Heartbeat is the ping interval the relay asked for.
	Heartbeat time.Duration
}

// Status is a snapshot for the status command.
type Status struct {
	Connected  bool
	Since      time.Time
	Session    Session
	LastError  string
	Reconnects int
}

// Client keeps the tunnel up.
type Client struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // guards the fields below
	status   Status
	cur      *conn
	probeSeq uint64

	streams sync.WaitGroup // one per served stream
	active  atomic.Int64
}

// QUICConfig is the agent's QUIC configuration: keepalive 15s so the home router's NAT
// state survives, idle timeout 30s so a dead relay is noticed, room for many viewers.
func QUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           2 * time.Second,
		MaxIdleTimeout:                 30 * time.Second,
		KeepAlivePeriod:                15 * time.Second,
		MaxIncomingStreams:             4096,
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		EnableDatagrams:                true,
	}
}

// New checks cfg and returns a Client; Run starts it.
func New(cfg Config) (*Client, error) {
	if cfg.Address == "" || cfg.Name == "" || cfg.Token == "" {
		return nil, errors.New("tunnel: Address, Name and Token are required")
	}
	if cfg.DialLAN == nil {
		var d net.Dialer
		cfg.DialLAN = d.DialContext
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
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
	if cfg.PongTimeout == 0 {
		cfg.PongTimeout = 3 * time.Second
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, addr string) (*net.UDPAddr, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
			p, err := net.LookupPort("udp", port)
			if err != nil {
				return nil, err
			}
			// Prefer IPv4: home IPv6 is often firewalled inbound-only quirks aside, v4 is the safe default.
			best := ips[0]
			for _, ip := range ips {
				if ip.Unmap().Is4() {
					best = ip
					break
				}
			}
			return net.UDPAddrFromAddrPort(netip.AddrPortFrom(best.Unmap(), uint16(p))), nil
		}
	}
	return &Client{cfg: cfg, log: cfg.Logger.With("relay", cfg.Address)}, nil
}

// Status returns a snapshot.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// ActiveStreams is the number of viewer streams being served.
func (c *Client) ActiveStreams() int64 { return c.active.Load() }

// Run keeps the tunnel up until ctx ends, then closes it, letting open streams
// finish for up to a few seconds.
func (c *Client) Run(ctx context.Context) error {
	defer c.streams.Wait()
	backoff := time.Duration(0)
	var lastErr string
	for {
		start := time.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		since := c.Status().Since
		established := since.After(start)
		var reset *quic.StatelessResetError
		wait := time.Duration(-1)
		switch {
		case errors.Is(err, ErrAuth), errors.Is(err, ErrReplaced):
			backoff = c.cfg.BackoffMax
		case established && errors.As(err, &reset):
			// A stateless reset proves the relay restarted and is back: reconnect
			// at once. Only a restarted relay can send one, so this can't loop.
			backoff, wait = 0, 0
		case established && time.Since(since) > 5*time.Second, backoff == 0:
			// A session that worked for a while starts the backoff afresh.
			backoff = c.cfg.BackoffMin
		default:
			backoff = min(2*backoff, c.cfg.BackoffMax)
		}
		if wait < 0 {
			// Jitter in [backoff/2, backoff].
			wait = backoff/2 + rand.N(backoff/2+1)
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

// conn is one established session.
type conn struct {
	qc       *quic.Conn
	ctrl     *quic.Stream
	exporter []byte
	wmu      sync.Mutex // serializes control writes
	services map[string]Service
	relayIP  netip.Addr

	pmu    sync.Mutex // guards probes
	probes map[uint64]chan *proto.ProbeResult
}

func (cn *conn) send(m proto.Message) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return proto.WriteMessage(cn.ctrl, m)
}

// session dials, authenticates, and serves one session until it ends.
func (c *Client) session(ctx context.Context) error {
	raddr, err := c.cfg.Resolve(ctx, c.cfg.Address)
	if err != nil {
		return fmt.Errorf("resolve relay %s: %w", c.cfg.Address, err)
	}
	tlsConf := &tls.Config{
		// Trust comes from the token proofs bound to this connection, not the certificate.
		InsecureSkipVerify: true,
		NextProtos:         []string{proto.ALPN},
		MinVersion:         tls.VersionTLS13,
		ServerName:         "porthole-relay",
	}
	var qc *quic.Conn
	if c.cfg.PacketConn != nil {
		tr := &quic.Transport{Conn: c.cfg.PacketConn}
		qc, err = tr.Dial(ctx, raddr, tlsConf, QUICConfig())
	} else {
		qc, err = quic.DialAddr(ctx, raddr.String(), tlsConf, QUICConfig())
	}
	if err != nil {
		return fmt.Errorf("dial relay %s: %w", raddr, err)
	}
	cn, sess, err := c.handshake(ctx, qc)
	if err != nil {
		var appErr *quic.ApplicationError
		if errors.As(err, &appErr) && appErr.ErrorCode == codeAuthFailed {
			err = fmt.Errorf("%w: the relay refused our proof: wrong token, or agent name %q unknown to the relay", ErrAuth, c.cfg.Name)
		}
		qc.CloseWithError(codeProtocol, "handshake failed")
		return err
	}
	sess.RelayAddr = raddr.AddrPort()
	cn.relayIP = raddr.AddrPort().Addr().Unmap()
	c.mu.Lock()
	c.cur = cn
	c.status.Connected = true
	c.status.Since = time.Now()
	c.status.Session = sess
	c.status.LastError = ""
	c.mu.Unlock()
	c.log.Info("tunnel up", "observed", sess.Observed)
	for _, r := range sess.Results {
		if r.Accepted {
			c.log.Info("service exposed on the relay", "service", r.Name, "port", r.Port)
		} else {
			c.log.Warn("service refused by the relay", "service", r.Name, "port", r.Port, "reason", r.Reason)
		}
	}
	if c.cfg.OnConnect != nil {
		c.cfg.OnConnect(sess)
	}

	err = c.serve(ctx, cn, sess.Observed, sess.Heartbeat)

	c.mu.Lock()
	c.cur = nil
	c.status.Connected = false
	c.mu.Unlock()
	cn.pmu.Lock()
	for id, ch := range cn.probes {
		close(ch)
		delete(cn.probes, id)
	}
	cn.pmu.Unlock()
	if ctx.Err() != nil {
		qc.CloseWithError(codeNormal, "agent shutting down")
		return ctx.Err()
	}
	qc.CloseWithError(codeNormal, "")
	if c.cfg.OnDisconnect != nil {
		c.cfg.OnDisconnect(err)
	}
	return fmt.Errorf("tunnel lost: %w", err)
}

func (c *Client) handshake(ctx context.Context, qc *quic.Conn) (*conn, Session, error) {
	var sess Session
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctrl, err := qc.OpenStreamSync(hctx)
	if err != nil {
		return nil, sess, err
	}
	dl, _ := hctx.Deadline()
	ctrl.SetDeadline(dl)
	if err := proto.WriteMessage(ctrl, &proto.Hello{Version: proto.Version, Name: c.cfg.Name, Software: "porthole-agent"}); err != nil {
		return nil, sess, err
	}
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return nil, sess, fmt.Errorf("reading relay proof: %w", err)
	}
	if r, ok := m.(*proto.Refused); ok {
		return nil, sess, fmt.Errorf("relay refused: %s", r.Reason)
	}
	rp, ok := m.(*proto.RelayProof)
	if !ok {
		return nil, sess, fmt.Errorf("expected relay proof, got %T", m)
	}
	cs := qc.ConnectionState().TLS
	exporter, err := proto.Exporter(&cs)
	if err != nil {
		return nil, sess, err
	}
	token := []byte(c.cfg.Token)
	if !proto.VerifyMAC(rp.MAC, proto.RelayProofMAC(token, c.cfg.Name, exporter)) {
		qc.CloseWithError(codeAuthFailed, "relay proof invalid")
		return nil, sess, fmt.Errorf("%w: the relay could not prove it knows our token: wrong token, agent name %q unknown to the relay, or not our relay", ErrAuth, c.cfg.Name)
	}
	if err := proto.WriteMessage(ctrl, &proto.AgentProof{MAC: proto.AgentProofMAC(token, c.cfg.Name, exporter)}); err != nil {
		return nil, sess, err
	}
	m, err = proto.ReadMessage(ctrl)
	if err != nil {
		return nil, sess, fmt.Errorf("reading welcome: %w", err)
	}
	switch m := m.(type) {
	case *proto.Welcome:
		sess.Observed, _ = netip.ParseAddrPort(m.Observed)
		sess.RelayPublicIP, _ = netip.ParseAddr(m.PublicIP)
		// Clamp what the relay asks for to something sane.
		sess.Heartbeat = min(max(time.Duration(m.HeartbeatMillis)*time.Millisecond, 250*time.Millisecond), 15*time.Second)
	case *proto.Refused:
		return nil, sess, fmt.Errorf("%w: relay says %s", ErrAuth, m.Reason)
	default:
		return nil, sess, fmt.Errorf("expected welcome, got %T", m)
	}
	cn := &conn{qc: qc, ctrl: ctrl, exporter: exporter, services: map[string]Service{}, probes: map[uint64]chan *proto.ProbeResult{}}
	reg := &proto.Register{}
	for _, s := range c.cfg.Services {
		reg.Services = append(reg.Services, proto.Service{Name: s.Name, Port: s.Port, Proto: "tcp", Allow: s.Policy.Strings()})
	}
	if err := proto.WriteMessage(ctrl, reg); err != nil {
		return nil, sess, err
	}
	m, err = proto.ReadMessage(ctrl)
	if err != nil {
		return nil, sess, fmt.Errorf("reading registration result: %w", err)
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
			if s.Name == r.Name && s.Port == r.Port {
				cn.services[s.Name] = s
			}
		}
	}
	ctrl.SetDeadline(time.Time{})
	return cn, sess, nil
}

// serve runs the heartbeat, the control reader and the stream acceptor.
func (c *Client) serve(ctx context.Context, cn *conn, observed netip.AddrPort, heartbeat time.Duration) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(sctx, func() { cn.ctrl.CancelRead(0) })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()

	var lastPong atomic.Int64
	lastPong.Store(time.Now().UnixNano())
	wg.Add(2)
	go func() { // control reader
		defer wg.Done()
		for {
			m, err := proto.ReadMessage(cn.ctrl)
			if err != nil {
				cancel(fmt.Errorf("control stream: %w", connErr(cn.qc, err)))
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
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			if time.Since(time.Unix(0, lastPong.Load())) > c.cfg.PongTimeout {
				cancel(fmt.Errorf("no heartbeat answer from the relay for %s", c.cfg.PongTimeout))
				cn.qc.CloseWithError(codeNormal, "heartbeat timeout")
				return
			}
			if err := cn.send(&proto.Ping{Seq: seq, Pad: proto.PingPad}); err != nil {
				cancel(fmt.Errorf("heartbeat: %w", connErr(cn.qc, err)))
				return
			}
		}
	}()
	for {
		st, err := cn.qc.AcceptStream(sctx)
		if err != nil {
			cause := context.Cause(sctx)
			if cause == nil || errors.Is(cause, context.Canceled) && ctx.Err() == nil {
				cause = connErr(cn.qc, err)
			}
			cancel(cause)
			return cause
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

// connErr prefers the connection's close reason over a stream error.
func connErr(qc *quic.Conn, err error) error {
	if cause := context.Cause(qc.Context()); cause != nil {
		var appErr *quic.ApplicationError
		if errors.As(cause, &appErr) && appErr.Remote && appErr.ErrorCode == codeReplaced {
			return fmt.Errorf("%w: is a second agent running with this config? each agent needs its own name and token", ErrReplaced)
		}
		return cause
	}
	return err
}

// serveStream checks one viewer stream against the registered services and their
// access rules, then splices it to the LAN target.
func (c *Client) serveStream(ctx context.Context, cn *conn, st *quic.Stream) {
	refuse := func() {
		st.CancelRead(gateway.StreamRefused)
		st.CancelWrite(gateway.StreamRefused)
	}
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr, err := proto.ReadStreamHeader(st)
	if err != nil {
		var se *quic.StreamError
		if errors.As(err, &se) && se.Remote {
			// The viewer left before the stream started; nothing wrong.
			c.log.Debug("viewer stream canceled before its header", "err", err)
		} else {
			c.log.Warn("bad stream from the relay", "err", err)
		}
		refuse()
		return
	}
	st.SetReadDeadline(time.Time{})
	svc, ok := cn.services[hdr.Service]
	if !ok {
		c.log.Warn("stream for an unknown or unregistered service refused", "service", hdr.Service)
		refuse()
		return
	}
	viewer, err := netip.ParseAddrPort(hdr.Viewer)
	if err != nil || !svc.Policy.Allows(viewer.Addr()) {
		c.log.Warn("stream refused by the service's allow rule", "service", svc.Name, "viewer", hdr.Viewer)
		refuse()
		return
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	lan, err := c.cfg.DialLAN(dctx, "tcp", svc.Target)
	cancel()
	if err != nil {
		c.log.Warn("camera unreachable", "service", svc.Name, "target", svc.Target, "err", err)
		refuse()
		return
	}
	lc, ok := lan.(gateway.Conn)
	if !ok {
		lan.Close()
		refuse()
		return
	}
	if tc, ok := lan.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	gateway.Splice(gateway.QUICStream(st), lc)
}

// ErrNotConnected is returned by Probe when there is no session.
var ErrNotConnected = errors.New("tunnel not connected")

// Probe asks the relay to verify the direct path to addr for service (see
// proto.ProbeMagic). It returns the relay's verdict.
func (c *Client) Probe(ctx context.Context, addr netip.AddrPort, service string) (*proto.ProbeResult, error) {
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
	if err := cn.send(&proto.ProbeRequest{ID: id, Addr: addr.String(), Service: service}); err != nil {
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
func (c *Client) AnswerProbe(tc *net.TCPConn, from netip.AddrPort) (handled bool, replay []byte) {
	c.mu.Lock()
	cn := c.cur
	c.mu.Unlock()
	if cn == nil || from.Addr().Unmap() != cn.relayIP {
		return false, nil
	}
	line := make([]byte, proto.ProbeLineLen)
	n, err := sniffProbe(tc, line)
	if !proto.ProbePrefix(line[:n]) || n < len(proto.ProbeMagic) {
		if n == 0 && err != nil && !os.IsTimeout(err) {
			tc.Close() // gone before saying anything
			return true, nil
		}
		return false, line[:n]
	}
	defer tc.Close()
	nonce, ok := proto.ParseProbeLine(line[:n])
	if err != nil || !ok {
		c.log.Warn("malformed or incomplete reachability probe dropped", "from", from, "err", err)
		return true, nil
	}
	tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(tc, proto.ProbeAnswer(cn.exporter, nonce)+"\n")
	return true, nil
}

// sniffProbe reads into line until it is full or cannot be a probe any more (see
// probePrefix), waiting ProbeSniff for the first bytes and up to 5s for the whole
// line once the magic has arrived. It clears the deadline.
func sniffProbe(tc *net.TCPConn, line []byte) (int, error) {
	defer tc.SetReadDeadline(time.Time{})
	tc.SetReadDeadline(time.Now().Add(ProbeSniff))
	n := 0
	for n < len(line) {
		m, err := tc.Read(line[n:])
		n += m
		if !proto.ProbePrefix(line[:n]) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if n >= len(proto.ProbeMagic) {
			tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		}
	}
	return n, nil
}
