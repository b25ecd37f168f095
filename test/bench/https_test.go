package bench

import (
	"bytes"
	"context"
	"fmt"
	"mime/multipart"
	"strings"
	"testing"
	"time"
)

// mjpeg is a multipart stream of parts as camsim writes them.
func mjpeg(parts ...string) *multipart.Reader {
	var b strings.Builder
	b.WriteString("--frame\r\n")
	for _, p := range parts {
		fmt.Fprintf(&b, "Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n--frame\r\n", len(p), p)
	}
	return multipart.NewReader(strings.NewReader(b.String()), "frame")
}

func TestNextJPEG(t *testing.T) {
	jpeg := "\xff\xd8 picture \xff\xd9"
	var buf bytes.Buffer
	if err := nextJPEG(mjpeg(jpeg, jpeg), &buf); err != nil || buf.String() != jpeg {
		t.Errorf("complete frame: %v, %q", err, buf.String())
	}
	for _, bad := range []string{"\xff\xd8 cut short", "no JPEG at all", ""} {
		if err := nextJPEG(mjpeg(bad), &buf); err == nil {
			t.Errorf("%q taken for a complete JPEG", bad)
		}
	}
	// a part shorter than its Content-Length
	r := multipart.NewReader(strings.NewReader("--frame\r\nContent-Length: 99\r\n\r\n"+jpeg+"\r\n--frame\r\n"), "frame")
	if err := nextJPEG(r, &buf); err == nil {
		t.Error("a part shorter than its Content-Length taken for a frame")
	}
}

func TestStalled(t *testing.T) {
	for _, c := range []struct {
		f    frameCount
		want bool
	}{
		{frameCount{frames: 100, maxGap: 150 * time.Millisecond}, false},
		{frameCount{frames: 50, maxGap: 150 * time.Millisecond}, false},
		{frameCount{frames: 49, maxGap: 150 * time.Millisecond}, true},
		{frameCount{frames: 100, maxGap: 1100 * time.Millisecond}, true},
		{frameCount{frames: 100, err: context.Canceled}, true},
	} {
		if got := c.f.stalled(100); got != c.want {
			t.Errorf("%+v stalled = %v, want %v", c.f, got, c.want)
		}
	}
}

// TestCountFramesEarlyEnd: a stream that ends inside the window is an error
// with the silence up to its end, not a clean count.
func TestCountFramesEarlyEnd(t *testing.T) {
	w := newWindow()
	w.open()
	jpeg := "\xff\xd8\xff\xd9"
	f := countFrames(mjpeg(jpeg, jpeg), w, time.Hour)
	if f.frames != 2 || f.err == nil {
		t.Errorf("%d frames, err %v; want 2 and the stream's end", f.frames, f.err)
	}
}

func BenchmarkHTTPS(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		check(b, HTTPS(context.Background(), bs, Smoke.HTTPS)...)
	}
}

func BenchmarkLoginStorm(b *testing.B) {
	bs := mustBins(b)
	for range b.N {
		figs := LoginStorm(context.Background(), bs, Smoke.HTTPS.StormAttempts, Smoke.HTTPS.StormParallel)
		check(b, figs...)
		b.ReportMetric(figs[0].Value, "login-max-ms")
	}
}
