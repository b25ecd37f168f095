// Package relay is porthole-relay, the daemon on a VPS: it accepts agents' QUIC
// tunnels, authenticates them by token, opens a TCP listener for each service an
// agent registers (inside that agent's port range), checks viewers against the
// service's access rule and carries each viewer connection through a QUIC stream to
// the agent. It also probes agents' direct paths from outside on request.
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
	"github.com/quic-go/quic-go"
)

// Application error codes on a QUIC connection closed by either side.
const (
	CodeNormal       quic.ApplicationErrorCode = 0
	CodeAuthFailed   quic.ApplicationErrorCode = 1
	CodeReplaced     quic.ApplicationErrorCode = 2
	CodeShuttingDown quic.ApplicationErrorCode = 3
	CodeProtocol     quic.ApplicationErrorCode = 4
)

// Config configures a relay Server.
type Config struct {
	// Relay is the loaded relay.yaml. Required.
	Relay *config.Relay
	// Logger receives the relay's log. Nil discards.
	Logger *slog.Logger
	// PacketConn is the UDP socket agents connect to; nil binds Relay.Listen.
	PacketConn net.PacketConn
	// HandshakeTimeout bounds an agent's authentication. Zero means 10s.
	HandshakeTimeout time.Duration
	// Heartbeat is the interval agents are told to ping at. Zero means 1s: after a
	// relay restart the agent's next ping draws a stateless reset, so this bounds
	// how long a restarted relay waits for its agents (about 100 bytes/s per agent).
	Heartbeat time.Duration
	// ShutdownTimeout is how long open viewer connections may finish on shutdown. Zero means 5s.
	ShutdownTimeout time.Duration
	// ProbeTimeout bounds one reachability probe. Zero means 5s.
	ProbeTimeout time.Duration
	// ProbeDial dials a probe target; nil uses net.Dialer.
	ProbeDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Server is a running relay.
type Server struct {
	cfg Config
	log *slog.Logger
	pc  net.PacketConn
	tr  *quic.Transport
	ln  *quic.Listener
	// viewers caps viewer connections across every agent's service listeners.
	viewers *gateway.Limiter
	adm     *admin.Server // admin endpoint; nil when off

	started time.Time

	wg       sync.WaitGroup // one per agent connection
	mu       sync.Mutex     // guards the fields below
	sessions map[string]*session
	closing  bool
}

// QUICConfig is the relay's QUIC configuration. Exported for tests and benchmarks.
func QUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           5 * time.Second,
		MaxIdleTimeout:                 30 * time.Second,
		MaxIncomingStreams:             4, // agents open only the control stream
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		EnableDatagrams:                true,
	}
}

// New loads or creates the relay's state (TLS key, stateless-reset key) and binds its
// UDP socket. Run then serves.
func New(cfg Config) (*Server, error) {
	if cfg.Relay == nil {
		return nil, errors.New("relay: Config.Relay is required")
	}
	rc := cfg.Relay
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 5 * time.Second
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
	pc := cfg.PacketConn
	if pc == nil {
		pc, err = net.ListenPacket("udp", rc.Listen)
		if err != nil {
			return nil, fmt.Errorf("relay: listen %s: %w", rc.Listen, err)
		}
	}
	tr := &quic.Transport{Conn: pc, StatelessResetKey: resetKey}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{proto.ALPN},
		MinVersion:   tls.VersionTLS13,
	}
	ln, err := tr.Listen(tlsConf, QUICConfig())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("relay: quic listen: %w", err)
	}
	lim := rc.Limits
	viewers := gateway.NewLimiter(gateway.Limits{MaxConns: lim.MaxConns, MaxConnsPerSource: lim.MaxConnsPerSource, MaxPendingPerSource: lim.MaxPendingPerSource})
	s := &Server{cfg: cfg, log: cfg.Logger, pc: pc, tr: tr, ln: ln, viewers: viewers, sessions: map[string]*session{}, started: time.Now()}
	if s.adm, err = s.listenAdmin(); err != nil {
		ln.Close()
		pc.Close()
		return nil, err
	}
	return s, nil
}

// Addr is the UDP address agents connect to.
func (s *Server) Addr() net.Addr { return s.pc.LocalAddr() }

// Run accepts agents until ctx ends, then shuts down gracefully: service listeners
// stop accepting, open viewer connections get ShutdownTimeout to finish, tunnels close.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("relay listening", "udp", s.Addr().String(), "agents", len(s.cfg.Relay.Agents))
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if s.adm != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.adm.Run(sctx); err != nil {
				s.log.Warn("admin endpoint stopped", "err", err)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		s.closing = true
		sessions := make([]*session, 0, len(s.sessions))
		for _, ss := range s.sessions {
			sessions = append(sessions, ss)
		}
		s.mu.Unlock()
		s.ln.Close()
		var wg sync.WaitGroup
		for _, ss := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ss.shutdown(s.cfg.ShutdownTimeout)
			}()
		}
		wg.Wait()
		cancel()
	}()
	for {
		conn, err := s.ln.Accept(sctx)
		if err != nil {
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(sctx, conn)
		}()
	}
	<-sctx.Done()
	s.wg.Wait()
	s.tr.Close()
	s.pc.Close()
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
