package httpgw

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
)

// liveCam is a camsim camera on loopback that counts the requests per path.
type liveCam struct {
	target string
	cam    *camsim.Camera
	mu     sync.Mutex
	hits   map[string]int
}

func newLiveCam(t *testing.T, cfg camsim.Config) *liveCam {
	t.Helper()
	lc := &liveCam{cam: camsim.New(cfg), hits: map[string]int{}}
	h := lc.cam.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lc.mu.Lock()
		lc.hits[r.URL.Path]++
		lc.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { srv.Close(); lc.cam.Close() })
	lc.target = strings.TrimPrefix(srv.URL, "http://")
	return lc
}

func (lc *liveCam) count(path string) int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.hits[path]
}

// live GETs a live path as alice and returns the response (body open).
func (g *gw) live(t *testing.T, ctx context.Context, path string) *http.Response {
	t.Helper()
	r := g.req(t, "GET", path, "").WithContext(ctx)
	r.SetBasicAuth("alice", "alice-pw")
	resp, err := g.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// frames reads an MJPEG response's parts.
type frames struct {
	t  *testing.T
	mr *multipart.Reader
}

func mjpegFrames(t *testing.T, resp *http.Response) *frames {
	t.Helper()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	return &frames{t: t, mr: multipart.NewReader(resp.Body, params["boundary"])}
}

// skip reads the next frame without decoding it.
func (f *frames) skip() {
	f.t.Helper()
	p, err := f.mr.NextPart()
	if err != nil {
		f.t.Fatalf("next part: %v", err)
	}
	if b, err := io.ReadAll(p); err != nil || len(b) < 100 {
		f.t.Fatalf("frame of %d bytes: %v", len(b), err)
	}
}

// next returns the next frame's size, decoding it.
func (f *frames) next() image.Point {
	f.t.Helper()
	p, err := f.mr.NextPart()
	if err != nil {
		f.t.Fatalf("next part: %v", err)
	}
	img, err := jpeg.Decode(p)
	if err != nil {
		f.t.Fatalf("frame: %v", err)
	}
	return img.Bounds().Size()
}

func TestMJPEGSharedUpstream(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	g := start(t, Config{MJPEGPath: "/stream.mjpg", MJPEGLinger: 50 * time.Millisecond}, cam.target)
	ctx, cancel := context.WithCancel(context.Background())
	var resps []*http.Response
	for range 5 {
		resp := g.live(t, ctx, MJPEGPath+"?width=32")
		f := mjpegFrames(t, resp)
		for range 3 {
			if sz := f.next(); sz != (image.Point{32, 32}) {
				t.Fatalf("frame %v", sz)
			}
		}
		resps = append(resps, resp)
	}
	if n := cam.count("/stream.mjpg"); n != 1 {
		t.Errorf("camera got %d stream requests for 5 viewers, want 1", n)
	}
	// Viewers at the same width share each frame's resize.
	if rs, fs := g.h.rz.count.Load(), g.h.mjpeg.frames.Load(); rs > fs {
		t.Errorf("%d resizes of %d frames for 5 viewers at one width", rs, fs)
	}
	// All gone: the stream stops after the linger, and the next viewer opens it again.
	cancel()
	for _, r := range resps {
		r.Body.Close()
	}
	waitFor(t, "the camera stream to stop", func() bool {
		g.h.mjpeg.mu.Lock()
		defer g.h.mjpeg.mu.Unlock()
		return !g.h.mjpeg.running
	})
	mjpegFrames(t, g.live(t, context.Background(), MJPEGPath)).next()
	if n := cam.count("/stream.mjpg"); n != 2 {
		t.Errorf("camera got %d stream requests, want 2 (one per run)", n)
	}
}

// waitFor polls cond until it holds, failing after 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMJPEGFPS(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	g := start(t, Config{MJPEGPath: "/stream.mjpg"}, cam.target)
	f := mjpegFrames(t, g.live(t, context.Background(), MJPEGPath+"?fps=2"))
	f.next()
	// Generous bounds: the point is 2 a second rather than the camera's 20.
	const window = 3 * time.Second
	start, n := time.Now(), 0
	for time.Since(start) < window {
		f.next()
		if time.Since(start) <= window {
			n++
		}
	}
	if n < 3 || n > 9 {
		t.Errorf("%d frames in %v at fps=2 from a 20 fps camera, want 1 to 3 a second", n, window)
	}
}

func TestMJPEGWidth(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 640, Height: 360, FPS: 10})
	g := start(t, Config{MJPEGPath: "/stream.mjpg", SnapshotPath: "/snapshot.jpg"}, cam.target)
	f := mjpegFrames(t, g.live(t, context.Background(), MJPEGPath+"?width=320"))
	for range 3 {
		if sz := f.next(); sz != (image.Point{320, 180}) {
			t.Fatalf("frame %v, want 320x180", sz)
		}
	}
	// Never upscaled.
	f = mjpegFrames(t, g.live(t, context.Background(), MJPEGPath+"?width=1000&fps=5"))
	if sz := f.next(); sz != (image.Point{640, 360}) {
		t.Fatalf("frame %v, want the camera's 640x360", sz)
	}
	resp := g.live(t, context.Background(), SnapshotPath+"?width=160&t=12345")
	img, err := jpeg.Decode(resp.Body)
	if resp.StatusCode != 200 || err != nil || img.Bounds().Dx() != 160 {
		t.Fatalf("snapshot: %d %v", resp.StatusCode, err)
	}
}

func TestLiveBadParams(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 10})
	g := start(t, Config{MJPEGPath: "/stream.mjpg", SnapshotPath: "/snapshot.jpg"}, cam.target)
	for _, tc := range []struct{ path, want string }{
		{MJPEGPath + "?fps=0", "fps must be"},
		{MJPEGPath + "?fps=-2", "fps must be"},
		{MJPEGPath + "?fps=NaN", "fps must be"},
		{MJPEGPath + "?fps=Inf", "fps must be"},
		{MJPEGPath + "?fps=31", "fps must be"},
		{MJPEGPath + "?fps=abc", "fps must be"},
		{MJPEGPath + "?fps=", "fps must be"},
		{MJPEGPath + "?fps=2&fps=3", "fps once"},
		{MJPEGPath + "?width=100000", "width must be"},
		{MJPEGPath + "?width=15", "width must be"},
		{MJPEGPath + "?width=1.5", "width must be"},
		{MJPEGPath + "?width=-320", "width must be"},
		{MJPEGPath + "?fps=2&width=0x140", "width must be"},
		{SnapshotPath + "?width=100000", "width must be"},
		{SnapshotPath + "?width=1&width=2", "width once"},
	} {
		r := g.req(t, "GET", tc.path, "")
		r.SetBasicAuth("alice", "alice-pw")
		resp, body := g.do(t, r)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.path, resp.StatusCode, body, tc.want)
		}
	}
	r := g.req(t, "POST", MJPEGPath, "x")
	r.SetBasicAuth("alice", "alice-pw")
	if resp, _ := g.do(t, r); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	if n := cam.count("/stream.mjpg") + cam.count("/snapshot.jpg"); n != 0 {
		t.Errorf("bad requests reached the camera %d times", n)
	}
}

func TestLiveNeedsLogin(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 10})
	g := start(t, Config{MJPEGPath: "/stream.mjpg", SnapshotPath: "/snapshot.jpg", Viewers: []string{"bob"}}, cam.target)
	for _, path := range []string{MJPEGPath, SnapshotPath + "?width=32"} {
		resp, _ := g.do(t, g.req(t, "GET", path, ""))
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Porthole cam") {
			t.Errorf("%s without login: %d %q", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		r := g.req(t, "GET", path, "")
		r.Header.Set("Accept", "text/html")
		if resp, _ := g.do(t, r); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), LoginPath) {
			t.Errorf("%s from a browser without login: %d %q", path, resp.StatusCode, resp.Header.Get("Location"))
		}
		r = g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "wrong")
		if resp, _ := g.do(t, r); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d", path, resp.StatusCode)
		}
		r = g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "alice-pw")
		if resp, _ := g.do(t, r); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s as alice, not a viewer of the service: %d", path, resp.StatusCode)
		}
	}
	if n := cam.count("/stream.mjpg") + cam.count("/snapshot.jpg"); n != 0 {
		t.Errorf("unauthenticated requests reached the camera %d times", n)
	}
	// Bob may, with a link-less Basic login.
	r := g.req(t, "GET", SnapshotPath, "")
	r.SetBasicAuth("bob", "bob-pw")
	if resp, _ := g.do(t, r); resp.StatusCode != 200 {
		t.Errorf("snapshot as bob: %d", resp.StatusCode)
	}
}

func TestLiveNotConfigured(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 10})
	g := start(t, Config{}, cam.target)
	for path, want := range map[string]string{MJPEGPath: "mjpeg:", SnapshotPath: "snapshot:"} {
		r := g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "alice-pw")
		if resp, body := g.do(t, r); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, want) {
			t.Errorf("%s: %d %q, want 404 naming %s", path, resp.StatusCode, body, want)
		}
	}
	if _, err := New(Config{Service: "x", Target: "h:1", Auth: newFakeAuth(), MJPEGPath: "video.mjpg"}); err == nil ||
		!strings.Contains(err.Error(), "MJPEGPath") {
		t.Errorf("a path without a slash: %v", err)
	}
}

func TestSnapshot(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	g := start(t, Config{MJPEGPath: "/stream.mjpg", SnapshotPath: "/snapshot.jpg"}, cam.target)
	snap := func(path string) image.Point {
		t.Helper()
		resp := g.live(t, context.Background(), path)
		img, err := jpeg.Decode(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || err != nil {
			t.Fatalf("%s: %d %q %v", path, resp.StatusCode, resp.Header.Get("Content-Type"), err)
		}
		return img.Bounds().Size()
	}
	// No stream: the camera's snapshot.
	if sz := snap(SnapshotPath + "?width=32"); sz != (image.Point{32, 32}) {
		t.Errorf("one-shot snapshot %v, want 32x32", sz)
	}
	if n := cam.count("/snapshot.jpg"); n != 1 {
		t.Errorf("camera snapshots: %d, want 1", n)
	}
	// A stream runs: its latest frame, without asking the camera.
	f := mjpegFrames(t, g.live(t, context.Background(), MJPEGPath))
	f.next()
	if sz := snap(SnapshotPath); sz != (image.Point{64, 64}) {
		t.Errorf("snapshot from the stream %v", sz)
	}
	if n := cam.count("/snapshot.jpg"); n != 1 {
		t.Errorf("camera snapshots: %d, want still 1 while a stream runs", n)
	}

	// Without a snapshot path: a frame of the stream, which then lingers.
	cam2 := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	g2 := start(t, Config{MJPEGPath: "/stream.mjpg"}, cam2.target)
	for range 3 {
		resp := g2.live(t, context.Background(), SnapshotPath+"?width=16")
		if img, err := jpeg.Decode(resp.Body); err != nil || img.Bounds().Dx() != 16 {
			t.Fatalf("snapshot from a stream started for it: %d %v", resp.StatusCode, err)
		}
	}
	if n := cam2.count("/stream.mjpg"); n != 1 {
		t.Errorf("camera streams for 3 snapshots: %d, want 1", n)
	}
}

// testJPEG is a small JPEG of the given shade.
func testJPEG(t testing.TB, w, h int, shade uint8) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = shade + uint8(i%7)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// scriptedCam is a fake MJPEG camera: connection n (from 0) sends frames
// every 20ms, and after limit(n) frames either stalls (holds the connection,
// sending nothing) or hangs up.
type scriptedCam struct {
	jpg   []byte
	limit func(conn int) (frames int, stall bool)
	conns atomic.Int32
}

func (c *scriptedCam) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(c.conns.Add(1)) - 1
	frames, stall := c.limit(n)
	w.Header().Set("Content-Type", `multipart/x-mixed-replace;boundary="--cam"`)
	rc := http.NewResponseController(w)
	for i := 0; frames < 0 || i < frames; i++ {
		// No Content-Length: the parser scans for the boundary.
		fmt.Fprintf(w, "----cam\r\nContent-Type: image/jpeg\r\n\r\n")
		w.Write(c.jpg)
		io.WriteString(w, "\r\n")
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	io.WriteString(w, "----cam\r\n") // the last frame is complete
	rc.Flush()
	if stall {
		<-r.Context().Done()
	}
}

func TestMJPEGCameraStallsAndDrops(t *testing.T) {
	for _, stall := range []bool{true, false} {
		t.Run(fmt.Sprintf("stall=%v", stall), func(t *testing.T) {
			sc := &scriptedCam{jpg: testJPEG(t, 48, 32, 60), limit: func(n int) (int, bool) {
				if n < 2 {
					return 3, stall
				}
				return -1, false
			}}
			srv := httptest.NewServer(sc)
			t.Cleanup(srv.Close) // after the gateway's cleanup, which ends the stream
			g := start(t, Config{MJPEGPath: "/v.mjpg", MJPEGStallTimeout: 300 * time.Millisecond}, strings.TrimPrefix(srv.URL, "http://"))
			// One viewer sees frames from three camera connections on one response.
			f := mjpegFrames(t, g.live(t, context.Background(), MJPEGPath))
			for sc.conns.Load() < 3 {
				if sz := f.next(); sz != (image.Point{48, 32}) {
					t.Fatalf("frame %v", sz)
				}
			}
			for range 5 {
				f.next()
			}
			if stall && !strings.Contains(g.log.String(), "no frame for") {
				t.Errorf("log does not say the camera stalled:\n%s", g.log.String())
			}
		})
	}
}

func TestMJPEGCameraDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close() // nobody listens: the camera is off
	g := start(t, Config{MJPEGPath: "/v.mjpg", SnapshotPath: "/s.jpg"}, target)
	for _, path := range []string{MJPEGPath, SnapshotPath} {
		r := g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "alice-pw")
		if resp, body := g.do(t, r); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "not answering") {
			t.Errorf("%s with the camera off: %d %q", path, resp.StatusCode, body)
		}
	}

	// Paths the camera does not serve, or serves as something else.
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 10})
	g = start(t, Config{MJPEGPath: "/snapshot.jpg", SnapshotPath: "/nothing.jpg"}, cam.target)
	for path, want := range map[string]string{
		MJPEGPath:    `not an MJPEG stream (multipart/x-mixed-replace). The owner of this Porthole needs to check mjpeg: of cam`,
		SnapshotPath: `404 Not Found. The owner of this Porthole needs to check snapshot: of cam`,
	} {
		r := g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "alice-pw")
		if resp, body := g.do(t, r); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, want) {
			t.Errorf("%s: %d %q, want 502 saying %q", path, resp.StatusCode, body, want)
		}
	}

	// A camera that refuses the agent's login.
	refusing, _ := simCamera(t, "digest", "MD5")
	g = start(t, Config{MJPEGPath: "/stream.mjpg", SnapshotPath: "/snapshot.jpg",
		CameraLogin: &Credentials{Username: "admin", Password: "wrong"}}, refusing)
	for _, path := range []string{MJPEGPath, SnapshotPath} {
		r := g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "alice-pw")
		if resp, body := g.do(t, r); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "camera_login") {
			t.Errorf("%s with a wrong camera_login: %d %q", path, resp.StatusCode, body)
		}
	}
}

func TestMJPEGCameraLogin(t *testing.T) {
	cam, _ := simCamera(t, "digest", "SHA-256")
	g := start(t, Config{MJPEGPath: "/stream.mjpg", CameraLogin: &Credentials{Username: "admin", Password: "cam-secret"}}, cam)
	f := mjpegFrames(t, g.live(t, context.Background(), MJPEGPath+"?width=32"))
	if sz := f.next(); sz != (image.Point{32, 32}) {
		t.Fatalf("frame %v", sz)
	}
}

// noiseJPEG is a large JPEG: noise compresses badly.
func noiseJPEG(t testing.TB, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	x := uint32(1)
	for i := range img.Pix {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		img.Pix[i] = uint8(x)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A viewer that never reads: a reading viewer keeps getting frames, and the
// stuck one's queue stays within QueueFrames while the fan-out drops its
// oldest frames.
func TestMJPEGStuckViewer(t *testing.T) {
	// Big frames fill the stuck viewer's socket buffers in a moment.
	sc := &scriptedCam{jpg: noiseJPEG(t, 640, 480), limit: func(int) (int, bool) { return -1, false }}
	srv := httptest.NewServer(sc)
	t.Cleanup(srv.Close)
	subs := make(chan *sub, 4)
	g := start(t, Config{MJPEGPath: "/v.mjpg", QueueFrames: 3}, strings.TrimPrefix(srv.URL, "http://"))
	hook := func(s *sub) { subs <- s }
	g.h.testHookSub.Store(&hook)

	// The stuck viewer: a raw connection with a small receive buffer that
	// sends the request and never reads.
	c, err := net.Dial("tcp", strings.TrimPrefix(g.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6YWxpY2UtcHc=\r\n\r\n", MJPEGPath)
	stuck := <-subs

	f := mjpegFrames(t, g.live(t, context.Background(), MJPEGPath))
	<-subs // the reading viewer
	waitFor(t, "the stuck viewer's frames to be dropped", func() bool {
		f.skip()
		n, dropped := stuck.queued()
		if n > 3 {
			t.Fatalf("stuck viewer's queue holds %d frames, more than QueueFrames 3", n)
		}
		return dropped > 0
	})
	// Still flowing for the reader, still bounded for the stuck one.
	_, before := stuck.queued()
	for range 10 {
		f.skip()
	}
	if n, after := stuck.queued(); n > 3 || after <= before {
		t.Fatalf("stuck viewer's queue holds %d frames, %d dropped (%d before)", n, after, before)
	}
	if sc.conns.Load() != 1 {
		t.Errorf("camera connections: %d, want 1", sc.conns.Load())
	}
}
