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
	// UDPPorts is the range of public UDP ports (WireGuard) the agent may
	// register; zero (udp_ports absent) allows none.
	UDPPorts PortRange `yaml:"-"`
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
	// Viewers are the people who may log in to http and rtsp
	// services, by name (viewers: in agent.yaml). A map, like Relay.Agents:
	// the gateway looks viewers up by name; sort the keys for a stable order.
	// Nil when the section is absent.
	Viewers map[string]Viewer
	// TLS says where http/rtsp services get their certificate. Nil when the
	// tls: section is absent: services with TLS on then use a self-signed
	// certificate (and loading warns).
	TLS *TLS
	// WireGuard is nil when the wireguard: section is absent (no phones as
	// WireGuard peers).
	WireGuard *WireGuard
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
	// Notify are where the agent sends its events (notify:); nil = nowhere.
	Notify []NotifyTarget
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
	// Kind is how the gateway handles the service: KindTCP (default: bytes as
	// they are, the camera's own login faces the viewer), KindHTTP (a
	// reverse proxy behind the viewers' login) or KindRTSP (an RTSP proxy
	// behind the viewers' login, one camera session for all viewers). Always set by the parser; ""
	// in a Service built in Go means tcp.
	Kind string
	// Viewers names who may watch an http or rtsp service, each a key of
	// Agent.Viewers. Nil = every viewer (see Agent.ServiceViewers); always nil
	// for tcp.
	Viewers []string
	// CameraLogin is the camera's own login, used by the agent only and never
	// shown to viewers. Nil when not set; always nil for tcp.
	CameraLogin *CameraLogin
	// TLS says the public port speaks HTTPS (RTSPS for rtsp). Default true
	// for http and rtsp; always
	// false for tcp (the camera's bytes pass as they are).
	TLS bool
	// MJPEG and Snapshot are the camera's MJPEG stream and snapshot URL paths
	// (http only; "" = none): viewers get them, at a chosen frame rate and
	// width, as /.porthole/mjpeg and /.porthole/snapshot.jpg.
	MJPEG, Snapshot string
	// Path is the camera's RTSP stream path with its query if any (rtsp
	// only; required there), e.g. /Streaming/Channels/101: viewers open
	// rtsp(s)://host:port/<Name>.
	Path string
	// LowPath is the camera's sub-stream path (rtsp only; "" = none), served
	// to viewers at <Name>/low.
	LowPath string
	// LiveTimeout ends a viewer's live stream (MJPEG, RTSP) after this long
	// (live_timeout:, http and rtsp). The parser sets DefaultLiveTimeout
	// when absent; live_timeout: off and a Service built in Go with zero
	// mean no limit.
	LiveTimeout time.Duration
}

// DefaultLiveTimeout is live_timeout: when absent: a phone left on stops
// streaming after half an hour; the viewer taps to go on.
const DefaultLiveTimeout = 30 * time.Minute

// Service kinds (services[].kind).
const (
	KindTCP    = "tcp"
	KindHTTP   = "http"
	KindRTSP   = "rtsp"
	KindPortal = "portal"
)

// CameraLogin is a service's camera_login: the credentials the agent uses
// towards the camera.
type CameraLogin struct {
	// Username is the camera account's name. Required.
	Username string
	// Password is resolved from password or password_file. Required. Never
	// printed: String redacts it.
	Password string
}

// Viewer is one person who may log in (viewers.NAME in agent.yaml).
type Viewer struct {
	// PasswordHash is an argon2id PHC string ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"),
	// as printed by porthole-agent passwd, from password_hash or
	// password_hash_file. Required.
	PasswordHash string
	// DailyCap is the most data (bytes, both directions, every service) the
	// viewer may use in a day (daily_cap: 500MB; units B, KB, MB, GB, TB or
	// KiB..TiB); the day ends at the agent's local midnight. 0 = no cap.
	DailyCap int64
}

// TLS is the tls: section: where the agent's http/rtsp services get their
// certificate. Either ACME (ACMEEmail set) or a certificate from files
// (CertFile and KeyFile set), never both; neither = self-signed.
type TLS struct {
	// ACMEEmail is the ACME account's contact; setting it turns ACME on.
	// Empty = no ACME.
	ACMEEmail string
	// ACMECA is the ACME directory URL. DefaultACMECA (Let's Encrypt
	// production) when ACMEEmail is set and acme_ca is absent; empty without ACME.
	ACMECA string
	// ACMECARoot is a PEM file of an extra root CA to trust for the ACME
	// server (private ACME servers, Pebble in tests); a relative path in the
	// file is joined to the config file's directory. Parsing checks it holds a
	// certificate. Empty = the system roots only.
	ACMECARoot string
	// CertFile and KeyFile are a PEM certificate chain and its private key
	// (e.g. from certbot), read again when they change; both or neither.
	// Relative paths are joined to the config file's directory. Parsing checks
	// that they load as a pair.
	CertFile string
	KeyFile  string
	// Challenge is the ACME challenge: ChallengeDNS01 or ChallengeTLSALPN01,
	// resolved from auto (the default: dns-01 when the ddns provider can write
	// TXT records, see TXTProviders, else tls-alpn-01). Empty without ACME.
	Challenge string
}

// ACME challenge types (tls.challenge).
const (
	ChallengeDNS01     = "dns-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// DefaultACMECA is tls.acme_ca when acme_email is set: Let's Encrypt production.
const DefaultACMECA = "https://acme-v02.api.letsencrypt.org/directory"

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

// String describes c without its password.
func (c CameraLogin) String() string {
	return "{Username:" + c.Username + " Password:" + redact(c.Password) + "}"
}

// String describes v without its hash: a hash can be attacked offline.
func (v Viewer) String() string {
	return "{PasswordHash:" + redact(v.PasswordHash) + "}"
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}
