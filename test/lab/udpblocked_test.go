//go:build linux

package lab_test

// The "UDP blocked" scenario (issue 7): the home router drops every UDP packet
// from the LAN to the internet, so the agent's QUIC dial to the relay goes
// nowhere; it falls back to TLS over TCP on the same port number, and a viewer
// on the internet reaches the camera through the relay.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/test/lab"
)

const (
	ubCamPort   = 8554  // the greeter ("camera") on the LAN host
	ubSvcPort   = 10554 // the service's public port on the relay
	ubRelayPort = 7443
	ubAdmin     = "127.0.0.1:7480" // the agent's admin endpoint, inside LAN
	ubBanner    = "camera"
)

// ubBlockUDP drops every UDP packet the router would forward from the LAN,
// counting them: the firewall of a network that lets only TCP out. A table of
// its own, so miniupnpd's chains stay untouched.
const ubBlockUDP = `table inet porthole_udpblock {
	chain forward {
		type filter hook forward priority -10; policy accept;
		iifname "lan0" meta l4proto udp counter drop
	}
}
`

func TestScenarioUDPBlocked(t *testing.T) {
	lab.Require(t)
	relayBin := lab.Build(t, "relay/cmd/porthole-relay")
	agentBin := lab.Build(t, "agent/cmd/porthole-agent")
	// No router daemon and no STUN: this scenario is relay only.
	l := lab.Up(t, lab.Options{NoSTUN: true, NoUPnP: true, NoNATPMP: true})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	rules := filepath.Join(l.Dir(), "udpblock.nft")
	if err := os.WriteFile(rules, []byte(ubBlockUDP), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Exec(lab.Router, "nft", "-f", rules); err != nil {
		t.Fatal(err)
	}

	cam := l.Start(t, lab.LAN, "camera", lab.Helper(t, "greeter"),
		"-listen", fmt.Sprintf("%s:%d", lab.AgentAddr, ubCamPort), "-banner", ubBanner)
	if err := cam.WaitListening(ctx, "tcp", ubCamPort); err != nil {
		t.Fatal(err)
	}

	token := config.NewToken()
	relayCfg := fmt.Sprintf(`listen: %[1]s:%[2]d
viewer_bind: %[1]s
state_dir: %[3]s
admin: off
agents:
  home:
    token_file: home.token
    ports: 10000-10999
`, lab.WANAddr, ubRelayPort, filepath.Join(l.Dir(), "relay-state"))
	relay := l.StartSpec(t, lab.WAN, "relay", lab.Spec{
		Path:  relayBin,
		Args:  []string{"-v", "-config", "relay.yaml"},
		Files: map[string][]byte{"relay.yaml": []byte(relayCfg), "home.token": []byte(token + "\n")},
	})
	for _, network := range []string{"udp", "tcp"} {
		if err := relay.WaitListening(ctx, network, ubRelayPort); err != nil {
			t.Fatal(err)
		}
	}

	agentCfg := fmt.Sprintf(`name: home
state_dir: %[1]s
admin: %[2]s
relay:
  address: %[3]s:%[4]d
  token_file: agent.token
services:
  - name: cam
    target: %[5]s:%[6]d
    port: %[7]d
    allow: [any]
direct:
  enabled: false
`, filepath.Join(l.Dir(), "agent-state"), ubAdmin, lab.WANAddr, ubRelayPort, lab.AgentAddr, ubCamPort, ubSvcPort)
	agent := l.StartSpec(t, lab.LAN, "agent", lab.Spec{
		Path:  agentBin,
		Args:  []string{"-v", "-config", "agent.yaml"},
		Files: map[string][]byte{"agent.yaml": []byte(agentCfg), "agent.token": []byte(token + "\n")},
	})
	started := time.Now()

	// A viewer on the internet (not the relay's address) reaches the camera
	// through the relay.
	var line string
	ubWait(t, ctx, agent, "a viewer served through the relay", func() (bool, string) {
		var err error
		line, err = ubView(ctx, l)
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	t.Logf("viewer served %.1fs after the agent started: %q", time.Since(started).Seconds(), line)

	// The agent says it uses the TCP fallback, and why.
	var st ubStatus
	ubWait(t, ctx, agent, "status.json with transport tcp", func() (bool, string) {
		var err error
		st, err = ubAgentStatus(ctx, l)
		if err != nil {
			return false, err.Error()
		}
		return st.Tunnel.Connected && st.Tunnel.Transport == "tcp", fmt.Sprintf("%+v", st.Tunnel)
	})
	t.Logf("agent status: transport %s (%s)", st.Tunnel.Transport, st.Tunnel.TransportWhy)
	if st.Tunnel.TransportWhy == "" {
		t.Error("status.json gives no reason for the transport")
	}
	if up := agent.Lines("tunnel up"); len(up) == 0 || !strings.Contains(up[len(up)-1], "transport=tcp") {
		t.Errorf("agent's tunnel up lines don't say tcp: %q", up)
	}
	if l := relay.Lines("agent connected"); len(l) == 0 || !strings.Contains(l[len(l)-1], "transport=tcp") {
		t.Errorf("relay's agent connected lines don't say tcp: %q", l)
	}

	// The QUIC attempts really hit the firewall (the fallback wasn't taken
	// for another reason).
	out, err := l.Exec(lab.Router, "nft", "list", "table", "inet", "porthole_udpblock")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(out); m != nil {
		n, _ = strconv.Atoi(m[1])
	}
	if n == 0 {
		t.Errorf("the router dropped no UDP packet from the LAN:\n%s", out)
	} else {
		t.Logf("router dropped %d UDP packets from the LAN", n)
	}
}

// ubStatus is the part of the agent's /status.json this test reads.
type ubStatus struct {
	Tunnel struct {
		Connected    bool   `json:"connected"`
		Transport    string `json:"transport"`
		TransportWhy string `json:"transport_reason"`
	} `json:"tunnel"`
}

// ubAgentStatus reads the agent's /status.json from inside LAN.
func ubAgentStatus(ctx context.Context, l *lab.Lab) (ubStatus, error) {
	var st ubStatus
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.DialContext(ctx, lab.LAN, network, addr)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ubAdmin+"/status.json", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("status.json: %w: %s", err, body)
	}
	return st, nil
}

// ubView connects as a viewer on the internet to the relay's service port and
// returns the camera's line.
func ubView(ctx context.Context, l *lab.Lab) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := l.DialFrom(ctx, lab.WAN, lab.ViewerAddr, "tcp", net.JoinHostPort(lab.WANAddr, strconv.Itoa(ubSvcPort)))
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, ubBanner+" peer=") {
		return line, fmt.Errorf("unexpected line %q", line)
	}
	return line, nil
}

// ubWait polls cond until it holds, the agent exits or ctx ends.
func ubWait(t *testing.T, ctx context.Context, agent *lab.Proc, what string, cond func() (bool, string)) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, last := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last: %s)", what, ctx.Err(), last)
		case <-agent.Done():
			t.Fatalf("waiting for %s: the agent exited: %v", what, agent.Err())
		case <-tick.C:
		}
	}
}
