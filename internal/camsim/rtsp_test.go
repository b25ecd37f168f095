package camsim

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/jpeg"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmjpeg"
	"github.com/pion/rtp"
)

// startRTSP serves cam over RTSP on a loopback port and returns the stream URL; cleanup
// stops it.
func startRTSP(t *testing.T, cam *Camera) string {
	t.Helper()
	addr, stop := serveRTSP(t, cam)
	t.Cleanup(stop)
	return addr
}

// serveRTSP serves cam over RTSP on a loopback port and returns the stream URL and a
// function that stops the server, checks that ServeRTSP returned nil and closes cam.
func serveRTSP(t *testing.T, cam *Camera) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- cam.ServeRTSP(ctx, ln) }()
	var once sync.Once
	return "rtsp://" + ln.Addr().String() + RTSPPath, func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("ServeRTSP: %v", err)
			}
			_ = cam.Close()
		})
	}
}

func TestRTSPClientReceivesFrames(t *testing.T) {
	before := runtime.NumGoroutine()
	cam := New(Config{Width: 320, Height: 240, FPS: 30})
	encoderStopped := make(chan struct{}, 10)
	cam.testHookEncoderStopped = func() { encoderStopped <- struct{}{} }
	addr, stop := serveRTSP(t, cam)

	u, err := base.ParseURL(addr)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := c.Start2(); err != nil {
		t.Fatalf("client start: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()

	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("DESCRIBE: %v", err)
	}
	var forma *format.MJPEG
	medi := desc.FindFormat(&forma)
	if medi == nil {
		t.Fatalf("no MJPEG format in %+v", desc)
	}
	dec, err := forma.CreateDecoder()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		t.Fatalf("SETUP: %v", err)
	}

	type rtpFrame struct {
		ts   uint32
		jpeg []byte
	}
	frames := make(chan rtpFrame, 100)
	c.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
		data, err := dec.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtpmjpeg.ErrMorePacketsNeeded) && !errors.Is(err, rtpmjpeg.ErrNonStartingPacketAndNoPrevious) {
				t.Errorf("rtp decode: %v", err)
			}
			return
		}
		select {
		case frames <- rtpFrame{pkt.Timestamp, data}:
		default:
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatalf("PLAY: %v", err)
	}

	timeout := time.After(10 * time.Second)
	var prev rtpFrame
	for i := range 4 {
		var f rtpFrame
		select {
		case f = <-frames:
		case <-timeout:
			t.Fatalf("got %d frames in 10s", i)
		}
		img, err := jpeg.Decode(bytes.NewReader(f.jpeg))
		if err != nil {
			t.Fatalf("frame %d: decode jpeg: %v", i, err)
		}
		if got := img.Bounds().Size(); got != image.Pt(320, 240) {
			t.Errorf("frame %d: size %v", i, got)
		}
		if i > 0 {
			if bytes.Equal(f.jpeg, prev.jpeg) {
				t.Errorf("frame %d is the same as the one before", i)
			}
			if f.ts == prev.ts {
				t.Errorf("frame %d has the same RTP timestamp as the one before", i)
			}
		}
		prev = f
	}

	// The encoder stops once the only player has gone, and nothing is left running.
	c.Close()
	closed = true
	select {
	case <-encoderStopped:
	case <-time.After(10 * time.Second):
		t.Fatal("encoder still running 10s after the player left")
	}
	stop()
	if after := settledGoroutines(before); after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestRTSPUnknownPath(t *testing.T) {
	cam := New(small)
	addr := startRTSP(t, cam)
	u, err := base.ParseURL(strings.TrimSuffix(addr, RTSPPath) + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, res, err := c.Describe(u)
	if err == nil || res == nil || res.StatusCode != base.StatusNotFound {
		t.Errorf("DESCRIBE /nope: res=%v err=%v, want 404", res, err)
	}
	if cam.isEncoding() {
		t.Error("encoding without a player")
	}
}

// TestRTSPFFprobe checks that a real client (FFmpeg, as in VLC-like apps) accepts the
// stream, starting with its default UDP attempt and falling back to TCP.
func TestRTSPFFprobe(t *testing.T) {
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Skip("ffprobe not installed")
	}
	cam := New(Config{Width: 320, Height: 240, FPS: 30})
	addr := startRTSP(t, cam)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-analyzeduration", "500000",
		"-show_entries", "stream=codec_name,width,height", "-of", "default=noprint_wrappers=1", addr).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	for _, want := range []string{"codec_name=mjpeg", "width=320", "height=240"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ffprobe output lacks %q:\n%s", want, out)
		}
	}
}

// settledGoroutines returns the goroutine count once it is at most want, or after 5s.
// Goroutines that have signalled completion (WaitGroup.Done) may need a moment to exit;
// yielding lets them, without sleeping.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		runtime.Gosched()
	}
}
