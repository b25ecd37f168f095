// Package relay is porthole-relay, the daemon on a VPS: it accepts agents' tunnels
// (QUIC, and TLS over TCP on the same port number when UDP is blocked) through
// the relay half of package tunnel, keeps the registry of connected agents, opens
// a TCP listener for each service an agent registers (inside that agent's port
// range), checks viewers against the service's access rule and carries each viewer
// connection through a stream to the agent. It also probes agents' direct paths
// from outside on request, dialing only the agent's own address.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/admin"
	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/tcptransport"
)

// Config configures a relay Server.
type Config struct {
	// Relay is the loaded relay.yaml. Required.
	Relay *config.Relay
	// Logger receives the relay's log. Nil discards.
	Logger *slog.Logger
	// PacketConn is the UDP socket agents connect to with QUIC; nil binds
	// Relay.Listen. A PacketConn given here stays the caller's.
	PacketConn net.PacketConn
	// TCPListener is where agents connect with TLS over TCP when UDP is blocked;
	// the relay takes it over. Nil binds TCP on the UDP socket's address (the
	// same port number).
	TCPListener net.Listener
	// HandshakeTimeout bounds an agent's authentication, from its connection's
	// acceptance to Welcome. Zero means 3s (tunnel.ServerConfig.AuthTimeout).
	HandshakeTimeout time.Duration
	// MaxUnauthenticated caps connections still authenticating. Zero means 64.
	MaxUnauthenticated int
	// Heartbeat is the interval agents are told to ping at. Zero means 1s: after a
	// relay restart the agent's next ping draws a stateless reset, so this bounds
	// how long a restarted relay waits for its agents (about 100 bytes/s per agent).
	// An agent silent for three heartbeats (at most 5s) loses its session and its
	// listeners.
	Heartbeat time.Duration
	// ShutdownTimeout is how long open viewer connections may finish on shutdown. Zero means 5s.
	ShutdownTimeout time.Duration
	// ProbeTimeout bounds one reachability probe. Zero means
	// tunnel.DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// ProbeDial dials a probe target ("tcp", or "udp" for a WireGuard port);
	// nil uses net.Dialer.
	ProbeDial func(ctx context.Context, network, addr string) (net.Conn, error)

	// UDPFlowIdle: a phone's UDP flow (address and port) without a packet either
	// way for this long is forgotten. Zero means DefaultUDPFlowIdle (150s, above
	// WireGuard's 25s keepalive and its 2-minute rekey).
	UDPFlowIdle time.Duration
	// MaxUDPFlows caps an agent's UDP flows. Zero means DefaultMaxUDPFlows.
	MaxUDPFlows int
	// UDPNewFlowsPerSec bounds the new flows one source address may open each
	// second (burst 20). Zero means DefaultUDPNewFlowsPerSec.
	UDPNewFlowsPerSec float64
	// UDPUnansweredPPS bounds the packets per second of one source address's
	// flows that the agent has not answered yet, all together (WireGuard never
	// answers garbage). Zero means DefaultUDPUnansweredPPS.
	UDPUnansweredPPS float64
	// UDPAnsweredPPS bounds a flow's packets per second once the agent answered.
	// Zero means DefaultUDPAnsweredPPS.
	UDPAnsweredPPS float64
}

// Server is a running relay.
type Server struct {
	cfg    Config
	log    *slog.Logger
	pc     net.PacketConn
	ownPC  bool
	lns    []transport.Listener
	tun    *tunnel.Server
	runCtx context.Context // listeners serve until it ends
	// viewers caps viewer connections across every agent's service listeners.
	viewers *gateway.Limiter
	adm     *admin.Server // admin endpoint; nil when off

	started time.Time

	udp sync.Map // *tunnel.ServerSession -> *udpForwarder, for sessions with UDP ports

	mu       sync.Mutex // guards the fields below
	sessions map[string]*session
	closing  bool
}

// New loads or creates the relay's state (TLS key, stateless-reset key) and binds its
// sockets. Run then serves.
func New(cfg Config) (*Server, error) {
	if cfg.Relay == nil {
		return nil, errors.New("relay: Config.Relay is required")
	}
	rc := cfg.Relay
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if cfg.ProbeDial == nil {
		var d net.Dialer
		cfg.ProbeDial = d.DialContext
	}
	if err := os.MkdirAll(rc.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("relay: state_dir: %w", err)
	}
	cert, err := loadOrCreateCert(rc.StateDir)
	if err != nil {
		return nil, err
	}
	resetKey, err := loadOrCreateResetKey(rc.StateDir)
	if err != nil {
		return nil, err
	}
	lim := rc.Limits
	viewers := gateway.NewLimiter(gateway.Limits{MaxConns: lim.MaxConns, MaxConnsPerSource: lim.MaxConnsPerSource, MaxPendingPerSource: lim.MaxPendingPerSource})
	s := &Server{cfg: cfg, log: cfg.Logger, sessions: map[string]*session{}, runCtx: context.Background(), viewers: viewers, started: time.Now()}
	tcfg := tunnel.ServerConfig{
		Token: func(name string) ([]byte, bool) {
			a, ok := rc.Agents[name]
			return []byte(a.Token), ok
		},
		OnConnect:          s.onConnect,
		Register:           s.register,
		ProbeDial:          s.probeDial,
		OnDisconnect:       s.onDisconnect,
		PublicIP:           rc.PublicIP,
		Heartbeat:          cfg.Heartbeat,
		AuthTimeout:        cfg.HandshakeTimeout,
		MaxUnauthenticated: cfg.MaxUnauthenticated,
		ProbeTimeout:       cfg.ProbeTimeout,
		Logger:             cfg.Logger,
	}
	for _, a := range rc.Agents {
		if a.UDPPorts.Hi != 0 {
			// Only then: the datagram reader is a goroutine per session.
			tcfg.OnDatagram = s.onDatagram
			tcfg.OnDatagramsFlush = s.onDatagramsFlush
			tcfg.ProbeDialUDP = s.probeDialUDP
			break
		}
	}
	s.tun, err = tunnel.NewServer(tcfg)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	s.pc = cfg.PacketConn
	tl := cfg.TCPListener
	if s.pc == nil {
		if s.pc, tl, err = bindBoth(rc.Listen, tl); err != nil {
			return nil, err
		}
		s.ownPC = true
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{proto.ALPN},
		MinVersion:   tls.VersionTLS13,
	}
	qln, err := quictransport.Listen(quictransport.ListenConfig{
		PacketConn: s.pc, TLSConfig: tlsConf, StatelessResetKey: resetKey,
		// Retry (source-address validation) while connections pile up either
		// before the TLS handshake completes or after it, before authentication.
		RequireRetry: s.tun.RequireRetry, RetryAbove: 32,
	})
	if err != nil {
		if tl != nil && cfg.TCPListener == nil {
			tl.Close()
		}
		s.closeSockets()
		return nil, fmt.Errorf("relay: quic listen: %w", err)
	}
	s.lns = append(s.lns, qln)
	if tl == nil {
		if tl, err = net.Listen("tcp", s.pc.LocalAddr().String()); err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("relay: listen on TCP %s (the fallback for agents whose UDP is blocked): %w", s.pc.LocalAddr(), err)
		}
	}
	tln, err := tcptransport.Listen(tcptransport.ListenConfig{Listener: tl, TLSConfig: tlsConf})
	if err != nil {
		tl.Close()
		s.closeSockets()
		return nil, fmt.Errorf("relay: tcp listen: %w", err)
	}
	s.lns = append(s.lns, tln)
	if w := quictransport.TakeBufferWarning(); w != "" {
		s.log.Warn(w)
	}
	if s.adm, err = s.listenAdmin(); err != nil {
		s.closeSockets()
		return nil, err
	}
	return s, nil
}

// bindBoth binds UDP on addr and, unless tl is given, TCP on the same port
// number. With port 0 (tests, the demo) it retries until a port is free for both.
func bindBoth(addr string, tl net.Listener) (net.PacketConn, net.Listener, error) {
	for try := 0; ; try++ {
		pc, err := quictransport.ListenUDP("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("relay: listen %s: %w", addr, err)
		}
		if tl != nil {
			return pc, tl, nil
		}
		t, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, t, nil
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" || try >= 20 {
			return nil, nil, fmt.Errorf("relay: listen on TCP %s (the fallback for agents whose UDP is blocked): %w", pc.LocalAddr(), err)
		}
	}
}

func (s *Server) closeSockets() {
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.ownPC {
		s.pc.Close()
	}
}

// Addr is the UDP address agents connect to.
func (s *Server) Addr() net.Addr { return s.pc.LocalAddr() }

// TCPAddr is the TCP address agents connect to when UDP is blocked.
func (s *Server) TCPAddr() net.Addr { return s.lns[1].Addr() }

// Run accepts agents until ctx ends, then shuts down gracefully: service listeners
// stop accepting, open viewer connections get ShutdownTimeout to finish, tunnels close.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("relay listening", "udp", s.Addr().String(), "tcp", s.TCPAddr().String(), "agents", len(s.cfg.Relay.Agents))
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.runCtx = sctx
	var wg sync.WaitGroup
	if s.adm != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.adm.Run(sctx); err != nil {
				s.log.Warn("admin endpoint stopped", "err", err)
			}
		}()
	}
	for _, ln := range s.lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.tun.Serve(sctx, ln); err != nil {
				s.log.Error("agent listener stopped", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
	<-ctx.Done()
	s.mu.Lock()
	s.closing = true
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	// New agents are refused from here on (onConnect sees closing). The agent
	// listeners stay open until the sessions have shut down: closing the QUIC
	// listener would close its connections, cutting viewers mid-transfer.
	var swg sync.WaitGroup
	for _, ss := range sessions {
		swg.Add(1)
		go func() {
			defer swg.Done()
			ss.shutdown(s.cfg.ShutdownTimeout)
		}()
	}
	swg.Wait()
	cancel()
	wg.Wait()
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.ownPC {
		s.pc.Close()
	}
	s.log.Info("relay stopped")
	return nil
}

// Sessions lists the names of connected agents.
func (s *Server) Sessions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.sessions))
	for n := range s.sessions {
		names = append(names, n)
	}
	return names
}
