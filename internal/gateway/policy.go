package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Policy is a service's access rule: which viewer addresses may connect.
// The zero Policy allows nobody.
type Policy struct {
	any      bool
	prefixes []netip.Prefix
}

// ErrNoRule is returned for an empty access rule: nothing is exposed without one.
var ErrNoRule = errors.New("no access rule: list CIDRs or [any]")

// NewPolicy builds a policy from prefixes, or one that allows any address.
func NewPolicy(prefixes []netip.Prefix, any bool) (Policy, error) {
	if any && len(prefixes) > 0 {
		return Policy{}, errors.New("access rule mixes any with CIDRs")
	}
	if !any && len(prefixes) == 0 {
		return Policy{}, ErrNoRule
	}
	ps := make([]netip.Prefix, len(prefixes))
	for i, p := range prefixes {
		ps[i] = p.Masked()
	}
	return Policy{any: any, prefixes: ps}, nil
}

// ParsePolicy parses rule items: "any", CIDRs, or bare addresses.
func ParsePolicy(rules []string) (Policy, error) {
	var ps []netip.Prefix
	any := false
	for _, r := range rules {
		r = strings.TrimSpace(r)
		if r == "any" {
			any = true
			continue
		}
		if p, err := netip.ParsePrefix(r); err == nil {
			ps = append(ps, p)
			continue
		}
		a, err := netip.ParseAddr(r)
		if err != nil {
			return Policy{}, fmt.Errorf("access rule %q: not a CIDR, an address or any", r)
		}
		ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
	}
	return NewPolicy(ps, any)
}

// Allows reports whether a viewer at a may connect.
func (p Policy) Allows(a netip.Addr) bool {
	if p.any {
		return a.IsValid()
	}
	a = a.Unmap()
	for _, pr := range p.prefixes {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// Strings returns the rule in the form ParsePolicy accepts.
func (p Policy) Strings() []string {
	if p.any {
		return []string{"any"}
	}
	s := make([]string, len(p.prefixes))
	for i, pr := range p.prefixes {
		s[i] = pr.String()
	}
	return s
}
