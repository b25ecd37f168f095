package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/porthole-dev/porthole/tunnel"
)

// A one-box trial runs the relay and the agent on the same machine. Both then
// listen on every service port (the relay at viewer_bind, the agent's direct
// listener at direct.listen, both 0.0.0.0 by default), and whichever starts
// second finds the port taken. These helpers recognise that case and say what
// to do instead of a bare "address already in use".

// oneBoxFix is what to do about it, in words.
const oneBoxFix = "relay and agent on one machine both listen on each service port: for a trial on one box set direct: {enabled: false} " +
	"in agent.yaml (viewers come through the relay), or give them different addresses (direct.listen: this machine's LAN address, " +
	"the relay's viewer_bind: another one)"

// isLocalAddr reports whether addr is loopback or one of this machine's
// interface addresses.
func isLocalAddr(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr.IsLoopback() {
		return true
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range ifaddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == addr {
			return true
		}
	}
	return false
}

// relayIsLocal reports whether relay.address (host:port) names this machine.
// A hostname is looked up, briefly: this runs only after a bind failed.
func relayIsLocal(ctx context.Context, address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return isLocalAddr(ip)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if isLocalAddr(ip) {
			return true
		}
	}
	return false
}

// directListenError explains a direct listener that could not bind port.
func (a *Agent) directListenError(ctx context.Context, service string, port uint16, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) && a.ac.Relay != nil && relayIsLocal(ctx, a.ac.Relay.Address) {
		return fmt.Errorf("agent: direct listener for service %s: port %d is taken, most likely by porthole-relay on this machine (relay.address %s); %s: %w",
			service, port, a.ac.Relay.Address, oneBoxFix, err)
	}
	return fmt.Errorf("agent: direct listener: %w (is another program using the port? set direct.enabled: false to run relay-only)", err)
}

// oneBoxRefusals logs, once per service, when the relay on this machine
// refused a service because it cannot listen on its port while this agent's
// own direct listener holds it.
func (a *Agent) oneBoxRefusals(sess tunnel.Session) {
	if a.pm == nil || !isLocalAddr(sess.RelayAddr.Addr()) {
		return
	}
	for _, r := range sess.Results {
		if r.Accepted || !strings.Contains(r.Reason, "address already in use") {
			continue
		}
		if _, dup := a.oneBoxLogged.LoadOrStore(r.Name, true); dup {
			continue
		}
		a.log.Warn("the relay on this machine cannot listen on port "+strconv.Itoa(int(r.Port))+": this agent's direct listener holds it; "+oneBoxFix,
			"service", r.Name, "port", r.Port, "direct_listen", a.ac.Direct.Listen)
	}
}

// logViewerURLs logs, at start, what a viewer opens for each service.
func (a *Agent) logViewerURLs() {
	a.mu.Lock()
	host := a.publicHostLocked()
	a.mu.Unlock()
	for _, s := range a.ac.Services {
		if u := viewerURL(s, host); u != "" {
			a.log.Info("viewer URL", "service", s.Name, "url", u)
		} else if host != "" {
			a.log.Info("viewer address (the camera's own protocol)", "service", s.Name, "addr", net.JoinHostPort(host, strconv.Itoa(int(s.Port))))
		}
	}
}
