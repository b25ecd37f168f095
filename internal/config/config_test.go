package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Tokens that pass CheckToken.
const (
	tokA = "pht1_3h4o5z4X035aFzHZf83KLRUL060jDwuH7CeAmqxfo-wfjqokg"
	tokB = "pht1_TMrpESVsQoqNFJsntrBHtQNhlgLmKiIqdsVrfGKNFPEmuqfwQ"
)

func envOf(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// want is one expected problem: its line, key and a piece of its message.
type want struct {
	line int
	key  string
	msg  string
}

// checkErrs asserts err lists exactly the wanted problems, in order.
func checkErrs(t *testing.T, err error, wants ...want) {
	t.Helper()
	if len(wants) == 0 {
		if err != nil {
			t.Fatalf("unexpected error:\n%v", err)
		}
		return
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %v (%T) is not Errors", err, err)
	}
	if len(es) != len(wants) {
		t.Fatalf("got %d problems, want %d:\n%v", len(es), len(wants), err)
	}
	for i, w := range wants {
		e := es[i]
		if e.Line != w.line || e.Key != w.key || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("problem %d = line %d key %q msg %q; want line %d key %q msg containing %q",
				i, e.Line, e.Key, e.Msg, w.line, w.key, w.msg)
		}
	}
}

const designRelay = `listen: 0.0.0.0:7443            # UDP, where agents connect
viewer_bind: 0.0.0.0            # where service listeners bind
public_ip: 198.51.100.7         # optional; the address DNS gets in relayed mode
state_dir: /var/lib/porthole-relay
agents:
  home:
    token: ${HOME_TOKEN}        # or token_file: /etc/porthole/home.token
    ports: 10000-10099          # public ports this agent may use
    udp_ports: 51820-51820      # public UDP ports (WireGuard) this agent may use
`

// hashAlice is a real argon2id hash (m=19456,t=2,p=1) of a random password;
// hashBob is well-formed with other parameters.
const (
	hashAlice = "$argon2id$v=19$m=19456,t=2,p=1$+A1rXZdEWpelrVGbIyKKxw$hyO+Bv1j1YIuNB5jRwFdFHfWNZPzSYErMlfRvQ0o07E"
	hashBob   = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$7tP3RHbY2BOLfpzu8CkmDRJzqk3jNqWq4kTk6BFgQ2I"
)

var designAgent = `name: home
state_dir: /var/lib/porthole-agent
relay:
  address: relay.example.com:7443
  token: ${PORTHOLE_TOKEN}
services:
  - name: frontdoor-web
    kind: http                  # the camera's web UI behind the viewer login
    target: 192.168.1.20:80
    port: 10443
    allow: [any]
    viewers: [alice]            # http/rtsp: who may watch (default: every viewer)
    camera_login: {username: admin, password: "${CAM_PASS}"}
    tls: on
  - name: frontdoor-rtsp
    target: 192.168.1.20:554    # on the LAN
    port: 10554                 # the one public port (relay and router)
    allow: [any]                # required: CIDRs, or [any]
viewers:                        # people, not cameras; porthole-agent passwd prints a hash
  alice: {password_hash: "` + hashAlice + `"}
  bob:
    password_hash: "` + hashBob + `"
tls:
  acme_email: me@example.com
  acme_ca: https://acme-v02.api.letsencrypt.org/directory
direct:
  enabled: true                 # router port mapping; false = relay only
  listen: 0.0.0.0               # the agent's gateway listeners
publicip:                       # defaults are sensible; every source can be listed explicitly
  sources: [relay, https, dns, router]
  https: [https://api.ipify.org]
  min_agree: 2
ddns:
  hostname: home.example.com
  ttl: 60s
  provider:                     # type: cloudflare | dyndns2 | rfc2136 | duckdns | ...
    type: cloudflare
    zone: example.com
    api_token: ${CF_API_TOKEN}
`

func TestDesignRelayExample(t *testing.T) {
	r, err := ParseRelay("relay.yaml", []byte(designRelay), envOf("HOME_TOKEN", tokA))
	checkErrs(t, err)
	wantR := &Relay{
		Listen:     "0.0.0.0:7443",
		ViewerBind: "0.0.0.0",
		PublicIP:   netip.MustParseAddr("198.51.100.7"),
		StateDir:   "/var/lib/porthole-relay",
		Agents:     map[string]RelayAgent{"home": {Token: tokA, Ports: PortRange{10000, 10099}, UDPPorts: PortRange{51820, 51820}}},
		Admin:      DefaultRelayAdmin, AdminDefault: true,
	}
	if !reflect.DeepEqual(r, wantR) {
		t.Errorf("got %+v\nwant %+v", r, wantR)
	}
}

func TestDesignAgentExample(t *testing.T) {
	a, err := ParseAgent("agent.yaml", []byte(designAgent),
		envOf("PORTHOLE_TOKEN", tokA, "CF_API_TOKEN", "cf-api-token-value", "CAM_PASS", "cam-secret"))
	checkErrs(t, err)
	wantA := &Agent{
		Name:     "home",
		StateDir: "/var/lib/porthole-agent",
		Relay:    &AgentRelay{Address: "relay.example.com:7443", Token: tokA, Transport: "auto"},
		Services: []Service{
			{Name: "frontdoor-web", Kind: KindHTTP, Target: "192.168.1.20:80", Port: 10443, AllowAny: true,
				Viewers: []string{"alice"}, CameraLogin: &CameraLogin{Username: "admin", Password: "cam-secret"}, TLS: true,
				LiveTimeout: DefaultLiveTimeout},
			{Name: "frontdoor-rtsp", Kind: KindTCP, Target: "192.168.1.20:554", Port: 10554, AllowAny: true},
		},
		Viewers: map[string]Viewer{"alice": {PasswordHash: hashAlice}, "bob": {PasswordHash: hashBob}},
		TLS:     &TLS{ACMEEmail: "me@example.com", ACMECA: DefaultACMECA, Challenge: ChallengeDNS01},
		Direct:  Direct{Enabled: true, Listen: "0.0.0.0", Protocols: []string{"upnp", "natpmp", "pcp"}},
		PublicIP: PublicIP{
			Sources:  []string{"relay", "https", "dns", "router"},
			HTTPS:    []string{"https://api.ipify.org"},
			MinAgree: 2,
			Interval: 5 * time.Minute,
			IPv6:     true,
		},
		DDNS: &DDNS{
			Hostname:    "home.example.com",
			TTL:         60 * time.Second,
			MinInterval: time.Minute,
			Provider:    Provider{Type: "cloudflare", Zone: "example.com", APIToken: "cf-api-token-value"},
		},
		Admin: DefaultAgentAdmin, AdminDefault: true,
		// The secure default's nudge: a tcp service open to anyone.
		Warnings: []string{"agent.yaml:18: services[1].allow: service frontdoor-rtsp: anyone on the internet can try " +
			"the camera's own login; use kind http/rtsp with viewers, or WireGuard"},
	}
	if !reflect.DeepEqual(a, wantA) {
		t.Errorf("got %+v\nwant %+v", a, wantA)
	}
}

func TestRelayDefaults(t *testing.T) {
	r, err := ParseRelay("r.yaml", []byte("agents:\n  home: {token: "+tokB+", ports: 10554}\n"), envOf())
	checkErrs(t, err)
	if r.Listen != DefaultRelayListen || r.ViewerBind != DefaultViewerBind || r.StateDir != DefaultRelayStateDir ||
		r.PublicIP.IsValid() || r.Metrics != "" {
		t.Errorf("defaults not applied: %+v", r)
	}
	if got := r.Agents["home"].Ports; got != (PortRange{10554, 10554}) {
		t.Errorf("single port = %v", got)
	}
}

func TestAgentDefaults(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(`name: cam-box
services:
  - {name: cam, target: "192.168.1.20:554", port: 10554, allow: [192.168.0.0/16, "2001:db8::1", "::ffff:10.0.0.1"]}
`), envOf())
	checkErrs(t, err)
	if a.StateDir != DefaultAgentStateDir || a.Relay != nil || a.DDNS != nil {
		t.Errorf("defaults: %+v", a)
	}
	if !a.Direct.Enabled || a.Direct.Listen != "0.0.0.0" || !reflect.DeepEqual(a.Direct.Protocols, DirectProtocols) || a.Direct.Gateway.IsValid() {
		t.Errorf("direct defaults: %+v", a.Direct)
	}
	pi := a.PublicIP
	if !reflect.DeepEqual(pi.Sources, PublicIPSources) || pi.MinAgree != 2 || pi.Interval != 5*time.Minute || !pi.IPv6 ||
		pi.HTTPS != nil || pi.DNS != nil || pi.IPv6InterfaceID.IsValid() {
		t.Errorf("publicip defaults: %+v", pi)
	}
	wantAllow := []netip.Prefix{
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("10.0.0.1/32"),
	}
	if s := a.Services[0]; s.AllowAny || !reflect.DeepEqual(s.Allow, wantAllow) {
		t.Errorf("allow = %v any=%v, want %v", s.Allow, s.AllowAny, wantAllow)
	}
}

func TestDDNSOnlyAgent(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(`name: home
ddns:
  hostname: Home.Example.COM.
  ttl: 300
  min_interval: 0s
  delete_on_exit: yes
  provider: {type: duckdns, token: abc}
`), envOf())
	checkErrs(t, err)
	d := a.DDNS
	if d.Hostname != "home.example.com" || d.TTL != 300*time.Second || d.MinInterval != 0 || !d.DeleteOnExit ||
		d.Provider.Type != "duckdns" || d.Provider.Token != "abc" {
		t.Errorf("ddns = %+v", d)
	}
	if len(a.Services) != 0 {
		t.Errorf("services = %v", a.Services)
	}
}

func TestPublicIPSettings(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(`name: home
ddns: {hostname: home.example.com, provider: {type: duckdns, token: t}}
publicip:
  sources: [https, dns]
  https: [https://a.example/ip, "http://b.example/ip"]
  dns: [cloudflare, "ns1.example.net:53/whoami.example.net"]
  accept: [100.64.0.0/10, 198.51.100.7]
  interval: 90s
  ipv6: false
  ipv6_interface_id: "::1234:5678:9abc:def0"
direct:
  enabled: false
  protocols: [PCP, upnp]
  gateway: 192.168.1.1
`), envOf())
	checkErrs(t, err)
	pi := a.PublicIP
	if pi.MinAgree != 2 || pi.Interval != 90*time.Second || pi.IPv6 ||
		pi.IPv6InterfaceID != netip.MustParseAddr("::1234:5678:9abc:def0") ||
		!reflect.DeepEqual(pi.Accept, []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("198.51.100.7/32")}) ||
		len(pi.HTTPS) != 2 || len(pi.DNS) != 2 {
		t.Errorf("publicip = %+v", pi)
	}
	if len(a.Warnings) != 1 || !strings.HasPrefix(a.Warnings[0], "a.yaml:5: publicip.https[1]: plain http://") {
		t.Errorf("warnings = %q", a.Warnings)
	}
	if d := a.Direct; d.Enabled || !reflect.DeepEqual(d.Protocols, []string{"pcp", "upnp"}) || d.Gateway != netip.MustParseAddr("192.168.1.1") {
		t.Errorf("direct = %+v", d)
	}

	// One source: the default min_agree shrinks to 1; relay doesn't count without a relay.
	a, err = ParseAgent("a.yaml", []byte("name: h\nddns: {hostname: h.example.com, provider: {type: duckdns, token: t}}\npublicip: {sources: [router]}\n"), envOf())
	checkErrs(t, err)
	if a.PublicIP.MinAgree != 1 {
		t.Errorf("min_agree = %d, want 1", a.PublicIP.MinAgree)
	}
	// Each listed echo URL is a source of its own.
	a, err = ParseAgent("a.yaml", []byte("name: h\nddns: {hostname: h.example.com, provider: {type: duckdns, token: t}}\npublicip: {sources: [https], https: [\"https://a.example/\", \"https://b.example/\"], min_agree: 2}\n"), envOf())
	checkErrs(t, err)
	if a.PublicIP.MinAgree != 2 {
		t.Errorf("min_agree = %d, want 2", a.PublicIP.MinAgree)
	}
}

func TestProviders(t *testing.T) {
	const head = "name: home\nddns:\n  hostname: home.example.com\n  provider:\n"
	tests := []struct {
		name     string
		provider string
		want     Provider
	}{
		{"cloudflare", "    type: cloudflare\n    zone: example.com.\n    api_token: t\n    base_url: http://127.0.0.1:8080/client/v4\n",
			Provider{Type: "cloudflare", Zone: "example.com", APIToken: "t", BaseURL: "http://127.0.0.1:8080/client/v4"}},
		{"dyndns2", "    type: dyndns2\n    base_url: https://dyn.example.net/nic/update\n    username: u\n    password: p\n",
			Provider{Type: "dyndns2", BaseURL: "https://dyn.example.net/nic/update", Username: "u", Password: "p"}},
		{"noip", "    type: noip\n    username: u\n    password: p\n", Provider{Type: "noip", Username: "u", Password: "p"}},
		{"dynu", "    type: DYNU\n    username: u\n    password: p\n", Provider{Type: "dynu", Username: "u", Password: "p"}},
		{"duckdns", "    type: duckdns\n    token: t\n", Provider{Type: "duckdns", Token: "t"}},
		{"rfc2136 unsigned", "    type: rfc2136\n    server: 127.0.0.1:5353\n    zone: example.com\n",
			Provider{Type: "rfc2136", Server: "127.0.0.1:5353", Zone: "example.com"}},
		{"rfc2136 tsig", "    type: rfc2136\n    server: ns1.example.com:53\n    zone: home.example.com\n    key_name: porthole.\n    key: c2VjcmV0\n    key_alg: HMAC-SHA512\n",
			Provider{Type: "rfc2136", Server: "ns1.example.com:53", Zone: "home.example.com", KeyName: "porthole.", Key: "c2VjcmV0", KeyAlg: "hmac-sha512"}},
		{"rfc2136 default alg", "    type: rfc2136\n    server: ns1.example.com:53\n    zone: example.com\n    key_name: k\n    key: c2VjcmV0\n",
			Provider{Type: "rfc2136", Server: "ns1.example.com:53", Zone: "example.com", KeyName: "k", Key: "c2VjcmV0", KeyAlg: "hmac-sha256"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent("a.yaml", []byte(head+tt.provider), envOf())
			checkErrs(t, err)
			if a.DDNS.Provider != tt.want {
				t.Errorf("provider = %#v\nwant %#v", a.DDNS.Provider, tt.want)
			}
		})
	}
}

func TestRelayErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"no agents", "listen: 0.0.0.0:7443\n", []want{{1, "agents", "required: at least one agent"}}},
		{"empty agents", "agents: {}\n", []want{{1, "agents", "required"}}},
		{"bad listen", "listen: 7443\nviewer_bind: example.com\nmetrics: localhost:9100\npublic_ip: 0.0.0.0\nagents: {a: {token: " + tokA + ", ports: 1}}\n",
			[]want{
				{1, "listen", "expected host:port"},
				{2, "viewer_bind", "expected an IP address"},
				{3, "metrics", "listen host must be an IP"},
				{4, "public_ip", "not a usable public address"},
			}},
		{"unknown key", "agents:\n  a:\n    token: " + tokA + "\n    port: 1\n",
			[]want{{3, "agents.a.ports", "required"}, {4, "", "unknown key agents.a.port (did you mean ports?)"}}},
		{"unknown top key far from any", "agents: {a: {token: " + tokA + ", ports: 1}}\nwhatever: 1\n",
			[]want{{2, "", "unknown key whatever"}}},
		{"bad agent name", "agents:\n  Home_1:\n    token: " + tokA + "\n    ports: 1\n",
			[]want{{2, "agents.Home_1", "invalid name"}}},
		{"ports", `agents:
  a: {token: ` + tokA + `, ports: 10100-10000}
  b: {token: ` + tokA + `, ports: 0}
  c: {token: ` + tokA + `, ports: "70000"}
  d: {token: ` + tokA + `, ports: [1, 2]}
  e: {token: ` + tokA + `, ports: "1-2-3"}
`, []want{
			{2, "agents.a.ports", "backwards"},
			{3, "agents.b.ports", "expected a port"},
			{4, "agents.c.ports", "expected a port"},
			{5, "agents.d.ports", "expected a single value, got a list"},
			{6, "agents.e.ports", "expected a port"},
		}},
		{"overlap", `agents:
  a:
    token: ` + tokA + `
    ports: 10000-10099
  b:
    token: ` + tokB + `
    ports: "10099"
  c:
    token: ` + tokB + `
    ports: 10100-10199
`, []want{{7, "agents.b.ports", "10099 overlaps agent a's ports 10000-10099 (line 4)"}}},
		{"udp ports", `agents:
  a: {token: ` + tokA + `, ports: 1, udp_ports: 51820-51829}
  b:
    token: ` + tokB + `
    ports: 2
    udp_ports: 51829
  c: {token: ` + tokB + `, ports: 3, udp_ports: 0}
  d: {token: ` + tokB + `, ports: 4, udp_ports: 51830-51820}
  e: {token: ` + tokB + `, ports: 5, udp_ports: [51820]}
`, []want{
			{6, "agents.b.udp_ports", "51829 overlaps agent a's udp_ports 51820-51829 (line 2)"},
			{7, "agents.c.udp_ports", "expected a port"},
			{8, "agents.d.udp_ports", "backwards"},
			{9, "agents.e.udp_ports", "expected a single value, got a list"},
		}},
		{"tokens", `agents:
  a: {ports: 1}
  b: {token: password123, ports: 2}
  c: {token: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, ports: 3}
  d: {token: "", ports: 4}
  e: {token: x, token_file: y, ports: 5}
`, []want{
			{2, "agents.a.token", "required: set token or token_file"},
			{3, "agents.b.token", "weak token: only generated tokens are accepted, as a chosen one can be guessed: make one with `porthole-relay token`"},
			{4, "agents.c.token", "weak token"},
			{5, "agents.d.token", "empty"},
			{6, "agents.e.token_file", "set either token or token_file, not both"},
		}},
		{"document order on one line", "agents: {b: {ports: 1}, a: {ports: 2}, c: {token: " + tokA + ", ports: 1}}\n", []want{
			{1, "agents.b.token", "required"},
			{1, "agents.a.token", "required"},
			{1, "agents.c.ports", "overlaps agent b's ports 1"},
		}},
		{"wrong types", "agents: [a, b]\nlisten: {a: 1}\n",
			[]want{{1, "agents", "expected a mapping"}, {2, "listen", "expected a single value, got a mapping"}}},
		{"duplicate agent", "agents:\n  a: {token: " + tokA + ", ports: 1}\n  a: {token: " + tokA + ", ports: 2}\n",
			[]want{{3, "", "duplicate key agents.a (first at line 2)"}}},
		{"env unset", "agents:\n  a:\n    token: ${NOPE}\n    ports: ${PORTS:-10000-10001}\n",
			[]want{{3, "agents.a.token", "environment variable NOPE is not set"}}},
		{"yaml syntax", "listen: 1\nmetrics: 2\nagents 2\nd: 3\n", []want{{3, "", "invalid YAML: could not find expected ':'"}}},
		{"not a mapping", "- a\n- b\n", []want{{1, "", "expected a mapping"}}},
		{"empty", "# nothing\n", []want{{0, "", "empty config"}}},
		{"two documents", "agents: {a: {token: " + tokA + ", ports: 1}}\n---\nlisten: x\n", []want{{2, "", "more than one YAML document"}}},
		{"merge key", "base: &b {ports: 1}\nagents: {a: {<<: *b, token: " + tokA + "}}\n", []want{
			{1, "", "unknown key base"},
			{2, "agents.a", "merge keys"},
			{2, "agents.a.ports", "required"},
		}},
		{"custom tag", "agents: {a: {token: !secret " + tokA + ", ports: 1}}\n", []want{{1, "agents.a.token", "unsupported YAML tag !secret"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRelay("relay.yaml", []byte(tt.yaml), envOf())
			checkErrs(t, err, tt.want...)
			if r != nil {
				t.Errorf("got a config along with errors")
			}
		})
	}
}

func TestAgentErrors(t *testing.T) {
	const ok = "name: home\nrelay: {address: \"relay.example.com:7443\", token: " + tokA + "}\n" // 2 lines
	const dd = "ddns: {hostname: home.example.com, provider: {type: duckdns, token: t}}\n"
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{"nothing to do", "name: home\n", []want{{1, "services", "required: list at least one service"}}},
		{"no name", dd, []want{{1, "name", "required"}}},
		{"bad name", "name: -home\n" + dd, []want{{1, "name", "invalid name"}}},
		{"allow missing", ok + `services:
  - name: cam
    target: 192.168.1.20:554
    port: 10554
  - name: cam2
    target: 192.168.1.21:554
    port: 10555
    allow: []
`, []want{
			{4, "services[0].allow", "required: list CIDRs or [any]"},
			{10, "services[1].allow", "required: list CIDRs or [any]"},
		}},
		{"allow mixed and bad", ok + `services:
  - name: cam
    target: 192.168.1.20:554
    port: 10554
    allow:
      - any
      - 10.0.0.0/8
  - name: cam2
    target: 192.168.1.21:554
    port: 10555
    allow: [10.0.0.0/33, "192.168.1.0/24"]
`, []want{
			{8, "services[0].allow", "not both"},
			{13, "services[1].allow[0]", "expected a CIDR"},
		}},
		{"service fields", ok + `services:
  - name: cam
    target: 192.168.1.20
    port: 70000
    allow: [any]
  - name: cam
    target: ":554"
    port: "x"
    allow: [any]
  - name: Cam
    port: 10554
    allow: [any]
  - name: other
    target: cam.lan:554
    port: 10554
    allow: any
    alow: [any]
`, []want{
			{5, "services[0].target", "expected host:port"},
			{6, "services[0].port", "70000 is not a port"},
			{8, "services[1].name", "duplicate service name \"cam\" (first at line 4)"},
			{9, "services[1].target", "missing host"},
			{10, "services[1].port", "expected a whole number"},
			{12, "services[2].name", "invalid name"},
			{12, "services[2].target", "required"},
			{17, "services[3].port", "port 10554 already used by service \"Cam\" (line 13)"},
			{19, "", "unknown key services[3].alow (did you mean allow?)"},
		}},
		{"services wrong type", ok + "services: {name: cam}\n", []want{{3, "services", "expected a list of services"}}},
		{"no way out", "name: home\ndirect: {enabled: false}\nservices: [{name: c, target: 'c:1', port: 1, allow: [any]}]\n",
			[]want{{3, "services", "no way to reach them"}}},
		{"relay section", "name: home\nrelay:\n  address: relay.example.com\n  token_file: \"\"\nservices: [{name: c, target: 'c:1', port: 1, allow: [any]}]\n",
			[]want{{3, "relay.address", "expected host:port"}, {4, "relay.token_file", "empty path"}}},
		{"relay weak token", "name: home\nrelay:\n  address: relay.example.com:7443\n  token: correct-horse-battery\n" + dd,
			[]want{{4, "relay.token", "weak token"}}},
		{"direct", ok + dd + `direct:
  enabled: maybe
  listen: 0.0.0.0:80
  protocols: [upnp, upnp, igd]
  gateway: router.lan
`, []want{
			{5, "direct.enabled", "expected true or false"},
			{6, "direct.listen", "expected an IP address"},
			{7, "direct.protocols[1]", "listed twice"},
			{7, "direct.protocols[2]", "unknown value \"igd\""},
			{8, "direct.gateway", "expected an IP address"},
		}},
		{"publicip", "name: home\n" + dd + `publicip:
  sources: [relay, https]
  https: [ftp://x, "https://"]
  dns: ["a b"]
  min_agree: 3
  accept: [nope]
  interval: 10s
  ipv6: 1
  ipv6_interface_id: 10.0.0.1
`, []want{
			{4, "publicip.sources", "source relay needs a relay section"},
			{5, "publicip.https[0]", "expected an https:// URL"},
			{5, "publicip.https[1]", "expected an https:// URL"},
			{6, "publicip.dns[0]", "expected a resolver name"},
			{7, "publicip.min_agree", "3 is more than the 2 sources in use"},
			{8, "publicip.accept[0]", "expected a CIDR"},
			{9, "publicip.interval", "too short: at least 30s"},
			{10, "publicip.ipv6", "expected true or false"},
			{11, "publicip.ipv6_interface_id", "expected an IPv6 address"},
		}},
		{"publicip empty sources", ok + dd + "publicip:\n  sources: []\n  min_agree: 0\n",
			[]want{{5, "publicip.sources", "empty"}, {6, "publicip.min_agree", "at least 1"}}},
		{"ddns", ok + `ddns:
  hostname: localhost
  ttl: 0.5s
  min_interval: -1s
  delete_on_exit: 2
`, []want{
			{4, "ddns.hostname", "not a fully qualified host name"},
			{4, "ddns.provider", "required: a provider"},
			{5, "ddns.ttl", "too short"},
			{6, "ddns.min_interval", "too short"},
			{7, "ddns.delete_on_exit", "expected true or false"},
		}},
		{"ddns hostname missing and bad ttl", ok + "ddns:\n  ttl: soon\n  provider: {type: duckdns, token: t}\n",
			[]want{{4, "ddns.hostname", "required"}, {4, "ddns.ttl", "expected a duration"}}},
		{"provider type", ok + dd[:len(dd)-1] + "\nddns:\n  hostname: a.example.com\n  provider: {type: route53, zone: x}\n",
			[]want{{4, "", "duplicate key ddns (first at line 3)"}}},
		{"unknown provider", ok + "ddns:\n  hostname: a.example.com\n  provider:\n    type: route53\n    zonee: x\n",
			[]want{{6, "ddns.provider.type", "unknown provider type \"route53\""}, {7, "", "unknown key ddns.provider.zonee (did you mean zone?)"}}},
		{"provider missing type", ok + "ddns:\n  hostname: a.example.com\n  provider:\n    zone: x\n",
			[]want{{6, "ddns.provider.type", "required"}}},
		{"cloudflare", ok + `ddns:
  hostname: home.example.com
  provider:
    type: cloudflare
    zone: example.org
    api_token: t
    api_token_file: /x
    username: u
    base_url: "not a url"
`, []want{
			{7, "ddns.provider.zone", "hostname home.example.com is not in zone example.org"},
			{9, "ddns.provider.api_token_file", "not both"},
			{10, "ddns.provider.username", "not used by provider type cloudflare"},
			{11, "ddns.provider.base_url", "expected an https:// URL"},
		}},
		{"cloudflare missing", ok + "ddns:\n  hostname: home.example.com\n  provider:\n    type: cloudflare\n",
			[]want{{6, "ddns.provider.zone", "required"}, {6, "ddns.provider.api_token", "required: set api_token or api_token_file"}}},
		{"dyndns2 missing", ok + "ddns:\n  hostname: home.example.com\n  provider:\n    type: dyndns2\n    token: t\n",
			[]want{
				{6, "ddns.provider.base_url", "required"},
				{6, "ddns.provider.username", "required"},
				{6, "ddns.provider.password", "required"},
				{7, "ddns.provider.token", "not used by provider type dyndns2"},
			}},
		{"duckdns missing", ok + "ddns:\n  hostname: home.example.com\n  provider:\n    type: duckdns\n    password: p\n",
			[]want{{6, "ddns.provider.token", "required"}, {7, "ddns.provider.password", "not used by provider type duckdns"}}},
		{"rfc2136", ok + `ddns:
  hostname: home.example.com
  provider:
    type: rfc2136
    server: ns1.example.com
    zone: example.com
    key_name: k
    key: "not base64!"
    key_alg: hmac-md5
`, []want{
			{7, "ddns.provider.server", "expected host:port"},
			{10, "ddns.provider.key", "key is not valid base64"},
			{11, "ddns.provider.key_alg", "unknown algorithm \"hmac-md5\""},
		}},
		{"rfc2136 half key", ok + "ddns:\n  hostname: home.example.com\n  provider:\n    type: rfc2136\n    server: ns1.example.com:53\n    zone: example.com\n    key: c2VjcmV0\n",
			[]want{{9, "ddns.provider.key_name", "required with key"}}},
		{"env errors", ok + "ddns:\n  hostname: ${HOST}\n  ttl: ${TTL:-60s}\n  provider: {type: duckdns, token: \"${T\"}\n",
			[]want{{4, "ddns.hostname", "environment variable HOST is not set"}, {6, "ddns.provider.token", "unterminated ${"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAgent("agent.yaml", []byte(tt.yaml), envOf())
			checkErrs(t, err, tt.want...)
			if a != nil {
				t.Errorf("got a config along with errors")
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	env := envOf("A", "alpha", "EMPTY", "", "NESTED", "${A}")
	tests := []struct {
		in, out, err string
	}{
		{"plain", "plain", ""},
		{"${A}", "alpha", ""},
		{"x-${A}-y-${A}", "x-alpha-y-alpha", ""},
		{"$${A}", "${A}", ""},
		{"cost: 5$", "cost: 5$", ""},
		{"$A", "$A", ""},
		{"pa$$word", "pa$word", ""},
		{"${B:-beta}", "beta", ""},
		{"${B:-}", "", ""},
		{"${EMPTY:-d}", "d", ""},
		{"${EMPTY}", "", ""},
		{"${A:-d}", "alpha", ""},
		{"${NESTED}", "${A}", ""},
		{"${B}", "", "environment variable B is not set"},
		{"${A", "", "unterminated"},
		{"${}", "", "invalid environment variable reference"},
		{"${1X}", "", "invalid environment variable reference"},
		{"${A B}", "", "invalid environment variable reference"},
	}
	for _, tt := range tests {
		got, err := expandEnv(tt.in, env)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("expandEnv(%q) error = %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.out):
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tt.in, got, err, tt.out)
		}
	}
}

func TestEnvExpansionInConfig(t *testing.T) {
	env := envOf("TOK", tokA, "PORTS", "20000-20010", "DIR", "/srv/relay")
	r, err := ParseRelay("r.yaml", []byte(`state_dir: ${DIR}/state
listen: ${LISTEN:-127.0.0.1:7443}
agents:
  home:
    token: ${TOK}
    ports: ${PORTS}
`), env)
	checkErrs(t, err)
	if r.StateDir != "/srv/relay/state" || r.Listen != "127.0.0.1:7443" ||
		r.Agents["home"] != (RelayAgent{Token: tokA, Ports: PortRange{20000, 20010}}) {
		t.Errorf("got %+v", r)
	}
	// Keys are not expanded.
	_, err = ParseRelay("r.yaml", []byte("agents:\n  ${NAME}: {token: "+tokA+", ports: 1}\n"), envOf("NAME", "home"))
	checkErrs(t, err, want{2, "agents.${NAME}", "invalid name"})
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("home.token", "\n  "+tokA+"  \n")
	abs := write("cf.token", "cf-secret\n")
	write("empty.token", " \n\t\n")
	write("tsig.key", "c2VjcmV0\n")
	cfg := filepath.Join(dir, "relay.yaml")

	r, err := ParseRelay(cfg, []byte("agents:\n  home: {token_file: home.token, ports: 1}\n"), envOf())
	checkErrs(t, err)
	if r.Agents["home"].Token != tokA {
		t.Errorf("relative token_file not read/trimmed")
	}
	a, err := ParseAgent(filepath.Join(dir, "agent.yaml"), []byte(`name: home
relay: {address: "r.example.com:1", token_file: ./home.token}
ddns:
  hostname: home.example.com
  provider: {type: cloudflare, zone: example.com, api_token_file: `+abs+`}
services: [{name: c, target: "c:1", port: 1, allow: [any]}]
`), envOf())
	checkErrs(t, err)
	if a.Relay.Token != tokA || a.DDNS.Provider.APIToken != "cf-secret" {
		t.Errorf("agent secrets not read: %v %v", a.Relay, a.DDNS.Provider)
	}
	a, err = ParseAgent(filepath.Join(dir, "a.yaml"), []byte(`name: home
ddns:
  hostname: home.example.com
  provider: {type: rfc2136, server: "ns.example.com:53", zone: example.com, key_name: k, key_file: "${DIR}/tsig.key"}
`), envOf("DIR", dir))
	checkErrs(t, err)
	if a.DDNS.Provider.Key != "c2VjcmV0" {
		t.Errorf("key_file with ${DIR}: %q", a.DDNS.Provider.Key)
	}

	_, err = ParseRelay(cfg, []byte(`agents:
  a: {token_file: missing.token, ports: 1}
  b: {token_file: empty.token, ports: 2}
  c: {token_file: ., ports: 3}
  d: {token_file: [x], ports: 4}
`), envOf())
	checkErrs(t, err,
		want{2, "agents.a.token_file", "cannot read " + filepath.Join(dir, "missing.token") + ": no such file"},
		want{3, "agents.b.token_file", "is empty"},
		want{4, "agents.c.token_file", "not a regular file"},
		want{5, "agents.d.token_file", "expected a single value"},
	)
}

func TestSecretsNeverInMessages(t *testing.T) {
	dir := t.TempDir()
	const weak = "hunter2hunter2"
	if err := os.WriteFile(filepath.Join(dir, "weak.token"), []byte(weak), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseRelay(filepath.Join(dir, "r.yaml"), []byte("agents:\n  a: {token: "+weak+", ports: 1}\n  b: {token_file: weak.token, ports: 2}\n  c: {token: \"${W}\", ports: 3}\n"), envOf("W", weak))
	if err == nil || strings.Contains(err.Error(), weak) || strings.Count(err.Error(), "weak token") != 3 {
		t.Errorf("error = %v", err)
	}
	_, err = ParseAgent("a.yaml", []byte("name: h\nddns: {hostname: h.example.com, provider: {type: rfc2136, server: 'n:53', zone: example.com, key_name: k, key: 'sekrit!!'}}\n"), envOf())
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("error = %v", err)
	}
	_, err = ParseAgent("a.yaml", []byte("name: h\nddns: {hostname: h.example.com, provider: {type: dyndns2, username: u, password: p, base_url: 'ftp://u:sekrit@x'}}\n"), envOf())
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("error = %v", err)
	}
	// Formatting a loaded config doesn't print secrets either.
	a, err := ParseAgent("a.yaml", []byte(designAgent), envOf("PORTHOLE_TOKEN", tokA, "CF_API_TOKEN", "cf-secret", "CAM_PASS", "cam-secret"))
	checkErrs(t, err)
	r, err := ParseRelay("r.yaml", []byte(designRelay), envOf("HOME_TOKEN", tokB))
	checkErrs(t, err)
	for _, s := range []string{fmt.Sprintf("%v %+v", a, a.DDNS), fmt.Sprintf("%+v", r),
		fmt.Sprintf("%v %+v %v %+v", a.Services, a.Services[0].CameraLogin, *a.Services[0].CameraLogin, a.Viewers)} {
		if strings.Contains(s, tokA) || strings.Contains(s, tokB) || strings.Contains(s, "cf-secret") || !strings.Contains(s, "[redacted]") ||
			strings.Contains(s, "cam-secret") || strings.Contains(s, "argon2id") {
			t.Errorf("formatted config shows secrets: %s", s)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{"agent.yaml", 12, "services[0].allow", "required: list CIDRs or [any]"}, "agent.yaml:12: services[0].allow: required: list CIDRs or [any]"},
		{Error{"agent.yaml", 0, "services", "required"}, "agent.yaml: services: required"},
		{Error{"agent.yaml", 3, "", "unknown key x"}, "agent.yaml:3: unknown key x"},
		{Error{"", 0, "", "empty config"}, "empty config"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	es := Errors{{File: "f", Line: 2, Msg: "b"}, {File: "f", Line: 1, Msg: "a"}}
	es.sort()
	if got := es.Error(); got != "f:1: a\nf:2: b" {
		t.Errorf("Errors = %q", got)
	}
	var e *Error
	if !errors.As(error(es), &e) || e.Line != 1 {
		t.Errorf("errors.As(Errors, *Error) = %v", e)
	}
}

func TestLoadFiles(t *testing.T) {
	_, err := LoadRelay(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadRelay(missing) = %v, want ErrNotExist", err)
	}
	_, err = LoadAgent(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadAgent(missing) = %v, want ErrNotExist", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte("name: home\nservices: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadAgent(p)
	checkErrs(t, err, want{2, "services", "required"})
	if !strings.HasPrefix(err.Error(), p+":2: services: required") {
		t.Errorf("error does not name the file: %v", err)
	}
	big := make([]byte, maxConfigSize+1)
	_, err = ParseAgent("big.yaml", big, envOf())
	checkErrs(t, err, want{0, "", "larger than"})
}

// TestDeployExamples loads the commented examples shipped in deploy/examples.
func TestDeployExamples(t *testing.T) {
	dir := t.TempDir()
	// As systemd's LoadCredential= hands them over: read-only for the service's user.
	creds := t.TempDir()
	for name, secret := range map[string]string{"home.token": tokA + "\n", "cloudflare.token": "cf-api-token\n"} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(secret), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv("PORTHOLE_RELAY_STATE", dir)
	r, err := LoadRelay("../../deploy/examples/relay.yaml")
	checkErrs(t, err)
	if len(r.Agents) == 0 || r.Agents["home"].Token != tokA || len(r.Warnings) != 0 {
		t.Errorf("relay example: %+v", r)
	}
	a, err := LoadAgent("../../deploy/examples/agent.yaml")
	checkErrs(t, err)
	if a.Name != "home" || a.Relay == nil || a.Relay.Token != tokA || len(a.Services) == 0 || a.DDNS == nil ||
		a.DDNS.Provider.APIToken != "cf-api-token" || len(a.Warnings) != 0 {
		t.Errorf("agent example: %+v", a)
	}
	for _, s := range a.Services {
		if !r.Agents[a.Name].Ports.Contains(s.Port) {
			t.Errorf("example service %s port %d outside the relay's range %v", s.Name, s.Port, r.Agents[a.Name].Ports)
		}
	}
}

func TestAliases(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(`name: home
relay: {address: "r.example.com:1", token: `+tokA+`}
services:
  - name: a
    target: "192.168.1.20:554"
    port: 10554
    allow: &lan [192.168.0.0/16, 10.0.0.0/8]
  - name: b
    target: "192.168.1.21:554"
    port: 10555
    allow: *lan
`), envOf())
	checkErrs(t, err)
	if !reflect.DeepEqual(a.Services[0].Allow, a.Services[1].Allow) || len(a.Services[1].Allow) != 2 {
		t.Errorf("alias not followed: %v", a.Services)
	}
	// A self-referencing anchor must not loop.
	_, err = ParseAgent("a.yaml", []byte("name: home\nservices: &s [*s]\n"), envOf())
	if err == nil {
		t.Errorf("self-referencing services accepted")
	}
}

func TestSuggest(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"zonee", "zone"}, {"api-token", "api_token"}, {"hostnme", "hostname"}, {"xyz", ""}, {"provider", ""},
	} {
		known := []string{"zone", "api_token", "hostname", "type"}
		if got := suggest(tt.in, known); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A web page on a port browsers refuse gets a warning naming the line; RTSP on
// 554 (also on the list, but players don't care) does not.
func TestBrowserBlockedPortWarning(t *testing.T) {
	a, err := ParseAgent("a.yaml", []byte(`name: home
services:
  - {name: rtsp, target: "192.168.1.20:554", port: 554, allow: [198.51.100.0/24]}
  - name: web
    target: 192.168.1.20:80
    port: 10080
    allow: [198.51.100.0/24]
  - {name: ok, target: "192.168.1.20:8080", port: 10088, allow: [198.51.100.0/24]}
`), envOf())
	checkErrs(t, err)
	if len(a.Warnings) != 1 || !strings.HasPrefix(a.Warnings[0], "a.yaml:6: services[1].port: web browsers refuse URLs on port 10080") {
		t.Errorf("warnings = %q", a.Warnings)
	}
}
