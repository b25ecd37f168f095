package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Agent defaults and limits.
const (
	DefaultPublicIPInterval = 5 * time.Minute
	MinPublicIPInterval     = 30 * time.Second
	DefaultDDNSTTL          = 60 * time.Second
	DefaultDDNSMinInterval  = time.Minute
)

// Known values of list-valued settings, in their default order.
var (
	DirectProtocols = []string{"upnp", "natpmp", "pcp"}
	PublicIPSources = []string{"relay", "https", "dns", "router"}
	ProviderTypes   = []string{"cloudflare", "dyndns2", "noip", "dynu", "rfc2136", "duckdns"}
	RFC2136KeyAlgs  = []string{"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}
)

var (
	agentKeys      = []string{"name", "state_dir", "relay", "services", "viewers", "tls", "direct", "publicip", "ddns", "limits", "admin", "wireguard", "notify"}
	agentRelayKeys = []string{"address", "token", "token_file", "transport"}
	serviceKeys    = []string{"name", "kind", "target", "port", "allow", "first_byte_timeout", "viewers", "camera_login", "tls",
		"mjpeg", "snapshot", "path", "low_path", "live_timeout"}
	directKeys   = []string{"enabled", "listen", "protocols", "gateway"}
	publicIPKeys = []string{"sources", "https", "dns", "min_agree", "accept", "interval", "ipv6", "ipv6_interface_id"}
	ddnsKeys     = []string{"hostname", "ttl", "min_interval", "delete_on_exit", "provider"}
	providerKeys = []string{"type", "zone", "api_token", "api_token_file", "base_url", "username",
		"password", "password_file", "token", "token_file", "server", "key_name", "key_alg", "key", "key_file"}
	// providerFields lists the keys each provider type accepts besides type.
	providerFields = map[string][]string{
		"cloudflare": {"zone", "api_token", "api_token_file", "base_url"},
		"dyndns2":    {"base_url", "username", "password", "password_file"},
		"noip":       {"base_url", "username", "password", "password_file"},
		"dynu":       {"base_url", "username", "password", "password_file"},
		"rfc2136":    {"server", "zone", "key_name", "key_alg", "key", "key_file"},
		"duckdns":    {"token", "token_file", "base_url"},
	}
)

// LoadAgent reads, parses and validates an agent config file.
func LoadAgent(path string) (*Agent, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return ParseAgent(path, data, nil)
}

// ParseAgent parses and validates an agent config. file names the config in
// messages and anchors relative *_file paths; lookupEnv expands ${VAR}
// (nil = os.LookupEnv). A non-nil error is an Errors listing every problem.
func ParseAgent(file string, data []byte, lookupEnv func(string) (string, bool)) (*Agent, error) {
	return newParser(file, lookupEnv).agent(data)
}

func (p *parser) agent(data []byte) (*Agent, error) {
	root := p.document(data)
	if root == nil {
		return nil, p.result()
	}
	f := p.mapping(root, "", agentKeys)
	if f == nil {
		return nil, p.result()
	}
	a := &Agent{}
	if name, line, ok := p.required(f, "name", "the agent's name, as in the relay's agents list"); ok {
		p.checkName(name, line, "name")
		a.Name = name
	}
	a.StateDir, _, _ = p.str(f, "state_dir", DefaultAgentStateDir)
	a.Admin, a.AdminDefault = p.admin(f, "admin", DefaultAgentAdmin)
	if rf := p.section(f, "relay", agentRelayKeys); rf != nil {
		a.Relay = p.agentRelay(rf)
	}
	a.Limits = p.limits(f)
	a.Direct = p.direct(p.section(f, "direct", directKeys))
	a.PublicIP = p.publicIP(p.section(f, "publicip", publicIPKeys), a.Relay != nil)
	if df := p.section(f, "ddns", ddnsKeys); df != nil {
		a.DDNS = p.ddns(df)
	}
	var declared []string
	a.Viewers, declared = p.viewers(f)
	var listed bool
	a.Services, listed = p.services(f, declared)
	if !listed && a.DDNS == nil {
		line := f.line
		if e, ok := f.m["services"]; ok {
			line = e.key.Line
		}
		p.errorf(line, "services", "required: list at least one service (or configure ddns for a plain DNS updater)")
	}
	if len(a.Services) > 0 && a.Relay == nil && !a.Direct.Enabled {
		p.errorf(f.m["services"].key.Line, "services", "no way to reach them: configure relay or enable direct")
	}
	if wf := p.section(f, "wireguard", wireguardKeys); wf != nil {
		a.WireGuard = p.wireguard(wf, a)
	}
	if tf := p.section(f, "tls", tlsKeys); tf != nil {
		a.TLS = p.tlsSection(tf, a, f.has("ddns"))
	}
	p.tlsWarning(a, p.tlsLine, p.tlsKey)
	a.Notify = p.notify(f)
	a.Warnings = p.warningList()
	if err := p.result(); err != nil {
		return nil, err
	}
	return a, nil
}

// section returns the mapping under key; nil when absent or empty (key:).
func (p *parser) section(f *fields, key string, known []string) *fields {
	e, ok := f.m[key]
	if !ok {
		return nil
	}
	if v := resolve(e.val); v.Kind == 0 || v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		delete(f.m, key)
		return nil
	}
	return p.mapping(e.val, f.sub(key), known)
}

func (p *parser) agentRelay(f *fields) *AgentRelay {
	r := &AgentRelay{}
	if addr, line, ok := p.required(f, "address", "the relay's host:port, e.g. relay.example.com:7443"); ok {
		p.hostPort(addr, line, f.sub("address"), false)
		r.Address = addr
	}
	r.Token, _ = p.token(f, "token")
	tr, line, ok := p.str(f, "transport", DefaultRelayTransport)
	switch tr = strings.ToLower(tr); {
	case !ok:
	case tr == "auto" || tr == "quic" || tr == "tcp":
		r.Transport = tr
	default:
		p.errorf(line, f.sub("transport"), "unknown transport %q: want auto (QUIC, TCP when UDP is blocked), quic or tcp", tr)
	}
	return r
}

// services reads the services list; listed is false when there is none
// (absent, null or empty) and true when there is one, even a broken one.
func (p *parser) services(f *fields, viewers []string) (out []Service, listed bool) {
	e, ok := f.m["services"]
	if !ok {
		return nil, false
	}
	n := resolve(e.val)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "services", "expected a list of services (- name: ...), got %s", kindName(n))
		return nil, true
	}
	type seen struct {
		name string
		line int
	}
	names := map[string]int{}
	ports := map[uint16]seen{}
	for i, item := range n.Content {
		path := fmt.Sprintf("services[%d]", i)
		sf := p.mapping(item, path, serviceKeys)
		if sf == nil {
			continue
		}
		var s Service
		if name, line, ok := p.required(sf, "name", ""); ok {
			if p.checkName(name, line, sf.sub("name")) {
				if prev, dup := names[name]; dup {
					p.errorf(line, sf.sub("name"), "duplicate service name %q (first at line %d)", name, prev)
				} else {
					names[name] = line
				}
			}
			s.Name = name
		}
		p.serviceKind(sf, &s, viewers)
		if s.Kind == KindPortal {
			if e, ok := sf.m["target"]; ok {
				p.errorf(e.key.Line, sf.sub("target"), "a portal has no target: it shows the cameras of the http and rtsp services")
			}
		} else if target, line, ok := p.required(sf, "target", "the LAN host:port, e.g. 192.168.1.20:554"); ok {
			p.hostPort(target, line, sf.sub("target"), false)
			s.Target = target
		}
		if port, line, ok := p.port(sf, "port", "the public port (1-65535)"); ok {
			s.Port = port
			if BrowserBlocked(port) && (s.Kind == KindHTTP || s.Kind == KindPortal || webTarget(s.Target)) {
				p.warnf(line, sf.sub("port"), "web browsers refuse URLs on port %d (Chrome's and Firefox's unsafe-port list), and the service looks like a web page; pick another public port", port)
			}
			if prev, dup := ports[port]; dup {
				p.errorf(line, sf.sub("port"), "port %d already used by service %q (line %d)", port, prev.name, prev.line)
			} else {
				ports[port] = seen{s.Name, line}
			}
		}
		p.allow(sf, &s)
		s.FirstByteTimeout = p.duration(sf, "first_byte_timeout", 0, 0)
		if s.Kind == KindTCP && s.AllowAny {
			p.warnf(sf.m["allow"].key.Line, sf.sub("allow"), "service %s: anyone on the internet can try the camera's own login; "+
				"use kind http/rtsp with viewers, or WireGuard", s.Name)
		}
		if s.TLS && p.tlsLine == 0 {
			e, ok := sf.m["tls"]
			if !ok {
				e = sf.m["kind"]
			}
			p.tlsLine, p.tlsKey = e.key.Line, sf.sub(e.key.Value)
		}
		out = append(out, s)
	}
	return out, len(n.Content) > 0
}

// allow reads a service's access rule.
func (p *parser) allow(sf *fields, s *Service) {
	const hint = "required: list CIDRs or [any]"
	path := sf.sub("allow")
	items, lines, present, ok := p.list(sf, "allow")
	if !present {
		p.errorf(sf.line, path, hint)
		return
	}
	if len(items) == 0 {
		if !ok {
			return // an item already failed (e.g. an unset ${VAR})
		}
		p.errorf(resolve(sf.m["allow"].val).Line, path, hint)
		return
	}
	for i, it := range items {
		if strings.EqualFold(it, "any") {
			s.AllowAny = true
			continue
		}
		pfx, err := parsePrefix(it)
		if err != nil {
			p.errorf(lines[i], fmt.Sprintf("%s[%d]", path, i), "expected a CIDR (192.168.1.0/24), an IP or any, got %q", it)
			continue
		}
		s.Allow = append(s.Allow, pfx)
	}
	if s.AllowAny && len(s.Allow) > 0 {
		p.errorf(lines[0], path, "any allows everyone: list either [any] or CIDRs, not both")
		s.Allow = nil
	}
}

func (p *parser) direct(f *fields) Direct {
	d := Direct{Enabled: true, Listen: DefaultDirectListen, Protocols: append([]string(nil), DirectProtocols...)}
	if f == nil {
		return d
	}
	d.Enabled = p.boolean(f, "enabled", true)
	var line int
	var ok bool
	d.Listen, line, ok = p.str(f, "listen", DefaultDirectListen)
	if ok {
		p.bindIP(d.Listen, line, f.sub("listen"))
	}
	if protos := p.subset(f, "protocols", DirectProtocols); protos != nil {
		d.Protocols = protos
	}
	d.Gateway = p.ip(f, "gateway")
	return d
}

// subset reads a list whose items must come from allowed, without repeats.
// It returns nil when the key is absent (or after an error).
func (p *parser) subset(f *fields, key string, allowed []string) []string {
	items, lines, present, ok := p.list(f, key)
	if !present {
		return nil
	}
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorf(resolve(f.m[key].val).Line, f.sub(key), "empty: leave it out for the default %v, or list some of %v", allowed, allowed)
		return nil
	}
	var out []string
	bad := false
	for i, it := range items {
		it = strings.ToLower(it)
		switch {
		case !contains(allowed, it):
			p.errorf(lines[i], fmt.Sprintf("%s[%d]", f.sub(key), i), "unknown value %q: use %s", it, strings.Join(allowed, ", "))
			bad = true
		case contains(out, it):
			p.errorf(lines[i], fmt.Sprintf("%s[%d]", f.sub(key), i), "%q listed twice", it)
			bad = true
		default:
			out = append(out, it)
		}
	}
	if bad {
		return nil
	}
	return out
}

func (p *parser) publicIP(f *fields, haveRelay bool) PublicIP {
	pi := PublicIP{
		Sources:  append([]string(nil), PublicIPSources...),
		Interval: DefaultPublicIPInterval,
		IPv6:     true,
	}
	if f == nil {
		pi.MinAgree = min(defaultPublicIPMinimum, countSources(pi.Sources, haveRelay, &pi))
		return pi
	}
	explicit := p.subset(f, "sources", PublicIPSources)
	if explicit != nil {
		pi.Sources = explicit
		if contains(explicit, "relay") && !haveRelay {
			p.errorf(f.m["sources"].key.Line, f.sub("sources"), "source relay needs a relay section")
		}
	}
	urls, lines, _, _ := p.list(f, "https")
	for i, u := range urls {
		if p.httpURL(u, lines[i], fmt.Sprintf("%s[%d]", f.sub("https"), i), "lets anyone on the path fake your public address; use https://") {
			pi.HTTPS = append(pi.HTTPS, u)
		}
	}
	names, lines, _, _ := p.list(f, "dns")
	for i, n := range names {
		if n == "" || strings.ContainsAny(n, " \t") {
			p.errorf(lines[i], fmt.Sprintf("%s[%d]", f.sub("dns"), i), "expected a resolver name or host:port/name, got %q", n)
			continue
		}
		pi.DNS = append(pi.DNS, n)
	}
	count := countSources(pi.Sources, haveRelay, &pi)
	pi.MinAgree = min(defaultPublicIPMinimum, count)
	if v, line, present, ok := p.integer(f, "min_agree"); ok && present {
		switch {
		case v < 1:
			p.errorf(line, f.sub("min_agree"), "must be at least 1")
		case v > count:
			p.errorf(line, f.sub("min_agree"), "%d is more than the %d sources in use", v, count)
		default:
			pi.MinAgree = v
		}
	}
	prefixes, lines, _, _ := p.list(f, "accept")
	for i, s := range prefixes {
		pfx, err := parsePrefix(s)
		if err != nil {
			p.errorf(lines[i], fmt.Sprintf("%s[%d]", f.sub("accept"), i), "expected a CIDR, got %q", s)
			continue
		}
		pi.Accept = append(pi.Accept, pfx)
	}
	pi.Interval = p.duration(f, "interval", DefaultPublicIPInterval, MinPublicIPInterval)
	pi.IPv6 = p.boolean(f, "ipv6", true)
	if id := p.ip(f, "ipv6_interface_id"); id.IsValid() {
		if !id.Is6() {
			p.errorf(f.m["ipv6_interface_id"].val.Line, f.sub("ipv6_interface_id"), "expected an IPv6 address such as ::1234:5678:9abc:def0")
		} else {
			pi.IPv6InterfaceID = id
		}
	}
	return pi
}

// countSources is how many sources can vote: relay only with a relay.
// countSources is how many independent answers the listed sources can give: each
// https URL and dns resolver counts (the built-in lists at least 2 each), the relay
// and the router one each. The detector may count less (one vote per operator).
func countSources(sources []string, haveRelay bool, pi *PublicIP) int {
	n := 0
	for _, s := range sources {
		switch s {
		case "relay":
			if haveRelay {
				n++
			}
		case "router":
			n++
		case "https":
			n += max(len(pi.HTTPS), 2*boolInt(len(pi.HTTPS) == 0))
		case "dns":
			n += max(len(pi.DNS), 2*boolInt(len(pi.DNS) == 0))
		}
	}
	return n
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (p *parser) ddns(f *fields) *DDNS {
	d := &DDNS{}
	if h, line, ok := p.required(f, "hostname", "the name to keep pointing home, e.g. home.example.com"); ok {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !validHostname(h, true) {
			p.errorf(line, f.sub("hostname"), "%q is not a fully qualified host name", h)
		}
		d.Hostname = h
	}
	d.TTL = p.duration(f, "ttl", DefaultDDNSTTL, time.Second)
	d.MinInterval = p.duration(f, "min_interval", DefaultDDNSMinInterval, 0)
	d.DeleteOnExit = p.boolean(f, "delete_on_exit", false)
	pf := p.section(f, "provider", providerKeys)
	if pf == nil {
		if !f.has("provider") {
			p.errorf(f.line, f.sub("provider"), "required: a provider with a type (%s)", strings.Join(ProviderTypes, ", "))
		}
		return d
	}
	d.Provider = p.provider(pf, d.Hostname)
	return d
}

func (p *parser) provider(f *fields, hostname string) Provider {
	var pr Provider
	typ, line, ok := p.required(f, "type", strings.Join(ProviderTypes, " | "))
	if !ok {
		return pr
	}
	typ = strings.ToLower(typ)
	allowed, known := providerFields[typ]
	if !known {
		p.errorf(line, f.sub("type"), "unknown provider type %q: use %s", typ, strings.Join(ProviderTypes, ", "))
		return pr
	}
	pr.Type = typ
	for _, key := range f.keys {
		e := f.m[key]
		if key != "type" && !contains(allowed, key) {
			p.errorf(e.key.Line, f.sub(key), "not used by provider type %s (it takes %s)", typ, strings.Join(allowed, ", "))
			delete(f.m, key)
		}
	}
	baseURL := func(required bool) {
		var u string
		var line int
		var ok bool
		if required {
			u, line, ok = p.required(f, "base_url", "the dyndns2 server's update URL")
		} else {
			u, line, ok = p.str(f, "base_url", "")
		}
		if ok && u != "" && p.httpURL(u, line, f.sub("base_url"), "sends the provider's credentials unencrypted") {
			pr.BaseURL = u
		}
	}
	zone := func() {
		z, line, ok := p.required(f, "zone", "the DNS zone the hostname is in, e.g. example.com")
		if !ok {
			return
		}
		z = strings.ToLower(strings.TrimSuffix(z, "."))
		switch {
		case !validHostname(z, false):
			p.errorf(line, f.sub("zone"), "%q is not a DNS zone name", z)
		case hostname != "" && hostname != z && !strings.HasSuffix(hostname, "."+z):
			p.errorf(line, f.sub("zone"), "hostname %s is not in zone %s", hostname, z)
		}
		pr.Zone = z
	}
	userPass := func() {
		pr.Username, _, _ = p.required(f, "username", "")
		pr.Password, _, _ = p.secret(f, "password", true)
	}
	switch typ {
	case "cloudflare":
		zone()
		pr.APIToken, _, _ = p.secret(f, "api_token", true)
		baseURL(false)
	case "dyndns2":
		baseURL(true)
		userPass()
	case "noip", "dynu":
		baseURL(false)
		userPass()
	case "duckdns":
		pr.Token, _, _ = p.secret(f, "token", true)
		baseURL(false)
	case "rfc2136":
		if srv, line, ok := p.required(f, "server", "the primary name server's host:port, e.g. ns1.example.com:53"); ok {
			p.hostPort(srv, line, f.sub("server"), false)
			pr.Server = srv
		}
		zone()
		p.tsig(f, &pr)
	}
	return pr
}

// tsig reads rfc2136's optional TSIG key: key_name and key go together.
func (p *parser) tsig(f *fields, pr *Provider) {
	name, nameLine, ok1 := p.str(f, "key_name", "")
	key, keyLine, ok2 := p.secret(f, "key", false)
	alg, algLine, ok3 := p.str(f, "key_alg", "")
	if !ok1 || !ok2 || !ok3 {
		return
	}
	switch {
	case name == "" && key == "":
		if alg != "" {
			p.errorf(algLine, f.sub("key_alg"), "set key_name and key (or key_file) too, or leave key_alg out")
		}
		return
	case name == "":
		p.errorf(keyLine, f.sub("key_name"), "required with key: the TSIG key's name")
		return
	case key == "":
		p.errorf(nameLine, f.sub("key"), "required with key_name: set key or key_file (base64)")
		return
	}
	if !validHostname(name, false) {
		p.errorf(nameLine, f.sub("key_name"), "%q is not a valid key name", name)
	}
	if _, err := base64.StdEncoding.DecodeString(key); err != nil {
		k := "key"
		if f.has("key_file") {
			k = "key_file"
		}
		p.errorf(keyLine, f.sub(k), "key is not valid base64")
	}
	if alg == "" {
		alg = DefaultRFC2136KeyAlg
	}
	alg = strings.ToLower(strings.TrimSuffix(alg, "."))
	if !contains(RFC2136KeyAlgs, alg) {
		p.errorf(algLine, f.sub("key_alg"), "unknown algorithm %q: use %s", alg, strings.Join(RFC2136KeyAlgs, ", "))
	}
	pr.KeyName, pr.Key, pr.KeyAlg = name, key, alg
}

// webTarget reports whether a service's target is on a port cameras serve web pages on.
func webTarget(target string) bool {
	_, port, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	switch port {
	case "80", "443", "8000", "8080", "8081", "8443", "8888":
		return true
	}
	return false
}

// BrowserBlocked reports whether web browsers refuse URLs on port (the Fetch
// standard's "bad ports", which Chrome and Firefox enforce). A service on one works
// for RTSP and vendor apps, but a camera's web page on it won't open in a browser.
func BrowserBlocked(port uint16) bool { return browserBlocked[port] }

var browserBlocked = func() map[uint16]bool {
	m := map[uint16]bool{}
	for _, p := range []uint16{1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79,
		87, 95, 101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179,
		389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636,
		989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665,
		6666, 6667, 6668, 6669, 6679, 6697, 10080} {
		m[p] = true
	}
	return m
}()
