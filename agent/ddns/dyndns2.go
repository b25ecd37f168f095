package ddns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// dyndns2 speaks the dyndns2 update protocol (DynDNS, No-IP, Dynu and
// many self-hosted servers): GET /nic/update?hostname=..&myip=.. with Basic
// auth, answered by one line per host such as "good 203.0.113.5".
// It can't read records back, so the updater relies on its state file.
type dyndns2 struct {
	name      string
	endpoint  *url.URL
	v6Param   string // "" = v6 goes into myip, comma separated
	user      string
	pass      string
	client    *http.Client
	userAgent string
	now       func() time.Time
}

var _ Provider = (*dyndns2)(nil)

var dyndns2Servers = map[string]struct{ url, v6Param string }{
	"noip":    {"https://dynupdate.no-ip.com/nic/update", ""},
	"dynu":    {"https://api.dynu.com/nic/update", "myipv6"},
	"dyndns2": {"", ""},
}

// dyndns2Caps: the protocol only sets addresses: no reading, no removing,
// no TTL, no TXT.
var dyndns2Caps = Capabilities{}

func newDynDNS2(p ProviderConfig, opts ProviderOptions) (Provider, error) {
	typ := strings.ToLower(p.Type)
	def := dyndns2Servers[typ]
	raw := def.url
	if p.BaseURL != "" {
		raw = p.BaseURL
	}
	if raw == "" {
		return nil, fmt.Errorf("%w: dyndns2 needs base_url (the server, e.g. https://members.dyndns.org)", ErrBadConfig)
	}
	if p.Username == "" || p.Password == "" {
		return nil, fmt.Errorf("%w: %s needs username and password", ErrBadConfig, typ)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%w: %s base_url %q is not an http(s) URL without credentials", ErrBadConfig, typ, raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/nic/update"
	}
	return &dyndns2{
		name: typ, endpoint: u, v6Param: def.v6Param,
		user: p.Username, pass: p.Password,
		client: opts.HTTPClient, userAgent: opts.UserAgent, now: time.Now,
	}, nil
}

func (d *dyndns2) Name() string { return d.name }

func (d *dyndns2) Capabilities() Capabilities { return dyndns2Caps }

func (d *dyndns2) Get(context.Context, string) (Records, error) {
	return Records{}, fmt.Errorf("%s: read records: %w", d.name, ErrUnsupported)
}

func (d *dyndns2) Delete(context.Context, string) error {
	return fmt.Errorf("%s: delete records: %w", d.name, ErrUnsupported)
}

func (d *dyndns2) Set(ctx context.Context, host string, want Records, _ time.Duration) error {
	host = normHost(host)
	if err := want.Validate(); err != nil {
		return err
	}
	if want.NoV4 || want.NoV6 {
		return fmt.Errorf("%s: remove a record family: %w", d.name, ErrUnsupported)
	}
	if !want.V4.IsValid() && !want.V6.IsValid() {
		return nil
	}
	q := d.endpoint.Query()
	q.Set("hostname", host)
	var ips []string
	if want.V4.IsValid() {
		ips = append(ips, want.V4.String())
	}
	if want.V6.IsValid() {
		if d.v6Param != "" {
			q.Set(d.v6Param, want.V6.String())
		} else {
			ips = append(ips, want.V6.String())
		}
	}
	if len(ips) > 0 {
		q.Set("myip", strings.Join(ips, ","))
	}
	u := *d.endpoint
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%s: update %s: %w", d.name, host, err)
	}
	req.SetBasicAuth(d.user, d.pass)
	req.Header.Set("User-Agent", d.userAgent)
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: update %s: %w", d.name, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return fmt.Errorf("%s: update %s: read answer: %w", d.name, host, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		// Some servers answer bad credentials with a status instead of "badauth".
		var de *DynDNSError
		if _, perr := ParseDynDNSResponse(body); errors.As(perr, &de) {
			return fmt.Errorf("%s: update %s: %w", d.name, host, de)
		}
		return fmt.Errorf("%s: update %s: %w", d.name, host, &DynDNSError{Code: "badauth"})
	case resp.StatusCode >= 300:
		return fmt.Errorf("%s: update %s: %w", d.name, host, &HTTPError{
			Provider: d.name, StatusCode: resp.StatusCode,
			Wait: parseRetryAfter(resp.Header.Get("Retry-After"), d.now()),
		})
	}
	res, err := ParseDynDNSResponse(body)
	if err != nil {
		return fmt.Errorf("%s: update %s: %w", d.name, host, err)
	}
	// A server that reports other addresses than we sent did not publish ours.
	for _, a := range res.Addrs {
		if a.Is4() && want.V4.IsValid() && a != want.V4 || a.Is6() && want.V6.IsValid() && a != want.V6 {
			return fmt.Errorf("%s: update %s: %w: server answered %q with %s, we sent %s",
				d.name, host, ErrUnexpectedAnswer, res.Code, a, want)
		}
	}
	return nil
}

// ErrUnexpectedAnswer means a server's answer could not be understood.
var ErrUnexpectedAnswer = errors.New("unexpected answer")

// Result is a successful dyndns2 answer.
type Result struct {
	// Code is "good" or "nochg".
	Code string
	// Addrs are the addresses the server echoed, if any.
	Addrs []netip.Addr
}

// DynDNSError is a dyndns2 return code other than good/nochg.
type DynDNSError struct {
	Code string
}

var dyndnsCodes = map[string]struct {
	fatal bool
	help  string
}{
	"badauth":  {true, "username or password wrong; fix the credentials and restart the agent"},
	"!donator": {true, "the account lacks the paid feature this update used; fix the account or config and restart"},
	"notfqdn":  {true, "the hostname is not a fully qualified domain name; fix ddns.hostname and restart"},
	"nohost":   {true, "the hostname does not exist in this account; fix ddns.hostname or the account and restart"},
	"numhost":  {true, "too many hosts in one request; fix the config and restart"},
	"abuse":    {true, "the hostname is blocked for abuse; contact the provider, then restart"},
	"badagent": {true, "the server refused this client; please report it, updates stopped until restart"},
	"!yours":   {true, "the hostname belongs to another account; fix ddns.hostname and restart"},
	"911":      {false, "server-side problem; retrying in 30 minutes or more"},
	"dnserr":   {false, "server-side DNS error; retrying in 30 minutes or more"},
}

func (e *DynDNSError) Error() string {
	c := printable(e.Code, 32)
	if d, ok := dyndnsCodes[e.Code]; ok {
		return fmt.Sprintf("dyndns2 server answered %q: %s", c, d.help)
	}
	return fmt.Sprintf("dyndns2 server answered %q", c)
}

// Fatal reports whether updates must stop until the configuration changes.
func (e *DynDNSError) Fatal() bool { return dyndnsCodes[e.Code].fatal }

// RetryAfter is 30 minutes for server errors (the protocol asks clients to
// wait that long after 911), zero otherwise.
func (e *DynDNSError) RetryAfter() time.Duration {
	if _, ok := dyndnsCodes[e.Code]; ok && !e.Fatal() {
		return 30 * time.Minute
	}
	return 0
}

// Is makes fatal codes match ErrRejected.
func (e *DynDNSError) Is(target error) bool { return target == ErrRejected && e.Fatal() }

// ParseDynDNSResponse parses a dyndns2 answer body. Each non-empty line is
// "<code> [addr[,addr]...]"; success needs every line to be good or nochg.
// A known failure code gives *DynDNSError; anything else wraps
// ErrUnexpectedAnswer.
func ParseDynDNSResponse(body []byte) (Result, error) {
	var res Result
	lines := 0
	for line := range bytes.Lines(body) {
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		lines++
		if lines > 16 {
			return Result{}, fmt.Errorf("%w: more than 16 lines", ErrUnexpectedAnswer)
		}
		code := strings.ToLower(f[0])
		switch code {
		case "good", "nochg":
		default:
			if _, ok := dyndnsCodes[code]; ok {
				return Result{}, &DynDNSError{Code: code}
			}
			return Result{}, fmt.Errorf("%w: %q", ErrUnexpectedAnswer, printable(string(bytes.TrimSpace(line)), 80))
		}
		if res.Code == "" || code == "good" {
			res.Code = code
		}
		for _, fld := range f[1:] {
			for _, s := range strings.Split(fld, ",") {
				if s == "" {
					continue
				}
				a, err := netip.ParseAddr(s)
				if err != nil || a.Zone() != "" {
					return Result{}, fmt.Errorf("%w: bad address %q", ErrUnexpectedAnswer, printable(s, 64))
				}
				if len(res.Addrs) == 8 {
					return Result{}, fmt.Errorf("%w: too many addresses", ErrUnexpectedAnswer)
				}
				res.Addrs = append(res.Addrs, a.Unmap())
			}
		}
	}
	if lines == 0 {
		return Result{}, fmt.Errorf("%w: empty answer", ErrUnexpectedAnswer)
	}
	return res, nil
}
