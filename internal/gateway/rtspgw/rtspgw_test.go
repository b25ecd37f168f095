package rtspgw

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
)

func TestViewerGetsStream(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{}, cam.addr)

	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The camera's description passes as it is: H.264 with its parameter
	// sets, for players joining mid-stream.
	if len(v.desc.Medias) != 1 || len(v.desc.Medias[0].Formats) != 1 {
		t.Fatalf("medias: %+v", v.desc.Medias)
	}
	h264, ok := v.desc.Medias[0].Formats[0].(*format.H264)
	if !ok {
		t.Fatalf("format %T, want H.264", v.desc.Medias[0].Formats[0])
	}
	if !bytes.Equal(h264.SPS, testSPS) || !bytes.Equal(h264.PPS, testPPS) {
		t.Errorf("SPS/PPS not passed: %x %x", h264.SPS, h264.PPS)
	}
	v.waitPackets(t, 20)
	if _, total := cam.sessions(); total != 1 {
		t.Errorf("camera sessions: %d, want 1", total)
	}
	if st := g.l.Stats(); st.BytesOut == 0 || st.BytesIn == 0 {
		t.Errorf("gateway counters not moved: %+v", st)
	}
	if a := g.audit.String(); !strings.Contains(a, "msg=open viewer=alice service=cam") {
		t.Errorf("audit has no open: %s", a)
	}
	v.c.Close()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(g.audit.String(), "msg=close viewer=alice") },
		func() string { return "audit close: " + g.audit.String() })
	if a := g.audit.String(); strings.Contains(a, "bytes_out=0 ") {
		t.Errorf("close without bytes: %s", a)
	}
	if l := g.log.String() + g.audit.String(); strings.Contains(l, "alice-pw") {
		t.Errorf("password logged: %s", l)
	}
}

func TestOneCameraSessionForAllViewers(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{}, cam.addr)

	// Viewers arriving together, while the camera session is being opened,
	// share it too.
	names := []string{"alice", "bob", "alice", "bob", "alice"}
	type result struct {
		v   *viewer
		err error
	}
	results := make(chan result, len(names))
	for _, name := range names {
		go func() {
			v, err := g.play(t, "/cam", name, name+"-pw", nil)
			results <- result{v, err}
		}()
	}
	var vs []*viewer
	for range names {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		vs = append(vs, r.v)
	}
	for _, v := range vs {
		v.waitPackets(t, 20)
	}
	open, total := cam.sessions()
	if open != 1 || total != 1 {
		t.Errorf("camera sessions: %d open, %d ever; want one", open, total)
	}
}

func TestLowStream(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{LowPath: camLow}, cam.addr)

	v, err := g.play(t, "/cam/low", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	cam.mu.Lock()
	low, main := cam.setups[camLow], cam.setups[camMain]
	cam.mu.Unlock()
	if low != 1 || main != 0 {
		t.Errorf("camera setups: low %d, main %d; want the low stream only", low, main)
	}
}

func TestCameraClosedAfterLinger(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{Linger: 50 * time.Millisecond}, cam.addr)

	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	if open, _ := cam.sessions(); open != 1 {
		t.Fatalf("camera sessions open: %d", open)
	}
	v.c.Close()
	waitFor(t, 10*time.Second, func() bool { open, _ := cam.sessions(); return open == 0 },
		func() string { return "the camera session is still open" })

	// The next viewer opens a new one.
	v, err = g.play(t, "/cam", "bob", "bob-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	if open, total := cam.sessions(); open != 1 || total != 2 {
		t.Errorf("camera sessions: %d open, %d ever; want 1, 2", open, total)
	}
}

func TestLingerKeepsSessionForNextViewer(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{Linger: time.Minute}, cam.addr)

	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	v.c.Close()
	v, err = g.play(t, "/cam", "bob", "bob-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	if _, total := cam.sessions(); total != 1 {
		t.Errorf("camera sessions ever: %d; want 1 (kept during Linger)", total)
	}
}

func TestDescribeOnlyEndsAfterLinger(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{Linger: 50 * time.Millisecond}, cam.addr)

	r := g.raw(t)
	if res := r.do(base.Describe, "rtsp://"+g.addr+"/cam", basicHeader("alice", "alice-pw")); res.StatusCode != base.StatusOK {
		t.Fatalf("describe: %d %s", res.StatusCode, res.StatusMessage)
	}
	waitFor(t, 10*time.Second, func() bool { open, total := cam.sessions(); return total == 1 && open == 0 },
		func() string {
			open, total := cam.sessions()
			return "camera sessions " + strconv.Itoa(open) + " open, " + strconv.Itoa(total) + " ever"
		})
}

func TestUDPSetupRefusedAtOnce(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{}, cam.addr)

	udp := gortsplib.TransportUDP
	_, err := g.play(t, "/cam", "alice", "alice-pw", &udp)
	if code := statusOf(err); code != base.StatusUnsupportedTransport {
		t.Fatalf("UDP setup: %v (code %d), want 461", err, code)
	}

	// A client that tries UDP first (gortsplib's default, like ffmpeg's)
	// falls back to TCP on the 461.
	switched := make(chan error, 1)
	v, err := g.playWith(t, "/cam", "alice", "alice-pw", &gortsplib.Client{
		OnTransportSwitch: func(err error) { switched <- err }})
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	select {
	case err := <-switched:
		t.Logf("client switched: %v", err)
	default:
		t.Error("the client did not switch to TCP")
	}
}

func TestViewerLogin(t *testing.T) {
	cam := newFakeCam(t, camOptions{user: "admin", pass: "cam-pw"})
	g := start(t, Config{CameraLogin: &Credentials{Username: "admin", Password: "cam-pw"}}, cam.addr)
	url := "rtsp://" + g.addr + "/cam"

	// No credentials: our challenge, Basic only; the conn stays open for
	// the retry with credentials.
	r := g.raw(t)
	res := r.do(base.Describe, url, nil)
	if res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("no login: %d", res.StatusCode)
	}
	if got := res.Header["WWW-Authenticate"]; len(got) != 1 || got[0] != `Basic realm="Porthole cam"` {
		t.Errorf("challenge %q", got)
	}
	if res = r.do(base.Describe, url, basicHeader("alice", "alice-pw")); res.StatusCode != base.StatusOK {
		t.Fatalf("login after challenge: %d", res.StatusCode)
	}

	// Wrong password: 401 with our realm, then the conn is closed.
	r = g.raw(t)
	res = r.do(base.Describe, url, basicHeader("alice", "nope"))
	if res.StatusCode != base.StatusUnauthorized || res.Header["WWW-Authenticate"][0] != `Basic realm="Porthole cam"` {
		t.Errorf("wrong password: %d %q", res.StatusCode, res.Header["WWW-Authenticate"])
	}
	if !r.closed() {
		t.Error("conn still open after a wrong password")
	}
	if a := g.audit.String(); !strings.Contains(a, "msg=login_failed name=alice") {
		t.Errorf("audit: %s", a)
	}

	// The camera's own login: a viewer trying it is just a wrong password.
	_, err := g.play(t, "/cam", "admin", "cam-pw", nil)
	if statusOf(err) != base.StatusUnauthorized {
		t.Errorf("camera login as viewer: %v", err)
	}

	// Locked out: 503 with Retry-After.
	r = g.raw(t)
	res = r.do(base.Describe, url, basicHeader("mallory", "m-pw"))
	if res.StatusCode != base.StatusServiceUnavailable || res.Header["Retry-After"][0] != "30" ||
		!strings.Contains(res.StatusMessage, "30 s") {
		t.Errorf("locked out: %d %q %v", res.StatusCode, res.StatusMessage, res.Header)
	}

	// Digest from a viewer: asked again for Basic.
	r = g.raw(t)
	res = r.do(base.Describe, url, base.Header{"Authorization": base.HeaderValue{
		`Digest username="alice", realm="Porthole cam", nonce="x", uri="` + url + `", response="00"`}})
	if res.StatusCode != base.StatusUnauthorized || res.Header["WWW-Authenticate"][0] != `Basic realm="Porthole cam"` {
		t.Errorf("digest: %d %v", res.StatusCode, res.Header)
	}
}

func TestViewerNotAllowed(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{Viewers: []string{"bob"}}, cam.addr)

	_, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if statusOf(err) != base.StatusForbidden {
		t.Errorf("alice: %v, want 403", err)
	}
	if _, err := g.play(t, "/cam", "bob", "bob-pw", nil); err != nil {
		t.Errorf("bob: %v", err)
	}
	if _, total := cam.sessions(); total != 1 {
		t.Errorf("camera sessions: %d", total)
	}
}

func TestUnknownPath(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{}, cam.addr)

	for _, p := range []string{"/other", "/cam/low", "/cam/x", "/"} {
		_, err := g.play(t, p, "alice", "alice-pw", nil)
		if statusOf(err) != base.StatusNotFound {
			t.Errorf("%s: %v, want 404", p, err)
		}
	}
	if _, total := cam.sessions(); total != 0 {
		t.Errorf("the camera was asked: %d sessions", total)
	}
}

func TestCameraOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	off := ln.Addr().String()
	ln.Close()
	g := start(t, Config{}, off)

	r := g.raw(t)
	res := r.do(base.Describe, "rtsp://"+g.addr+"/cam", basicHeader("alice", "alice-pw"))
	if res.StatusCode != base.StatusServiceUnavailable || !strings.Contains(res.StatusMessage, "camera is not reachable") {
		t.Errorf("camera off: %d %q", res.StatusCode, res.StatusMessage)
	}
	if l := g.log.String(); !strings.Contains(l, "camera unreachable") {
		t.Errorf("log: %s", l)
	}
}

func TestCameraRefusesLogin(t *testing.T) {
	cam := newFakeCam(t, camOptions{user: "admin", pass: "cam-pw"})
	g := start(t, Config{CameraLogin: &Credentials{Username: "admin", Password: "wrong"}}, cam.addr)

	r := g.raw(t)
	res := r.do(base.Describe, "rtsp://"+g.addr+"/cam", basicHeader("alice", "alice-pw"))
	if res.StatusCode != base.StatusBadGateway || !strings.Contains(res.StatusMessage, "refused the agent's login") {
		t.Errorf("camera refused: %d %q", res.StatusCode, res.StatusMessage)
	}
	if _, ok := res.Header["WWW-Authenticate"]; ok {
		t.Errorf("the camera's challenge reached the viewer: %v", res.Header)
	}
	if l := g.log.String(); !strings.Contains(l, "check camera_login") || strings.Contains(l, "wrong") {
		t.Errorf("log: %s", l)
	}
}

func TestCameraPathMissing(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{Path: "/nope"}, cam.addr)

	_, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if statusOf(err) != base.StatusNotFound {
		t.Errorf("%v, want 404", err)
	}
}

func TestCameraDigestLogin(t *testing.T) {
	cam := newFakeCam(t, camOptions{user: "admin", pass: "cam-pw", methods: []auth.VerifyMethod{auth.VerifyMethodDigestMD5}})
	g := start(t, Config{CameraLogin: &Credentials{Username: "admin", Password: "cam-pw"}}, cam.addr)

	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
}

// A camera whose SDP has no parameter sets: those it sends in band reach the
// SDP of viewers who join later.
func TestParameterSetsLearnedInBand(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	for _, s := range cam.media {
		s.forma.SPS, s.forma.PPS = nil, nil
	}
	g := start(t, Config{}, cam.addr)

	first, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	if sps, _ := first.desc.Medias[0].Formats[0].(*format.H264).SafeParams(); sps != nil {
		t.Fatalf("the camera's SDP has an SPS: %x", sps)
	}
	// Frame 1 of every 25 carries SPS and PPS: wait for two of them.
	first.waitPackets(t, 60)
	later, err := g.play(t, "/cam", "bob", "bob-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	sps, pps := later.desc.Medias[0].Formats[0].(*format.H264).SafeParams()
	if !bytes.Equal(sps, testSPS) || !bytes.Equal(pps, testPPS) {
		t.Errorf("SPS %x PPS %x; want the in-band ones", sps, pps)
	}
}

// Video and audio: every track of the camera reaches each viewer, still
// through one camera session.
func TestVideoAndAudio(t *testing.T) {
	cam := newFakeCam(t, camOptions{audio: true})
	g := start(t, Config{}, cam.addr)

	var vs []*viewer
	for _, name := range []string{"alice", "bob"} {
		v, err := g.play(t, "/cam", name, name+"-pw", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.desc.Medias) != 2 {
			t.Fatalf("medias: %d", len(v.desc.Medias))
		}
		if _, ok := v.desc.Medias[1].Formats[0].(*format.G711); !ok {
			t.Errorf("audio format %T", v.desc.Medias[1].Formats[0])
		}
		vs = append(vs, v)
	}
	for _, v := range vs {
		waitFor(t, 20*time.Second, func() bool { return v.audio.Load() >= 10 && v.packets.Load()-v.audio.Load() >= 10 },
			func() string {
				return "audio " + strconv.Itoa(int(v.audio.Load())) + ", all " + strconv.Itoa(int(v.packets.Load()))
			})
	}
	if open, total := cam.sessions(); open != 1 || total != 1 {
		t.Errorf("camera sessions: %d open, %d ever", open, total)
	}
}

// After a failed attempt, viewers get the same answer for CameraRetry: a
// player retrying in a loop cannot lock the camera's account.
func TestCameraRetry(t *testing.T) {
	cam := newFakeCam(t, camOptions{user: "admin", pass: "cam-pw"})
	for _, tc := range []struct {
		retry time.Duration
		conns int
	}{{time.Minute, 1}, {time.Nanosecond, 3}} {
		cam.mu.Lock()
		cam.conns = 0
		cam.mu.Unlock()
		g := start(t, Config{CameraLogin: &Credentials{Username: "admin", Password: "wrong"}, CameraRetry: tc.retry}, cam.addr)
		for range 3 {
			r := g.raw(t)
			res := r.do(base.Describe, "rtsp://"+g.addr+"/cam", basicHeader("alice", "alice-pw"))
			if res.StatusCode != base.StatusBadGateway {
				t.Errorf("retry %v: %d %q", tc.retry, res.StatusCode, res.StatusMessage)
			}
		}
		cam.mu.Lock()
		conns := cam.conns
		cam.mu.Unlock()
		if conns != tc.conns {
			t.Errorf("retry %v: the camera saw %d attempts, want %d", tc.retry, conns, tc.conns)
		}
		g.stop()
	}
}
