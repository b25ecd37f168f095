package config

import (
	"net"
	"net/netip"
	"strings"
)

// Default admin endpoint addresses: loopback, one port per daemon so both can
// run on one machine.
const (
	DefaultAgentAdmin = "127.0.0.1:7480"
	DefaultRelayAdmin = "127.0.0.1:7481"
)

// adminOff lists the values of admin: that turn the endpoint off. An empty
// value means the default, like every other optional key.
var adminOff = []string{"off", "false", "no", "none"}

// admin reads the admin: key (the status page's listen address). isDefault is
// true when the key is absent or empty.
func (p *parser) admin(f *fields, key, def string) (addr string, isDefault bool) {
	e, present := f.m[key]
	s, line, ok := p.str(f, key, def)
	if !ok {
		return "", false
	}
	if !present || s == def && strings.TrimSpace(resolve(e.val).Value) == "" {
		return def, true
	}
	if contains(adminOff, strings.ToLower(s)) {
		return "", false
	}
	if !p.hostPort(s, line, f.sub(key), true) {
		return "", false
	}
	if !loopbackAddr(s) {
		p.warnf(line, f.sub(key), "%s can be reached from other machines, and the status page has no login "+
			"(it shows the home's public address and the cameras' LAN addresses); use a 127.0.0.1 address, "+
			"or put an authenticating proxy in front", s)
	}
	return s, false
}

// loopbackAddr reports whether a listen address binds loopback only.
func loopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// relayAdmin reads admin:, or its old name metrics: with a warning naming the line.
func (p *parser) relayAdmin(f *fields, r *Relay) {
	m, hasMetrics := f.m["metrics"]
	if !hasMetrics {
		r.Admin, r.AdminDefault = p.admin(f, "admin", DefaultRelayAdmin)
		return
	}
	if a, hasAdmin := f.m["admin"]; hasAdmin {
		p.errorf(m.key.Line, "metrics", "metrics is the old name of admin (line %d): keep only admin", a.key.Line)
		return
	}
	p.warnf(m.key.Line, "metrics", "deprecated: rename metrics to admin (it serves /metrics as before, and now the status page and /healthz too)")
	r.Admin, r.AdminDefault = p.admin(f, "metrics", DefaultRelayAdmin)
}

// AgentAdmin is what `porthole-agent status` needs from the agent's config.
type AgentAdmin struct {
	// Name is the agent's name: the status command checks the agent answering
	// at Admin is this one.
	Name string
	// Admin is the admin endpoint's address; "" when admin: off.
	Admin string
	// StateDir is where the agent saves status.json.
	StateDir string
}

// PeekAgentAdmin reads only the name:, admin: and state_dir: keys of an agent config,
// ignoring everything else: no secret file is read and no other key is checked,
// so a user who may not read the agent's secrets can still ask it for its status.
func PeekAgentAdmin(path string) (AgentAdmin, error) {
	data, err := readConfig(path)
	if err != nil {
		return AgentAdmin{}, err
	}
	return ParseAgentAdmin(path, data, nil)
}

// ParseAgentAdmin is PeekAgentAdmin on data already read.
func ParseAgentAdmin(file string, data []byte, lookupEnv func(string) (string, bool)) (AgentAdmin, error) {
	p := newParser(file, lookupEnv)
	var out AgentAdmin
	f := p.lenientRoot(data)
	if f == nil {
		return out, p.result()
	}
	out.Name, _, _ = p.str(f, "name", "")
	out.Admin, _ = p.admin(f, "admin", DefaultAgentAdmin)
	out.StateDir, _, _ = p.str(f, "state_dir", DefaultAgentStateDir)
	return out, p.result()
}
