package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"
)

// userAgent is sent with webhook and ntfy requests.
const userAgent = "porthole-agent"

var (
	_ sender = (*webhook)(nil)
	_ sender = (*ntfy)(nil)
	_ sender = (*shoutrrrSender)(nil)
)

// Payload is the JSON body a webhook receives.
type Payload struct {
	Event   Kind              `json:"event"`
	Agent   string            `json:"agent"`
	Message string            `json:"message"`
	Time    time.Time         `json:"time"`
	Details map[string]string `json:"details"`
}

// title is the short heading of ntfy and shoutrrr messages.
func title(agent string, k Kind) string {
	return "porthole " + agent + ": " + strings.ReplaceAll(string(k), "_", " ")
}

type webhook struct {
	u       *url.URL
	headers map[string]string
	client  *http.Client
}

func parseHTTPURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("url: expected an http(s):// URL") // not echoed: it may hold a secret
	}
	return u, nil
}

func newWebhook(t Target, c *http.Client) (*webhook, error) {
	u, err := parseHTTPURL(t.URL)
	if err != nil {
		return nil, err
	}
	return &webhook{u: u, headers: t.Headers, client: c}, nil
}

func (w *webhook) describe() string { return "webhook to " + w.u.Host }

func (w *webhook) send(ctx context.Context, agent string, e Event) error {
	d := e.Details
	if d == nil {
		d = map[string]string{}
	}
	body, err := json.Marshal(Payload{Event: e.Kind, Agent: agent, Message: e.Message, Time: e.Time.UTC(), Details: d})
	if err != nil {
		return err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	for k, v := range w.headers {
		h.Set(k, v)
	}
	return post(ctx, w.client, w.u, h, body)
}

type ntfy struct {
	u      *url.URL
	token  string
	client *http.Client
}

func newNtfy(t Target, c *http.Client) (*ntfy, error) {
	u, err := parseHTTPURL(t.URL)
	if err != nil {
		return nil, err
	}
	if strings.Trim(u.Path, "/") == "" {
		return nil, errors.New("url: the ntfy URL needs the topic: https://ntfy.sh/TOPIC")
	}
	return &ntfy{u: u, token: t.Token, client: c}, nil
}

func (n *ntfy) describe() string { return "ntfy at " + n.u.Host }

// ntfyLook gives each kind ntfy's priority and tags (emoji shortcodes).
var ntfyLook = map[Kind][2]string{
	CameraDown:  {"high", "warning,video_camera"},
	TunnelDown:  {"high", "warning"},
	CertFailure: {"high", "warning,lock"},
	Lockout:     {"default", "no_entry"},
	CameraUp:    {"default", "white_check_mark,video_camera"},
	TunnelUp:    {"default", "white_check_mark"},
}

func (n *ntfy) send(ctx context.Context, agent string, e Event) error {
	h := http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Title": {title(agent, e.Kind)}}
	if look, ok := ntfyLook[e.Kind]; ok {
		h.Set("Priority", look[0])
		h.Set("Tags", look[1])
	}
	if n.token != "" {
		h.Set("Authorization", "Bearer "+n.token)
	}
	return post(ctx, n.client, n.u, h, []byte(e.Message))
}

// post sends body to u and wants a 2xx answer. Its error names the host, never
// the URL (whose path or query may be a secret).
func post(ctx context.Context, c *http.Client, u *url.URL, h http.Header, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return errors.New("building the request failed")
	}
	req.Header = h
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("POST to %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode/100 != 2 {
		return &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))}
	}
	return nil
}

type shoutrrrSender struct {
	r      *router.ServiceRouter
	scheme string
	secret []string // pieces of the URL that errors must not show
}

func newShoutrrr(t Target, timeout time.Duration) (*shoutrrrSender, error) {
	s := &shoutrrrSender{secret: secretParts(t.URL)}
	if i := strings.Index(t.URL, "://"); i > 0 {
		s.scheme = t.URL[:i]
	}
	r, err := router.New(nil, t.URL)
	if err != nil {
		return nil, fmt.Errorf("url: shoutrrr cannot use this URL (see the service's page at https://shoutrrr.nickfedor.com/): %s", s.redact(err))
	}
	r.Timeout = timeout
	s.r = r
	return s, nil
}

func (s *shoutrrrSender) describe() string { return "shoutrrr " + s.scheme }

func (s *shoutrrrSender) send(ctx context.Context, agent string, e Event) error {
	// The router has no context: it bounds the send by its own Timeout.
	params := types.Params{"title": title(agent, e.Kind)}
	for _, err := range s.r.Send(e.Message, &params) {
		if err != nil {
			return fmt.Errorf("shoutrrr %s: %s", s.scheme, s.redact(err))
		}
	}
	return ctx.Err()
}

// redact is err's text with the URL's secret parts replaced.
func (s *shoutrrrSender) redact(err error) string {
	msg := err.Error()
	for _, p := range s.secret {
		msg = strings.ReplaceAll(msg, p, "[redacted]")
	}
	return msg
}

// secretParts lists the pieces of a service URL that may be secrets: the
// whole URL, its user info, path segments and query values (longest first,
// so a piece inside another is replaced with it).
func secretParts(raw string) []string {
	parts := []string{raw}
	if u, err := url.Parse(raw); err == nil {
		if u.User != nil {
			parts = append(parts, u.User.String(), u.User.Username())
			if p, ok := u.User.Password(); ok {
				parts = append(parts, p)
			}
		}
		for _, seg := range strings.Split(u.Path, "/") {
			parts = append(parts, seg)
		}
		for _, vs := range u.Query() {
			parts = append(parts, vs...)
		}
		parts = append(parts, u.RawQuery)
	}
	out := parts[:0]
	for _, p := range parts {
		if len(p) >= 4 {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}
