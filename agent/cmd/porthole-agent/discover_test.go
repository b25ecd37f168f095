package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/porthole-dev/porthole/agent/discover"
	"github.com/porthole-dev/porthole/test/fakeonvif"
)

// discoverArgs probes cam by unicast on loopback, never by multicast.
func discoverArgs(cam *fakeonvif.Camera, extra ...string) []string {
	return append([]string{"discover", "-host", cam.WSDAddr().String(), "-timeout", "10s",
		"-rtsp-ports", "", "-http-ports", strconv.Itoa(int(cam.HTTPAddr().Port()))}, extra...)
}

func TestDiscoverCommand(t *testing.T) {
	const pw = "cam-Secret-77"
	cam, err := fakeonvif.Start(fakeonvif.Config{Name: "Garage Cam", Username: "admin", Password: pw}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	pwFile := filepath.Join(t.TempDir(), "cam.pass")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	r := runArgs(discoverArgs(cam, "-user", "admin", "-password-file", pwFile, "-first-port", "10079")...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"- name: garage-cam\n", "    kind: rtsp\n", "    path: /Streaming/Channels/101?transportmode=unicast",
		"    low_path: /Streaming/Channels/102", "    port: 10079", "- name: garage-cam-web\n",
		"    port: 10081", // 10080 is refused by browsers
		"camera_login: {username: admin, password_file: /etc/porthole/garage-cam.pass}"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout+r.stderr, pw) {
		t.Fatal("the password was printed")
	}

	r = runStdin(pw+"\n", discoverArgs(cam, "-user", "admin", "-password-stdin", "-json")...)
	var res discover.Result
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || len(res.Cameras) != 1 || len(res.Cameras[0].Profiles) != 2 {
		t.Fatalf("-json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, pw) {
		t.Fatal("the password was printed")
	}
}

func TestDiscoverCommandErrors(t *testing.T) {
	cam, err := fakeonvif.Start(fakeonvif.Config{}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"discover", "-user", "admin"}, 1, "-user needs -password-file FILE or -password-stdin"},
		{[]string{"discover", "-password-file", empty}, 2, "a password needs -user too"},
		{[]string{"discover", "-user", "a", "-password-file", empty}, 1, "empty (the password goes on its first line)"},
		{[]string{"discover", "-host", "10.0.0.0/8"}, 1, "probe a smaller range"},
		{[]string{"discover", "-host", "127.0.0.1", "-rtsp-ports", "99999"}, 2, `"99999" is not a port`},
		{[]string{"discover", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"discover", "-host", deadUDP(t), "-timeout", "100ms"}, 1, "no camera answered"},
	} {
		r := runArgs(tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want %d, %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
}

// deadUDP is a loopback UDP socket that reads and never answers.
func deadUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}
