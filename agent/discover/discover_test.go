package discover_test

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/porthole-dev/porthole/agent/discover"
	"github.com/porthole-dev/porthole/test/fakeonvif"
)

const (
	testUser     = "admin"
	testPassword = "s3cret-Pa55"
)

func startCam(t *testing.T, cfg fakeonvif.Config) *fakeonvif.Camera {
	t.Helper()
	cam, err := fakeonvif.Start(cfg, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cam.Close)
	return cam
}

// run discovers cam by unicast; the wait ends as soon as it answered (the
// timeout only bounds a camera that doesn't).
func run(t *testing.T, cam *fakeonvif.Camera, user, password string, mod ...func(*discover.Config)) *discover.Result {
	t.Helper()
	cfg := discover.Config{
		Hosts:     []string{cam.WSDAddr().String()},
		Username:  user,
		Password:  password,
		Timeout:   10 * time.Second,
		RTSPPorts: []int{},
		HTTPPorts: []int{int(cam.HTTPAddr().Port())},
	}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := discover.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func one(t *testing.T, res *discover.Result) discover.Camera {
	t.Helper()
	if len(res.Cameras) != 1 {
		t.Fatalf("found %d cameras, want 1: %+v", len(res.Cameras), res)
	}
	return res.Cameras[0]
}

func TestUnicastWithLogin(t *testing.T) {
	cam := startCam(t, fakeonvif.Config{Username: testUser, Password: testPassword})
	c := one(t, run(t, cam, testUser, testPassword))
	if c.Host != "127.0.0.1" || c.Name != "Front Door" || c.Hardware != "FakeCam 1" {
		t.Errorf("host, name, hardware = %q %q %q", c.Host, c.Name, c.Hardware)
	}
	if !c.Authenticated || len(c.Problems) != 0 {
		t.Errorf("authenticated=%v problems=%q", c.Authenticated, c.Problems)
	}
	if len(c.Profiles) != 2 {
		t.Fatalf("profiles: %+v", c.Profiles)
	}
	main, sub := c.Profiles[0], c.Profiles[1]
	if main.StreamURI != cam.StreamURI(fakeonvif.Profile{Path: "/Streaming/Channels/101?transportmode=unicast"}) ||
		sub.StreamURI != cam.StreamURI(fakeonvif.Profile{Path: "/Streaming/Channels/102"}) {
		t.Errorf("stream URIs %q %q", main.StreamURI, sub.StreamURI)
	}
	if main.Width != 1920 || main.Height != 1080 || main.Encoding != "H264" || main.Name != "mainStream" {
		t.Errorf("main profile %+v", main)
	}
	if c.SnapshotURI != cam.SnapshotURI(fakeonvif.Profile{Token: "Profile_1"}) {
		t.Errorf("snapshot URI %q", c.SnapshotURI)
	}
	if len(c.Ports) != 2 {
		t.Fatalf("ports %+v", c.Ports)
	}
	rtsp, web := c.Ports[0], c.Ports[1]
	if rtsp.Protocol != "rtsp" || !rtsp.Open || rtsp.Server != "FakeCam-rtspd/1.0" || int(cam.RTSPAddr().Port()) != rtsp.Port {
		t.Errorf("rtsp probe %+v", rtsp)
	}
	if web.Protocol != "http" || !web.Open || web.Realm != "FakeCam" || web.Auth != "Digest" || web.Server != "FakeCam-httpd" {
		t.Errorf("http probe %+v", web)
	}
	if n := cam.AuthFailures(); n != 0 {
		t.Errorf("camera refused %d requests", n)
	}

	var out bytes.Buffer
	if err := discover.WriteYAML(&out, &discover.Result{Probed: []string{"x"}, Cameras: []discover.Camera{c}}, discover.YAMLOptions{Username: testUser}); err != nil {
		t.Fatal(err)
	}
	t.Logf("YAML:\n%s", out.String())
	if strings.Contains(out.String(), testPassword) {
		t.Fatal("the password is in the output")
	}
	var doc struct {
		Services []map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("output is not YAML: %v", err)
	}
	if len(doc.Services) != 2 {
		t.Fatalf("services: %v", doc.Services)
	}
	s, w := doc.Services[0], doc.Services[1]
	want := map[string]any{"name": "front-door", "kind": "rtsp", "target": cam.RTSPAddr().String(),
		"path": "/Streaming/Channels/101?transportmode=unicast", "low_path": "/Streaming/Channels/102", "port": 10000,
		"allow": []any{"any"}, "camera_login": map[string]any{"username": testUser, "password_file": "/etc/porthole/front-door.pass"}}
	for k, v := range want {
		if !equalYAML(s[k], v) {
			t.Errorf("rtsp service %s = %#v, want %#v", k, s[k], v)
		}
	}
	wantWeb := map[string]any{"name": "front-door-web", "kind": "http", "target": cam.HTTPAddr().String(),
		"snapshot": "/onvif/snapshot?token=Profile_1", "port": 10001}
	for k, v := range wantWeb {
		if !equalYAML(w[k], v) {
			t.Errorf("http service %s = %#v, want %#v", k, w[k], v)
		}
	}
}

func equalYAML(a, b any) bool {
	ab, _ := yaml.Marshal(a)
	bb, _ := yaml.Marshal(b)
	return bytes.Equal(ab, bb)
}

func TestWrongPassword(t *testing.T) {
	cam := startCam(t, fakeonvif.Config{Username: testUser, Password: testPassword})
	c := one(t, run(t, cam, testUser, "not-the-password", func(c *discover.Config) {
		c.RTSPPorts = []int{int(cam.RTSPAddr().Port())}
	}))
	if c.Authenticated || len(c.Profiles) != 0 {
		t.Errorf("authenticated=%v profiles=%v", c.Authenticated, c.Profiles)
	}
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0], `refused user "admin": wrong user or password?`) {
		t.Errorf("problems %q", c.Problems)
	}
	if cam.AuthFailures() == 0 {
		t.Error("the camera saw no failed login")
	}
	var out bytes.Buffer
	discover.WriteYAML(&out, &discover.Result{Cameras: []discover.Camera{c}}, discover.YAMLOptions{})
	if !strings.Contains(out.String(), "# NOTE: ONVIF refused user") || !strings.Contains(out.String(), "#   path: /TODO") {
		t.Errorf("YAML does not say what went wrong:\n%s", out.String())
	}
}

func TestNoCredentials(t *testing.T) {
	cam := startCam(t, fakeonvif.Config{Username: testUser, Password: testPassword})
	c := one(t, run(t, cam, "", ""))
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0], "ONVIF needs a login: run again with -user and -password-file") {
		t.Errorf("problems %q", c.Problems)
	}
	// a camera that needs no login tells all without credentials
	open := startCam(t, fakeonvif.Config{})
	c = one(t, run(t, open, "", ""))
	if len(c.Profiles) != 2 || c.Profiles[1].StreamURI == "" || c.Authenticated {
		t.Errorf("open camera: %+v", c)
	}
}

func TestCameraClockOff(t *testing.T) {
	cam := startCam(t, fakeonvif.Config{Username: testUser, Password: testPassword, ClockOffset: -3 * time.Hour})
	c := one(t, run(t, cam, testUser, testPassword))
	if !c.Authenticated || len(c.Profiles) != 2 {
		t.Fatalf("a camera whose clock is off should still answer (digest made with its time): %+v", c)
	}
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0], "clock is -3h0m") {
		t.Errorf("problems %q", c.Problems)
	}
}

func TestCameraPointsElsewhere(t *testing.T) {
	cam := startCam(t, fakeonvif.Config{XAddrHost: "198.51.100.7"})
	c := one(t, run(t, cam, testUser, testPassword))
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0], "not on the LAN: ignored") {
		t.Errorf("problems %q", c.Problems)
	}
	for _, r := range cam.Requests() {
		if r != "probe" {
			t.Errorf("the camera got ONVIF request %s", r)
		}
	}
}

func TestSilentHost(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := discover.Run(ctx, discover.Config{Hosts: []string{pc.LocalAddr().String()}, Timeout: 200 * time.Millisecond})
	if err != nil || len(res.Cameras) != 0 {
		t.Fatalf("got %+v, %v", res, err)
	}
	buf := make([]byte, 70000)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil || !bytes.Contains(buf[:n], []byte("dn:NetworkVideoTransmitter")) {
		t.Errorf("the host got no probe: %v %q", err, buf[:n])
	}
	var out bytes.Buffer
	discover.WriteYAML(&out, res, discover.YAMLOptions{})
	if !strings.Contains(out.String(), "No camera answered") {
		t.Errorf("output %q", out.String())
	}
}

func TestRunEndsWithContext(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := discover.Run(ctx, discover.Config{Hosts: []string{pc.LocalAddr().String()}, Timeout: time.Hour})
		done <- err
	}()
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := pc.ReadFrom(make([]byte, 70000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run returned no error after cancel")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not end with its context")
	}
}

func TestGarbageAnswers(t *testing.T) {
	for name, reply := range map[string]func(string) []byte{
		"not xml":    func(string) []byte { return []byte("\x00\x01garbage<<<") },
		"other soap": func(string) []byte { return []byte(`<Envelope><Body><Hello/></Body></Envelope>`) },
		"wrong relate": func(string) []byte {
			return []byte(`<E><Header><RelatesTo>urn:uuid:other</RelatesTo></Header><Body><ProbeMatches><ProbeMatch><XAddrs>http://127.0.0.1/</XAddrs></ProbeMatch></ProbeMatches></Body></E>`)
		},
	} {
		t.Run(name, func(t *testing.T) {
			cam := startCam(t, fakeonvif.Config{ProbeReply: reply})
			res := run(t, cam, "", "", func(c *discover.Config) { c.Timeout = 500 * time.Millisecond })
			if len(res.Cameras) != 0 || res.Ignored == 0 {
				t.Errorf("cameras %+v, ignored %d", res.Cameras, res.Ignored)
			}
		})
	}
}

func TestHugeAnswers(t *testing.T) {
	// a ProbeMatches as large as a datagram gets, with thousands of scopes
	cam := startCam(t, fakeonvif.Config{ProbeReply: func(id string) []byte {
		var b strings.Builder
		b.WriteString(`<E><Header><RelatesTo>` + id + `</RelatesTo></Header><Body><ProbeMatches><ProbeMatch><Scopes>`)
		for b.Len() < 60000 {
			b.WriteString("onvif://www.onvif.org/x/y ")
		}
		b.WriteString(`</Scopes><XAddrs>http://127.0.0.1:1/onvif/device_service</XAddrs></ProbeMatch></ProbeMatches></Body></E>`)
		return []byte(b.String())
	}})
	c := one(t, run(t, cam, "", "", func(c *discover.Config) { c.HTTPPorts = []int{} }))
	if len(c.Scopes) > 64 {
		t.Errorf("kept %d scopes", len(c.Scopes))
	}
	// a media service whose answer never ends
	huge := startCam(t, fakeonvif.Config{MediaBody: func() []byte { return bytes.Repeat([]byte("<a>"), 3<<20) }})
	c = one(t, run(t, huge, "", ""))
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0], "answer too large") {
		t.Errorf("problems %q", c.Problems)
	}
}

func TestParseHosts(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		in   []string
		n    int
		err  string
		zero string
	}{
		{in: []string{"192.168.1.20"}, n: 1, zero: "192.168.1.20:3702"},
		{in: []string{"192.168.1.20:4000", "192.168.1.20:4000"}, n: 1, zero: "192.168.1.20:4000"},
		{in: []string{"192.168.1.0/24"}, n: 254, zero: "192.168.1.1:3702"},
		{in: []string{"192.168.1.7/32"}, n: 1, zero: "192.168.1.7:3702"},
		{in: []string{"192.168.0.0/22"}, n: 1022},
		{in: []string{"192.168.0.0/21"}, err: "more than 1024"},
		{in: []string{"192.168.0.0/22", "10.0.0.0/24"}, err: "more than 1024 hosts"},
		{in: []string{"192.168.1.0/33"}, err: "not a CIDR"},
		{in: []string{"192.168.1.2:0"}, err: "bad port"},
		{in: []string{""}, err: "no host"},
	} {
		got, err := discover.ParseHosts(ctx, tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != tc.n || tc.zero != "" && got[0].String() != tc.zero {
			t.Errorf("%q: %d hosts (first %v), %v; want %d, %s", tc.in, len(got), got[:min(1, len(got))], err, tc.n, tc.zero)
		}
	}
}

func TestServiceName(t *testing.T) {
	for in, want := range map[string]string{
		"Front Door":             "front-door",
		"IPC_Garage (1)":         "ipc-garage-1",
		"--":                     "",
		"Kamera Küche":           "kamera-k-che",
		strings.Repeat("a", 100): strings.Repeat("a", 40),
	} {
		if got := discover.ServiceName(in); got != want {
			t.Errorf("ServiceName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSlowCamera(t *testing.T) {
	// the ONVIF service accepts connections and never answers
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	defer func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	}()
	xaddr := "http://" + ln.Addr().String() + "/onvif/device_service"
	cam := startCam(t, fakeonvif.Config{ProbeReply: func(id string) []byte {
		return []byte(`<E><Header><RelatesTo>` + id + `</RelatesTo></Header><Body><ProbeMatches><ProbeMatch>` +
			`<XAddrs>` + xaddr + `</XAddrs></ProbeMatch></ProbeMatches></Body></E>`)
	}})
	c := one(t, run(t, cam, testUser, testPassword, func(c *discover.Config) {
		c.RequestTimeout = 200 * time.Millisecond
		c.HTTPPorts = []int{int(ln.Addr().(*net.TCPAddr).Port)}
	}))
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0], "ONVIF at "+xaddr+": no answer within 200ms") {
		t.Errorf("problems %q", c.Problems)
	}
	if len(c.Ports) != 1 || c.Ports[0].Open || c.Ports[0].Error != "no answer (timeout)" {
		t.Errorf("ports %+v", c.Ports)
	}
}

func TestNoGoroutineLeft(t *testing.T) {
	cam := startCam(t, fakeonvif.Config{Username: testUser, Password: testPassword})
	base := runtime.NumGoroutine()
	for range 3 {
		if c := one(t, run(t, cam, testUser, testPassword)); len(c.Profiles) != 2 {
			t.Fatalf("%+v", c)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before Run:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

func TestUnicastRange(t *testing.T) {
	// a camera on the standard port inside a loopback /26; the other 61
	// addresses stay silent
	cam, err := fakeonvif.StartPorts(fakeonvif.Config{}, "127.0.0.77", 0, 0, discover.WSDPort)
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.77:%d: %v", discover.WSDPort, err)
	}
	defer cam.Close()
	c := one(t, run(t, cam, "", "", func(c *discover.Config) {
		c.Hosts = []string{"127.0.0.64/26"}
		c.Timeout = time.Second
	}))
	if c.Host != "127.0.0.77" || len(c.Profiles) != 2 {
		t.Errorf("%+v", c)
	}
}
