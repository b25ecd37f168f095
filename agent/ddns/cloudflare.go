package ddns

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/libdns/cloudflare"
)

// cloudflareAPI is the base URL libdns/cloudflare v0.2.2 has compiled in.
const cloudflareAPI = "https://api.cloudflare.com/client/v4"

// cloudflareCaps: a full DNS API (records read, written and removed one by
// one, TTL per record, TXT records too).
var cloudflareCaps = Capabilities{Read: true, RemoveA: true, RemoveAAAA: true, Delete: true, TTL: true, TXT: true}

func newCloudflare(p ProviderConfig, opts ProviderOptions) (Provider, error) {
	if p.APIToken == "" {
		return nil, fmt.Errorf("%w: cloudflare needs api_token", ErrBadConfig)
	}
	zone := normHost(p.Zone)
	if zone == "" {
		return nil, fmt.Errorf("%w: cloudflare needs zone", ErrBadConfig)
	}
	if err := validHostname(zone); err != nil {
		return nil, err
	}
	hc, err := newAPIClient("cloudflare", cloudflareAPI, p.BaseURL, opts)
	if err != nil {
		return nil, err
	}
	return &libdnsProvider{
		name:   "cloudflare",
		zone:   zone,
		caps:   cloudflareCaps,
		client: &cloudflare.Provider{APIToken: p.APIToken, HTTPClient: hc},
		mapErr: func(err error) error {
			// libdns/cloudflare reports an unknown zone only as text.
			if strings.Contains(err.Error(), "expected 1 zone, got 0") {
				return fmt.Errorf("%w: %s (is the zone in this account, and may the token read it?)", ErrUnknownZone, zone)
			}
			return err
		},
	}, nil
}

// apiClient is the HTTP client handed to libdns providers. It sets our
// User-Agent, sends requests for the compiled-in API base to BaseURL when
// one is configured (the test hook), and turns error statuses into
// *HTTPError so the updater can tell 401 from 429 from 5xx and honour
// Retry-After (the libdns package reports statuses only as text).
type apiClient struct {
	provider  string
	client    *http.Client
	from, to  *url.URL // to == nil: no rewriting
	userAgent string
	now       func() time.Time
}

func newAPIClient(provider, defaultBase, override string, opts ProviderOptions) (*apiClient, error) {
	from, err := url.Parse(defaultBase)
	if err != nil {
		return nil, fmt.Errorf("%s: default base URL: %w", provider, err)
	}
	c := &apiClient{provider: provider, client: opts.HTTPClient, from: from, userAgent: opts.UserAgent, now: time.Now}
	if override != "" {
		to, err := url.Parse(strings.TrimSuffix(override, "/"))
		if err != nil || (to.Scheme != "https" && to.Scheme != "http") || to.Host == "" {
			return nil, fmt.Errorf("%w: %s base_url %q is not an http(s) URL", ErrBadConfig, provider, override)
		}
		c.to = to
	}
	return c, nil
}

// Do implements libdns/cloudflare's HTTPClient.
func (c *apiClient) Do(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if c.to != nil && req.URL.Host == c.from.Host && strings.HasPrefix(req.URL.Path, c.from.Path) {
		u := *req.URL
		u.Scheme, u.Host = c.to.Scheme, c.to.Host
		u.Path = c.to.Path + strings.TrimPrefix(req.URL.Path, c.from.Path)
		u.RawPath = ""
		req.URL, req.Host = &u, ""
	}
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, &HTTPError{
		Provider:   c.provider,
		StatusCode: resp.StatusCode,
		Wait:       parseRetryAfter(resp.Header.Get("Retry-After"), c.now()),
		Message:    apiErrorMessage(body),
	}
}

// apiErrorMessage extracts the errors of a Cloudflare-style JSON answer.
func apiErrorMessage(body []byte) string {
	var r struct {
		Errors []struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &r) != nil {
		return ""
	}
	var parts []string
	for i, e := range r.Errors {
		if i == 3 {
			break
		}
		parts = append(parts, fmt.Sprintf("%d %s", e.Code, printable(e.Message, 120)))
	}
	return strings.Join(parts, "; ")
}

// printable keeps at most n printable ASCII characters of s, for logs.
func printable(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= n {
			b.WriteString("...")
			break
		}
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		}
	}
	return b.String()
}
