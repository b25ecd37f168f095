package ddns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/libdns/libdns"
)

// libdnsClient is what the adapter needs of a libdns provider.
type libdnsClient interface {
	libdns.RecordGetter
	libdns.RecordSetter
	libdns.RecordDeleter
}

// libdnsProvider adapts a libdns provider to Provider. Adding another libdns
// provider is a constructor that fills one of these.
type libdnsProvider struct {
	name   string
	zone   string // in the form the libdns provider expects
	client libdnsClient
	caps   Capabilities
	// mapErr, if set, turns provider-specific errors into this package's.
	mapErr func(error) error
}

var _ Provider = (*libdnsProvider)(nil)

func (p *libdnsProvider) Name() string { return p.name }

func (p *libdnsProvider) Capabilities() Capabilities { return p.caps }

// relative returns host relative to the zone ("@" for the apex).
func (p *libdnsProvider) relative(host string) (string, error) {
	host, zone := normHost(host), normHost(p.zone)
	if !inZone(host, zone) {
		return "", fmt.Errorf("%w: %s is not in zone %s", ErrBadConfig, host, zone)
	}
	return libdns.RelativeName(host, zone), nil
}

func (p *libdnsProvider) wrap(op, host string, err error) error {
	if p.mapErr != nil {
		err = p.mapErr(err)
	}
	return fmt.Errorf("%s: %s %s in zone %s: %w", p.name, op, host, normHost(p.zone), err)
}

// ours returns the A and AAAA records of rel among recs.
func ours(recs []libdns.Record, rel string) (a, aaaa []libdns.Record) {
	for _, r := range recs {
		rr := r.RR()
		if !strings.EqualFold(strings.TrimSuffix(rr.Name, "."), rel) {
			continue
		}
		switch rr.Type {
		case "A":
			a = append(a, r)
		case "AAAA":
			aaaa = append(aaaa, r)
		}
	}
	return a, aaaa
}

// summarize turns a family's records into (address, absent); several
// records or an unparsable one give (zero, false): unknown, so any wish
// with an opinion on this family rewrites it.
func summarize(recs []libdns.Record) (netip.Addr, bool) {
	switch len(recs) {
	case 0:
		return netip.Addr{}, true
	case 1:
		a, err := netip.ParseAddr(recs[0].RR().Data)
		if err != nil {
			return netip.Addr{}, false
		}
		return a.Unmap(), false
	default:
		return netip.Addr{}, false
	}
}

func (p *libdnsProvider) getRecords(ctx context.Context) (recs []libdns.Record, err error) {
	// Provider packages parse API answers; a panic on a malformed answer
	// must not take the agent down.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("provider package panicked: %v", r)
		}
	}()
	return p.client.GetRecords(ctx, p.zone)
}

func (p *libdnsProvider) Get(ctx context.Context, host string) (Records, error) {
	rel, err := p.relative(host)
	if err != nil {
		return Records{}, err
	}
	recs, err := p.getRecords(ctx)
	if err != nil {
		return Records{}, p.wrap("get records of", host, err)
	}
	a, aaaa := ours(recs, rel)
	var r Records
	r.V4, r.NoV4 = summarize(a)
	r.V6, r.NoV6 = summarize(aaaa)
	return r, nil
}

func (p *libdnsProvider) Set(ctx context.Context, host string, want Records, ttl time.Duration) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = p.wrap("set records of", host, fmt.Errorf("provider package panicked: %v", r))
		}
	}()
	rel, err := p.relative(host)
	if err != nil {
		return err
	}
	if err := want.Validate(); err != nil {
		return err
	}
	var set []libdns.Record
	if want.V4.IsValid() {
		set = append(set, libdns.Address{Name: rel, TTL: ttl, IP: want.V4})
	}
	if want.V6.IsValid() {
		set = append(set, libdns.Address{Name: rel, TTL: ttl, IP: want.V6})
	}
	if len(set) > 0 {
		if _, err := p.client.SetRecords(ctx, p.zone, set); err != nil {
			return p.wrap("set records of", host, err)
		}
	}
	if !want.NoV4 && !want.NoV6 {
		return nil
	}
	return p.remove(ctx, host, rel, want.NoV4, want.NoV6)
}

func (p *libdnsProvider) Delete(ctx context.Context, host string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = p.wrap("delete records of", host, fmt.Errorf("provider package panicked: %v", r))
		}
	}()
	rel, err := p.relative(host)
	if err != nil {
		return err
	}
	return p.remove(ctx, host, rel, true, true)
}

// remove deletes the exact A and/or AAAA records of rel that exist, so
// that no wildcard delete can reach anything else.
func (p *libdnsProvider) remove(ctx context.Context, host, rel string, v4, v6 bool) error {
	recs, err := p.client.GetRecords(ctx, p.zone)
	if err != nil {
		return p.wrap("get records of", host, err)
	}
	a, aaaa := ours(recs, rel)
	var del []libdns.Record
	if v4 {
		del = append(del, a...)
	}
	if v6 {
		del = append(del, aaaa...)
	}
	if len(del) == 0 {
		return nil
	}
	if _, err := p.client.DeleteRecords(ctx, p.zone, del); err != nil {
		return p.wrap("delete records of", host, err)
	}
	return nil
}

// errorsAsHTTP is errors.As for *HTTPError.
func errorsAsHTTP(err error) (*HTTPError, bool) {
	var he *HTTPError
	ok := errors.As(err, &he)
	return he, ok
}
