package ddns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Provider reads and writes the A/AAAA records of one hostname at a DNS
// provider. Implementations touch nothing but the A and AAAA records of the
// host they are given. Host is a fully qualified name without trailing dot.
type Provider interface {
	// Name is the provider type ("cloudflare", "dyndns2", ...), for logs and state.
	Name() string
	// Get returns what the provider serves for host. Absent families come
	// back with NoV4/NoV6 set. Write-only protocols return ErrUnsupported.
	Get(ctx context.Context, host string) (Records, error)
	// Set makes the provider serve want for host: a valid address replaces
	// that family's RRset, NoV4/NoV6 removes it, anything else is left as is.
	Set(ctx context.Context, host string, want Records, ttl time.Duration) error
	// Delete removes host's A and AAAA records. ErrUnsupported if the
	// protocol can't delete.
	Delete(ctx context.Context, host string) error
	// Capabilities says what the provider's protocol can do. It is the one
	// place that says so: the updater, the agent and config checks ask it
	// (or TypeCapabilities) instead of switching on provider names.
	Capabilities() Capabilities
}

// Capabilities is what a provider's protocol can do. The zero value is a
// write-only provider that can only set addresses.
type Capabilities struct {
	// Read: Get returns what the provider serves. False: write-only (dyndns2,
	// DuckDNS); the updater then trusts its state file and never reads.
	Read bool
	// RemoveA: Set can remove the A record (NoV4) while setting AAAA.
	RemoveA bool
	// RemoveAAAA: Set can remove the AAAA record (NoV6) while setting A.
	RemoveAAAA bool
	// Delete: Delete removes the host's records (delete_on_exit).
	Delete bool
	// TTL: Set honours its ttl argument. False: the provider picks the TTL.
	TTL bool
	// TXT: the provider's API can write TXT records, as ACME DNS-01
	// challenges need. No Provider method writes TXT yet.
	TXT bool
}

// providerType is one kind of provider: how to build it and what it can do.
type providerType struct {
	caps  Capabilities
	build func(ProviderConfig, ProviderOptions) (Provider, error)
}

// providerTypes lists every provider type. Each type's capabilities are
// declared beside its implementation (cloudflareCaps, ...).
var providerTypes = map[string]providerType{
	"cloudflare": {cloudflareCaps, newCloudflare},
	"rfc2136":    {rfc2136Caps, newRFC2136},
	"duckdns":    {duckdnsCaps, newDuckDNS},
	"dyndns2":    {dyndns2Caps, newDynDNS2},
	"noip":       {dyndns2Caps, newDynDNS2},
	"dynu":       {dyndns2Caps, newDynDNS2},
}

// ProviderTypes returns the provider types NewProvider knows, sorted.
func ProviderTypes() []string {
	out := make([]string, 0, len(providerTypes))
	for t := range providerTypes {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// TypeCapabilities returns what providers of type typ (case-insensitive)
// can do, without building one (no credentials needed). ErrBadConfig for an
// unknown type.
func TypeCapabilities(typ string) (Capabilities, error) {
	pt, ok := providerTypes[strings.ToLower(typ)]
	if !ok {
		return Capabilities{}, fmt.Errorf("%w: unknown provider type %q", ErrBadConfig, typ)
	}
	return pt.caps, nil
}

// ProviderConfig says which DNS provider holds the records and how to log
// in. Type selects the fields that apply; the others must be empty. Secrets
// (APIToken, Password, Token, Key) never appear in String, errors or logs.
type ProviderConfig struct {
	// Type is one of ProviderTypes(), case-insensitive. Required.
	Type string
	// Zone is the DNS zone the hostname is in: cloudflare and rfc2136
	// (required there).
	Zone string
	// APIToken is a Cloudflare API token with Zone.DNS edit. Required for cloudflare.
	APIToken string
	// BaseURL replaces the API endpoint: cloudflare's API base (a test hook;
	// empty = https://api.cloudflare.com/client/v4), duckdns's server (empty =
	// https://www.duckdns.org), the dyndns2 server's update URL (required for
	// dyndns2; empty = the built-in server for noip and dynu).
	BaseURL string
	// Username and Password log in to the dyndns2 family. Required there.
	Username string
	Password string
	// Token is DuckDNS's account token. Required for duckdns.
	Token string
	// Server is the rfc2136 primary's host:port (port empty = 53). Required for rfc2136.
	Server string
	// KeyName, KeyAlg and Key are rfc2136's optional TSIG key: the key's
	// name, its algorithm (empty = hmac-sha256) and the base64 secret.
	// KeyName and Key go together; both empty = unsigned updates.
	KeyName string
	KeyAlg  string
	Key     string
}

// String describes c without its secrets, so logging it can't leak them.
func (c ProviderConfig) String() string {
	r := func(s string) string {
		if s == "" {
			return ""
		}
		return "[redacted]"
	}
	return "{Type:" + c.Type + " Zone:" + c.Zone + " APIToken:" + r(c.APIToken) +
		" BaseURL:" + c.BaseURL + " Username:" + c.Username + " Password:" + r(c.Password) +
		" Token:" + r(c.Token) + " Server:" + c.Server + " KeyName:" + c.KeyName +
		" KeyAlg:" + c.KeyAlg + " Key:" + r(c.Key) + "}"
}

// Records is what a hostname's address records are, or should be.
//
// Per family there are three states: a valid address (the record holds
// exactly this address), No = true (there is, or should be, no such
// record), and neither (unknown; in a wanted set: leave that family alone).
// "Leave alone" is what a failed or ambiguous detection must produce;
// removing a record needs the explicit NoV4/NoV6.
type Records struct {
	V4   netip.Addr `json:"a,omitzero"`
	V6   netip.Addr `json:"aaaa,omitzero"`
	NoV4 bool       `json:"no_a,omitempty"`
	NoV6 bool       `json:"no_aaaa,omitempty"`
}

// String is a short human form such as "A=203.0.113.5 AAAA=-".
func (r Records) String() string {
	f := func(a netip.Addr, no bool) string {
		switch {
		case a.IsValid():
			return a.String()
		case no:
			return "none"
		default:
			return "?"
		}
	}
	return "A=" + f(r.V4, r.NoV4) + " AAAA=" + f(r.V6, r.NoV6)
}

// IsZero reports whether r says nothing about either family.
func (r Records) IsZero() bool { return r == Records{} }

// Satisfies reports whether having r meets the wish want: every family
// want has an opinion on is known in r and equal to it.
func (r Records) Satisfies(want Records) bool {
	ok := func(have, wantA netip.Addr, haveNo, wantNo bool) bool {
		switch {
		case wantA.IsValid():
			return have == wantA
		case wantNo:
			return haveNo
		default:
			return true
		}
	}
	return ok(r.V4, want.V4, r.NoV4, want.NoV4) && ok(r.V6, want.V6, r.NoV6, want.NoV6)
}

// apply returns r after a successful Set of want.
func (r Records) apply(want Records) Records {
	if want.V4.IsValid() {
		r.V4, r.NoV4 = want.V4, false
	} else if want.NoV4 {
		r.V4, r.NoV4 = netip.Addr{}, true
	}
	if want.V6.IsValid() {
		r.V6, r.NoV6 = want.V6, false
	} else if want.NoV6 {
		r.V6, r.NoV6 = netip.Addr{}, true
	}
	return r
}

// Validate checks that r can be published: V4 holds an IPv4 address, V6 a
// plain IPv6 one, neither unspecified, multicast, link-local or zoned, and
// no family both set and removed.
func (r Records) Validate() error {
	check := func(fam string, a netip.Addr, no bool, want4 bool) error {
		if !a.IsValid() {
			return nil
		}
		switch {
		case no:
			return fmt.Errorf("%w: %s both set and removed", ErrInvalidRecords, fam)
		case want4 && !a.Is4(), !want4 && (!a.Is6() || a.Is4In6()):
			return fmt.Errorf("%w: %s record can't hold %s", ErrInvalidRecords, fam, a)
		case a.Zone() != "", a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalUnicast(),
			a.IsInterfaceLocalMulticast():
			return fmt.Errorf("%w: %s %s is not publishable", ErrInvalidRecords, fam, a)
		}
		return nil
	}
	if err := check("A", r.V4, r.NoV4, true); err != nil {
		return err
	}
	return check("AAAA", r.V6, r.NoV6, false)
}

var (
	// ErrUnsupported is returned by operations a provider's protocol lacks
	// (reading records over dyndns2, deleting over duckdns).
	ErrUnsupported = errors.New("not supported by this provider")
	// ErrUnknownZone means the provider doesn't serve the configured zone.
	ErrUnknownZone = errors.New("zone not found at the provider")
	// ErrRejected means the provider refused the credentials or the hostname
	// for good: retrying with the same configuration is pointless.
	ErrRejected = errors.New("provider rejected the update")
	// ErrInvalidRecords means the records asked for can't be published.
	ErrInvalidRecords = errors.New("invalid records")
	// ErrBadConfig means the provider configuration is incomplete or wrong.
	ErrBadConfig = errors.New("bad ddns provider config")
)

// HTTPError is an HTTP API's error status.
type HTTPError struct {
	// Provider is the provider type.
	Provider string
	// StatusCode is the HTTP status.
	StatusCode int
	// Wait is the server's Retry-After, zero if none.
	Wait time.Duration
	// Message is the API's own error text, if any (never contains secrets we sent).
	Message string
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("%s: HTTP %d %s", e.Provider, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		s += ": " + e.Message
	}
	switch {
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		s += " (check the API token and its permissions)"
	case e.Wait > 0:
		s += fmt.Sprintf(" (retry after %s)", e.Wait)
	}
	return s
}

// RetryAfter is the least time to wait before the next attempt.
func (e *HTTPError) RetryAfter() time.Duration { return e.Wait }

// Temporary reports whether the status is worth retrying (429, 5xx).
func (e *HTTPError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// Auth reports whether the status says the credentials are wrong.
func (e *HTTPError) Auth() bool {
	return e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden
}

// parseRetryAfter reads a Retry-After header (seconds or HTTP date).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// maxRetryAfter caps what a server can ask us to wait.
const maxRetryAfter = 24 * time.Hour

// UserAgent is the User-Agent the agent sends to DNS providers.
func UserAgent(version string) string {
	if version == "" {
		version = "dev"
	}
	return "porthole-agent/" + version + " (+https://github.com/porthole-dev/porthole)"
}

// ProviderOptions are what NewProvider needs besides the config.
type ProviderOptions struct {
	// HTTPClient is used by HTTP providers. Nil = a client with a 30 s timeout.
	// Its Transport is wrapped, never modified. Tests pass an httptest
	// server's client here (to trust its certificate) together with
	// ProviderConfig.BaseURL.
	HTTPClient *http.Client
	// UserAgent is sent to HTTP providers. Empty = UserAgent("dev").
	UserAgent string
	// DNSTimeout bounds one RFC 2136 exchange. Zero = 10 s.
	DNSTimeout time.Duration
	// Logger; nil = discard.
	Logger *slog.Logger
}

func (o ProviderOptions) withDefaults() ProviderOptions {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.UserAgent == "" {
		o.UserAgent = UserAgent("")
	}
	if o.DNSTimeout <= 0 {
		o.DNSTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// NewProvider builds the provider p describes.
//
// Types: "cloudflare" (libdns/cloudflare), "rfc2136", "duckdns", "dyndns2"
// (BaseURL is the server, required), "noip" and "dynu" (dyndns2 with their
// servers built in). See ProviderConfig for the fields each takes.
func NewProvider(p ProviderConfig, opts ProviderOptions) (Provider, error) {
	opts = opts.withDefaults()
	if p.Type == "" {
		return nil, fmt.Errorf("%w: provider type missing", ErrBadConfig)
	}
	pt, ok := providerTypes[strings.ToLower(p.Type)]
	if !ok {
		return nil, fmt.Errorf("%w: unknown provider type %q", ErrBadConfig, p.Type)
	}
	return pt.build(p, opts)
}

// normHost lower-cases a hostname and drops a trailing dot.
func normHost(h string) string { return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".") }

// validHostname checks the syntax of a DNS name (no trailing dot).
func validHostname(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("%w: hostname %q: empty or too long", ErrBadConfig, h)
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("%w: hostname %q: bad label", ErrBadConfig, h)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: hostname %q: bad character %q", ErrBadConfig, h, c)
			}
		}
	}
	return nil
}

// inZone reports whether host is zone or below it (both normalized).
func inZone(host, zone string) bool {
	return host == zone || strings.HasSuffix(host, "."+zone)
}
