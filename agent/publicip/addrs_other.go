//go:build !linux

package publicip

import (
	"fmt"
	"net"
	"net/netip"
)

// LocalAddrs lists this host's addresses. Outside Linux the IPv6 state
// flags are unknown and reported false.
func LocalAddrs() ([]LocalAddr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []LocalAddr
	for _, ifc := range ifs {
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			p, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			out = append(out, LocalAddr{Addr: p.Addr(), PrefixLen: p.Bits(), Iface: ifc.Name, Index: ifc.Index})
		}
	}
	return out, nil
}
