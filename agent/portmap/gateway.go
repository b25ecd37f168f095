package portmap

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/jackpal/gateway"
)

// defaultGateway finds the default gateway with jackpal/gateway.
func defaultGateway() (netip.Addr, error) {
	ip, err := gateway.DiscoverGateway()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %w", ErrNoGateway, err)
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, ErrNoGateway
	}
	return a.Unmap(), nil
}

// defaultLocalAddr returns the address (and its interface's name) this host
// uses to reach gw. A connected UDP socket sends nothing; the kernel just
// picks the route and source address.
func defaultLocalAddr(gw netip.Addr) (netip.Addr, string, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, 5351)))
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("route to gateway %s: %w", gw, err)
	}
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	conn.Close()
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil && pfx.Addr().Unmap() == local {
				return local, ifc.Name, nil
			}
		}
	}
	return local, "", nil
}

// defaultInContainer reports whether we run inside a Docker or Podman container.
func defaultInContainer() bool {
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

var dockerDefaultGateway = netip.AddrFrom4([4]byte{172, 17, 0, 1})

// looksLikeDockerBridge says whether a silent network is probably a Docker
// bridge: the default bridge's gateway, a bridge interface, or a container.
// There the "router" is the host, which answers no port-mapping protocol.
func looksLikeDockerBridge(gw netip.Addr, ifName string, inContainer bool) bool {
	return inContainer || gw == dockerDefaultGateway || ifName == "docker0" || strings.HasPrefix(ifName, "br-")
}
