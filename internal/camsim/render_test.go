package camsim

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"testing"
	"testing/synctest"
	"time"
)

var t0 = time.Date(2026, 3, 4, 12, 34, 56, 789e6, time.UTC)

func pixels(img *image.RGBA) []byte { return bytes.Clone(img.Pix) }

func TestRenderIsDeterministic(t *testing.T) {
	r1, r2 := newRenderer(New(Config{}).cfg), newRenderer(New(Config{}).cfg)
	r1.render(t0.Add(time.Hour), 99) // state left over from an earlier frame must not matter
	if !bytes.Equal(pixels(r1.render(t0, 7)), pixels(r2.render(t0, 7))) {
		t.Error("same time and frame number, different pictures")
	}
}

// diffIn counts differing pixels of a and b inside rect.
func diffIn(a, b []byte, stride int, rect image.Rectangle) int {
	n := 0
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		for x := rect.Min.X; x < rect.Max.X; x++ {
			i := y*stride + 4*x
			if !bytes.Equal(a[i:i+3], b[i:i+3]) {
				n++
			}
		}
	}
	return n
}

func TestRenderShowsTimeFrameAndMotion(t *testing.T) {
	r := newRenderer(New(Config{}).cfg)
	stride := r.img.Stride
	base := pixels(r.render(t0, 1))

	// The clock occupies the bottom-left box; its first line is the time.
	pad := 4 * r.small
	clockLine := image.Rect(2*pad, r.h-2*pad-glyphH*r.small-pad-glyphH*r.big, 2*pad+12*glyphW*r.big, r.h-2*pad-glyphH*r.small-pad)
	numLine := image.Rect(2*pad, r.h-2*pad-glyphH*r.small, 2*pad+12*glyphW*r.small, r.h-2*pad)
	top := image.Rect(0, 0, r.w, r.h/2)

	// Only the frame number changes: only its line differs.
	other := pixels(r.render(t0, 2))
	if n := diffIn(base, other, stride, numLine); n == 0 {
		t.Error("frame number not drawn")
	}
	if n := diffIn(base, other, stride, r.img.Rect) - diffIn(base, other, stride, numLine); n != 0 {
		t.Errorf("changing only the frame number changed %d pixels elsewhere", n)
	}

	// One millisecond later: the last clock digit changes.
	other = pixels(r.render(t0.Add(time.Millisecond), 1))
	if n := diffIn(base, other, stride, clockLine); n == 0 {
		t.Error("clock does not show milliseconds")
	}

	// A tenth of a second later, the picture moves.
	other = pixels(r.render(t0.Add(100*time.Millisecond), 1))
	if n := diffIn(base, other, stride, top); n < r.w*r.h/100 {
		t.Errorf("only %d pixels of the upper half moved in 100ms", n)
	}
}

func TestRenderExtremeSizes(t *testing.T) {
	for _, sz := range []image.Point{{64, 64}, {2040, 64}, {64, 2040}, {648, 368}} {
		cfg := New(Config{Width: sz.X, Height: sz.Y, Name: "a very long camera name that does not fit"}).cfg
		r := newRenderer(cfg)
		img := r.render(t0, 123456789)
		if img.Bounds().Size() != sz {
			t.Errorf("%v: rendered %v", sz, img.Bounds().Size())
		}
	}
	// RTP/MJPEG needs multiples of 8 and the encoder must accept what we produce.
	cfg := New(Config{Width: 100, Height: 70}).cfg
	data, err := newRenderer(cfg).encode(t0, 1, cfg.Quality)
	if err != nil {
		t.Fatal(err)
	}
	img, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got != image.Pt(96, 64) {
		t.Errorf("100x70 became %v, want 96x64", got)
	}
}

// A viewer that does not ask for frames for a while gets the newest one next, not a backlog.
func TestSlowViewerSkipsFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cam := New(small)
		defer cam.Close()
		slow, err := cam.subscribe()
		if err != nil {
			t.Fatal(err)
		}
		defer slow.close()
		fast, err := cam.subscribe()
		if err != nil {
			t.Fatal(err)
		}
		defer fast.close()

		ctx := context.Background()
		first, err := slow.next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var newest *frame
		for range 10 {
			if newest, err = fast.next(ctx); err != nil {
				t.Fatal(err)
			}
		}
		f, err := slow.next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f.seq != newest.seq || f.seq < first.seq+9 {
			t.Errorf("slow viewer got frame %d after %d, newest is %d", f.seq, first.seq, newest.seq)
		}
		ctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		defer cancel()
		if _, err := slow.next(ctx); err != context.DeadlineExceeded {
			t.Errorf("next frame within 1ms at 10fps: err=%v, want deadline exceeded", err)
		}
	})
}
