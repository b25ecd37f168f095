package publicip

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// DNSKind says which record a whoami service answers with.
type DNSKind uint8

const (
	// WhoamiTXT asks a TXT record and reads the address from its text
	// (Cloudflare's whoami.cloudflare in class CH, Google's
	// o-o.myaddr.l.google.com in class IN). One query serves both families.
	WhoamiTXT DNSKind = iota
	// WhoamiAddr asks an A record for IPv4 and AAAA for IPv6
	// (OpenDNS's myip.opendns.com).
	WhoamiAddr
)

// Well-known whoami services.
const (
	CloudflareWhoami = "whoami.cloudflare."
	OpenDNSWhoami    = "myip.opendns.com."
	GoogleWhoami     = "o-o.myaddr.l.google.com."
	CloudflareDoHURL = "https://cloudflare-dns.com/dns-query"
)

// maxDNSMessage is the largest DNS message there is.
const maxDNSMessage = 65535

// DNSConfig configures a DNSSource. Set Server4/Server6 for plain DNS over
// UDP, or DoH for DNS over HTTPS (RFC 8484).
type DNSConfig struct {
	// Name identifies the source in logs. Default "dns:<server>" or "doh:<url>".
	Name string
	// Operator runs the service; answers of one operator are one vote.
	// Default: the well-known operator of the DoH or server host name, else
	// none (the source counts on its own).
	Operator string
	// QName is the name to ask, e.g. CloudflareWhoami. Required.
	QName string
	// Kind says which record answers. Default WhoamiTXT.
	Kind DNSKind
	// Class of the question. Default CH for QName whoami.cloudflare, else IN.
	Class uint16
	// Server4 and Server6 are the UDP servers (host:port) asked for each
	// family; a family without a server answers ErrNoAnswer. An IP literal
	// must be of that family; a host name is resolved for the family at each
	// lookup. Ignored with DoH.
	Server4, Server6 string
	// DoH is an RFC 8484 endpoint URL; set, it replaces UDP for both families.
	DoH string
	// DoHGet sends the query by GET ?dns=... instead of POST.
	DoHGet bool
	// Client returns the HTTP client for a family (DoH). Nil: FamilyClient(fam, nil).
	Client func(Family) *http.Client
	// Dialer dials UDP. Nil: a zero net.Dialer.
	Dialer *net.Dialer
	// Resolve looks up a server host name for network "ip4" or "ip6".
	// Nil: net.DefaultResolver.LookupNetIP.
	Resolve func(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DNSSource asks a DNS whoami service for the address it sees.
type DNSSource struct {
	cfg DNSConfig
}

var _ Source = (*DNSSource)(nil)
var _ Operated = (*DNSSource)(nil)

// NewDNSSource checks cfg and returns the source.
func NewDNSSource(cfg DNSConfig) (*DNSSource, error) {
	if cfg.QName == "" {
		return nil, errors.New("dns source: no query name")
	}
	if _, ok := dns.IsDomainName(cfg.QName); !ok {
		return nil, fmt.Errorf("dns source: bad query name %q", cfg.QName)
	}
	cfg.QName = dns.Fqdn(cfg.QName)
	if cfg.Kind != WhoamiTXT && cfg.Kind != WhoamiAddr {
		return nil, fmt.Errorf("dns source: unknown kind %d", cfg.Kind)
	}
	if cfg.Class == 0 {
		cfg.Class = dns.ClassINET
		if strings.EqualFold(cfg.QName, CloudflareWhoami) {
			cfg.Class = dns.ClassCHAOS
		}
	}
	if cfg.DoH != "" {
		u, err := url.Parse(cfg.DoH)
		if err != nil {
			return nil, fmt.Errorf("dns source: doh url: %w", err)
		}
		if u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("dns source: doh url %q: want https://host/path", u.Redacted())
		}
		if cfg.Name == "" {
			cfg.Name = "doh:" + u.Redacted()
		}
		if cfg.Operator == "" {
			cfg.Operator = operatorOfHost(u.Hostname())
		}
		if cfg.Client == nil {
			c4, c6 := FamilyClient(IPv4, nil), FamilyClient(IPv6, nil)
			cfg.Client = func(f Family) *http.Client {
				if f == IPv6 {
					return c6
				}
				return c4
			}
		}
		return &DNSSource{cfg: cfg}, nil
	}
	if cfg.Server4 == "" && cfg.Server6 == "" {
		return nil, errors.New("dns source: no server")
	}
	for _, fs := range []struct {
		fam    Family
		server string
	}{{IPv4, cfg.Server4}, {IPv6, cfg.Server6}} {
		if fs.server == "" {
			continue
		}
		host, port, err := net.SplitHostPort(fs.server)
		if err != nil || port == "" {
			return nil, fmt.Errorf("dns source: %s server %q: want host:port", fs.fam, fs.server)
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if !fs.fam.Matches(a) {
				return nil, fmt.Errorf("dns source: %s server %q is not an %s address", fs.fam, fs.server, fs.fam)
			}
		} else if _, ok := dns.IsDomainName(host); !ok {
			return nil, fmt.Errorf("dns source: %s server %q: bad host", fs.fam, fs.server)
		}
	}
	if cfg.Name == "" {
		if cfg.Server4 == cfg.Server6 || cfg.Server6 == "" {
			cfg.Name = "dns:" + cfg.Server4
		} else if cfg.Server4 == "" {
			cfg.Name = "dns:" + cfg.Server6
		} else {
			cfg.Name = "dns:" + cfg.Server4 + "," + cfg.Server6
		}
	}
	if cfg.Operator == "" {
		host, _, _ := net.SplitHostPort(cmp.Or(cfg.Server4, cfg.Server6))
		cfg.Operator = operatorOfHost(host)
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.Resolve == nil {
		cfg.Resolve = net.DefaultResolver.LookupNetIP
	}
	return &DNSSource{cfg: cfg}, nil
}

// CloudflareDNS asks whoami.cloudflare (TXT, CH) at 1.1.1.1 and 2606:4700:4700::1111 over UDP.
func CloudflareDNS() *DNSSource {
	return mustDNS(DNSConfig{Name: "dns:cloudflare", Operator: "cloudflare", QName: CloudflareWhoami,
		Server4: "1.1.1.1:53", Server6: "[2606:4700:4700::1111]:53"})
}

// OpenDNS asks myip.opendns.com (A, AAAA) at resolver1.opendns.com over UDP.
func OpenDNS() *DNSSource {
	return mustDNS(DNSConfig{Name: "dns:opendns", Operator: "opendns", QName: OpenDNSWhoami, Kind: WhoamiAddr,
		Server4: "208.67.222.222:53", Server6: "[2620:119:35::35]:53"})
}

// GoogleDNS asks o-o.myaddr.l.google.com (TXT, IN) at ns1.google.com over UDP.
func GoogleDNS() *DNSSource {
	return mustDNS(DNSConfig{Name: "dns:google", Operator: "google", QName: GoogleWhoami,
		Server4: "216.239.32.10:53", Server6: "[2001:4860:4802:32::a]:53"})
}

// CloudflareDoH asks whoami.cloudflare (TXT, CH) over DNS over HTTPS; works
// where outgoing port 53 is blocked.
func CloudflareDoH() *DNSSource {
	return mustDNS(DNSConfig{Name: "doh:cloudflare", QName: CloudflareWhoami, DoH: CloudflareDoHURL})
}

func mustDNS(cfg DNSConfig) *DNSSource {
	s, err := NewDNSSource(cfg)
	if err != nil {
		panic(err)
	}
	return s
}

// DefaultDNS are the publicip.dns entries used when none are configured.
var DefaultDNS = []string{"cloudflare", "opendns", "google", "cloudflare-doh"}

// ParseDNSSpec turns one publicip.dns configuration entry into a source:
//
//	cloudflare       whoami.cloudflare over UDP (CloudflareDNS)
//	opendns          myip.opendns.com over UDP (OpenDNS)
//	google           o-o.myaddr.l.google.com over UDP (GoogleDNS)
//	cloudflare-doh   whoami.cloudflare over DoH (CloudflareDoH)
//	https://HOST/PATH                 DoH asking whoami.cloudflare (TXT, CH)
//	[dns://]HOST:PORT/NAME[?type=T]   UDP: ask NAME at HOST:PORT
//
// HOST is an IP literal (serving its own family only) or a host name
// (resolved per family). T is addr (A/AAAA, class IN), txt (TXT, IN) or
// chaos (TXT, CH); the default is chaos for whoami.cloudflare, else addr.
func ParseDNSSpec(spec string) (*DNSSource, error) {
	switch spec {
	case "cloudflare":
		return CloudflareDNS(), nil
	case "opendns":
		return OpenDNS(), nil
	case "google":
		return GoogleDNS(), nil
	case "cloudflare-doh":
		return CloudflareDoH(), nil
	}
	if strings.HasPrefix(spec, "https://") {
		s, err := NewDNSSource(DNSConfig{QName: CloudflareWhoami, DoH: spec})
		if err != nil {
			return nil, fmt.Errorf("dns spec: %w", err)
		}
		return s, nil
	}
	u, err := url.Parse("dns://" + strings.TrimPrefix(spec, "dns://"))
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("dns spec %q: want cloudflare, opendns, google, cloudflare-doh, HOST:PORT/NAME or https://...", spec)
	}
	cfg := DNSConfig{QName: strings.TrimPrefix(u.Path, "/")}
	if cfg.QName == "" {
		return nil, fmt.Errorf("dns spec %q: no name to ask (HOST:PORT/NAME)", spec)
	}
	t := u.Query().Get("type")
	if t == "" {
		t = "addr"
		if strings.EqualFold(dns.Fqdn(cfg.QName), CloudflareWhoami) {
			t = "chaos"
		}
	}
	switch t {
	case "addr":
		cfg.Kind, cfg.Class = WhoamiAddr, dns.ClassINET
	case "txt":
		cfg.Kind, cfg.Class = WhoamiTXT, dns.ClassINET
	case "chaos":
		cfg.Kind, cfg.Class = WhoamiTXT, dns.ClassCHAOS
	default:
		return nil, fmt.Errorf("dns spec %q: unknown type %q (want addr, txt or chaos)", spec, t)
	}
	host, _, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("dns spec %q: want HOST:PORT: %w", spec, err)
	}
	switch a, err := netip.ParseAddr(host); {
	case err != nil:
		cfg.Server4, cfg.Server6 = u.Host, u.Host
	case a.Is4():
		cfg.Server4 = u.Host
	default:
		cfg.Server6 = u.Host
	}
	s, err := NewDNSSource(cfg)
	if err != nil {
		return nil, fmt.Errorf("dns spec: %w", err)
	}
	return s, nil
}

// DNSSources parses each spec (see ParseDNSSpec); nil or empty specs means DefaultDNS.
func DNSSources(specs []string) ([]Source, error) {
	if len(specs) == 0 {
		specs = DefaultDNS
	}
	out := make([]Source, 0, len(specs))
	for _, sp := range specs {
		s, err := ParseDNSSpec(sp)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Operator implements Operated: a well-known operator, or "".
func (s *DNSSource) Operator() string { return s.cfg.Operator }

// Name implements Source.
func (s *DNSSource) Name() string { return s.cfg.Name }

// Query returns the DNS query this source sends for fam.
func (s *DNSSource) Query(fam Family) *dns.Msg {
	m := new(dns.Msg)
	switch {
	case s.cfg.Kind == WhoamiTXT:
		m.SetQuestion(s.cfg.QName, dns.TypeTXT)
	case fam == IPv6:
		m.SetQuestion(s.cfg.QName, dns.TypeAAAA)
	default:
		m.SetQuestion(s.cfg.QName, dns.TypeA)
	}
	m.Question[0].Qclass = s.cfg.Class
	return m
}

// Lookup implements Source.
func (s *DNSSource) Lookup(ctx context.Context, fam Family) (netip.Addr, error) {
	q := s.Query(fam)
	var (
		a   netip.Addr
		err error
	)
	if s.cfg.DoH != "" {
		q.Id = 0 // RFC 8484 4.1: cache friendly; HTTP matches the answer
		a, err = s.doh(ctx, fam, q)
	} else {
		server := s.cfg.Server4
		if fam == IPv6 {
			server = s.cfg.Server6
		}
		if server == "" {
			return netip.Addr{}, ErrNoAnswer
		}
		a, err = s.udp(ctx, fam, server, q)
	}
	if err != nil {
		return netip.Addr{}, err
	}
	if !fam.Matches(a) {
		return a, fmt.Errorf("%s answered for %s: %w", a, fam, ErrWrongFamily)
	}
	return a, nil
}

// errOtherID marks a reply to another query (a late answer to an earlier one).
var errOtherID = errors.New("reply to another query")

func (s *DNSSource) udp(ctx context.Context, fam Family, server string, q *dns.Msg) (netip.Addr, error) {
	wire, err := q.Pack()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pack query: %w", err)
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("server %q: %w", server, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		// A host name: use its address of this family.
		addrs, err := s.cfg.Resolve(ctx, "ip"+fam.suffix(), host)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("resolve server %s: %w", host, err)
		}
		i := slices.IndexFunc(addrs, func(a netip.Addr) bool { return fam.Matches(a.Unmap()) || fam.Matches(a) })
		if i < 0 {
			return netip.Addr{}, fmt.Errorf("server %s has no %s address: %w", host, fam, ErrNoAnswer)
		}
		a := addrs[i]
		if fam == IPv4 {
			a = a.Unmap()
		}
		server = net.JoinHostPort(a.String(), port)
	}
	c, err := s.cfg.Dialer.DialContext(ctx, "udp"+fam.suffix(), server)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	if _, err := c.Write(wire); err != nil {
		return netip.Addr{}, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, maxDNSMessage)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return netip.Addr{}, fmt.Errorf("receive: %w", ctx.Err())
			}
			return netip.Addr{}, fmt.Errorf("receive: %w", err)
		}
		a, err := ParseDNSAnswer(buf[:n], q)
		if errors.Is(err, errOtherID) {
			continue
		}
		return a, err
	}
}

func (s *DNSSource) doh(ctx context.Context, fam Family, q *dns.Msg) (netip.Addr, error) {
	wire, err := q.Pack()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pack query: %w", err)
	}
	var req *http.Request
	if s.cfg.DoHGet {
		u, err := url.Parse(s.cfg.DoH)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("doh url: %w", err)
		}
		v := u.Query()
		v.Set("dns", base64.RawURLEncoding.EncodeToString(wire))
		u.RawQuery = v.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("request: %w", err)
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.DoH, bytes.NewReader(wire))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("request: %w", err)
		}
		req.Header.Set("Content-Type", "application/dns-message")
	}
	req.Header.Set("Accept", "application/dns-message")
	req.Header.Set("User-Agent", "porthole-agent")
	resp, err := s.cfg.Client(fam).Do(req)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("doh: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return netip.Addr{}, fmt.Errorf("doh: http status %d", resp.StatusCode)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/dns-message" {
		return netip.Addr{}, fmt.Errorf("doh: content type %q: %w", resp.Header.Get("Content-Type"), ErrBadAnswer)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDNSMessage+1))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("doh: read body: %w", err)
	}
	if len(body) > maxDNSMessage {
		return netip.Addr{}, fmt.Errorf("doh: body larger than a DNS message: %w", ErrBadAnswer)
	}
	return ParseDNSAnswer(body, q)
}

// ParseDNSAnswer parses wire, the reply to query q, and returns the one
// address it gives: the text of the TXT record for a TXT question, the A or
// AAAA record otherwise. The reply must be a successful, untruncated response
// with q's ID and question; records for other names or types are ignored.
// Several different addresses, or none, are an error wrapping ErrBadAnswer.
func ParseDNSAnswer(wire []byte, q *dns.Msg) (netip.Addr, error) {
	if len(q.Question) != 1 {
		return netip.Addr{}, errors.New("query must have one question")
	}
	qq := q.Question[0]
	var m dns.Msg
	if err := m.Unpack(wire); err != nil {
		return netip.Addr{}, fmt.Errorf("malformed reply: %w: %w", ErrBadAnswer, err)
	}
	switch {
	case m.Id != q.Id:
		return netip.Addr{}, errOtherID
	case !m.Response:
		return netip.Addr{}, fmt.Errorf("not a response: %w", ErrBadAnswer)
	case len(m.Question) != 1 || !sameQuestion(m.Question[0], qq):
		return netip.Addr{}, fmt.Errorf("reply to another question: %w", ErrBadAnswer)
	case m.Truncated:
		return netip.Addr{}, fmt.Errorf("truncated reply: %w", ErrBadAnswer)
	case m.Rcode != dns.RcodeSuccess:
		return netip.Addr{}, fmt.Errorf("rcode %s: %w", dns.RcodeToString[m.Rcode], ErrBadAnswer)
	}
	var found netip.Addr
	for _, rr := range m.Answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, qq.Name) || h.Rrtype != qq.Qtype {
			continue
		}
		var a netip.Addr
		switch rr := rr.(type) {
		case *dns.TXT:
			var err error
			if a, err = ParseEchoBody([]byte(strings.Join(rr.Txt, ""))); err != nil {
				return netip.Addr{}, fmt.Errorf("txt record: %w", err)
			}
		case *dns.A:
			a, _ = netip.AddrFromSlice(rr.A.To4())
		case *dns.AAAA:
			a, _ = netip.AddrFromSlice(rr.AAAA.To16())
		default:
			continue
		}
		if !a.IsValid() {
			return netip.Addr{}, fmt.Errorf("bad address record: %w", ErrBadAnswer)
		}
		if found.IsValid() && found != a {
			return netip.Addr{}, fmt.Errorf("several addresses (%s, %s): %w", found, a, ErrBadAnswer)
		}
		found = a
	}
	if !found.IsValid() {
		return netip.Addr{}, fmt.Errorf("no %s record in the reply: %w", dns.TypeToString[qq.Qtype], ErrBadAnswer)
	}
	return found, nil
}

func sameQuestion(a, b dns.Question) bool {
	return strings.EqualFold(a.Name, b.Name) && a.Qtype == b.Qtype && a.Qclass == b.Qclass
}
