package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"

	"github.com/porthole-dev/porthole/proto"
	"github.com/porthole-dev/porthole/tunnel/transport"
	"github.com/porthole-dev/porthole/tunnel/transport/quictransport"
	"github.com/porthole-dev/porthole/tunnel/transport/tcptransport"
)

// ClientTLS is the agent's TLS configuration for either transport. Trust comes
// from the token proofs bound to this connection (proto's channel binding), not
// from the relay's certificate, which may be self-signed.
func ClientTLS() *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true,
		NextProtos:         []string{proto.ALPN},
		MinVersion:         tls.VersionTLS13,
		ServerName:         "porthole-relay",
	}
}

// DialQUIC returns a DialFunc for QUIC that resolves the relay's name on every
// attempt (preferring IPv4) and dials from pc, or from a fresh UDP socket per
// attempt when pc is nil.
func DialQUIC(pc net.PacketConn) DialFunc {
	return func(ctx context.Context, addr string) (transport.Conn, error) {
		raddr, err := resolve(ctx, "udp", addr)
		if err != nil {
			return nil, err
		}
		return quictransport.Dial(ctx, pc, net.UDPAddrFromAddrPort(raddr), ClientTLS(), nil)
	}
}

// DialTCP returns a DialFunc for TLS over TCP (the fallback when UDP is
// blocked) that resolves the relay's name on every attempt, preferring IPv4.
func DialTCP() DialFunc {
	return func(ctx context.Context, addr string) (transport.Conn, error) {
		raddr, err := resolve(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return tcptransport.Dial(ctx, raddr.String(), ClientTLS(), nil)
	}
}

// resolve looks addr up, preferring IPv4: home IPv6 is often firewalled in odd
// ways, v4 is the safe default.
func resolve(ctx context.Context, network, addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay address %q: %w", addr, err)
	}
	p, err := net.DefaultResolver.LookupPort(ctx, network, port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay address %q: %w", addr, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolve relay %s: %w", host, err)
	}
	best := ips[0]
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			best = ip
			break
		}
	}
	return netip.AddrPortFrom(best.Unmap(), uint16(p)), nil
}
