package agent

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// newLimiter is the agent's viewer Limiter from limits:, shared by every
// listener of the agent (direct and relayed), so the per-source and total caps
// count a viewer's connections on both paths together.
func newLimiter(lim config.Limits) *gateway.Limiter {
	return gateway.NewLimiter(gateway.Limits{MaxConns: lim.MaxConns, MaxConnsPerSource: lim.MaxConnsPerSource,
		MaxPendingPerSource: lim.MaxPendingPerSource})
}

// gatewayConfig is the gateway configuration of service s, the same for its
// direct listener and for its relayed viewers: access rule, handler, limits and
// the camera dial. part names the path in the logs.
func (a *Agent) gatewayConfig(s config.Service, part string) (gateway.Config, error) {
	pol, err := gateway.NewPolicy(s.Allow, s.AllowAny)
	if err != nil {
		return gateway.Config{}, fmt.Errorf("agent: service %s: %w", s.Name, err)
	}
	lim := a.ac.Limits
	cfg := gateway.Config{
		Service: s.Name,
		Policy:  pol,
		Dial:    a.dialTarget(s.Name, s.Target),
		Logger:  a.log.With("part", part),
		Limiter: a.viewers, MaxConns: lim.MaxConnsPerService,
		FirstByteTimeout: cmp.Or(s.FirstByteTimeout, lim.FirstByteTimeout),
	}
	if a.web != nil {
		a.web.gatewayConfig(s, &cfg)
	}
	return cfg, nil
}

// dialTarget is the backend Dialer of a service: its camera on the LAN. The
// connection is returned as dialed, so that a *net.TCPConn on both sides
// keeps the kernel splice.
func (a *Agent) dialTarget(service, target string) gateway.DialFunc {
	return func(ctx context.Context, _ netip.AddrPort) (gateway.Conn, error) {
		c, err := a.cfg.DialLAN(ctx, "tcp", target)
		if err != nil {
			a.log.Warn("camera unreachable", "service", service, "target", target, "err", err)
			return nil, err
		}
		gc, ok := c.(gateway.Conn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("dial %s: not a TCP connection", target)
		}
		return gc, nil
	}
}

// relayServices is what the tunnel registers at the relay, and the handler for
// the viewer streams the relay opens. Every stream goes through the service's
// own gateway pipeline, as a direct viewer does: the agent's limits (keyed by
// the viewer address the relay saw), the access rule (checked here too, not
// only at the relay), the service kind's handler and the byte counters. One
// socketless gateway.Listener per service serves them, beside the direct one,
// so that status can tell the two paths apart.
func (a *Agent) relayServices() ([]tunnel.Service, tunnel.StreamHandler, error) {
	var svcs []tunnel.Service
	gws := make(map[string]*gateway.Listener, len(a.ac.Services))
	for _, s := range a.ac.Services {
		cfg, err := a.gatewayConfig(s, "relayed")
		if err != nil {
			return nil, nil, err
		}
		l, err := gateway.New(cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: service %s: %w", s.Name, err)
		}
		gws[s.Name] = l
		a.relayed = append(a.relayed, l)
		svcs = append(svcs, tunnel.Service{Name: s.Name, Port: s.Port, Allow: cfg.Policy.Strings()})
	}
	if p := a.cfg.WireGuardPort; p != 0 {
		// WireGuard authenticates every packet itself: any phone may reach it.
		svcs = append(svcs, tunnel.Service{Name: WireGuardService, Port: p, Proto: "udp", Allow: []string{"any"}})
	}
	log := a.log.With("part", "tunnel")
	handler := func(ctx context.Context, hdr proto.StreamHeader, st transport.Stream) {
		l := gws[hdr.Service]
		viewer, err := netip.ParseAddrPort(hdr.Viewer)
		if l == nil || err != nil {
			// The tunnel checks the name against the registration; a viewer
			// address that doesn't parse is a relay bug, not a viewer.
			log.Warn("viewer stream refused: bad header", "service", hdr.Service, "viewer", hdr.Viewer)
			st.Abort(uint64(proto.StreamRefused))
			return
		}
		viewer = netip.AddrPortFrom(viewer.Addr().Unmap(), viewer.Port())
		l.ServeConn(ctx, newStreamConn(st, viewer), viewer)
	}
	return svcs, handler, nil
}

// streamConn is a viewer stream through the tunnel as the gateway's net.Conn:
// the viewer's address (from the stream header) as RemoteAddr, deadlines and
// CloseWrite (half-close) passed through, and a refusal that aborts the stream
// with proto.StreamRefused so that the relay resets the viewer. Read and Write
// are the stream's own: nothing is copied or allocated per call.
type streamConn struct {
	transport.Stream
	remote net.Addr
}

var (
	_ gateway.Conn     = (*streamConn)(nil)
	_ gateway.Refuser  = (*streamConn)(nil)
	_ net.Conn         = (*streamConn)(nil)
	_ transport.Stream = (*streamConn)(nil)
)

func newStreamConn(st transport.Stream, viewer netip.AddrPort) *streamConn {
	return &streamConn{Stream: st, remote: net.TCPAddrFromAddrPort(viewer)}
}

// tunnelAddr is the local end of every viewer stream: the tunnel, not a socket.
type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "porthole-tunnel" }
func (tunnelAddr) String() string  { return "tunnel" }

func (c *streamConn) LocalAddr() net.Addr  { return tunnelAddr{} }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// Refuse aborts the stream with proto.StreamRefused: the relay resets the
// viewer, who can tell it from the end of a stream.
func (c *streamConn) Refuse() { c.Stream.Abort(uint64(proto.StreamRefused)) }
