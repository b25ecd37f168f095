package publicip

import "net/netip"

// NATKind classifies what stands between the router and the internet.
type NATKind uint8

// The NAT kinds.
const (
	// NATUnknown: the router's external address or the public address is unknown.
	NATUnknown NATKind = iota
	// NATNone: the router's external address is the public address; port
	// mappings on the router can make the home reachable directly.
	NATNone
	// NATCGNAT: the router's external address is in 100.64.0.0/10; the ISP
	// runs carrier-grade NAT and inbound connections can't reach the router.
	NATCGNAT
	// NATDouble: the router's external address is private or differs from
	// the public address; another NAT sits upstream.
	NATDouble
)

// String returns a short name for status output.
func (k NATKind) String() string {
	switch k {
	case NATNone:
		return "direct"
	case NATCGNAT:
		return "cgnat"
	case NATDouble:
		return "double-nat"
	}
	return "unknown"
}

// RelayOnly reports whether the direct path can't work and the relay path
// will be used.
func (k NATKind) RelayOnly() bool { return k == NATCGNAT || k == NATDouble }

// Explain returns one sentence for the log saying what k means for the user.
func (k NATKind) Explain() string {
	switch k {
	case NATNone:
		return "router's external address is the public address; the direct path can be used once verified from outside"
	case NATCGNAT:
		return "router's external address is in 100.64.0.0/10: the ISP uses carrier-grade NAT, router port mappings can't be reached from the internet; the relay path will be used"
	case NATDouble:
		return "router's external address is not the public address: another NAT sits in front of the router (double NAT), its port mappings can't be reached from the internet; the relay path will be used"
	}
	return "router's external address or the public address is unknown; the direct path is used only after the relay verifies it from outside"
}

// ClassifyNAT compares the router's external IPv4 address with the public
// address found by consensus. An address inside accept counts as public (labs).
func ClassifyNAT(routerExternal, public netip.Addr, accept []netip.Prefix) NATKind {
	if !routerExternal.IsValid() || routerExternal.IsUnspecified() {
		return NATUnknown // routers report 0.0.0.0 when they have no WAN address
	}
	err := Valid(routerExternal, accept)
	switch {
	case err != nil && IsCGNAT(routerExternal):
		return NATCGNAT
	case err != nil:
		return NATDouble
	case !public.IsValid():
		return NATUnknown
	case routerExternal.Unmap() == public.Unmap():
		return NATNone
	}
	return NATDouble
}
