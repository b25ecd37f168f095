package relay

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/porthole-dev/porthole/tunnel"
)

// session is the relay's record of one authenticated agent: the tunnel session
// and the service listeners it registered.
type session struct {
	srv  *Server
	name string
	ts   *tunnel.ServerSession
	log  *slog.Logger
	done chan struct{} // closed when the session's listeners are all closed

	mu        sync.Mutex // guards the fields below
	listeners map[uint16]*svcListener
	udp       *udpForwarder // made at the first UDP service; nil before
	closed    bool
	lnWG      sync.WaitGroup // one per running listener Serve
}

type svcListener struct {
	spec proto.Service
	ln   *gateway.Listener
}

var validServiceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// onConnect registers an authenticated session, replacing an older one of the
// same agent (whose listeners close before this one may open its own).
func (s *Server) onConnect(ts *tunnel.ServerSession) error {
	ss := &session{srv: s, name: ts.Name(), ts: ts, log: s.log.With("agent", ts.Name()),
		done: make(chan struct{}), listeners: map[uint16]*svcListener{}}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return errors.New("relay shutting down")
	}
	old := s.sessions[ss.name]
	s.sessions[ss.name] = ss
	s.mu.Unlock()
	if old != nil {
		ss.log.Info("new session replaces the previous one", "previous", old.ts.Observed().String())
		old.ts.Close(proto.CloseReplaced, "replaced by a newer session")
		old.close()
		<-old.done
	}
	return nil
}

// onDisconnect closes the session's listeners: new viewers are refused at once,
// and viewers still connected are reset as their streams fail with the tunnel.
func (s *Server) onDisconnect(ts *tunnel.ServerSession, err error) {
	ss := s.session(ts)
	if ss == nil {
		return
	}
	ss.close()
	<-ss.done
	s.mu.Lock()
	if s.sessions[ss.name] == ss {
		delete(s.sessions, ss.name)
	}
	s.mu.Unlock()
}

// session finds the relay's record of ts; nil once a newer session replaced it.
func (s *Server) session(ts *tunnel.ServerSession) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[ts.Name()]; ss != nil && ss.ts == ts {
		return ss
	}
	return nil
}

// register replaces the session's services with want, answering per service.
func (s *Server) register(ts *tunnel.ServerSession, want []proto.Service) []proto.ServiceResult {
	ss := s.session(ts)
	var res []proto.ServiceResult
	if ss == nil {
		for _, svc := range want {
			res = append(res, proto.ServiceResult{Name: svc.Name, Port: svc.Port, Reason: "session replaced"})
		}
		return res
	}
	return ss.register(want)
}

func (ss *session) register(want []proto.Service) []proto.ServiceResult {
	agentCfg := ss.srv.cfg.Relay.Agents[ss.name]
	var res []proto.ServiceResult
	keep := map[uint16]proto.Service{}    // TCP, by port
	keepUDP := map[uint16]proto.Service{} // UDP, by port
	seenName := map[string]bool{}
	var policies = map[uint16]gateway.Policy{}
	udpPolicies := map[uint16]gateway.Policy{}
	for _, svc := range want {
		r := proto.ServiceResult{Name: svc.Name, Port: svc.Port}
		pol, perr := gateway.ParsePolicy(svc.Allow)
		isUDP := svc.Proto == "udp"
		switch {
		case !validServiceName.MatchString(svc.Name):
			r.Reason = "invalid service name"
		case seenName[svc.Name]:
			r.Reason = "duplicate service name"
		case svc.Proto != "" && svc.Proto != "tcp" && !isUDP:
			r.Reason = fmt.Sprintf("protocol %q not supported (tcp or udp)", svc.Proto)
		case isUDP && agentCfg.UDPPorts.Hi == 0:
			r.Reason = fmt.Sprintf("UDP port %d: this agent has no udp_ports in relay.yaml", svc.Port)
		case isUDP && (svc.Port == 0 || !agentCfg.UDPPorts.Contains(svc.Port)):
			r.Reason = fmt.Sprintf("UDP port %d is outside this agent's udp_ports %s in relay.yaml", svc.Port, agentCfg.UDPPorts)
		case isUDP && keepUDP[svc.Port].Name != "":
			r.Reason = fmt.Sprintf("UDP port %d is already used by service %s", svc.Port, keepUDP[svc.Port].Name)
		case !isUDP && !agentCfg.Ports.Contains(svc.Port):
			r.Reason = fmt.Sprintf("port %d is outside this agent's range %d-%d in relay.yaml", svc.Port, agentCfg.Ports.Lo, agentCfg.Ports.Hi)
		case !isUDP && keep[svc.Port].Name != "":
			r.Reason = fmt.Sprintf("port %d is already used by service %s", svc.Port, keep[svc.Port].Name)
		case perr != nil:
			r.Reason = perr.Error()
		case isUDP:
			r.Accepted = true
			keepUDP[svc.Port] = svc
			udpPolicies[svc.Port] = pol
		default:
			r.Accepted = true
			keep[svc.Port] = svc
			policies[svc.Port] = pol
		}
		seenName[svc.Name] = true
		res = append(res, r)
	}
	ss.registerUDP(res, keepUDP, udpPolicies)

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
	for i, r := range res {
		if !r.Accepted {
			ss.log.Warn("service refused", "service", r.Name, "port", r.Port, "reason", r.Reason)
			continue
		}
		if keep[r.Port].Name != r.Name {
			continue // a UDP service
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
			Limiter: ss.srv.viewers, MaxConns: ss.srv.cfg.Relay.Limits.MaxConnsPerService,
			FirstByteTimeout: ss.srv.cfg.Relay.Limits.FirstByteTimeout,
		})
		if err != nil {
			res[i].Accepted = false
			res[i].Reason = fmt.Sprintf("relay cannot listen on port %d: %v", svc.Port, errors.Unwrap(err))
			ss.log.Warn("service refused", "service", svc.Name, "port", svc.Port, "reason", res[i].Reason)
			continue
		}
		ss.listeners[r.Port] = &svcListener{spec: svc, ln: ln}
		ss.lnWG.Add(1)
		go func() {
			defer ss.lnWG.Done()
			ln.Serve(ss.srv.runCtx)
		}()
		ss.log.Info("service exposed", "service", svc.Name, "port", svc.Port, "allow", strings.Join(svc.Allow, ","))
	}
	return res
}

// registerUDP opens and closes the session's UDP ports to match keep, marking
// in res the ports that could not be bound as refused.
func (ss *session) registerUDP(res []proto.ServiceResult, keep map[uint16]proto.Service, policies map[uint16]gateway.Policy) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	f := ss.udp
	if f == nil && len(keep) > 0 {
		f = newUDPForwarder(ss.srv, ss.ts, ss.log)
		ss.udp = f
		ss.srv.udp.Store(ss.ts, f)
	}
	ss.mu.Unlock()
	if f == nil {
		return
	}
	errs := f.set(keep, policies)
	for i, r := range res {
		svc, ok := keep[r.Port]
		if !r.Accepted || !ok || svc.Name != r.Name {
			continue
		}
		if err := errs[r.Port]; err != nil {
			res[i].Accepted = false
			res[i].Reason = fmt.Sprintf("relay cannot listen on UDP port %d: %v", r.Port, err)
			continue
		}
		ss.log.Info("WireGuard port forwarded", "service", svc.Name, "udp_port", svc.Port, "allow", strings.Join(svc.Allow, ","))
	}
}

func sameService(a, b proto.Service) bool {
	return a.Name == b.Name && a.Port == b.Port && a.Proto == b.Proto && strings.Join(a.Allow, ",") == strings.Join(b.Allow, ",")
}

// dialer opens a stream through the agent's tunnel for one viewer.
func (ss *session) dialer(service string) gateway.DialFunc {
	return func(ctx context.Context, viewer netip.AddrPort) (gateway.Conn, error) {
		return ss.ts.OpenStream(ctx, proto.StreamHeader{Kind: proto.StreamViewer, Service: service, Viewer: viewer.String()})
	}
}

// close stops the session's listeners; idempotent. done closes once their
// remaining connections are gone (at most a second later).
func (ss *session) close() {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	ls := ss.listeners
	ss.listeners = nil
	udp := ss.udp
	ss.mu.Unlock()
	for _, l := range ls {
		l.ln.Close()
	}
	if udp != nil {
		ss.srv.udp.Delete(ss.ts)
		udp.close()
	}
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
	ss.ts.Close(proto.CloseShuttingDown, "relay shutting down")
	ss.close()
}

// probeDial dials a probe target, but only the agent's own public address, at a
// port it may use, so an agent can't make the relay dial anything else (its own
// loopback, other hosts).
func (s *Server) probeDial(ctx context.Context, ts *tunnel.ServerSession, addr string) (net.Conn, error) {
	return s.dialProbe(ctx, ts, "tcp", addr)
}

// probeDialUDP is probeDial for the agent's WireGuard port: inside its udp_ports.
func (s *Server) probeDialUDP(ctx context.Context, ts *tunnel.ServerSession, addr string) (net.Conn, error) {
	return s.dialProbe(ctx, ts, "udp", addr)
}

func (s *Server) dialProbe(ctx context.Context, ts *tunnel.ServerSession, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bad probe address %q", addr)
	}
	if observed := ts.Observed().Addr(); ap.Addr().Unmap() != observed {
		return nil, fmt.Errorf("probe address %s is not the agent's address as the relay sees it (%s)", ap.Addr(), observed)
	}
	agent := s.cfg.Relay.Agents[ts.Name()]
	if network == "udp" {
		if ports := agent.UDPPorts; ports.Hi == 0 || !ports.Contains(ap.Port()) {
			return nil, fmt.Errorf("probe UDP port %d is outside this agent's udp_ports %s", ap.Port(), ports)
		}
	} else if ports := agent.Ports; !ports.Contains(ap.Port()) {
		return nil, fmt.Errorf("probe port %d is outside this agent's range %s", ap.Port(), ports)
	}
	c, err := s.cfg.ProbeDial(ctx, network, ap.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from the relay: %w", network, ap, err)
	}
	return c, nil
}
