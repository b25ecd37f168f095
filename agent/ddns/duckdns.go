package ddns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// duckdns speaks DuckDNS's update API:
// GET /update?domains=<sub>&token=..&ip=..&ipv6=..&verbose=true, answered
// "OK" or "KO". It can't read records back. The token travels in the URL,
// so errors here never include the URL.
type duckdns struct {
	base      *url.URL
	token     string
	client    *http.Client
	userAgent string
}

var _ Provider = (*duckdns)(nil)

// duckdnsCaps: DuckDNS can't be read, guesses A from the connection when none
// is sent (so AAAA can't be set, or A removed, without A), clears both
// families at once (so AAAA goes by clearing and setting A again), picks the
// TTL itself, and has a txt parameter.
var duckdnsCaps = Capabilities{RemoveAAAA: true, Delete: true, TXT: true}

func newDuckDNS(p ProviderConfig, opts ProviderOptions) (Provider, error) {
	if p.Token == "" {
		return nil, fmt.Errorf("%w: duckdns needs token", ErrBadConfig)
	}
	raw := "https://www.duckdns.org"
	if p.BaseURL != "" {
		raw = p.BaseURL
	}
	u, err := url.Parse(strings.TrimSuffix(raw, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%w: duckdns base_url %q is not an http(s) URL", ErrBadConfig, raw)
	}
	return &duckdns{base: u, token: p.Token, client: opts.HTTPClient, userAgent: opts.UserAgent}, nil
}

func (d *duckdns) Name() string { return "duckdns" }

func (d *duckdns) Capabilities() Capabilities { return duckdnsCaps }

func (d *duckdns) Get(context.Context, string) (Records, error) {
	return Records{}, fmt.Errorf("duckdns: read records: %w", ErrUnsupported)
}

// subdomain turns home.duckdns.org into home.
func subdomain(host string) (string, error) {
	h := normHost(host)
	sub, ok := strings.CutSuffix(h, ".duckdns.org")
	if !ok || sub == "" || strings.Contains(sub, ".") {
		return "", fmt.Errorf("%w: duckdns hostname must be <name>.duckdns.org, not %q", ErrBadConfig, h)
	}
	return sub, nil
}

// Set updates the addresses. DuckDNS guesses the IPv4 address from the
// connection when none is sent and can only clear both families at once,
// so AAAA can't be set without A, and removing one family needs the other
// to be given.
func (d *duckdns) Set(ctx context.Context, host string, want Records, _ time.Duration) error {
	sub, err := subdomain(host)
	if err != nil {
		return err
	}
	if err := want.Validate(); err != nil {
		return err
	}
	e4, e6 := want.V4.IsValid() || want.NoV4, want.V6.IsValid() || want.NoV6
	switch {
	case !e4 && !e6:
		return nil
	case !e4, want.NoV4 && want.V6.IsValid():
		return fmt.Errorf("duckdns: set AAAA without A (DuckDNS would guess A): %w", ErrUnsupported)
	case want.NoV4 && !e6:
		return fmt.Errorf("duckdns: remove one family and leave the other as is: %w", ErrUnsupported)
	}
	if want.NoV4 || want.NoV6 {
		if err := d.call(ctx, url.Values{"domains": {sub}, "clear": {"true"}}); err != nil {
			return err
		}
	}
	if !want.V4.IsValid() {
		return nil
	}
	q := url.Values{"domains": {sub}, "ip": {want.V4.String()}}
	if want.V6.IsValid() {
		q.Set("ipv6", want.V6.String())
	}
	return d.call(ctx, q)
}

func (d *duckdns) Delete(ctx context.Context, host string) error {
	sub, err := subdomain(host)
	if err != nil {
		return err
	}
	return d.call(ctx, url.Values{"domains": {sub}, "clear": {"true"}})
}

func (d *duckdns) call(ctx context.Context, q url.Values) error {
	q.Set("token", d.token)
	q.Set("verbose", "true")
	u := *d.base
	u.Path += "/update"
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return errors.New("duckdns: update: bad request") // the URL holds the token
	}
	req.Header.Set("User-Agent", d.userAgent)
	resp, err := d.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the URL: it holds the token
		}
		return fmt.Errorf("duckdns: update: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("duckdns: update: %w", &HTTPError{Provider: "duckdns", StatusCode: resp.StatusCode,
			Wait: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())})
	}
	switch first, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n"); strings.TrimSpace(first) {
	case "OK":
		return nil
	case "KO":
		return fmt.Errorf("duckdns: update: %w: token or domain wrong; fix ddns.provider and restart", ErrRejected)
	default:
		return fmt.Errorf("duckdns: update: %w: %q", ErrUnexpectedAnswer, printable(first, 40))
	}
}
