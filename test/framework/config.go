package framework

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// RelayConfig is a relay.yaml for tests. Zero fields are left out of the file
// (the relay's defaults apply) unless said otherwise.
type RelayConfig struct {
	// Listen is where agents connect (UDP, and TCP for the fallback).
	Listen string
	// ViewerBind is where service listeners bind; empty means 127.0.0.1.
	ViewerBind string
	// StateDir is the relay's state_dir. Required.
	StateDir string
	// Agents are the configured agents, in this order.
	Agents []RelayAgent
	// Extra is YAML appended at the top level, e.g. "admin: 127.0.0.1:7481\n".
	Extra string
}

// RelayAgent is one entry of relay.yaml's agents.
type RelayAgent struct {
	Name, Token string
	// Lo and Hi are the agent's public TCP port range (ports: lo-hi).
	Lo, Hi int
	// Extra is YAML added under the agent, indented by the writer.
	Extra string
}

// YAML renders the config.
func (c RelayConfig) YAML() string {
	var b strings.Builder
	bind := c.ViewerBind
	if bind == "" {
		bind = "127.0.0.1"
	}
	fmt.Fprintf(&b, "listen: %s\nviewer_bind: %s\nstate_dir: %s\n", c.Listen, bind, c.StateDir)
	b.WriteString(c.Extra)
	b.WriteString("agents:\n")
	for _, a := range c.Agents {
		fmt.Fprintf(&b, "  %s:\n    token: %s\n    ports: %d-%d\n", a.Name, a.Token, a.Lo, a.Hi)
		b.WriteString(indent(a.Extra, "    "))
	}
	return b.String()
}

// AgentConfig is an agent.yaml for tests: relay only unless Direct is set.
type AgentConfig struct {
	// Name is the agent's name. Required.
	Name string
	// StateDir is the agent's state_dir. Required.
	StateDir string
	// Relay is the relay's address (host:port), Token the agent's token.
	Relay, Token string
	// Transport sets relay.transport (auto, quic, tcp); empty leaves it out.
	Transport string
	// Direct enables the direct path (router mapping); false writes
	// `direct: {enabled: false}`.
	Direct bool
	// Services are the exposed services, in this order.
	Services []Service
	// Extra is YAML appended at the top level.
	Extra string
}

// Service is one entry of agent.yaml's services.
type Service struct {
	// Target is the camera's host:port; empty leaves it out (kind portal).
	Name, Target string
	Port         int
	// Allow is a YAML flow list; empty means [any].
	Allow string
	// Kind is the service kind; empty leaves it out (tcp).
	Kind string
	// Extra is YAML added under the service, indented by the writer.
	Extra string
}

// YAML renders the config.
func (c AgentConfig) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nstate_dir: %s\nrelay:\n  address: %s\n  token: %s\n", c.Name, c.StateDir, c.Relay, c.Token)
	if c.Transport != "" {
		fmt.Fprintf(&b, "  transport: %s\n", c.Transport)
	}
	if !c.Direct {
		b.WriteString("direct:\n  enabled: false\n")
	}
	b.WriteString(c.Extra)
	b.WriteString("services:\n")
	for _, s := range c.Services {
		allow := s.Allow
		if allow == "" {
			allow = "[any]"
		}
		fmt.Fprintf(&b, "  - name: %s\n", s.Name)
		if s.Kind != "" {
			fmt.Fprintf(&b, "    kind: %s\n", s.Kind)
		}
		if s.Target != "" { // a portal has none
			fmt.Fprintf(&b, "    target: %s\n", s.Target)
		}
		fmt.Fprintf(&b, "    port: %d\n    allow: %s\n", s.Port, allow)
		b.WriteString(indent(s.Extra, "    "))
	}
	return b.String()
}

func indent(s, by string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for l := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(by + l + "\n")
	}
	return b.String()
}

// WriteFile writes content to dir/name with mode 0600 (configs hold tokens)
// and returns the path.
func WriteFile(dir, name, content string) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return path, nil
}

// Write is WriteFile for tests: it ends the test on error.
func Write(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p, err := WriteFile(dir, name, content)
	if err != nil {
		tb.Fatalf("framework: %v", err)
	}
	return p
}
