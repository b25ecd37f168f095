package e2e

// Issue 9's kind rtsp on the real binaries, with a real camera (GStreamer's
// gst-rtsp-server, H.264 from x264enc) and real players (ffprobe, ffmpeg):
// viewers open rtsps:// through the relay and at the agent's direct
// listener, log in as Porthole viewers, and share one camera session. The
// bad-input checks are those the rtspgw unit tests cannot make: the whole
// path through the relay and the agent binary.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/test/framework"
	"github.com/porthole-dev/porthole/test/gstcam"
)

// rtspEnv is a relay and an agent with rtsp services in front of a
// gst-rtsp-server camera that wants Basic auth:
//
//	cam     the camera, camera_login right, low_path, viewers [alice]
//	badcam  the camera, camera_login with a wrong password
//	offcam  an address where nothing listens
//	plaincam  the camera, tls: off (plain RTSP: inside WireGuard, or a LAN)
type rtspEnv struct {
	t        *testing.T
	agent    *Process
	agentCfg string
	stateDir string
	ports    map[string]int
	camera   *gstcam.Camera
	ffprobe  string
}

func startRTSP(t *testing.T) *rtspEnv {
	t.Helper()
	ffprobe := framework.NeedTool(t, framework.EnvRTSP, "ffprobe", "apt-get install ffmpeg")
	hashes, err := viewerHashes()
	if err != nil {
		t.Fatal(err)
	}
	cam := gstcam.Start(t, gstcam.Config{Path: "/live", SubPath: "/sub", Width: 320, Height: 240, FPS: 15,
		User: cameraUser, Password: cameraPass})
	ps, lo, hi := servicePorts(t, 4)
	tok := strongToken()
	e := newEnv(t, agentEntry{Name: "home", Token: tok, Lo: lo, Hi: hi})
	r := &rtspEnv{t: t, camera: cam, ffprobe: ffprobe, ports: map[string]int{"cam": ps[0], "badcam": ps[1], "offcam": ps[2], "plaincam": ps[3]}}
	e.startRelay()
	good := writeFile(t, e.dir, "cam.pass", cameraPass+"\n")
	bad := writeFile(t, e.dir, "badcam.pass", "not-the-camera-password\n")
	r.stateDir = filepath.Join(e.dir, "agent-state")
	ac := framework.AgentConfig{Name: "home", StateDir: r.stateDir, Relay: framework.Addr(e.udp), Token: tok, Direct: true,
		Extra: fmt.Sprintf("viewers:\n  alice: {password_hash: %q}\n  bob: {password_hash: %q}\n"+
			"publicip:\n  sources: [relay]\n  min_agree: 1\n"+
			"direct:\n  listen: %s\n  protocols: [natpmp]\n  gateway: 127.0.0.1\n"+
			"admin: 127.0.0.1:%d\n", hashes[0], hashes[1], directIP, freePort(t, "tcp")),
		Services: []framework.Service{
			{Name: "cam", Kind: "rtsp", Target: cam.Addr, Port: ps[0],
				Extra: fmt.Sprintf("path: /live\nlow_path: /sub\nviewers: [alice]\ncamera_login: {username: %s, password_file: %s}\n", cameraUser, good)},
			{Name: "badcam", Kind: "rtsp", Target: cam.Addr, Port: ps[1],
				Extra: fmt.Sprintf("path: /live\ncamera_login: {username: %s, password_file: %s}\n", cameraUser, bad)},
			{Name: "offcam", Kind: "rtsp", Target: refusingAddr(t), Port: ps[2], Extra: "path: /live\n"},
			{Name: "plaincam", Kind: "rtsp", Target: cam.Addr, Port: ps[3],
				Extra: fmt.Sprintf("path: /live\ntls: off\ncamera_login: {username: %s, password_file: %s}\n", cameraUser, good)},
		}}
	r.agentCfg = writeFile(t, e.dir, "agent.yaml", ac.YAML())
	r.agent = e.startAgent("agent", r.agentCfg)
	r.agent.WaitLog("tunnel up", 10*time.Second)
	for _, to := range []string{"127.0.0.1", directIP} {
		eventually(t, 15*time.Second, func() bool {
			st, _, err := r.request(to, "127.0.0.1", "cam", "OPTIONS", "", "", nil)
			return err == nil && st == 200
		}, "cam does not answer OPTIONS on %s", to)
	}
	return r
}

// url is rtsps://[name:pass@]to:<port of svc>/<svc><suffix>.
func (r *rtspEnv) url(to, svc, suffix, name, pass string) string {
	login := ""
	if name != "" {
		login = name + ":" + pass + "@"
	}
	return "rtsps://" + login + net.JoinHostPort(to, strconv.Itoa(r.ports[svc])) + "/" + svc + suffix
}

// probe runs ffprobe on u (FFmpeg's default transport: UDP first, then TCP
// after the agent's 461) and returns the first video stream's codec_name,
// width, height and nb_read_frames after reading frames frames.
func (r *rtspEnv) probe(u string, frames int) (map[string]string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, r.ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames",
		"-read_intervals", "%+#"+strconv.Itoa(frames), "-show_entries", "stream=codec_name,width,height,nb_read_frames",
		"-of", "default=nw=1", u).CombinedOutput()
	got := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	return got, string(out), err
}

// request sends one RTSP request over TLS to svc's port at to, from the
// source address from, and returns the answer's status and headers. body,
// if set, is what a DESCRIBE answer carried.
func (r *rtspEnv) request(to, from, svc, method, suffix, auth string, hdr map[string]string) (int, textproto.MIMEHeader, error) {
	c, err := r.dial(to, from, svc)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	return rtspRoundTrip(c, bufio.NewReader(c), method, "rtsp://"+net.JoinHostPort(to, strconv.Itoa(r.ports[svc]))+"/"+svc+suffix, 1, auth, hdr)
}

func (r *rtspEnv) dial(to, from, svc string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(to, strconv.Itoa(r.ports[svc])),
		&tls.Config{InsecureSkipVerify: true}) // the agent's self-signed certificate: TLS is not what is tested here
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, nil
}

// rtspRoundTrip writes a request and reads its answer's head (and skips its
// body).
func rtspRoundTrip(w io.Writer, br *bufio.Reader, method, u string, cseq int, auth string, hdr map[string]string) (int, textproto.MIMEHeader, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s RTSP/1.0\r\nCSeq: %d\r\n", method, u, cseq)
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return 0, nil, err
	}
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return 0, nil, err
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	st, err := strconv.Atoi(code)
	if proto != "RTSP/1.0" || err != nil {
		return 0, nil, fmt.Errorf("not an RTSP answer: %q", line)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return 0, nil, err
	}
	if n, _ := strconv.Atoi(h.Get("Content-Length")); n > 0 {
		if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
			return 0, nil, err
		}
	}
	return st, h, nil
}

func basicAuth(name, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+pass))
}

// TestRTSPViewers: ffprobe plays the camera's H.264 through the relay and at
// the direct listener, several viewers at once, and the camera sees one RTSP
// connection for all of them; the sub-stream is served at <service>/low.
func TestRTSPViewers(t *testing.T) {
	t.Parallel()
	r := startRTSP(t)
	viewers := []string{"127.0.0.1", "127.0.0.1", directIP, directIP}
	var wg sync.WaitGroup
	errs := make([]error, len(viewers))
	for i, to := range viewers {
		wg.Go(func() {
			// 45 packets: a player joining mid-stream decodes from the
			// next keyframe (one a second, 15 frames) on.
			got, out, err := r.probe(r.url(to, "cam", "", "alice", alicePass), 45)
			if err != nil {
				errs[i] = fmt.Errorf("ffprobe via %s: %v\n%s", to, err, out)
				return
			}
			n, _ := strconv.Atoi(got["nb_read_frames"])
			if got["codec_name"] != "h264" || got["width"] != "320" || got["height"] != "240" || n < 10 {
				errs[i] = fmt.Errorf("ffprobe via %s: want h264 320x240 and at least 10 frames of 45 packets, got\n%s", to, out)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := r.camera.Connections(); n != 1 {
		t.Errorf("the camera saw %d RTSP connections for %d viewers, want 1", n, len(viewers))
	}

	// porthole-agent status shows the kind and the URL to open (without
	// ddns: at the relay's host), which plays.
	var status string
	eventually(t, 20*time.Second, func() bool {
		_, status = runCmd(t, bins.agent, "status", "-config", r.agentCfg)
		return strings.Contains(status, "open:    rtsps://127.0.0.1:")
	}, "status shows no rtsps:// URL")
	want := fmt.Sprintf("cam: public port %d -> %s (rtsp, tls)\n    open:    rtsps://127.0.0.1:%d/cam\n", r.ports["cam"], r.camera.Addr, r.ports["cam"])
	if !strings.Contains(status, want) {
		t.Errorf("status lacks %q:\n%s", want, status)
	}
	if got, out, err := r.probe(framework.WithLogin(fmt.Sprintf("rtsps://127.0.0.1:%d/cam", r.ports["cam"]), "alice", alicePass), 10); err != nil || got["codec_name"] != "h264" {
		t.Errorf("ffprobe on the URL status printed: %v\n%s", err, out)
	}

	// ffmpeg, a player decoding: 10 frames of the sub-stream (half size).
	ffmpeg := framework.NeedTool(t, framework.EnvRTSP, "ffmpeg", "apt-get install ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffmpeg, "-v", "info", "-rtsp_transport", "tcp",
		"-i", r.url("127.0.0.1", "cam", "/low", "alice", alicePass), "-frames:v", "10", "-f", "null", "-").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "h264") || !strings.Contains(string(out), "160x120") ||
		!strings.Contains(string(out), "frame=   10") {
		t.Errorf("ffmpeg on %s/low: %v, want 10 frames of h264 160x120:\n%s", "cam", err, out)
	}

	// The audit log has alice's viewing, bytes included, and no password.
	audit := filepath.Join(r.stateDir, "audit.log")
	eventually(t, 10*time.Second, func() bool {
		return hasEvent(auditRecords(t, audit), "close", func(m map[string]any) bool {
			b, _ := m["bytes_out"].(float64)
			return m["viewer"] == "alice" && m["service"] == "cam" && b > 10_000
		})
	}, "no close event with alice's bytes in the audit log")
	assertNoSecrets(t, audit)
}

// TestRTSPBadInput: each bad viewer or camera gets a clear, fast answer
// through the relay (plain rtsp:// also at the direct listener), and a good
// viewer still plays afterwards.
func TestRTSPBadInput(t *testing.T) {
	t.Parallel()
	r := startRTSP(t)
	alice := basicAuth("alice", alicePass)
	for _, tc := range []struct {
		name, svc, suffix, from, auth string
		want                          int
	}{
		{"no login", "cam", "", "127.0.0.1", "", 401},
		{"wrong password", "cam", "", "127.0.0.21", basicAuth("alice", alicePass+"x"), 401},
		{"unknown viewer", "cam", "", "127.0.0.22", basicAuth("mallory", alicePass), 401},
		{"viewer not on the service", "cam", "", "127.0.0.1", basicAuth("bob", bobPass), 403},
		{"unknown path", "cam", "/nope", "127.0.0.1", alice, 404},
		{"camera off", "offcam", "", "127.0.0.1", alice, 503},
		{"camera refuses camera_login", "badcam", "", "127.0.0.1", alice, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			st, h, err := r.request("127.0.0.1", tc.from, tc.svc, "DESCRIBE", tc.suffix, tc.auth, map[string]string{"Accept": "application/sdp"})
			if err != nil || st != tc.want {
				t.Fatalf("DESCRIBE %s%s: %d %v, want %d", tc.svc, tc.suffix, st, err, tc.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("the answer took %s", d)
			}
			if ch := h.Get("WWW-Authenticate"); st == 401 && !strings.HasPrefix(ch, `Basic realm="Porthole `) {
				t.Errorf("401 with WWW-Authenticate %q, want Porthole's Basic realm (never the camera's)", ch)
			}
		})
	}
	t.Run("ffprobe wrong password", func(t *testing.T) {
		_, out, err := r.probe(r.url("127.0.0.1", "cam", "", "alice", "wrong"), 5)
		if err == nil || !strings.Contains(out, "401") {
			t.Errorf("ffprobe with a wrong password: %v, want a 401:\n%s", err, out)
		}
	})
	t.Run("malformed RTSP", func(t *testing.T) {
		for _, junk := range []string{"HELLO\r\n\r\n", "DESCRIBE\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			"DESCRIBE rtsp://x/cam RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999999\r\n\r\n"} {
			c, err := r.dial("127.0.0.1", "127.0.0.1", "cam")
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, junk)
			// The agent answers 400 or closes; either way the conn ends.
			b, err := io.ReadAll(io.LimitReader(c, 1<<16))
			c.Close()
			if err != nil && !isConnEnd(err) {
				t.Errorf("%q: the connection did not end cleanly: %v (read %q)", junk, err, b)
			}
			if len(b) > 0 && !strings.HasPrefix(string(b), "RTSP/1.0 400") {
				t.Errorf("%q: answer %q, want 400 or nothing", junk, b)
			}
		}
	})
	t.Run("plain rtsp on the rtsps port", func(t *testing.T) {
		for _, to := range []string{"127.0.0.1", directIP} {
			addr := net.JoinHostPort(to, strconv.Itoa(r.ports["cam"]))
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			st, h, err := rtspRoundTrip(c, bufio.NewReader(c), "OPTIONS", "rtsp://"+addr+"/cam", 1, "", nil)
			c.Close()
			if err != nil || st != 301 || h.Get("Location") != "rtsps://"+addr+"/cam" {
				t.Errorf("plain OPTIONS via %s: %d %v %v, want 301 to rtsps://%s/cam", to, st, h, err, addr)
			}
		}
		// FFmpeg follows the redirect: rtsp:// typed by mistake plays.
		got, out, err := r.probe("rtsp://alice:"+alicePass+"@"+net.JoinHostPort("127.0.0.1", strconv.Itoa(r.ports["cam"]))+"/cam", 10)
		if err != nil || got["codec_name"] != "h264" {
			t.Errorf("ffprobe rtsp:// on the rtsps port: %v\n%s", err, out)
		}
	})
	t.Run("tls off", func(t *testing.T) {
		// Answers before a close must arrive whole through the tunnel too
		// (no TLS close_notify to carry them).
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(r.ports["plaincam"]))
		for _, tc := range []struct {
			auth string
			want int
		}{{"", 401}, {basicAuth("alice", "wrong"), 401}, {alice, 200}} {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			st, _, err := rtspRoundTrip(c, bufio.NewReader(c), "DESCRIBE", "rtsp://"+addr+"/plaincam", 1, tc.auth, nil)
			c.Close()
			if err != nil || st != tc.want {
				t.Errorf("plain DESCRIBE with %q: %d %v, want %d", tc.auth, st, err, tc.want)
			}
		}
		got, out, err := r.probe("rtsp://alice:"+alicePass+"@"+addr+"/plaincam", 10)
		if err != nil || got["codec_name"] != "h264" {
			t.Errorf("ffprobe rtsp:// on tls: off: %v\n%s", err, out)
		}
	})
	t.Run("UDP SETUP answered at once", func(t *testing.T) {
		c, err := r.dial("127.0.0.1", "127.0.0.1", "cam")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		base := "rtsp://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(r.ports["cam"])) + "/cam"
		st, _, err := rtspRoundTrip(c, br, "DESCRIBE", base, 1, alice, map[string]string{"Accept": "application/sdp"})
		if err != nil || st != 200 {
			t.Fatalf("DESCRIBE: %d %v", st, err)
		}
		start := time.Now()
		// gortsplib's server names its tracks trackID=N under the base URL.
		st, _, err = rtspRoundTrip(c, br, "SETUP", base+"/trackID=0", 2, alice,
			map[string]string{"Transport": "RTP/AVP;unicast;client_port=40000-40001"})
		if err != nil || st != 461 {
			t.Fatalf("SETUP over UDP: %d %v, want 461 Unsupported Transport", st, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the 461 took %s", d)
		}
	})
	// After all that, the agent still serves a good viewer.
	got, out, err := r.probe(r.url("127.0.0.1", "cam", "", "alice", alicePass), 10)
	if err != nil || got["codec_name"] != "h264" {
		t.Errorf("ffprobe after the bad input: %v\n%s", err, out)
	}
	// A camera switched off mid-way: viewers get 503, not a hang.
	r.camera.Stop()
	eventually(t, 30*time.Second, func() bool {
		st, _, err := r.request("127.0.0.1", "127.0.0.1", "cam", "DESCRIBE", "", alice, nil)
		return err == nil && st == 503
	}, "no 503 once the camera is off")
}

// isConnEnd: the agent closed the viewer's connection (FIN, or a reset of
// unread input).
func isConnEnd(err error) bool {
	return strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "closed")
}
