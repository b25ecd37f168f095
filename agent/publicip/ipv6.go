package publicip

import (
	"net/netip"
)

// LocalAddr is one address configured on this host.
type LocalAddr struct {
	Addr      netip.Addr
	PrefixLen int
	// Iface is the interface name, Index its index.
	Iface string
	Index int
	// IPv6 address state (Linux IFA_F_* flags; false where unknown).
	// Temporary: an RFC 8981 privacy address that rotates. Deprecated: its
	// preferred lifetime is over. Tentative: duplicate address detection
	// has not finished (or failed).
	Temporary, Deprecated, Tentative bool
}

// Stable reports whether a is fit to publish: not temporary, deprecated or tentative.
func (a LocalAddr) Stable() bool { return !a.Temporary && !a.Deprecated && !a.Tentative }

// PickIPv6 returns this host's stable global IPv6 address inside within
// (any prefix if within is zero): not temporary, not deprecated, not
// tentative, and Valid. Among several, the lowest address wins, so the
// choice doesn't flip-flop between checks.
func PickIPv6(addrs []LocalAddr, within netip.Prefix, accept []netip.Prefix) (netip.Addr, bool) {
	var best netip.Addr
	for _, la := range addrs {
		a := la.Addr
		if !a.Is6() || a.Is4In6() || !la.Stable() {
			continue
		}
		if within.IsValid() && !within.Contains(a) {
			continue
		}
		if Valid(a, accept) != nil {
			continue
		}
		if !best.IsValid() || a.Less(best) {
			best = a
		}
	}
	return best, best.IsValid()
}

// WithInterfaceID returns the address made of the /64 prefix of prefix and
// the low 64 bits of id: a device's own address in the home's network.
// Both must be IPv6; otherwise the result is the zero Addr.
func WithInterfaceID(prefix, id netip.Addr) netip.Addr {
	if !prefix.Is6() || !id.Is6() || prefix.Is4In6() {
		return netip.Addr{}
	}
	p, i := prefix.As16(), id.As16()
	copy(p[8:], i[8:])
	return netip.AddrFrom16(p)
}
