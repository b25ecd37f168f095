package ddns

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// rfc2136 updates an authoritative server with DNS UPDATE (RFC 2136) signed
// with TSIG (RFC 8945), and reads back with plain queries to that server.
type rfc2136 struct {
	server  string // host:port
	zone    string // FQDN with trailing dot
	keyName string // FQDN with trailing dot
	keyAlg  string // miekg/dns algorithm name
	key     string // base64
	timeout time.Duration
	now     func() time.Time
}

var _ Provider = (*rfc2136)(nil)

var tsigAlgs = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// rfc2136Caps: DNS UPDATE adds and deletes any RRset with its TTL, and the
// primary answers plain queries for read-back.
var rfc2136Caps = Capabilities{Read: true, RemoveA: true, RemoveAAAA: true, Delete: true, TTL: true, TXT: true}

func newRFC2136(p ProviderConfig, opts ProviderOptions) (Provider, error) {
	if p.Server == "" || p.Zone == "" {
		return nil, fmt.Errorf("%w: rfc2136 needs server and zone", ErrBadConfig)
	}
	server := p.Server
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	zone := normHost(p.Zone)
	if err := validHostname(zone); err != nil {
		return nil, err
	}
	r := &rfc2136{server: server, zone: dns.Fqdn(zone), timeout: opts.DNSTimeout, now: time.Now}
	if p.KeyName != "" || p.Key != "" {
		if p.KeyName == "" || p.Key == "" {
			return nil, fmt.Errorf("%w: rfc2136 needs both key_name and key", ErrBadConfig)
		}
		algName := strings.TrimSuffix(strings.ToLower(p.KeyAlg), ".")
		if algName == "" {
			algName = "hmac-sha256"
		}
		alg, ok := tsigAlgs[algName]
		if !ok {
			return nil, fmt.Errorf("%w: rfc2136 key_alg %q unsupported (hmac-sha1/224/256/384/512)", ErrBadConfig, p.KeyAlg)
		}
		if _, err := base64.StdEncoding.DecodeString(p.Key); err != nil {
			return nil, fmt.Errorf("%w: rfc2136 key is not base64", ErrBadConfig)
		}
		r.keyName, r.keyAlg, r.key = dns.CanonicalName(p.KeyName), alg, p.Key
	}
	return r, nil
}

func (r *rfc2136) Name() string { return "rfc2136" }

func (r *rfc2136) Capabilities() Capabilities { return rfc2136Caps }

func (r *rfc2136) fqdn(host string) (string, error) {
	h := normHost(host)
	if !inZone(h, strings.TrimSuffix(r.zone, ".")) {
		return "", fmt.Errorf("%w: %s is not in zone %s", ErrBadConfig, h, r.zone)
	}
	return dns.Fqdn(h), nil
}

func (r *rfc2136) client(network string) *dns.Client {
	c := &dns.Client{Net: network, Timeout: r.timeout}
	if r.keyName != "" {
		c.TsigSecret = map[string]string{r.keyName: r.key}
	}
	return c
}

func (r *rfc2136) Get(ctx context.Context, host string) (Records, error) {
	name, err := r.fqdn(host)
	if err != nil {
		return Records{}, err
	}
	var out Records
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		addr, absent, err := r.query(ctx, name, qt)
		if err != nil {
			return Records{}, fmt.Errorf("rfc2136: query %s %s at %s: %w", name, dns.TypeToString[qt], r.server, err)
		}
		if qt == dns.TypeA {
			out.V4, out.NoV4 = addr, absent
		} else {
			out.V6, out.NoV6 = addr, absent
		}
	}
	return out, nil
}

// query asks the server for one RRset; (zero, false) means several records.
func (r *rfc2136) query(ctx context.Context, name string, qt uint16) (netip.Addr, bool, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qt)
	m.RecursionDesired = false
	in, _, err := r.client("udp").ExchangeContext(ctx, m, r.server)
	if err == nil && in.Truncated {
		in, _, err = r.client("tcp").ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		return netip.Addr{}, false, err
	}
	switch in.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeRefused, dns.RcodeNotAuth:
		return netip.Addr{}, false, fmt.Errorf("%w: %s answered %s (does it serve zone %s?)",
			ErrUnknownZone, r.server, dns.RcodeToString[in.Rcode], r.zone)
	default:
		return netip.Addr{}, false, fmt.Errorf("server answered %s", dns.RcodeToString[in.Rcode])
	}
	if !in.Authoritative {
		return netip.Addr{}, false, fmt.Errorf("%w: %s is not authoritative for %s", ErrUnknownZone, r.server, name)
	}
	var addrs []netip.Addr
	for _, rr := range in.Answer {
		if !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		switch v := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(v.A.To4()); ok && qt == dns.TypeA {
				addrs = append(addrs, a)
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok && qt == dns.TypeAAAA {
				addrs = append(addrs, a)
			}
		case *dns.CNAME:
			return netip.Addr{}, false, fmt.Errorf("%w: %s is a CNAME; it can't carry address records", ErrBadConfig, name)
		}
	}
	switch len(addrs) {
	case 0:
		return netip.Addr{}, true, nil
	case 1:
		return addrs[0], false, nil
	default:
		return netip.Addr{}, false, nil
	}
}

func (r *rfc2136) Set(ctx context.Context, host string, want Records, ttl time.Duration) error {
	name, err := r.fqdn(host)
	if err != nil {
		return err
	}
	if err := want.Validate(); err != nil {
		return err
	}
	m := new(dns.Msg)
	m.SetUpdate(r.zone)
	sec := uint32(max(ttl, time.Second) / time.Second)
	if want.V4.IsValid() || want.NoV4 {
		m.RemoveRRset([]dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET}}})
	}
	if want.V4.IsValid() {
		m.Insert([]dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: sec}, A: want.V4.AsSlice()}})
	}
	if want.V6.IsValid() || want.NoV6 {
		m.RemoveRRset([]dns.RR{&dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET}}})
	}
	if want.V6.IsValid() {
		m.Insert([]dns.RR{&dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: sec}, AAAA: want.V6.AsSlice()}})
	}
	if len(m.Ns) == 0 {
		return nil
	}
	if err := r.send(ctx, m); err != nil {
		return fmt.Errorf("rfc2136: update %s in zone %s at %s: %w", name, r.zone, r.server, err)
	}
	return nil
}

func (r *rfc2136) Delete(ctx context.Context, host string) error {
	name, err := r.fqdn(host)
	if err != nil {
		return err
	}
	m := new(dns.Msg)
	m.SetUpdate(r.zone)
	m.RemoveRRset([]dns.RR{
		&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET}},
		&dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET}},
	})
	if err := r.send(ctx, m); err != nil {
		return fmt.Errorf("rfc2136: delete %s in zone %s at %s: %w", name, r.zone, r.server, err)
	}
	return nil
}

// send signs m, sends it over TCP and checks the answer.
func (r *rfc2136) send(ctx context.Context, m *dns.Msg) error {
	if r.keyName != "" {
		m.SetTsig(r.keyName, r.keyAlg, 300, r.now().Unix())
	}
	in, _, err := r.client("tcp").ExchangeContext(ctx, m, r.server)
	if err != nil {
		if in != nil && in.Rcode == dns.RcodeNotAuth {
			return fmt.Errorf("%w: server refused the TSIG key %s (%w)", ErrRejected, r.keyName, err)
		}
		return err
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
		return nil
	case dns.RcodeNotZone:
		return fmt.Errorf("%w: server says the name is outside zone %s", ErrUnknownZone, r.zone)
	case dns.RcodeNotAuth:
		if t := in.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
			return fmt.Errorf("%w: server refused the TSIG key %s: %s", ErrRejected, r.keyName, dns.RcodeToString[int(t.Error)])
		}
		return fmt.Errorf("%w: server is not authoritative for %s or refused the key", ErrUnknownZone, r.zone)
	case dns.RcodeRefused:
		return fmt.Errorf("%w: server refused the update (check its update ACL for key %s)", ErrRejected, r.keyName)
	default:
		return fmt.Errorf("server answered %s", dns.RcodeToString[in.Rcode])
	}
}
