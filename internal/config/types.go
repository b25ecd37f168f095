package config

import (
	"net/netip"
	"time"
)

// Relay is porthole-relay's configuration (relay.yaml).
type Relay struct {
	// Listen is the UDP address agents connect to. Default "0.0.0.0:7443".
	Listen string `yaml:"listen"`
	// ViewerBind is the address service listeners bind to. Default "0.0.0.0".
	ViewerBind string `yaml:"viewer_bind"`
	// PublicIP is the address DNS gets in relayed mode; zero if unset.
	PublicIP netip.Addr `yaml:"-"`
	// StateDir holds the relay's TLS key/cert and stateless-reset key.
	// Default "/var/lib/porthole-relay".
	StateDir string `yaml:"state_dir"`
	// Agents maps agent name to its credentials and port range. Required, non-empty.
	Agents map[string]RelayAgent `yaml:"-"`
	// Limits bound the relay's viewer connections; zero = defaults (see Limits).
	Limits Limits `yaml:"-"`
	// Admin is the admin endpoint's address (status page, /status.json,
	// /metrics, /healthz). DefaultRelayAdmin when the key is absent or empty;
	// "" after admin: off (and in a Relay built in Go: off unless set). The old
	// key metrics: is read as admin: with a warning.
	Admin string `yaml:"admin"`
	// AdminDefault says Admin is the default, not written in the config: the
	// relay then runs on without the endpoint if that address is taken.
	AdminDefault bool `yaml:"-"`
	// Metrics is the old name of Admin, kept so Go callers still compile: the
	// relay serves Admin, or Metrics when Admin is empty. The parser never sets it.
	//
	// Deprecated: use Admin.
	Metrics string `yaml:"-"`
	// Warnings are non-fatal problems found while loading ("file:line: key:
	// msg"); the program should print them at -check and log them at start.
	Warnings []string `yaml:"-"`
}

// RelayAgent is one agent the relay accepts.
type RelayAgent struct {
	// Token is the shared secret (resolved from token or token_file).
	Token string `yaml:"-"`
	// Ports is the range of public ports the agent may register.
	Ports PortRange `yaml:"-"`
}

// PortRange is an inclusive range of TCP/UDP ports.
type PortRange struct {
	Lo, Hi uint16
}

// Contains reports whether p lies inside r.
func (r PortRange) Contains(p uint16) bool { return p >= r.Lo && p <= r.Hi }

// Agent is porthole-agent's configuration (agent.yaml).
type Agent struct {
	// Name identifies the agent to the relay. Required.
	Name string
	// StateDir holds last-published DNS state and similar. Default "/var/lib/porthole-agent".
	StateDir string
	// Relay is nil when the agent runs without a tunnel (plain DDNS updater / direct only).
	Relay *AgentRelay
	// Services are the exposed LAN services.
	Services []Service
	// Direct configures router port mapping and the agent's own gateway listeners.
	Direct Direct
	// PublicIP configures public address detection.
	PublicIP PublicIP
	// DDNS is nil when no hostname is managed.
	DDNS *DDNS
	// Limits bound the viewer connections of the agent's direct listeners;
	// zero = defaults (see Limits).
	Limits Limits
	// Admin is the admin endpoint's address (status page, /status.json,
	// /metrics, /healthz). DefaultAgentAdmin when the key is absent or empty;
	// "" after admin: off.
	Admin string
	// AdminDefault says Admin is the default, not written in the config: the
	// agent then runs on without the endpoint if that address is taken.
	AdminDefault bool
	// Warnings are non-fatal problems found while loading ("file:line: key:
	// msg"), e.g. a plain http:// URL; the program should log them.
	Warnings []string
}

// AgentRelay says how to reach and authenticate to the relay.
type AgentRelay struct {
	// Address is host:port of the relay's UDP listener. Required.
	Address string
	// Token is the shared secret (resolved from token or token_file). Required.
	Token string
	// Transport is "auto" (default: QUIC, TCP on the same port number when QUIC
	// doesn't connect within about 2 s, back to QUIC when it works), "quic" or "tcp".
	Transport string
}

// DefaultRelayTransport is relay.transport when absent.
const DefaultRelayTransport = "auto"

// Service is one LAN service exposed on one public port.
type Service struct {
	// Name is unique within the agent. Required.
	Name string
	// Target is the LAN host:port. Required.
	Target string
	// Port is the public port, the same on the relay and the router. Required.
	Port uint16
	// Allow is the access rule: CIDR prefixes; AllowAny is set for [any]. Required (non-empty).
	Allow    []netip.Prefix
	AllowAny bool
	// FirstByteTimeout overrides limits.first_byte_timeout for this service;
	// zero = the limits: value.
	FirstByteTimeout time.Duration
}

// Direct configures the direct path.
type Direct struct {
	// Enabled turns on router port mapping. Default true.
	Enabled bool
	// Listen is the address the agent's gateway listeners bind to. Default "0.0.0.0".
	Listen string
	// Protocols limits the mapping protocols tried: "upnp", "natpmp", "pcp". Default all.
	Protocols []string
	// Gateway overrides gateway discovery (an IP address); zero = discover.
	Gateway netip.Addr
}

// PublicIP configures public address detection.
type PublicIP struct {
	// Sources in use: "relay", "https", "dns", "router". Default all four
	// ("relay" only counts when a relay is configured).
	Sources []string
	// HTTPS lists echo URLs. Default a built-in list.
	HTTPS []string
	// DNS lists whoami resolvers ("cloudflare", "opendns", or host:port/name forms). Default built-in.
	DNS []string
	// MinAgree is how many sources must agree. Default 2.
	MinAgree int
	// Accept lists prefixes accepted although not global unicast (labs and tests only).
	Accept []netip.Prefix
	// Interval between checks. Default 5m (jittered).
	Interval time.Duration
	// IPv6 enables AAAA detection/publishing. Default true.
	IPv6 bool
	// IPv6InterfaceID, when set, replaces the interface identifier (low 64 bits)
	// of the detected IPv6 prefix, to publish a device's own AAAA.
	IPv6InterfaceID netip.Addr
}

// DDNS configures the managed hostname.
type DDNS struct {
	// Hostname is the fully qualified name to keep right. Required.
	Hostname string
	// TTL of published records. Default 60s.
	TTL time.Duration
	// MinInterval is the least time between two writes for the same record. Default 1m.
	MinInterval time.Duration
	// DeleteOnExit removes our records on clean shutdown. Default false.
	DeleteOnExit bool
	// Provider says where the records live.
	Provider Provider
}

// Provider is a DNS provider's settings. Type selects which fields apply;
// validation rejects fields that don't belong to the type.
type Provider struct {
	// Type: "cloudflare", "dyndns2", "noip", "dynu", "rfc2136", "duckdns".
	Type string
	// Zone: cloudflare, rfc2136 (the zone the hostname is in).
	Zone string
	// APIToken: cloudflare (a token with Zone.DNS edit).
	APIToken string
	// BaseURL overrides the API endpoint (cloudflare API base, dyndns2 server URL).
	// A documented test hook for cloudflare; the server for generic dyndns2.
	BaseURL string
	// Username, Password: dyndns2 family.
	Username string
	Password string
	// Token: duckdns.
	Token string
	// Server (host:port), KeyName, KeyAlg (e.g. hmac-sha256), Key (base64): rfc2136.
	Server  string
	KeyName string
	KeyAlg  string
	Key     string
}

// String describes a without its token, so logging a config can't leak it.
func (a RelayAgent) String() string {
	return "{Token:" + redact(a.Token) + " Ports:" + a.Ports.String() + "}"
}

// String describes r without its token.
func (r AgentRelay) String() string {
	return "{Address:" + r.Address + " Token:" + redact(r.Token) + " Transport:" + r.Transport + "}"
}

// String describes p without its secrets (api_token, password, token, key).
func (p Provider) String() string {
	return "{Type:" + p.Type + " Zone:" + p.Zone + " APIToken:" + redact(p.APIToken) +
		" BaseURL:" + p.BaseURL + " Username:" + p.Username + " Password:" + redact(p.Password) +
		" Token:" + redact(p.Token) + " Server:" + p.Server + " KeyName:" + p.KeyName +
		" KeyAlg:" + p.KeyAlg + " Key:" + redact(p.Key) + "}"
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}
