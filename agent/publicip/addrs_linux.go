package publicip

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// LocalAddrs lists this host's addresses with their IPv6 state flags, read
// from the kernel over rtnetlink (RTM_GETADDR).
func LocalAddrs() ([]LocalAddr, error) {
	b, err := syscall.NetlinkRIB(unix.RTM_GETADDR, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("netlink RTM_GETADDR: %w", err)
	}
	addrs, err := parseAddrMessages(b)
	if err != nil {
		return nil, err
	}
	if ifs, err := net.Interfaces(); err == nil {
		names := make(map[int]string, len(ifs))
		for _, ifc := range ifs {
			names[ifc.Index] = ifc.Name
		}
		for i := range addrs {
			addrs[i].Iface = names[addrs[i].Index]
		}
	}
	return addrs, nil
}

// parseAddrMessages decodes RTM_NEWADDR messages (from the kernel).
func parseAddrMessages(b []byte) ([]LocalAddr, error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	var out []LocalAddr
	for i := range msgs {
		m := &msgs[i]
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return out, nil
		case unix.NLMSG_ERROR:
			return nil, fmt.Errorf("netlink: error reply")
		case unix.RTM_NEWADDR:
		default:
			continue
		}
		if len(m.Data) < unix.SizeofIfAddrmsg {
			continue
		}
		la, ok := parseIfAddr(m)
		if ok {
			out = append(out, la)
		}
	}
	return out, nil
}

// parseIfAddr decodes one ifaddrmsg and its attributes.
func parseIfAddr(m *syscall.NetlinkMessage) (LocalAddr, bool) {
	la := LocalAddr{
		PrefixLen: int(m.Data[1]),
		Index:     int(binary.NativeEndian.Uint32(m.Data[4:8])),
	}
	flags := uint32(m.Data[2])
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return la, false
	}
	var addr, local netip.Addr
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFA_ADDRESS:
			addr, _ = netip.AddrFromSlice(a.Value)
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(a.Value)
		case unix.IFA_FLAGS:
			if len(a.Value) >= 4 {
				flags = binary.NativeEndian.Uint32(a.Value)
			}
		}
	}
	// For IPv4 (and point-to-point links) IFA_LOCAL is our address and
	// IFA_ADDRESS the peer's.
	if local.IsValid() {
		addr = local
	}
	if !addr.IsValid() {
		return la, false
	}
	la.Addr = addr
	la.Temporary = flags&unix.IFA_F_TEMPORARY != 0
	la.Deprecated = flags&unix.IFA_F_DEPRECATED != 0
	la.Tentative = flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0
	return la, true
}
