package publicip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Family is an address family: IPv4 or IPv6.
type Family uint8

// The address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String returns "ipv4" or "ipv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// Matches reports whether a is an address of family f. An IPv4-mapped IPv6
// address is IPv6 here (and Valid rejects it).
func (f Family) Matches(a netip.Addr) bool {
	switch f {
	case IPv4:
		return a.Is4()
	case IPv6:
		return a.Is6()
	}
	return false
}

// suffix is "4" or "6", for network names like "tcp4".
func (f Family) suffix() string {
	if f == IPv6 {
		return "6"
	}
	return "4"
}

// Errors a Source returns and callers branch on.
var (
	// ErrNoAnswer means the source has nothing to say for this family (no
	// IPv6 route, no router, a relay tunnel over IPv4 only). It is not a
	// disagreement and is logged quietly.
	ErrNoAnswer = errors.New("no answer for this family")
	// ErrBadAnswer means the source answered something that is not one
	// address: HTML, garbage, an empty body, several addresses.
	ErrBadAnswer = errors.New("answer is not an address")
	// ErrWrongFamily means the source answered an address of the other
	// family (an echo service reached over the wrong protocol).
	ErrWrongFamily = errors.New("answer of the wrong address family")
)

// Source is one way to learn the public address. Lookup returns the raw
// answer; validation and consensus are the Detector's job.
type Source interface {
	// Name identifies the source in logs and status, e.g. "relay" or a URL.
	Name() string
	// Lookup returns the public address of family fam as this source sees it.
	Lookup(ctx context.Context, fam Family) (netip.Addr, error)
}

// Operated is implemented by sources that know who runs the service they
// ask. Answers from one operator count as one vote: api.ipify.org and
// api64.ipify.org agreeing is one opinion, not two.
type Operated interface {
	Operator() string
}

// OperatorOf returns s's operator, or its name when it doesn't say.
func OperatorOf(s Source) string {
	if o, ok := s.(Operated); ok {
		if op := o.Operator(); op != "" {
			return op
		}
	}
	return s.Name()
}

// LookupFunc is the signature of Source.Lookup.
type LookupFunc func(ctx context.Context, fam Family) (netip.Addr, error)

// FuncSource adapts a function to Source. The agent uses it for answers other
// packages supply: the address the relay observes, the router's external address.
type FuncSource struct {
	name string
	fn   LookupFunc
}

var _ Source = (*FuncSource)(nil)

// Names of the sources other packages feed through NewFuncSource: the
// address the relay observes, and the router's external address (name it in
// Config.Router to classify the NAT).
const (
	SourceRelay  = "relay"
	SourceRouter = "router"
)

// NewFuncSource returns a Source called name that answers with fn.
func NewFuncSource(name string, fn LookupFunc) *FuncSource {
	return &FuncSource{name: name, fn: fn}
}

// Name implements Source.
func (s *FuncSource) Name() string { return s.name }

// Lookup implements Source.
func (s *FuncSource) Lookup(ctx context.Context, fam Family) (netip.Addr, error) {
	return s.fn(ctx, fam)
}

// StaticSource answers fixed addresses; for tests and for a configured address.
// A zero address for a family answers ErrNoAnswer; Err, when set, is returned
// for both families.
type StaticSource struct {
	Label  string
	V4, V6 netip.Addr
	Err    error
}

var _ Source = StaticSource{}

// Name implements Source.
func (s StaticSource) Name() string { return s.Label }

// Lookup implements Source.
func (s StaticSource) Lookup(ctx context.Context, fam Family) (netip.Addr, error) {
	if s.Err != nil {
		return netip.Addr{}, s.Err
	}
	a := s.V4
	if fam == IPv6 {
		a = s.V6
	}
	if !a.IsValid() {
		return netip.Addr{}, ErrNoAnswer
	}
	return a, nil
}
