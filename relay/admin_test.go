package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/internal/config"
	"github.com/porthole-dev/porthole/relay"
)

func TestAdminEndpoint(t *testing.T) {
	token := config.NewToken()
	rc := &config.Relay{
		Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(), Admin: "127.0.0.1:0",
		Agents: map[string]config.RelayAgent{
			"home":  {Token: token, Ports: config.PortRange{Lo: 10000, Hi: 10099}},
			"cabin": {Token: config.NewToken(), Ports: config.PortRange{Lo: 10100, Hi: 10100}},
		},
	}
	s, err := relay.New(relay.Config{Relay: rc, Logger: logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	bodies := map[string]string{}
	for _, path := range []string{"/", "/status.json", "/metrics", "/healthz"} {
		resp, err := http.Get("http://" + s.AdminAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %s", path, resp.Status)
		}
		bodies[path] = string(b)
		for name, a := range rc.Agents {
			if strings.Contains(string(b), a.Token) {
				t.Errorf("%s shows agent %s's token", path, name)
			}
		}
	}
	var st relay.Status
	if err := json.Unmarshal([]byte(bodies["/status.json"]), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Agents) != 2 || st.Agents[0].Name != "cabin" || st.Agents[1].Name != "home" || st.Agents[1].Connected || st.Agents[1].Ports != "10000-10099" {
		t.Errorf("status: %+v", st)
	}
	if !strings.Contains(bodies["/"], "0 of 2 agents connected") {
		t.Errorf("page:\n%s", bodies["/"])
	}
	if bodies["/healthz"] != "ok\n" {
		t.Errorf("healthz %q", bodies["/healthz"])
	}
	for _, want := range []string{"porthole_relay_agents_connected 0", "go_goroutines", "process_open_fds"} {
		if !strings.Contains(bodies["/metrics"], want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if s.MetricsAddr().String() != s.AdminAddr().String() {
		t.Error("MetricsAddr is not the admin address")
	}
}

// A second relay on one machine runs on without the admin endpoint when the
// default address is taken; an address written in the config must be free.
func TestAdminAddressTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	newRelay := func(isDefault bool) (*relay.Server, string, error) {
		var logs bytes.Buffer
		rc := &config.Relay{
			Listen: "127.0.0.1:0", ViewerBind: "127.0.0.1", StateDir: t.TempDir(),
			Admin: taken.Addr().String(), AdminDefault: isDefault,
			Agents: map[string]config.RelayAgent{"home": {Token: config.NewToken(), Ports: config.PortRange{Lo: 10000, Hi: 10000}}},
		}
		s, err := relay.New(relay.Config{Relay: rc, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		return s, logs.String(), err
	}
	s, logs, err := newRelay(true)
	if err != nil || s.AdminAddr() != nil || !strings.Contains(logs, "default address is taken") {
		t.Errorf("default taken: %v, admin %v\n%s", err, s, logs)
	}
	if s != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s.Run(ctx) // releases the UDP socket
	}
	if _, _, err := newRelay(false); err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Errorf("configured address taken: %v", err)
	}
}
