package publicip

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/miekg/dns"
)

// DNSKind says how a whoami service answers.
type DNSKind uint8

const (
	// WhoamiTXT asks a TXT record in class CHAOS and reads the address from
	// its text (Cloudflare's whoami.cloudflare). One query serves both families.
	WhoamiTXT DNSKind = iota
	// WhoamiAddr asks an A record for IPv4 and AAAA for IPv6, class IN
	// (OpenDNS's myip.opendns.com).
	WhoamiAddr
)

// Well-known whoami services.
const (
	CloudflareWhoami = "whoami.cloudflare."
	OpenDNSWhoami    = "myip.opendns.com."
	CloudflareDoHURL = "https://cloudflare-dns.com/dns-query"
)

// maxDNSMessage is the largest DNS message there is.
const maxDNSMessage = 65535

// DNSConfig configures a DNSSource. Set Server4/Server6 for plain DNS over
// UDP, or DoH for DNS over HTTPS (RFC 8484).
type DNSConfig struct {
	// Name identifies the source in logs. Default "dns:<server>" or "doh:<url>".
	Name string
	// QName is the name to ask, e.g. CloudflareWhoami. Required.
	QName string
	// Kind says which record answers. Default WhoamiTXT.
	Kind DNSKind
	// Server4 and Server6 are the UDP servers (IP literal host:port) asked for
	// each family; a family without a server answers ErrNoAnswer. Ignored with DoH.
	Server4, Server6 string
	// DoH is an RFC 8484 endpoint URL; set, it replaces UDP for both families.
	DoH string
	// DoHGet sends the query by GET ?dns=... instead of POST.
	DoHGet bool
	// Client returns the HTTP client for a family (DoH). Nil: FamilyClient(fam, nil).
	Client func(Family) *http.Client
	// Dialer dials UDP. Nil: a zero net.Dialer.
	Dialer *net.Dialer
}

// DNSSource asks a DNS whoami service for the address it sees.
type DNSSource struct {
	cfg DNSConfig
}

var _ Source = (*DNSSource)(nil)

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
	if cfg.DoH != "" {
		u, err := url.Parse(cfg.DoH)
		if err != nil {
			return nil, fmt.Errorf("dns source: doh url: %w", err)
		}
		if u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("dns source: doh url %q: want https://host/path", cfg.DoH)
		}
		if cfg.Name == "" {
			cfg.Name = "doh:" + cfg.DoH
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
	} else {
		if cfg.Server4 == "" && cfg.Server6 == "" {
			return nil, errors.New("dns source: no server")
		}
		for fam, s := range map[Family]string{IPv4: cfg.Server4, IPv6: cfg.Server6} {
			if s == "" {
				continue
			}
			ap, err := netip.ParseAddrPort(s)
			if err != nil || !fam.Matches(ap.Addr()) {
				return nil, fmt.Errorf("dns source: %s server %q: want an %s literal host:port", fam, s, fam)
			}
		}
		if cfg.Name == "" {
			cfg.Name = "dns:" + strings.Trim(cfg.Server4+","+cfg.Server6, ",")
		}
		if cfg.Dialer == nil {
			cfg.Dialer = &net.Dialer{}
		}
	}
	return &DNSSource{cfg: cfg}, nil
}

// CloudflareDNS asks whoami.cloudflare (TXT, CH) at 1.1.1.1 and 2606:4700:4700::1111 over UDP.
func CloudflareDNS() *DNSSource {
	return mustDNS(DNSConfig{Name: "dns:cloudflare", QName: CloudflareWhoami, Kind: WhoamiTXT,
		Server4: "1.1.1.1:53", Server6: "[2606:4700:4700::1111]:53"})
}

// OpenDNS asks myip.opendns.com (A, AAAA) at resolver1.opendns.com over UDP.
func OpenDNS() *DNSSource {
	return mustDNS(DNSConfig{Name: "dns:opendns", QName: OpenDNSWhoami, Kind: WhoamiAddr,
		Server4: "208.67.222.222:53", Server6: "[2620:119:35::35]:53"})
}

// CloudflareDoH asks whoami.cloudflare (TXT, CH) over DNS over HTTPS; works
// where outgoing port 53 is blocked.
func CloudflareDoH() *DNSSource {
	return mustDNS(DNSConfig{Name: "doh:cloudflare", QName: CloudflareWhoami, Kind: WhoamiTXT,
		DoH: CloudflareDoHURL})
}

func mustDNS(cfg DNSConfig) *DNSSource {
	s, err := NewDNSSource(cfg)
	if err != nil {
		panic(err)
	}
	return s
}

// ParseDNSSpec turns one publicip.dns configuration entry into a source:
//
//	cloudflare                       whoami.cloudflare over UDP (CloudflareDNS)
//	opendns                          myip.opendns.com over UDP (OpenDNS)
//	cloudflare-doh                   whoami.cloudflare over DoH (CloudflareDoH)
//	dns://IP:PORT[/QNAME][?type=txt|addr]   UDP; the IP's family is the one it serves
//	https://HOST/PATH                DoH asking whoami.cloudflare (TXT, CH)
//
// The QNAME defaults to whoami.cloudflare and type to txt.
func ParseDNSSpec(spec string) (*DNSSource, error) {
	switch spec {
	case "cloudflare":
		return CloudflareDNS(), nil
	case "opendns":
		return OpenDNS(), nil
	case "cloudflare-doh":
		return CloudflareDoH(), nil
	}
	u, err := url.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("dns spec %q: %w", spec, err)
	}
	switch u.Scheme {
	case "https":
		return NewDNSSource(DNSConfig{QName: CloudflareWhoami, Kind: WhoamiTXT, DoH: spec})
	case "dns":
	default:
		return nil, fmt.Errorf("dns spec %q: want cloudflare, opendns, cloudflare-doh, dns://IP:PORT/NAME or https://...", spec)
	}
	cfg := DNSConfig{QName: strings.TrimPrefix(u.Path, "/"), Name: "dns:" + u.Host}
	if cfg.QName == "" {
		cfg.QName = CloudflareWhoami
	}
	switch t := u.Query().Get("type"); t {
	case "", "txt":
		cfg.Kind = WhoamiTXT
	case "addr", "a", "aaaa":
		cfg.Kind = WhoamiAddr
	default:
		return nil, fmt.Errorf("dns spec %q: unknown type %q (want txt or addr)", spec, t)
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("dns spec %q: want dns://IP:PORT: %w", spec, err)
	}
	if ap.Addr().Is4() {
		cfg.Server4 = ap.String()
	} else {
		cfg.Server6 = ap.String()
	}
	return NewDNSSource(cfg)
}

// DNSSources parses each spec (see ParseDNSSpec); nil or empty specs means
// cloudflare, opendns and cloudflare-doh.
func DNSSources(specs []string, _ *slog.Logger) ([]Source, error) {
	if len(specs) == 0 {
		specs = []string{"cloudflare", "opendns", "cloudflare-doh"}
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

// Name implements Source.
func (s *DNSSource) Name() string { return s.cfg.Name }

// Query returns the DNS query this source sends for fam.
func (s *DNSSource) Query(fam Family) *dns.Msg {
	m := new(dns.Msg)
	switch {
	case s.cfg.Kind == WhoamiTXT:
		m.SetQuestion(s.cfg.QName, dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
	case fam == IPv6:
		m.SetQuestion(s.cfg.QName, dns.TypeAAAA)
	default:
		m.SetQuestion(s.cfg.QName, dns.TypeA)
	}
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
		a, err = s.udp(ctx, server, q)
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

func (s *DNSSource) udp(ctx context.Context, server string, q *dns.Msg) (netip.Addr, error) {
	wire, err := q.Pack()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("pack query: %w", err)
	}
	c, err := s.cfg.Dialer.DialContext(ctx, "udp", server)
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
