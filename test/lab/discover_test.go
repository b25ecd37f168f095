//go:build linux

package lab_test

// `porthole-agent discover` over real multicast: the agent's host (LAN)
// sends the WS-Discovery probe to 239.255.255.250 on its veth, and a fake
// ONVIF camera (test/fakeonvif) in the router's namespace, at 192.168.77.1 on
// the same link, answers; discover then queries its ONVIF services with a
// UsernameToken and probes its RTSP and HTTP ports. Multicast never leaves the
// lab's namespaces.

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/agent/discover"
	"github.com/porthole-dev/porthole/test/lab"
)

func TestLabDiscover(t *testing.T) {
	l := lab.Up(t, lab.Options{NoSTUN: true, NoUPnP: true, NoNATPMP: true})
	const pw = "lab-cam-pass"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cam := l.Start(t, lab.Router, "fakeonvif", lab.Build(t, "test/fakeonvif/cmd/fakeonvif"),
		"-host", lab.RouterLANAddr, "-user", "admin", "-password", pw, "-name", "Lab Door")
	if err := cam.WaitOutput(ctx, "fakeonvif ready"); err != nil {
		t.Fatal(err)
	}
	agentBin := lab.Build(t, "agent/cmd/porthole-agent")

	for _, mode := range []struct {
		name  string
		args  []string
		probe string
	}{
		{"multicast", nil, "eth0 (" + lab.AgentAddr + ")"},
		{"unicast", []string{"-host", lab.RouterLANAddr}, lab.RouterLANAddr},
	} {
		t.Run(mode.name, func(t *testing.T) {
			p := l.StartSpec(t, lab.LAN, "discover-"+mode.name, lab.Spec{
				Path:  agentBin,
				Args:  append([]string{"discover", "-json", "-timeout", "2s", "-user", "admin", "-password-file", "cam.pass"}, mode.args...),
				Files: map[string][]byte{"cam.pass": []byte(pw + "\n")},
			})
			if err := p.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			out, err := os.ReadFile(p.StdoutPath)
			if err != nil {
				t.Fatal(err)
			}
			if p.ExitCode() != 0 {
				t.Fatalf("discover exited %d:\n%s", p.ExitCode(), p.Output())
			}
			var res discover.Result
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if !slices.Contains(res.Probed, mode.probe) {
				t.Errorf("probed %q, want %q", res.Probed, mode.probe)
			}
			if len(res.Cameras) != 1 {
				t.Fatalf("cameras: %s", out)
			}
			c := res.Cameras[0]
			if c.Host != lab.RouterLANAddr || c.Name != "Lab Door" || !c.Authenticated || len(c.Problems) != 0 {
				t.Errorf("camera %+v", c)
			}
			if len(c.Profiles) != 2 || c.Profiles[0].StreamURI != "rtsp://"+lab.RouterLANAddr+":554/Streaming/Channels/101?transportmode=unicast" {
				t.Errorf("profiles %+v", c.Profiles)
			}
			open := map[int]bool{}
			for _, pp := range c.Ports {
				open[pp.Port] = pp.Open
			}
			if !open[554] || open[8554] || !open[80] || open[8080] {
				t.Errorf("ports %+v", c.Ports)
			}
		})
	}
}
