package publicip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// DefaultHTTPSURLs are the echo services used when the configuration lists
// none. Each answers the caller's address as a bare line of text; the address
// family is chosen by the dialer (see FamilyClient), not by the URL.
var DefaultHTTPSURLs = []string{
	"https://api.ipify.org",
	"https://api64.ipify.org",
	"https://ifconfig.co/ip",
	"https://icanhazip.com",
}

// maxEchoBody is the most an echo answer may hold; an address needs at most 45.
const maxEchoBody = 256

// HTTPConfig configures an HTTPSource.
type HTTPConfig struct {
	// URL of the echo service, https:// (or http://, accepted with a warning).
	URL string
	// Client returns the client used for a family. It must make the request
	// over that family, or the answer is for the wrong one. Nil: FamilyClient(fam, nil).
	Client func(Family) *http.Client
	// Logger; nil discards.
	Logger *slog.Logger
}

// HTTPSource asks an HTTP echo service for the address it sees.
type HTTPSource struct {
	url      string
	operator string
	client   func(Family) *http.Client
}

var _ Source = (*HTTPSource)(nil)

// NewHTTPSource checks cfg.URL and returns the source. A plain http:// URL
// is accepted with one warning: anyone on the path could change the answer.
func NewHTTPSource(cfg HTTPConfig) (*HTTPSource, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("echo url: %w", err)
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("echo url %q: want https://host/...", cfg.URL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("echo url %q: credentials in the URL are not supported", u.Redacted())
	}
	if u.Scheme == "http" {
		logger(cfg.Logger).Warn("publicip: echo service over plain http; anyone on the path can change its answer, consensus with other sources is what protects you",
			"url", cfg.URL)
	}
	s := &HTTPSource{url: cfg.URL, operator: operatorOfHost(u.Hostname()), client: cfg.Client}
	if s.client == nil {
		c4, c6 := FamilyClient(IPv4, nil), FamilyClient(IPv6, nil)
		s.client = func(f Family) *http.Client {
			if f == IPv6 {
				return c6
			}
			return c4
		}
	}
	return s, nil
}

// HTTPSources builds a source for each URL; nil or empty urls means DefaultHTTPSURLs.
func HTTPSources(urls []string, log *slog.Logger) ([]Source, error) {
	if len(urls) == 0 {
		urls = DefaultHTTPSURLs
	}
	out := make([]Source, 0, len(urls))
	for _, u := range urls {
		s, err := NewHTTPSource(HTTPConfig{URL: u, Logger: log})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Name implements Source: the URL.
func (s *HTTPSource) Name() string { return s.url }

// Operator implements Operated: who runs a well-known service, or "" (then
// the source counts on its own).
func (s *HTTPSource) Operator() string { return s.operator }

// knownOperators maps host name suffixes of well-known echo and whoami
// services to who runs them, so one company's services vote once.
var knownOperators = []struct{ suffix, operator string }{
	{"ipify.org", "ipify"},
	{"icanhazip.com", "cloudflare"}, // run by Cloudflare since 2021
	{"cloudflare-dns.com", "cloudflare"},
	{"one.one.one.one", "cloudflare"},
	{"cloudflare.com", "cloudflare"},
	{"ifconfig.co", "ifconfig.co"},
	{"opendns.com", "opendns"},
	{"google.com", "google"},
	{"dns.google", "google"},
}

// operatorOfHost returns who runs host if it is a well-known service, else
// "": other sources (a lab's fakes, a self-hosted echo) each count on their own.
func operatorOfHost(host string) string {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, k := range knownOperators {
		if h == k.suffix || strings.HasSuffix(h, "."+k.suffix) {
			return k.operator
		}
	}
	return ""
}

// Lookup implements Source.
func (s *HTTPSource) Lookup(ctx context.Context, fam Family) (netip.Addr, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Accept", "text/plain")
	req.Header.Set("User-Agent", "porthole-agent")
	resp, err := s.client(fam).Do(req)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("get: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return netip.Addr{}, fmt.Errorf("http status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxEchoBody+1))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read body: %w", err)
	}
	a, err := ParseEchoBody(body)
	if err != nil {
		return netip.Addr{}, err
	}
	if !fam.Matches(a) {
		return a, fmt.Errorf("%s answered for %s: %w", a, fam, ErrWrongFamily)
	}
	return a, nil
}

// ParseEchoBody parses an echo service's answer: one IPv4 or IPv6 address,
// optionally surrounded by white space, at most 256 bytes. Anything else
// (HTML, JSON, an empty body, several addresses, a zone) is an error
// wrapping ErrBadAnswer that quotes the start of the body.
func ParseEchoBody(b []byte) (netip.Addr, error) {
	if len(b) > maxEchoBody {
		return netip.Addr{}, fmt.Errorf("body longer than %d bytes (%s): %w", maxEchoBody, snippet(b), ErrBadAnswer)
	}
	t := bytes.TrimSpace(b)
	switch {
	case len(t) == 0:
		return netip.Addr{}, fmt.Errorf("empty body: %w", ErrBadAnswer)
	case bytes.IndexByte(t, '<') >= 0:
		return netip.Addr{}, fmt.Errorf("HTML, not an address (%s): %w", snippet(t), ErrBadAnswer)
	}
	a, err := netip.ParseAddr(string(t))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an address (%s): %w", snippet(t), ErrBadAnswer)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address with a zone (%s): %w", snippet(t), ErrBadAnswer)
	}
	return a, nil
}

// snippet quotes the start of untrusted bytes for a log line.
func snippet(b []byte) string {
	const n = 40
	if len(b) > n {
		return fmt.Sprintf("%q...", b[:n])
	}
	return fmt.Sprintf("%q", b)
}

// FamilyClient returns an HTTP client whose connections use only family fam
// (tcp4 or tcp6), so an echo service sees, and answers, that family's address.
// It ignores proxy settings (a proxy would be seen instead of the home), opens
// a fresh connection per request (a kept-alive IPv6 connection would report an
// old temporary address), and follows at most 3 redirects. dial nil means a
// net.Dialer with a 5 s timeout.
func FamilyClient(fam Family, dial *net.Dialer) *http.Client {
	if dial == nil {
		dial = &net.Dialer{Timeout: 5 * time.Second}
	}
	network := "tcp" + fam.suffix()
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dial.DialContext(ctx, network, addr)
		},
		DisableKeepAlives:      true,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  5 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			return nil
		},
	}
}

// logger returns l, or a logger that discards when l is nil.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
