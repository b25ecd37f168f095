package wg

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"github.com/porthole-dev/porthole/internal/gateway"
)

// listener is one address:port inside the tunnel.
type listener struct {
	d       *Device
	ln      *gonet.TCPListener
	svc     string
	serve   ServeFunc
	viewers []string // nil: every viewer
}

// listen opens every service's listeners inside the tunnel.
func (d *Device) listen() error {
	for _, s := range d.cfg.Services {
		if s.Port == 0 || s.Serve == nil {
			return errors.New("wg: service " + s.Name + ": Port and Serve are required")
		}
		if err := d.listenOne(netip.AddrPortFrom(d.cfg.Address.Addr(), s.Port), s.Name, s.Serve, nil); err != nil {
			return err
		}
		if s.ServeLAN != nil && s.LAN.IsValid() {
			lan := netip.AddrPortFrom(s.LAN.Addr().Unmap(), s.LAN.Port())
			if err := d.listenOne(lan, s.Name, s.ServeLAN, s.Viewers); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *Device) listenOne(at netip.AddrPort, svc string, serve ServeFunc, viewers []string) error {
	for _, l := range d.lns {
		if l.ln.Addr().String() == net.TCPAddrFromAddrPort(at).String() {
			if l.svc == svc {
				return nil // two services share a target: the first serves it
			}
			d.log.Warn("two services share a LAN address inside the tunnel; the first one serves it", "addr", at, "serves", l.svc, "not", svc)
			return nil
		}
	}
	ln, err := d.tnet.ListenTCPAddrPort(at)
	if err != nil {
		return errors.New("wg: service " + svc + ": listen inside the tunnel on " + at.String() + ": " + err.Error())
	}
	d.lns = append(d.lns, &listener{d: d, ln: ln, svc: svc, serve: serve, viewers: viewers})
	return nil
}

// acceptLoop accepts until the listener closes, each connection in its own goroutine.
func (l *listener) acceptLoop(ctx context.Context) {
	d := l.d
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		tc := c.(*gonet.TCPConn)
		ra, _ := tc.RemoteAddr().(*net.TCPAddr)
		if ra == nil {
			tc.Close()
			continue
		}
		src := netip.AddrPortFrom(ra.AddrPort().Addr().Unmap(), ra.AddrPort().Port())
		pc, ok := d.track(tc, src.Addr(), l.viewers)
		if !ok {
			d.ctr.refused.Add(1)
			tc.Close()
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer d.untrack(pc)
			l.serve(ctx, pc, src)
		}()
	}
}

// track registers a connection from peer address ip, whose viewer must be
// among viewers (nil: any); false when no peer has ip (revoked meanwhile).
func (d *Device) track(tc *gonet.TCPConn, ip netip.Addr, viewers []string) (*peerConn, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.byIP[ip]
	if !ok || d.ctx.Err() != nil || (viewers != nil && !slices.Contains(viewers, p.Viewer)) {
		return nil, false
	}
	pc := &peerConn{TCPConn: tc, peer: ip, viewer: p.Viewer}
	d.conns[pc] = p.Viewer
	return pc, true
}

func (d *Device) untrack(pc *peerConn) {
	pc.Close()
	d.mu.Lock()
	delete(d.conns, pc)
	d.mu.Unlock()
}

// peerConn is a connection inside the tunnel: the viewer is known by the
// peer's key, which the gateway takes for the viewer's login.
type peerConn struct {
	*gonet.TCPConn
	peer   netip.Addr
	viewer string
	once   sync.Once
}

var (
	_ gateway.Authenticator = (*peerConn)(nil)
	_ gateway.Conn          = (*peerConn)(nil)
)

func (c *peerConn) AuthenticatedViewer() string { return c.viewer }

// Close closes once: SetPeers and the serving goroutine may both close it.
func (c *peerConn) Close() error {
	var err error
	c.once.Do(func() { err = c.TCPConn.Close() })
	return err
}

func sortPeers(ps []PeerStatus) {
	slices.SortFunc(ps, func(a, b PeerStatus) int {
		return strings.Compare(a.Name+"\x00"+a.PublicKey, b.Name+"\x00"+b.PublicKey)
	})
}
