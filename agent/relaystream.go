package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel"
	"github.com/porthole-dev/porthole/tunnel/transport"
)

// relayServices is what the tunnel registers at the relay, and the handler for
// the viewer streams the relay opens: each is checked against the service's own
// access rule here too (not only at the relay), then spliced to the camera.
func (a *Agent) relayServices() ([]tunnel.Service, tunnel.StreamHandler, error) {
	type target struct {
		addr string
		pol  gateway.Policy
	}
	var svcs []tunnel.Service
	targets := map[string]target{}
	for _, s := range a.ac.Services {
		pol, err := gateway.NewPolicy(s.Allow, s.AllowAny)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: service %s: %w", s.Name, err)
		}
		svcs = append(svcs, tunnel.Service{Name: s.Name, Port: s.Port, Allow: pol.Strings()})
		targets[s.Name] = target{s.Target, pol}
	}
	log := a.log.With("part", "tunnel")
	handler := func(ctx context.Context, hdr proto.StreamHeader, st transport.Stream) {
		svc, ok := targets[hdr.Service]
		viewer, err := netip.ParseAddrPort(hdr.Viewer)
		if !ok || err != nil || !svc.pol.Allows(viewer.Addr()) {
			log.Warn("stream refused by the service's allow rule", "service", hdr.Service, "viewer", hdr.Viewer)
			st.Abort(uint64(proto.StreamRefused))
			return
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lan, err := a.cfg.DialLAN(dctx, "tcp", svc.addr)
		cancel()
		if err != nil {
			log.Warn("camera unreachable", "service", hdr.Service, "target", svc.addr, "err", err)
			st.Abort(uint64(proto.StreamRefused))
			return
		}
		lc, ok := lan.(gateway.Conn)
		if !ok {
			lan.Close()
			st.Abort(uint64(proto.StreamRefused))
			return
		}
		if tc, ok := lan.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		gateway.Splice(st, lc)
	}
	return svcs, handler, nil
}
