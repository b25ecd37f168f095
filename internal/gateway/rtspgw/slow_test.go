package rtspgw

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/porthole-dev/porthole/internal/camsim"
)

// A viewer that never reads loses packets from its own bounded queue and is
// cut; the others get every frame meanwhile.
func TestViewerThatNeverReadsStallsNoOne(t *testing.T) {
	cam := newFakeCam(t, camOptions{manual: true, frameSize: 60000})
	g := start(t, Config{WriteQueueSize: 128, WriteTimeout: time.Second}, cam.addr)

	fast, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}

	// The slow viewer plays and then reads nothing, with a small socket
	// buffer so that the gateway's writes block soon.
	r := g.raw(t)
	r.c.(*net.TCPConn).SetReadBuffer(4096)
	url := "rtsp://" + g.addr + "/cam"
	login := basicHeader("bob", "bob-pw")
	if res := r.do(base.Describe, url, login); res.StatusCode != base.StatusOK {
		t.Fatalf("describe: %d", res.StatusCode)
	}
	hdr := basicHeader("bob", "bob-pw")
	hdr["Transport"] = base.HeaderValue{"RTP/AVP/TCP;unicast;interleaved=0-1"}
	res := r.do(base.Setup, url+"/trackID=0", hdr)
	if res.StatusCode != base.StatusOK {
		t.Fatalf("setup: %d", res.StatusCode)
	}
	session := strings.Split(res.Header["Session"][0], ";")[0]
	hdr = basicHeader("bob", "bob-pw")
	hdr["Session"] = base.HeaderValue{session}
	if res := r.do(base.Play, url, hdr); res.StatusCode != base.StatusOK {
		t.Fatalf("play: %d", res.StatusCode)
	}

	// Frames go out one at a time, each as soon as the fast viewer has the
	// previous one: the fast viewer gets every one.
	s := cam.media[camMain]
	pushAndReceive := func() {
		t.Helper()
		n := s.push(60000)
		deadline := time.After(20 * time.Second)
		for {
			select {
			case got := <-fast.frames:
				if got == n {
					return
				}
				if got > n {
					t.Fatalf("frame %d before %d", got, n)
				}
			case <-deadline:
				t.Fatalf("the fast viewer did not get frame %d (%d packets)\nlog:\n%s", n, fast.packets.Load(), g.log.String())
			}
		}
	}
	// Until the slow viewer is cut (once a write to it has blocked for
	// WriteTimeout), then 10 more.
	cut := func() bool { return strings.Contains(g.audit.String(), "msg=close viewer=bob") }
	for i := 0; !cut(); i++ {
		if i == 5000 {
			t.Fatalf("the slow viewer was never cut:\n%s\n%s", g.log.String(), g.audit.String())
		}
		pushAndReceive()
	}
	for range 10 {
		pushAndReceive()
	}
	if !strings.Contains(g.log.String(), `msg="viewer too slow: packets dropped for this viewer only" service=cam viewer=bob`) {
		t.Errorf("the slow viewer's queue never overflowed:\n%s", g.log.String())
	}
	if strings.Contains(g.log.String(), "viewer=alice") || fast.lost.Load() != 0 {
		t.Errorf("the fast viewer lost packets: %d\n%s", fast.lost.Load(), g.log.String())
	}
	if a := g.audit.String(); strings.Contains(a, "packets_dropped=0 ") {
		t.Errorf("the slow viewer's drops are not in the audit: %s", a)
	}
	if open, total := cam.sessions(); open != 1 || total != 1 {
		t.Errorf("camera sessions: %d open, %d ever", open, total)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()

	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{LowPath: camLow}, cam.addr)
	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	v.waitPackets(t, 5)
	low, err := g.play(t, "/cam/low", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	low.waitPackets(t, 5)
	r := g.raw(t)
	if res := r.do(base.Describe, "rtsp://"+g.addr+"/cam", nil); res.StatusCode != base.StatusUnauthorized {
		t.Fatalf("describe: %d", res.StatusCode)
	}

	// Close alone ends the viewers' streams and the camera's sessions.
	g.h.Close()
	for _, c := range []*viewer{v, low} {
		done := make(chan error, 1)
		go func() { done <- c.c.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("a viewer still plays after Close")
		}
	}
	waitFor(t, 10*time.Second, func() bool { open, _ := cam.sessions(); return open == 0 },
		func() string { return "camera sessions still open after Close" })
	if !r.closed() {
		t.Error("the waiting conn is still open after Close")
	}
	g.stop()
	cam.close()

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ffprobe, a real player, reads streams through the handler: it tries UDP
// first and must fall back to TCP at the 461.
func TestFFprobe(t *testing.T) {
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Skip("SKIPPED: ffprobe is not installed (apt-get install ffmpeg); the real-player test did not run")
	}
	probe := func(t *testing.T, url string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		args = append([]string{"-v", "error"}, args...)
		args = append(args, "-of", "default=nw=1", url)
		out, err := exec.CommandContext(ctx, ffprobe, args...).Output()
		if err != nil {
			t.Fatalf("ffprobe: %v\n%s", err, out)
		}
		return string(out)
	}

	t.Run("mjpeg", func(t *testing.T) {
		cam := camsim.New(camsim.Config{Width: 320, Height: 240, FPS: 15})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- cam.ServeRTSP(ctx, ln) }()
		t.Cleanup(func() { cancel(); <-served; cam.Close() })
		g := start(t, Config{Path: camsim.RTSPPath}, ln.Addr().String())

		out := probe(t, "rtsp://alice:alice-pw@"+g.addr+"/cam", "-count_frames", "-read_intervals", "%+#5",
			"-show_entries", "stream=codec_name,width,height,nb_read_frames")
		for _, want := range []string{"codec_name=mjpeg", "width=320", "height=240", "nb_read_frames=5"} {
			if !strings.Contains(out, want) {
				t.Errorf("ffprobe: no %s in\n%s", want, out)
			}
		}
	})
	t.Run("h264", func(t *testing.T) {
		aus, sps, pps := x264(t)
		cam := newFakeCam(t, camOptions{aus: aus, sps: sps, pps: pps})
		g := start(t, Config{}, cam.addr)
		// 50 packets: ffprobe joins mid-stream and decodes from the first
		// keyframe on, at most 9 frames later.
		out := probe(t, "rtsp://alice:alice-pw@"+g.addr+"/cam", "-count_frames", "-read_intervals", "%+#50",
			"-show_entries", "stream=codec_name,width,height,nb_read_frames")
		for _, want := range []string{"codec_name=h264", "width=160", "height=120"} {
			if !strings.Contains(out, want) {
				t.Errorf("ffprobe: no %s in\n%s", want, out)
			}
		}
		var frames int
		if i := strings.Index(out, "nb_read_frames="); i < 0 {
			t.Errorf("ffprobe: no frame count in\n%s", out)
		} else if fmt.Sscan(out[i+len("nb_read_frames="):], &frames); frames < 20 {
			t.Errorf("ffprobe decoded %d frames, want at least 20:\n%s", frames, out)
		}
	})
}

// A conn that does not play is cut after ReadTimeout of silence; one that
// plays is not, though it sends nothing.
func TestIdleConnCut(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	g := start(t, Config{ReadTimeout: 200 * time.Millisecond}, cam.addr)

	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := g.raw(t)
	if res := r.do(base.Options, "rtsp://"+g.addr+"/cam", nil); res.StatusCode != base.StatusOK {
		t.Fatalf("options: %d", res.StatusCode)
	}
	if !r.closed() {
		t.Error("a silent conn that does not play stays open")
	}
	// 2s of packets at 50 a second, ten times ReadTimeout.
	n := v.packets.Load()
	v.waitPackets(t, n+100)
}

// A camera that stalls mid-stream: its session is given up after
// CameraTimeout, the viewers are disconnected (players reconnect), and the
// next viewer gets a new session.
func TestCameraStalls(t *testing.T) {
	cam := newFakeCam(t, camOptions{manual: true})
	g := start(t, Config{CameraTimeout: 300 * time.Millisecond}, cam.addr)

	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	cam.media[camMain].push(200)
	v.waitPackets(t, 1)
	done := make(chan error, 1)
	go func() { done <- v.c.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the viewer still plays a stalled camera")
	}
	if l := g.log.String(); !strings.Contains(l, "camera stream ended") {
		t.Errorf("log: %s", l)
	}
	waitFor(t, 10*time.Second, func() bool { open, _ := cam.sessions(); return open == 0 },
		func() string { return "the stalled camera session is still open" })

	v, err = g.play(t, "/cam", "bob", "bob-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	cam.media[camMain].push(200)
	v.waitPackets(t, 1)
	if _, total := cam.sessions(); total != 2 {
		t.Errorf("camera sessions ever: %d, want 2", total)
	}
}

// Malformed RTSP ends that viewer's connection only.
func TestMalformedRequest(t *testing.T) {
	cam := newFakeCam(t, camOptions{})
	// Junk that leaves gortsplib waiting for more is cut by ReadTimeout.
	g := start(t, Config{ReadTimeout: 500 * time.Millisecond}, cam.addr)
	v, err := g.play(t, "/cam", "alice", "alice-pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"DESCRIBE rtsp://x/cam RTSP/1.0\r\n\r\n", // no CSeq
		"\x16\x03\x01\x00\x05hello",              // TLS on the plain port
		"$\x00\xff\xffnot a frame",
		strings.Repeat("A", 70000) + "\r\n\r\n",
	} {
		r := g.raw(t)
		r.c.Write([]byte(junk))
		if !r.closed() {
			t.Errorf("%.20q: conn still open", junk)
		}
	}
	n := v.packets.Load()
	v.waitPackets(t, n+10)
}

// x264 is 50 frames of real H.264 (160x120, a keyframe every 10 frames, as
// players join mid-stream) from ffmpeg's x264, as access units, and its SPS
// and PPS. It skips the test without ffmpeg.
func x264(t *testing.T) (aus [][][]byte, sps, pps []byte) {
	t.Helper()
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("SKIPPED: ffmpeg is not installed (apt-get install ffmpeg); no real H.264 to serve")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	es, err := exec.CommandContext(ctx, ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
		"-frames:v", "50", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-g", "10", "-f", "h264", "-").Output()
	if err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	aus, sps, pps = splitAnnexB(es)
	if len(aus) != 50 || sps == nil || pps == nil {
		t.Fatalf("x264 output: %d frames, sps %x, pps %x", len(aus), sps, pps)
	}
	return aus, sps, pps
}
