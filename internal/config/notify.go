package config

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"
)

// Notification target types (notify: in agent.yaml).
const (
	NotifyWebhook  = "webhook"
	NotifyNtfy     = "ntfy"
	NotifyShoutrrr = "shoutrrr"
)

// MaxNotifyTargets bounds the notify: list.
const MaxNotifyTargets = 16

var (
	notifyTypes = []string{NotifyWebhook, NotifyNtfy, NotifyShoutrrr}
	notifyKeys  = []string{"type", "url", "url_file", "headers", "token", "token_file"}
	// notifyFields lists the keys each type accepts besides type, url and url_file.
	notifyFields = map[string][]string{
		NotifyWebhook:  {"headers"},
		NotifyNtfy:     {"token", "token_file"},
		NotifyShoutrrr: nil,
	}
)

// NotifyTarget is one entry of notify:, where the agent sends its events.
type NotifyTarget struct {
	// Type is NotifyWebhook, NotifyNtfy or NotifyShoutrrr.
	Type string
	// URL: the webhook's http(s) URL, the ntfy topic's URL
	// (https://ntfy.sh/mytopic), or a shoutrrr service URL
	// (telegram://token@telegram?chats=...). It may hold a secret: String
	// redacts it, and nothing logs it.
	URL string
	// Headers are extra HTTP headers of a webhook's POST (values may be secrets).
	Headers map[string]string
	// Token is an ntfy access token (sent as a Bearer token); "" = none.
	Token string
	// Line is where the entry starts in the config, for later checks
	// (shoutrrr URLs are checked by the agent, which knows the services).
	Line int
}

// String describes t without its URL, headers' values or token.
func (t NotifyTarget) String() string {
	return fmt.Sprintf("{Type:%s URL:%s Headers:%d Token:%s}", t.Type, redact(t.URL), len(t.Headers), redact(t.Token))
}

// notify reads the optional notify: list.
func (p *parser) notify(f *fields) []NotifyTarget {
	e, ok := f.m["notify"]
	if !ok {
		return nil
	}
	n := resolve(e.val)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "notify", "expected a list of targets (- type: ntfy ...), got %s", kindName(n))
		return nil
	}
	if len(n.Content) > MaxNotifyTargets {
		p.errorf(n.Line, "notify", "%d targets: at most %d", len(n.Content), MaxNotifyTargets)
		return nil
	}
	var out []NotifyTarget
	for i, item := range n.Content {
		path := fmt.Sprintf("notify[%d]", i)
		tf := p.mapping(item, path, notifyKeys)
		if tf == nil {
			continue
		}
		t := NotifyTarget{Line: tf.line}
		typ, line, ok := p.required(tf, "type", "webhook, ntfy or shoutrrr")
		if !ok {
			continue
		}
		t.Type = strings.ToLower(typ)
		allowed, known := notifyFields[t.Type]
		if !known {
			p.errorf(line, tf.sub("type"), "unknown type %q: want webhook, ntfy or shoutrrr", typ)
			continue
		}
		for _, k := range tf.keys {
			if k != "type" && k != "url" && k != "url_file" && !contains(allowed, k) {
				p.errorf(tf.m[k].key.Line, tf.sub(k), "not a key of type %s (it takes url or url_file%s)", t.Type, listSuffix(allowed))
			}
		}
		u, uline, ok := p.secret(tf, "url", true)
		if !ok {
			continue
		}
		ukey := tf.sub("url")
		if tf.has("url_file") {
			ukey = tf.sub("url_file")
		}
		t.URL = u
		switch t.Type {
		case NotifyWebhook, NotifyNtfy:
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
				p.errorf(uline, ukey, "expected an http(s):// URL") // never echoed: it may hold a secret
				continue
			}
			if t.Type == NotifyNtfy && strings.Trim(pu.Path, "/") == "" {
				p.errorf(uline, ukey, "the URL needs the topic: https://ntfy.sh/TOPIC")
			}
			if pu.Scheme == "http" && !loopbackHost(pu.Hostname()) {
				p.warnf(uline, ukey, "plain http:// sends the notifications (and any token) unencrypted")
			}
		case NotifyShoutrrr:
			if !strings.Contains(u, "://") {
				p.errorf(uline, ukey, "expected a shoutrrr service URL (e.g. telegram://TOKEN@telegram?chats=ID, pushover://shoutrrr:TOKEN@USER/)")
			}
		}
		if t.Type == NotifyNtfy {
			tok, _, _ := p.secret(tf, "token", false)
			t.Token = tok
		}
		if t.Type == NotifyWebhook && tf.has("headers") {
			t.Headers = p.headers(tf)
		}
		out = append(out, t)
	}
	return out
}

// headers reads a webhook's headers: mapping.
func (p *parser) headers(tf *fields) map[string]string {
	hf := p.mapping(tf.m["headers"].val, tf.sub("headers"), nil)
	if hf == nil {
		return nil
	}
	out := map[string]string{}
	for _, k := range hf.keys {
		path := hf.sub(k)
		if http.CanonicalHeaderKey(k) == "Content-Type" || strings.ContainsAny(k, " :\r\n") || k == "" {
			p.errorf(hf.m[k].key.Line, path, "not a header name that can be set here")
			continue
		}
		v, ok := p.scalar(hf.m[k].val, path)
		if !ok {
			continue
		}
		if strings.ContainsAny(v, "\r\n") {
			p.errorf(hf.m[k].key.Line, path, "a header value cannot hold a line break")
			continue
		}
		out[k] = v
	}
	return out
}

func listSuffix(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	return ", and " + strings.Join(keys, ", ")
}

func loopbackHost(h string) bool {
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}
