package publicip

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrNotGlobal is wrapped by Valid's error: the address is not a global
// unicast address and must not be published.
var ErrNotGlobal = errors.New("not a global unicast address")

// cgnat is the shared address space of carrier-grade NAT (RFC 6598).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// special lists ranges that are never a home's public address, beyond what
// netip's predicates cover, with the reason logged.
var special = []struct {
	p      netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (0/8)"},
	{cgnat, "carrier-grade NAT (100.64/10)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments (192.0.0/24)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation (192.0.2/24)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking (198.18/15)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation (198.51.100/24)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation (203.0.113/24)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (240/4)"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped IPv6"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64 (64:ff9b::/96)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local NAT64 (64:ff9b:1::/48)"},
	{netip.MustParsePrefix("100::/64"), "discard-only (100::/64)"},
	{netip.MustParsePrefix("2001::/32"), "Teredo (2001::/32)"},
	{netip.MustParsePrefix("2001:10::/28"), "ORCHID (2001:10::/28)"},
	{netip.MustParsePrefix("2001:20::/28"), "ORCHIDv2 (2001:20::/28)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation (2001:db8::/32)"},
	{netip.MustParsePrefix("3fff::/20"), "documentation (3fff::/20)"},
	{netip.MustParsePrefix("5f00::/16"), "SRv6 SIDs (5f00::/16)"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (fec0::/10)"},
}

// globalV6 is where all global unicast IPv6 addresses live today.
var globalV6 = netip.MustParsePrefix("2000::/3")

// Valid returns nil when a may be published as a home's public address: a
// global unicast address. It rejects the unspecified, loopback, private
// (RFC 1918), ULA, link-local, multicast, CGNAT, documentation, benchmarking,
// reserved, IPv4-mapped, NAT64, Teredo and other special-purpose ranges, and
// IPv6 outside 2000::/3. An address inside one of accept is valid whatever its
// range (for labs and tests; empty by default). The error wraps ErrNotGlobal
// and names the range.
func Valid(a netip.Addr, accept []netip.Prefix) error {
	if !a.IsValid() {
		return fmt.Errorf("no address: %w", ErrNotGlobal)
	}
	if a.Zone() != "" {
		return fmt.Errorf("%s has a zone: %w", a, ErrNotGlobal)
	}
	for _, p := range accept {
		if p.Contains(a) {
			return nil
		}
	}
	if r := rejectReason(a); r != "" {
		return fmt.Errorf("%s is %s: %w", a, r, ErrNotGlobal)
	}
	return nil
}

func rejectReason(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		if a.Is4() {
			return "private (RFC 1918)"
		}
		return "unique local (fc00::/7)"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	}
	for _, s := range special {
		if s.p.Contains(a) {
			return s.reason
		}
	}
	if a.Is6() && !globalV6.Contains(a) {
		return "outside global unicast 2000::/3"
	}
	return ""
}

// IsCGNAT reports whether a is in the carrier-grade NAT range 100.64.0.0/10.
func IsCGNAT(a netip.Addr) bool { return cgnat.Contains(a.Unmap()) }
