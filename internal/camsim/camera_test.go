package camsim

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// small keeps the tests quick under the race detector, where encoding a 640x360 frame
// takes ~100 ms. Sizes are tested on their own.
var small = Config{Width: 160, Height: 96}

func TestConfigDefaults(t *testing.T) {
	got := New(Config{}).cfg
	if got.Name != "Porthole camera" || got.FPS != 10 || got.Width != 640 || got.Height != 360 || got.Quality != 70 {
		t.Errorf("defaults = %q fps=%d %dx%d q=%d", got.Name, got.FPS, got.Width, got.Height, got.Quality)
	}
	if got.Now == nil || got.Logger == nil {
		t.Error("Now or Logger not defaulted")
	}
	for _, tc := range []struct{ in, want int }{{1000, 1000}, {100, 96}, {10, 64}, {5000, 2040}, {-3, 640}} {
		if got := New(Config{Width: tc.in}).cfg.Width; got != tc.want {
			t.Errorf("Width %d -> %d, want %d", tc.in, got, tc.want)
		}
	}
	if got := New(Config{FPS: 1000, Quality: 500}).cfg; got.FPS != maxFPS || got.Quality != 100 {
		t.Errorf("clamp: fps=%d q=%d", got.FPS, got.Quality)
	}
}

// testServer serves cam over an in-memory listener; stop ends Serve, checks it returned nil
// and closes the camera.
type testServer struct {
	cam    *Camera
	client *http.Client
	stop   func()
}

func serve(t *testing.T, cfg Config) *testServer {
	t.Helper()
	cam := New(cfg)
	ln := newPipeListener()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- cam.Serve(ctx, ln) }()
	client, tr := ln.client()
	return &testServer{cam: cam, client: client, stop: func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
		tr.CloseIdleConnections()
		_ = cam.Close()
	}}
}

func get(t *testing.T, c *http.Client, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Get("http://cam" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp, body
}

func TestPage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := serve(t, Config{Name: "Front <door>"})
		defer s.stop()

		resp, body := get(t, s.client, "/")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("Content-Type %q", ct)
		}
		for _, want := range []string{
			`<title>Front &lt;door&gt;</title>`,
			`<img src="stream.mjpg"`,
			`href="snapshot.jpg"`,
			`Porthole simulated camera`,
		} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("page lacks %q:\n%s", want, body)
			}
		}
		if s.cam.isEncoding() {
			t.Error("the page alone started the encoder")
		}

		resp, body = get(t, s.client, "/healthz")
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("healthz: %d %q", resp.StatusCode, body)
		}
		if resp, _ := get(t, s.client, "/nope"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("/nope: status %d", resp.StatusCode)
		}
		resp, err := s.client.Post("http://cam/snapshot.jpg", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST snapshot: status %d", resp.StatusCode)
		}
	})
}

func TestSnapshot(t *testing.T) {
	for _, size := range []image.Point{{0, 0}, {320, 240}} {
		t.Run(strconv.Itoa(size.X), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := serve(t, Config{Width: size.X, Height: size.Y})
				defer s.stop()
				want := image.Pt(s.cam.cfg.Width, s.cam.cfg.Height)

				resp, body := get(t, s.client, "/snapshot.jpg")
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
					t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				img, err := jpeg.Decode(bytes.NewReader(body))
				if err != nil {
					t.Fatalf("decode snapshot: %v", err)
				}
				if got := img.Bounds().Size(); got != want {
					t.Errorf("snapshot size %v, want %v", got, want)
				}
				if s.cam.isEncoding() {
					t.Error("a snapshot left the encoder running")
				}
			})
		})
	}
}

// mjpegStream reads an MJPEG response part by part.
type mjpegStream struct {
	resp *http.Response
	mr   *multipart.Reader
}

func openStream(t *testing.T, c *http.Client) *mjpegStream {
	t.Helper()
	resp, err := c.Get("http://cam/stream.mjpg")
	if err != nil {
		t.Fatalf("GET stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET stream: status %d", resp.StatusCode)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" || params["boundary"] == "" {
		resp.Body.Close()
		t.Fatalf("stream Content-Type %q: %v", resp.Header.Get("Content-Type"), err)
	}
	return &mjpegStream{resp: resp, mr: multipart.NewReader(resp.Body, params["boundary"])}
}

type streamFrame struct {
	seq  uint64
	data []byte
	img  image.Image
}

func (s *mjpegStream) next(t *testing.T) streamFrame {
	t.Helper()
	p, err := s.mr.NextPart()
	if err != nil {
		t.Fatalf("next part: %v", err)
	}
	if ct := p.Header.Get("Content-Type"); ct != "image/jpeg" {
		t.Fatalf("part Content-Type %q", ct)
	}
	data, err := io.ReadAll(p)
	if err != nil {
		t.Fatalf("read part: %v", err)
	}
	if n, err := strconv.Atoi(p.Header.Get("Content-Length")); err != nil || n != len(data) {
		t.Fatalf("part Content-Length %q, got %d bytes", p.Header.Get("Content-Length"), len(data))
	}
	seq, err := strconv.ParseUint(p.Header.Get("X-Frame"), 10, 64)
	if err != nil {
		t.Fatalf("X-Frame: %v", err)
	}
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("decode frame %d: %v", seq, err)
	}
	return streamFrame{seq: seq, data: data, img: img}
}

func (s *mjpegStream) close() { s.resp.Body.Close() }

// drain reads the stream until it ends and returns how many frames were still read; it
// returns after at most 100 frames if the stream does not end.
func drain(s *mjpegStream) int {
	for n := 0; n < 100; n++ {
		p, err := s.mr.NextPart()
		if err != nil {
			return n
		}
		if _, err := io.Copy(io.Discard, p); err != nil {
			return n
		}
	}
	return 100
}

// changedPixels counts sampled pixels that differ clearly between a and b.
func changedPixels(a, b image.Image) int {
	n := 0
	r := a.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 4 {
		for x := r.Min.X; x < r.Max.X; x += 4 {
			r1, g1, b1, _ := a.At(x, y).RGBA()
			r2, g2, b2, _ := b.At(x, y).RGBA()
			if absDiff(r1, r2)+absDiff(g1, g2)+absDiff(b1, b2) > 3*40<<8 {
				n++
			}
		}
	}
	return n
}

func absDiff(a, b uint32) uint32 {
	if a > b {
		return a - b
	}
	return b - a
}

func TestStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := serve(t, Config{Width: 320, Height: 240})
		defer s.stop()

		st := openStream(t, s.client)
		defer st.close()
		start := time.Now()
		prev := st.next(t)
		const frames = 5
		for range frames {
			f := st.next(t)
			if f.seq <= prev.seq {
				t.Errorf("frame number went from %d to %d", prev.seq, f.seq)
			}
			if got := f.img.Bounds().Size(); got != image.Pt(320, 240) {
				t.Errorf("frame size %v", got)
			}
			if bytes.Equal(f.data, prev.data) {
				t.Errorf("frame %d is identical to frame %d", f.seq, prev.seq)
			}
			if n := changedPixels(prev.img, f.img); n < 50 {
				t.Errorf("frame %d: only %d pixels changed since frame %d", f.seq, n, prev.seq)
			}
			prev = f
		}
		// 10 fps by the (fake) clock.
		if d, want := time.Since(start), frames*100*time.Millisecond; d != want {
			t.Errorf("%d frames took %v, want %v", frames, d, want)
		}
	})
}

func TestFramesAreShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := serve(t, small)
		defer s.stop()

		a, b := openStream(t, s.client), openStream(t, s.client)
		defer a.close()
		defer b.close()
		seen := map[uint64][]byte{}
		var first, last uint64
		for i := range 10 {
			for _, st := range []*mjpegStream{a, b} {
				f := st.next(t)
				if i == 0 && (first == 0 || f.seq < first) {
					first = f.seq
				}
				last = max(last, f.seq)
				if data, ok := seen[f.seq]; ok && !bytes.Equal(data, f.data) {
					t.Errorf("frame %d differs between viewers", f.seq)
				}
				seen[f.seq] = f.data
			}
		}
		// One encoder for both viewers: about 10 frames encoded for 10 frames each.
		if last-first > 11 {
			t.Errorf("frames %d..%d encoded for two viewers reading 10 each: not shared", first, last)
		}
	})
}

func TestSlowViewerDoesNotStallOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := serve(t, small)
		defer s.stop()

		stuck := openStream(t, s.client) // never reads its body
		defer stuck.close()
		fast := openStream(t, s.client)
		start := time.Now()
		for range 20 {
			fast.next(t)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("20 frames took %v next to a stuck viewer", d)
		}
		fast.close()

		// The stuck viewer is dropped after the write timeout and the encoder stops.
		time.Sleep(streamWriteTimeout + time.Second)
		synctest.Wait()
		s.cam.mu.Lock()
		viewers := s.cam.viewers
		s.cam.mu.Unlock()
		if viewers != 0 || s.cam.isEncoding() {
			t.Errorf("after the write timeout: viewers=%d encoding=%v", viewers, s.cam.isEncoding())
		}
	})
}

func TestEncoderRunsOnlyWhileWatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := serve(t, small)
		defer s.stop()

		if s.cam.isEncoding() {
			t.Fatal("encoding before anyone watches")
		}
		st := openStream(t, s.client)
		f1 := st.next(t)
		if !s.cam.isEncoding() {
			t.Error("not encoding while watched")
		}
		st.close()
		time.Sleep(time.Second)
		synctest.Wait()
		if s.cam.isEncoding() {
			t.Error("still encoding 1s after the last viewer left")
		}

		st = openStream(t, s.client)
		defer st.close()
		if f2 := st.next(t); f2.seq <= f1.seq {
			t.Errorf("after restart got frame %d, had %d: stale or reset", f2.seq, f1.seq)
		}
	})
}

func TestCloseEndsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		before := bubbleGoroutines()

		cam := New(small)
		ln := newPipeListener()
		errc := make(chan error, 1)
		go func() { errc <- cam.Serve(context.Background(), ln) }()
		client, tr := ln.client()

		streams := []*mjpegStream{openStream(t, client), openStream(t, client)}
		for _, st := range streams {
			st.next(t)
		}
		if err := cam.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
		for _, st := range streams {
			if n := drain(st); n > 2 {
				t.Errorf("stream went on for %d frames after Close", n)
			}
			st.close()
		}
		if err := cam.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := cam.Snapshot(); !errors.Is(err, ErrClosed) {
			t.Errorf("Snapshot after Close: %v, want ErrClosed", err)
		}
		if _, err := cam.subscribe(); !errors.Is(err, ErrClosed) {
			t.Errorf("subscribe after Close: %v, want ErrClosed", err)
		}
		tr.CloseIdleConnections()

		synctest.Wait()
		if after := bubbleGoroutines(); after > before {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutines: %d before, %d after Close\n%s", before, after, buf[:runtime.Stack(buf, true)])
		}
	})
}

func TestRunStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cam := New(small)
		defer cam.Close()
		ln := newPipeListener()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- cam.Run(ctx, ln, nil) }()
		client, tr := ln.client()
		defer tr.CloseIdleConnections()
		st := openStream(t, client)
		defer st.close()
		st.next(t)
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
		if n := drain(st); n > 2 {
			t.Errorf("stream went on for %d frames after Run returned", n)
		}
	})
}

// bubbleGoroutines counts the goroutines of the calling synctest bubble.
// runtime.NumGoroutine would also count goroutines other tests left winding
// down outside the bubble, which come and go as they like (a flake under -shuffle).
func bubbleGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	// The header of each goroutine: "goroutine 161 [running, synctest bubble 10]:".
	self := bytes.SplitN(buf, []byte("\n"), 2)[0]
	i := bytes.Index(self, []byte("synctest bubble "))
	if i < 0 {
		panic("bubbleGoroutines called outside a synctest bubble")
	}
	tag := self[i : i+bytes.IndexByte(self[i:], ']')]
	count := 0
	for _, line := range bytes.Split(buf, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("goroutine ")) && bytes.Contains(line, append(append([]byte{}, tag...), ']')) {
			count++
		}
	}
	return count
}
