package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/porthole-dev/porthole/agent/wg"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel"
)

// WireGuardConfig runs the agent's WireGuard endpoint (agent/wg). The
// integrator fills it from agent.yaml's wireguard: section and the invite
// store; nil = no WireGuard.
type WireGuardConfig struct {
	// PrivateKey is the agent's WireGuard key (secret).
	PrivateKey wg.Key
	// Port is the agent's own UDP port, the direct path's
	// (wireguard.listen_port, else wireguard.port).
	Port uint16
	// Address is the agent inside the tunnel with its subnet (wireguard.address).
	Address netip.Prefix
	// LANAddresses makes each service's LAN target answer inside the tunnel
	// too (wireguard.lan_addresses).
	LANAddresses bool
	// Peers are the phones at start.
	Peers []wg.Peer
	// Watch, if set, calls fn with the full peer list on every change until
	// ctx ends (the invite store's Watch); the device applies it at once.
	Watch func(ctx context.Context, fn func([]wg.Peer)) error
}

// tunnelRelay is the WireGuard device's relay leg: datagrams of the tunnel.
type tunnelRelay struct{ c *tunnel.Client }

func (r tunnelRelay) SendDatagram(flow uint32, pkt []byte) error {
	return r.c.SendDatagram(proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: flow}, pkt)
}

// SendDatagrams sends a burst to one flow in as few system calls as the
// tunnel allows (wg's batchRelay).
func (r tunnelRelay) SendDatagrams(flow uint32, pkts [][]byte) (int, error) {
	ds := make([]tunnel.Datagram, len(pkts))
	for i, p := range pkts {
		ds[i] = tunnel.Datagram{Header: proto.DatagramHeader{Kind: proto.DatagramWireGuard, Flow: flow}, Payload: p}
	}
	return r.c.SendDatagrams(ds)
}

// onDatagram hands the relay's WireGuard datagrams to the device (dropped
// while it is not running).
func (a *Agent) onDatagram(h proto.DatagramHeader, payload []byte) {
	if d := a.wgDev.Load(); d != nil && h.Kind == proto.DatagramWireGuard {
		d.DeliverRelay(h.Flow, payload)
	}
}

// startWireGuard starts the WireGuard device: every service answers at the
// tunnel address and its public port in plain, through its own gateway
// pipeline (limits, handler, counters) with the viewer known by the peer's
// key. The services' allow: rules are not applied inside the tunnel: the
// key is the admission, and the handlers still apply each service's viewers.
func (a *Agent) startWireGuard(ctx context.Context, run func(string, func(context.Context) error)) error {
	wc := a.cfg.WireGuard
	anyone, err := gateway.NewPolicy(nil, true)
	if err != nil {
		return err
	}
	var svcs []wg.Service
	for _, s := range a.ac.Services {
		gc, err := a.gatewayConfig(s, "wireguard")
		if err != nil {
			return err
		}
		gc.TLS, gc.Plain, gc.Intercept, gc.Policy = nil, nil, nil, anyone
		l, err := gateway.New(gc)
		if err != nil {
			return fmt.Errorf("agent: wireguard: service %s: %w", s.Name, err)
		}
		a.addWGListener(s.Name, l)
		svc := wg.Service{Name: s.Name, Port: s.Port, Serve: serveConn(l), Viewers: s.Viewers}
		if lan, err := netip.ParseAddrPort(s.Target); wc.LANAddresses && err == nil {
			lc := gc
			lc.Handler, lc.FirstByteTimeout = gateway.TCP{}, 0 // the camera's own protocol, as it is
			ll, err := gateway.New(lc)
			if err != nil {
				return fmt.Errorf("agent: wireguard: service %s: %w", s.Name, err)
			}
			a.addWGListener(s.Name, ll)
			svc.LAN, svc.ServeLAN = lan, serveConn(ll)
		} else if wc.LANAddresses {
			a.log.Warn("wireguard: lan_addresses: the service's target is not an IP address and port; it is not reachable at its LAN address inside the tunnel", "service", s.Name, "target", s.Target)
		}
		svcs = append(svcs, svc)
	}
	cfg := wg.Config{PrivateKey: wc.PrivateKey, ListenPort: wc.Port, Address: wc.Address, Peers: wc.Peers,
		Services: svcs, Logger: a.log.With("part", "wireguard")}
	if a.tun != nil {
		cfg.Relay = tunnelRelay{a.tun}
	}
	d, err := wg.New(cfg)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.wgDev.Store(d)
	run("wireguard", d.Run)
	if wc.Watch != nil {
		run("wireguard peers", func(ctx context.Context) error {
			return wc.Watch(ctx, func(peers []wg.Peer) {
				if err := d.SetPeers(peers); err != nil {
					a.log.Warn("wireguard: the new peer list was refused; the previous one stays", "err", err)
					return
				}
				a.log.Info("wireguard: peers reloaded", "peers", len(peers))
			})
		})
	}
	return nil
}

func (a *Agent) addWGListener(service string, l *gateway.Listener) {
	a.mu.Lock() // Status reads them
	defer a.mu.Unlock()
	if a.wgListeners == nil {
		a.wgListeners = map[string][]*gateway.Listener{}
	}
	a.wgListeners[service] = append(a.wgListeners[service], l)
}

func serveConn(l *gateway.Listener) wg.ServeFunc {
	return func(ctx context.Context, c net.Conn, viewer netip.AddrPort) { l.ServeConn(ctx, c, viewer) }
}
