//go:build linux

package lab_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/lab"
)

const (
	lanPort    = 8554  // the greeter on the LAN host
	publicPort = 18554 // the mapped port on the public address
)

var publicTarget = fmt.Sprintf("%s:%d", lab.PublicAddr, publicPort)

// startGreeter runs the greeter on AgentAddr:8554 in the LAN namespace.
func startGreeter(t *testing.T, l *lab.Lab) *lab.Proc {
	t.Helper()
	g := l.Start(t, lab.LAN, "greeter", lab.Helper(t, "greeter"),
		"-listen", fmt.Sprintf("%s:%d", lab.AgentAddr, lanPort), "-banner", "hello from lan")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.WaitListening(ctx, "tcp", lanPort); err != nil {
		t.Fatal(err)
	}
	return g
}

// probe connects from the internet side to the home's public address and
// returns the greeting line, or the error.
func probe(t *testing.T, l *lab.Lab) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := l.DialContext(ctx, lab.WAN, "tcp", publicTarget)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read greeting: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// wantReachable checks the greeting arrives and shows the viewer's real
// address (a port mapping does not SNAT inbound traffic).
func wantReachable(t *testing.T, l *lab.Lab) {
	t.Helper()
	line, err := probe(t, l)
	if err != nil {
		t.Fatalf("%s from wan: %v, want the greeting", publicTarget, err)
	}
	if want := "hello from lan peer=" + lab.WANAddr + ":"; !strings.HasPrefix(line, want) {
		t.Fatalf("greeting %q, want prefix %q", line, want)
	}
}

func wantRefused(t *testing.T, l *lab.Lab) {
	t.Helper()
	line, err := probe(t, l)
	if err == nil {
		t.Fatalf("%s from wan answered %q, want it unreachable", publicTarget, line)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s from wan: %v, want connection refused", publicTarget, err)
	}
}

func wantNoMappings(t *testing.T, l *lab.Lab) {
	t.Helper()
	rules, err := l.Mappings()
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 0 {
		t.Fatalf("router still has mappings: %q", rules)
	}
}

func upnpAdd(l *lab.Lab) (string, error) {
	return l.Exec(lab.LAN, "upnpc", "-i", "-u", lab.RootDescURL,
		"-a", lab.AgentAddr, fmt.Sprint(lanPort), fmt.Sprint(publicPort), "TCP")
}

func upnpDelete(t *testing.T, l *lab.Lab) {
	t.Helper()
	if out, err := l.Exec(lab.LAN, "upnpc", "-i", "-u", lab.RootDescURL, "-d", fmt.Sprint(publicPort), "TCP"); err != nil {
		t.Fatalf("upnpc -d: %v\n%s", err, out)
	}
}

// natpmpAdd maps publicPort to lanPort; natpmpc takes the PUBLIC port first.
func natpmpAdd(l *lab.Lab, lifetime int) (string, error) {
	return l.Exec(lab.LAN, "natpmpc", "-g", lab.RouterLANAddr,
		"-a", fmt.Sprint(publicPort), fmt.Sprint(lanPort), "tcp", fmt.Sprint(lifetime))
}

const (
	upnpGranted   = "external " + lab.PublicAddr + ":18554 TCP is redirected to internal " + lab.AgentAddr + ":8554"
	natpmpGranted = "Mapped public port 18554 protocol TCP to local port 8554"
)

// TestLabRouterWorks proves the lab: a working router maps with UPnP and
// NAT-PMP, the internet side reaches the LAN service through the public
// address, and nothing is reachable without a mapping.
func TestLabRouterWorks(t *testing.T) {
	t.Parallel()
	l := lab.Up(t, lab.Options{})
	startGreeter(t, l)
	wantRefused(t, l) // baseline: no mapping, no way in

	t.Run("UPnP", func(t *testing.T) {
		out, err := upnpAdd(l)
		if err != nil || !strings.Contains(out, upnpGranted) {
			t.Fatalf("upnpc -a: %v\n%s", err, out)
		}
		if !strings.Contains(out, "ExternalIPAddress = "+lab.PublicAddr) {
			t.Errorf("upnpc did not report external address %s:\n%s", lab.PublicAddr, out)
		}
		rules, err := l.Mappings()
		if err != nil || len(rules) != 1 || !strings.Contains(rules[0], "dnat ip to 192.168.77.10:8554") {
			t.Fatalf("router mappings %q, %v", rules, err)
		}
		wantReachable(t, l)
		upnpDelete(t, l)
		wantNoMappings(t, l)
		wantRefused(t, l)
	})

	t.Run("NAT-PMP", func(t *testing.T) {
		out, err := natpmpAdd(l, 3600)
		if err != nil || !strings.Contains(out, natpmpGranted) {
			t.Fatalf("natpmpc -a: %v\n%s", err, out)
		}
		if !strings.Contains(out, "Public IP address : "+lab.PublicAddr) {
			t.Errorf("natpmpc did not report public address %s:\n%s", lab.PublicAddr, out)
		}
		wantReachable(t, l)
		if out, err := natpmpAdd(l, 0); err != nil {
			t.Fatalf("natpmpc delete: %v\n%s", err, out)
		}
		wantNoMappings(t, l)
		wantRefused(t, l)
	})

	t.Run("PCP", func(t *testing.T) {
		nonce := make([]byte, 12)
		rand.Read(nonce)
		code, ext := pcpMap(t, l, nonce, 3600)
		if code != 0 || ext.String() != publicTarget {
			t.Fatalf("PCP MAP: result %d, external %s; want 0, %s", code, ext, publicTarget)
		}
		wantReachable(t, l)
		// miniupnpd deletes only with the nonce that created the mapping
		if code, _ := pcpMap(t, l, nonce, 0); code != 0 {
			t.Fatalf("PCP delete: result %d", code)
		}
		wantNoMappings(t, l)
		wantRefused(t, l)
	})
}

// pcpMap sends one PCP MAP request (RFC 6887) for TCP lanPort -> publicPort
// from AgentAddr and returns the result code and the external address.
func pcpMap(t *testing.T, l *lab.Lab, nonce []byte, lifetime uint32) (byte, netip.AddrPort) {
	t.Helper()
	pc, err := l.ListenPacket(lab.LAN, "udp4", lab.AgentAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	client := netip.MustParseAddr(lab.AgentAddr).As16() // IPv4-mapped
	req := []byte{2, 1, 0, 0}                           // version 2, MAP request
	req = binary.BigEndian.AppendUint32(req, lifetime)
	req = append(req, client[:]...)
	req = append(req, nonce...)
	req = append(req, 6, 0, 0, 0) // TCP, reserved
	req = binary.BigEndian.AppendUint16(req, lanPort)
	req = binary.BigEndian.AppendUint16(req, publicPort)
	any4 := netip.IPv4Unspecified().As16()
	req = append(req, any4[:]...)
	gw := &net.UDPAddr{IP: net.ParseIP(lab.RouterLANAddr), Port: lab.NATPMPPort}
	if _, err := pc.WriteTo(req, gw); err != nil {
		t.Fatalf("PCP MAP: %v", err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp := make([]byte, 1100)
	n, _, err := pc.ReadFrom(resp)
	if err != nil {
		t.Fatalf("PCP MAP: no answer: %v", err)
	}
	resp = resp[:n]
	if n < 60 || resp[0] != 2 || resp[1] != 0x81 || !bytes.Equal(resp[24:36], nonce) {
		t.Fatalf("PCP MAP: unexpected answer % x", resp)
	}
	ext, _ := netip.AddrFromSlice(resp[44:60])
	return resp[3], netip.AddrPortFrom(ext.Unmap(), binary.BigEndian.Uint16(resp[42:44]))
}

// TestLabLyingRouter: behind CGNAT with STUN the router grants mappings and
// reports the right public address, yet nothing from outside gets in.
func TestLabLyingRouter(t *testing.T) {
	t.Parallel()
	l := lab.Up(t, lab.Options{CGNAT: true})
	startGreeter(t, l)

	out, err := upnpAdd(l)
	if err != nil || !strings.Contains(out, upnpGranted) {
		t.Fatalf("upnpc -a: want the mapping granted: %v\n%s", err, out)
	}
	wantRefused(t, l)
	upnpDelete(t, l)

	out, err = natpmpAdd(l, 3600)
	if err != nil || !strings.Contains(out, natpmpGranted) {
		t.Fatalf("natpmpc -a: want the mapping granted: %v\n%s", err, out)
	}
	wantRefused(t, l)

	// the way out still works: the internet sees the ISP's address
	ln, err := l.Listen(lab.WAN, "tcp", lab.WANAddr+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := l.DialContext(ctx, lab.LAN, "tcp", lab.WANAddr+":7000")
	if err != nil {
		t.Fatalf("lan -> wan: %v", err)
	}
	defer c.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(3 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if host, _, _ := net.SplitHostPort(sc.RemoteAddr().String()); host != lab.PublicAddr {
		t.Errorf("wan saw the lan host as %s, want %s", host, lab.PublicAddr)
	}
}

// TestLabRefusingRouter: without STUN, miniupnpd 2.3.1 refuses every mapping
// on a reserved WAN address, the honest answer a client must handle.
func TestLabRefusingRouter(t *testing.T) {
	t.Parallel()
	l := lab.Up(t, lab.Options{NoSTUN: true})
	out, err := upnpAdd(l)
	if err == nil && strings.Contains(out, "is redirected") {
		t.Fatalf("upnpc -a granted, want 501:\n%s", out)
	}
	if !strings.Contains(out, "501") {
		t.Errorf("upnpc -a: want error 501 ActionFailed, got:\n%s", out)
	}
	out, err = natpmpAdd(l, 3600)
	if err == nil && strings.Contains(out, natpmpGranted) {
		t.Fatalf("natpmpc -a granted, want a refusal:\n%s", out)
	}
	wantNoMappings(t, l)
}

// TestLabRouterRestart: a router "reboot" loses every mapping; a new one
// works again.
func TestLabRouterRestart(t *testing.T) {
	t.Parallel()
	l := lab.Up(t, lab.Options{NoUPnP: true}) // NAT-PMP/PCP only
	startGreeter(t, l)
	if out, err := upnpAdd(l); err == nil || strings.Contains(out, "is redirected") {
		t.Fatalf("upnpc with UPnP off: %v\n%s", err, out)
	}
	if out, err := natpmpAdd(l, 3600); err != nil || !strings.Contains(out, natpmpGranted) {
		t.Fatalf("natpmpc -a: %v\n%s", err, out)
	}
	wantReachable(t, l)
	old := l.Router()
	l.RestartRouter(t)
	if l.Router() == old || l.Router().Pid() == old.Pid() {
		t.Fatal("router process not replaced")
	}
	wantNoMappings(t, l)
	wantRefused(t, l)
	if out, err := natpmpAdd(l, 3600); err != nil || !strings.Contains(out, natpmpGranted) {
		t.Fatalf("natpmpc -a after restart: %v\n%s", err, out)
	}
	wantReachable(t, l)
}

// TestLabIGDv1 checks the IGDv1 variant's description and SSDP discovery
// over the LAN's multicast route, with UPnP only.
func TestLabIGDv1(t *testing.T) {
	t.Parallel()
	l := lab.Up(t, lab.Options{IGDv1: true, NoNATPMP: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	pc, err := l.ListenPacket(lab.LAN, "udp4", lab.AgentAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	msearch := "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
	if _, err := pc.WriteTo([]byte(msearch), &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 1900}); err != nil {
		t.Fatalf("M-SEARCH: %v", err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no SSDP answer: %v", err)
	}
	if !strings.Contains(string(buf[:n]), "LOCATION: "+lab.RootDescURL) {
		t.Errorf("SSDP answer from %s lacks LOCATION %s:\n%s", from, lab.RootDescURL, buf[:n])
	}

	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.DialContext(ctx, lab.LAN, network, addr)
		},
	}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, lab.RootDescURL, nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(desc), "urn:schemas-upnp-org:service:WANIPConnection:1") ||
		strings.Contains(string(desc), "WANIPConnection:2") {
		t.Errorf("rootDesc.xml is not IGDv1-only:\n%s", desc)
	}
	if out, err := natpmpAdd(l, 3600); err == nil || strings.Contains(out, natpmpGranted) {
		t.Errorf("natpmpc with NAT-PMP off: %v\n%s", err, out)
	}
}

// TestLabProc covers Start's plumbing: environment, working directory,
// output capture, exit status, and stopping by signal.
func TestLabProc(t *testing.T) {
	t.Parallel()
	l := lab.Up(t, lab.Options{NoUPnP: true, NoNATPMP: true, NoSTUN: true})
	p := l.StartSpec(t, lab.LAN, "env", lab.Spec{
		Path:  "sh",
		Args:  []string{"-c", `echo "x=$LAB_X dir=$(pwd) file=$(cat conf.txt) mode=$(stat -c %a conf.txt)"; echo oops >&2; ip -4 -o addr show dev eth0; exit 3`},
		Env:   []string{"LAB_X=42"},
		Files: map[string][]byte{"conf.txt": []byte("secret")},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "never printed"); !errors.Is(err, lab.ErrExited) {
		t.Fatalf("WaitOutput on an exited program: %v", err)
	}
	var ee interface{ ExitCode() int }
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit status %v, want 3", p.Err())
	}
	out := p.Output()
	for _, want := range []string{"x=42 dir=" + p.Dir + " file=secret mode=600", "oops", lab.AgentAddr + "/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	s := l.Start(t, lab.WAN, "sleeper", "sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 1; done")
	if err := s.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitOutput(ctx, "got TERM"); err != nil {
		t.Fatal(err)
	}
	if l.Start(t, lab.WAN, "sleeper", "true").Name != "sleeper-2" {
		t.Error("duplicate Proc name not made unique")
	}
	if _, err := l.Exec(lab.ISP, "true"); !errors.Is(err, lab.ErrNoNamespace) {
		t.Errorf("Exec in ISP without CGNAT: %v", err)
	}
}
