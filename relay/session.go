package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/quic-go/quic-go"
)

// session is one authenticated agent connection.
type session struct {
	srv      *Server
	name     string
	conn     *quic.Conn
	ctrl     *quic.Stream
	exporter []byte
	log      *slog.Logger
	done     chan struct{} // closed when the session's listeners are all closed

	wmu sync.Mutex // serializes control-stream writes

	mu        sync.Mutex // guards the fields below
	listeners map[uint16]*svcListener
	closed    bool
	lnWG      sync.WaitGroup // one per running listener Serve
}

type svcListener struct {
	spec proto.Service
	ln   *gateway.Listener
}

var validServiceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func (s *Server) serveConn(ctx context.Context, conn *quic.Conn) {
	remote := conn.RemoteAddr().String()
	ss, err := s.authenticate(ctx, conn)
	if err != nil {
		s.log.Warn("agent refused", "remote", remote, "err", err)
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.CloseWithError(CodeShuttingDown, "relay shutting down")
		return
	}
	old := s.sessions[ss.name]
	s.sessions[ss.name] = ss
	s.mu.Unlock()
	if old != nil {
		ss.log.Info("new session replaces the previous one", "previous", old.conn.RemoteAddr().String())
		old.close(CodeReplaced, "replaced by a newer session")
		<-old.done
	}
	ss.log.Info("agent connected", "remote", remote)
	err = ss.serve(ctx)
	ss.close(CodeNormal, "")
	<-ss.done
	s.mu.Lock()
	if s.sessions[ss.name] == ss {
		delete(s.sessions, ss.name)
	}
	s.mu.Unlock()
	ss.log.Info("agent disconnected", "reason", describeClose(err))
}

// authenticate runs the handshake of the proto package doc: Hello, the relay's
// proof first, then the agent's proof, then Welcome.
func (s *Server) authenticate(ctx context.Context, conn *quic.Conn) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	fail := func(code quic.ApplicationErrorCode, msg string, err error) (*session, error) {
		conn.CloseWithError(code, msg)
		return nil, err
	}
	ctrl, err := conn.AcceptStream(ctx)
	if err != nil {
		return fail(CodeProtocol, "no control stream", fmt.Errorf("no control stream: %w", err))
	}
	deadline, _ := ctx.Deadline()
	ctrl.SetDeadline(deadline)
	m, err := proto.ReadMessage(ctrl)
	if err != nil {
		return fail(CodeProtocol, "bad hello", fmt.Errorf("reading hello: %w", err))
	}
	hello, ok := m.(*proto.Hello)
	if !ok {
		return fail(CodeProtocol, "expected hello", fmt.Errorf("expected hello, got %T", m))
	}
	if hello.Version != proto.Version {
		reason := fmt.Sprintf("protocol version %d not supported (relay speaks %d): upgrade the older side", hello.Version, proto.Version)
		proto.WriteMessage(ctrl, &proto.Refused{Reason: reason})
		return fail(CodeProtocol, "version", fmt.Errorf("agent %q: %s", hello.Name, reason))
	}
	agent, known := s.cfg.Relay.Agents[hello.Name]
	token := []byte(agent.Token)
	if !known {
		// Prove with a random key so unknown names look like wrong tokens.
		token = make([]byte, 32)
		rand.Read(token)
	}
	cs := conn.ConnectionState().TLS
	exporter, err := proto.Exporter(&cs)
	if err != nil {
		return fail(CodeProtocol, "exporter", err)
	}
	if err := proto.WriteMessage(ctrl, &proto.RelayProof{MAC: proto.RelayProofMAC(token, hello.Name, exporter)}); err != nil {
		return fail(CodeProtocol, "write", err)
	}
	m, err = proto.ReadMessage(ctrl)
	if err != nil {
		var appErr *quic.ApplicationError
		if errors.As(err, &appErr) && appErr.ErrorCode == CodeAuthFailed {
			if !known {
				return nil, fmt.Errorf("unknown agent name %q (add it under agents: in relay.yaml)", hello.Name)
			}
			return nil, fmt.Errorf("agent %q rejected the relay's proof: the tokens in relay.yaml and agent.yaml differ", hello.Name)
		}
		return fail(CodeProtocol, "no proof", fmt.Errorf("agent %q: reading proof: %w", hello.Name, err))
	}
	ap, ok := m.(*proto.AgentProof)
	if !ok {
		return fail(CodeProtocol, "expected proof", fmt.Errorf("agent %q: expected proof, got %T", hello.Name, m))
	}
	if !known || !proto.VerifyMAC(ap.MAC, proto.AgentProofMAC(token, hello.Name, exporter)) {
		proto.WriteMessage(ctrl, &proto.Refused{Reason: "authentication failed"})
		if !known {
			return fail(CodeAuthFailed, "authentication failed", fmt.Errorf("unknown agent name %q (add it under agents: in relay.yaml)", hello.Name))
		}
		return fail(CodeAuthFailed, "authentication failed", fmt.Errorf("agent %q: wrong token", hello.Name))
	}
	w := &proto.Welcome{Observed: conn.RemoteAddr().String(), HeartbeatMillis: int(s.cfg.Heartbeat / time.Millisecond)}
	if s.cfg.Relay.PublicIP.IsValid() {
		w.PublicIP = s.cfg.Relay.PublicIP.String()
	}
	if err := proto.WriteMessage(ctrl, w); err != nil {
		return fail(CodeProtocol, "write", err)
	}
	ctrl.SetDeadline(time.Time{})
	return &session{
		srv: s, name: hello.Name, conn: conn, ctrl: ctrl, exporter: exporter,
		log:       s.log.With("agent", hello.Name),
		done:      make(chan struct{}),
		listeners: map[uint16]*svcListener{},
	}, nil
}

func describeClose(err error) string {
	var appErr *quic.ApplicationError
	var idle *quic.IdleTimeoutError
	var reset *quic.StatelessResetError
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "closed"
	case errors.As(err, &appErr):
		if appErr.ErrorMessage != "" {
			return appErr.ErrorMessage
		}
		return "closed by peer"
	case errors.As(err, &idle):
		return "no packets from the agent for the idle timeout"
	case errors.As(err, &reset):
		return "stateless reset"
	}
	return err.Error()
}

func (ss *session) send(m proto.Message) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	return proto.WriteMessage(ss.ctrl, m)
}

// serve reads control messages until the connection ends.
func (ss *session) serve(ctx context.Context) error {
	var probes sync.WaitGroup
	defer probes.Wait()
	for {
		m, err := proto.ReadMessage(ss.ctrl)
		if err != nil {
			if ctxErr := ss.conn.Context().Err(); ctxErr != nil {
				return context.Cause(ss.conn.Context())
			}
			if !errors.Is(err, io.EOF) {
				ss.log.Warn("bad control message; closing the session", "err", err)
			}
			return err
		}
		switch m := m.(type) {
		case *proto.Ping:
			err = ss.send(&proto.Pong{Seq: m.Seq, Observed: ss.conn.RemoteAddr().String()})
		case *proto.Register:
			err = ss.send(ss.register(ctx, m.Services))
		case *proto.ProbeRequest:
			probes.Add(1)
			go func() {
				defer probes.Done()
				if err := ss.send(ss.probe(ctx, m)); err != nil {
					ss.log.Debug("sending probe result", "err", err)
				}
			}()
		default:
			ss.log.Warn("unexpected control message ignored", "type", fmt.Sprintf("%T", m))
		}
		if err != nil {
			return err
		}
	}
}

// register replaces the session's services with want, answering per service.
func (ss *session) register(ctx context.Context, want []proto.Service) *proto.Registered {
	agentCfg := ss.srv.cfg.Relay.Agents[ss.name]
	res := &proto.Registered{}
	keep := map[uint16]proto.Service{}
	seenName := map[string]bool{}
	var policies = map[uint16]gateway.Policy{}
	for _, svc := range want {
		r := proto.ServiceResult{Name: svc.Name, Port: svc.Port}
		pol, perr := gateway.ParsePolicy(svc.Allow)
		switch {
		case !validServiceName.MatchString(svc.Name):
			r.Reason = "invalid service name"
		case seenName[svc.Name]:
			r.Reason = "duplicate service name"
		case svc.Proto != "" && svc.Proto != "tcp":
			r.Reason = fmt.Sprintf("protocol %q not supported (tcp only)", svc.Proto)
		case !agentCfg.Ports.Contains(svc.Port):
			r.Reason = fmt.Sprintf("port %d is outside this agent's range %d-%d in relay.yaml", svc.Port, agentCfg.Ports.Lo, agentCfg.Ports.Hi)
		case keep[svc.Port].Name != "":
			r.Reason = fmt.Sprintf("port %d is already used by service %s", svc.Port, keep[svc.Port].Name)
		case perr != nil:
			r.Reason = perr.Error()
		default:
			r.Accepted = true
			keep[svc.Port] = svc
			policies[svc.Port] = pol
		}
		seenName[svc.Name] = true
		res.Results = append(res.Results, r)
	}

	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return res
	}
	for port, l := range ss.listeners {
		if svc, ok := keep[port]; !ok || !sameService(svc, l.spec) {
			l.ln.Close()
			delete(ss.listeners, port)
		}
	}
	for i, r := range res.Results {
		if !r.Accepted {
			ss.log.Warn("service refused", "service", r.Name, "port", r.Port, "reason", r.Reason)
			continue
		}
		if _, ok := ss.listeners[r.Port]; ok {
			continue
		}
		svc := keep[r.Port]
		ln, err := gateway.Listen(gateway.Config{
			Service: ss.name + "/" + svc.Name,
			Addr:    net.JoinHostPort(ss.srv.cfg.Relay.ViewerBind, strconv.Itoa(int(svc.Port))),
			Policy:  policies[r.Port],
			Dial:    ss.dialer(svc.Name),
			Logger:  ss.srv.log,
		})
		if err != nil {
			res.Results[i].Accepted = false
			res.Results[i].Reason = fmt.Sprintf("relay cannot listen on port %d: %v", svc.Port, errors.Unwrap(err))
			ss.log.Warn("service refused", "service", svc.Name, "port", svc.Port, "reason", res.Results[i].Reason)
			continue
		}
		ss.listeners[r.Port] = &svcListener{spec: svc, ln: ln}
		ss.lnWG.Add(1)
		go func() {
			defer ss.lnWG.Done()
			ln.Serve(ctx)
		}()
		ss.log.Info("service exposed", "service", svc.Name, "port", svc.Port, "allow", strings.Join(svc.Allow, ","))
	}
	return res
}

func sameService(a, b proto.Service) bool {
	return a.Name == b.Name && a.Port == b.Port && a.Proto == b.Proto && strings.Join(a.Allow, ",") == strings.Join(b.Allow, ",")
}

// dialer opens a stream through the agent's tunnel for one viewer.
func (ss *session) dialer(service string) gateway.DialFunc {
	return func(ctx context.Context, viewer netip.AddrPort) (gateway.Conn, error) {
		st, err := ss.conn.OpenStreamSync(ctx)
		if err != nil {
			return nil, fmt.Errorf("agent %s offline: %w", ss.name, err)
		}
		hdr, err := proto.StreamHeader{Kind: proto.StreamViewer, Service: service, Viewer: viewer.String()}.MarshalBinary()
		if err == nil {
			_, err = st.Write(hdr)
		}
		if err != nil {
			st.CancelWrite(gateway.StreamAborted)
			st.CancelRead(gateway.StreamAborted)
			return nil, err
		}
		return gateway.QUICStream(st), nil
	}
}

// close stops the session's listeners and its connection; idempotent.
func (ss *session) close(code quic.ApplicationErrorCode, msg string) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	ls := ss.listeners
	ss.listeners = nil
	ss.mu.Unlock()
	for _, l := range ls {
		l.ln.Close()
	}
	ss.conn.CloseWithError(code, msg)
	go func() {
		ss.lnWG.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, l := range ls {
			l.ln.Shutdown(ctx)
		}
		close(ss.done)
	}()
}

// shutdown is the graceful variant: stop accepting viewers, give open ones up to
// timeout, then close the tunnel.
func (ss *session) shutdown(timeout time.Duration) {
	ss.mu.Lock()
	ls := make([]*svcListener, 0, len(ss.listeners))
	for _, l := range ss.listeners {
		ls = append(ls, l)
	}
	ss.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, l := range ls {
		l.ln.Shutdown(ctx)
	}
	ss.close(CodeShuttingDown, "relay shutting down")
}

// probe verifies a direct path: dial the agent's public address from here and
// check that the listener there answers this session's challenge.
func (ss *session) probe(ctx context.Context, req *proto.ProbeRequest) *proto.ProbeResult {
	res := &proto.ProbeResult{ID: req.ID}
	start := time.Now()
	err := ss.runProbe(ctx, req.Addr)
	res.Millis = int(time.Since(start) / time.Millisecond)
	if err != nil {
		res.Reason = err.Error()
		ss.log.Info("direct path probe failed", "addr", req.Addr, "service", req.Service, "err", err)
	} else {
		res.OK = true
		ss.log.Info("direct path verified", "addr", req.Addr, "service", req.Service, "ms", res.Millis)
	}
	return res
}

func (ss *session) runProbe(ctx context.Context, addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("bad probe address %q", addr)
	}
	// Probe only the agent's own public address, at a port it may use, so an agent
	// can't make the relay dial anything else (its own loopback, other hosts).
	observed := ss.conn.RemoteAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	if ap.Addr().Unmap() != observed {
		return fmt.Errorf("probe address %s is not the agent's address as the relay sees it (%s)", ap.Addr(), observed)
	}
	if ports := ss.srv.cfg.Relay.Agents[ss.name].Ports; !ports.Contains(ap.Port()) {
		return fmt.Errorf("probe port %d is outside this agent's range %s", ap.Port(), ports)
	}
	ctx, cancel := context.WithTimeout(ctx, ss.srv.cfg.ProbeTimeout)
	defer cancel()
	c, err := ss.srv.cfg.ProbeDial(ctx, "tcp", ap.String())
	if err != nil {
		return fmt.Errorf("dial %s from the relay: %w", ap, err)
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
		return fmt.Errorf("no answer to the challenge from %s (something else answers there, or the mapping leads elsewhere): %w", ap, err)
	}
	if string(got) != want {
		return fmt.Errorf("wrong answer to the challenge from %s: not this agent", ap)
	}
	return nil
}
