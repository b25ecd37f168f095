package camsim

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"strconv"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Glyph cell of basicfont.Face7x13.
const (
	glyphW      = 7
	glyphH      = 13
	glyphAscent = 11
)

// renderer draws the test picture. It reuses its buffers, so one renderer belongs to one
// goroutine at a time.
type renderer struct {
	name     string
	w, h     int
	big      int // scale of the clock text
	small    int // scale of the name and frame number
	img      *image.RGBA
	text     *image.Alpha // 1x scratch for one line of text
	cols     []color.RGBA // per-column background colour of the current frame
	lastSize int          // size of the previous JPEG, to size the next buffer
}

func newRenderer(cfg Config) *renderer {
	big := max(1, min(cfg.Width/160, cfg.Height/90))
	return &renderer{
		name:  cfg.Name,
		w:     cfg.Width,
		h:     cfg.Height,
		big:   big,
		small: max(1, big/2),
		img:   image.NewRGBA(image.Rect(0, 0, cfg.Width, cfg.Height)),
		cols:  make([]color.RGBA, cfg.Width),
	}
}

// encode renders the picture for now and frame number seq and returns it as a JPEG.
func (r *renderer) encode(now time.Time, seq uint64, quality int) ([]byte, error) {
	img := r.render(now, seq)
	var buf bytes.Buffer
	buf.Grow(max(r.lastSize+r.lastSize/4, 32<<10))
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}); err != nil {
		return nil, fmt.Errorf("encode jpeg: %w", err)
	}
	r.lastSize = buf.Len()
	// A new buffer each time: frames are shared with viewers and must not change.
	return buf.Bytes(), nil
}

// render draws the picture: a scrolling colour gradient, a sweeping bar, a bouncing ball,
// the camera name, the time HH:MM:SS.mmm and the frame number. The result is a function
// of (now, seq) only and stays valid until the next call.
func (r *renderer) render(now time.Time, seq uint64) *image.RGBA {
	ms := now.UnixMilli()
	secs := float64(ms) / 1000

	// Background: hue gradient scrolling sideways, darker towards the bottom.
	hueShift := math.Mod(secs*40, 360)
	for x := range r.cols {
		r.cols[x] = hsv(math.Mod(float64(x)*360/float64(r.w)+hueShift, 360), 0.55, 1)
	}
	pix, stride := r.img.Pix, r.img.Stride
	for y := 0; y < r.h; y++ {
		f := uint32(230 - 140*y/r.h) // brightness out of 255
		row := pix[y*stride : y*stride+r.w*4]
		for x, c := range r.cols {
			row[4*x] = uint8(uint32(c.R) * f / 255)
			row[4*x+1] = uint8(uint32(c.G) * f / 255)
			row[4*x+2] = uint8(uint32(c.B) * f / 255)
			row[4*x+3] = 0xff
		}
	}

	// A bar sweeping left and right every 4 s.
	barW := max(4, r.w/20)
	phase := float64(ms%4000) / 4000
	tri := 1 - math.Abs(2*phase-1)
	barX := int(tri * float64(r.w-barW))
	r.fill(image.Rect(barX, 0, barX+barW, r.h), color.RGBA{0xf0, 0xf0, 0xe0, 0xff})

	// A ball on a Lissajous path.
	rad := max(3, r.h/10)
	cx := r.w/2 + int(float64(r.w/2-rad)*math.Sin(2*math.Pi*secs/3.1))
	cy := r.h/2 + int(float64(r.h/2-rad)*math.Sin(2*math.Pi*secs/1.9))
	r.disc(cx, cy, rad, color.RGBA{0xe0, 0x30, 0x30, 0xff})

	// Text on darkened boxes so it stays legible over any background.
	pad := 4 * r.small
	r.label(pad, pad, r.name, r.small)

	clock := now.Format("15:04:05.000")
	num := "frame " + strconv.FormatUint(seq, 10)
	boxW := max(len(clock)*glyphW*r.big, len(num)*glyphW*r.small) + 2*pad
	boxH := glyphH*r.big + glyphH*r.small + 3*pad
	box := image.Rect(pad, r.h-pad-boxH, pad+boxW, r.h-pad)
	r.darken(box)
	r.text1(box.Min.X+pad, box.Min.Y+pad, clock, r.big, color.RGBA{0xff, 0xff, 0xff, 0xff})
	r.text1(box.Min.X+pad, box.Min.Y+2*pad+glyphH*r.big, num, r.small, color.RGBA{0xc8, 0xe6, 0xff, 0xff})
	return r.img
}

// label draws s at scale on its own darkened box with top-left corner (x, y).
func (r *renderer) label(x, y int, s string, scale int) {
	pad := 2 * scale
	r.darken(image.Rect(x, y, x+len(s)*glyphW*scale+2*pad, y+glyphH*scale+2*pad))
	r.text1(x+pad, y+pad, s, scale, color.RGBA{0xff, 0xff, 0xff, 0xff})
}

// text1 draws one line of s with basicfont, each font pixel as a scale x scale square,
// with the top-left of the text cell at (x, y).
func (r *renderer) text1(x, y int, s string, scale int, c color.RGBA) {
	w := len(s) * glyphW
	if r.text == nil || r.text.Rect.Dx() < w {
		r.text = image.NewAlpha(image.Rect(0, 0, w, glyphH))
	}
	clear(r.text.Pix)
	d := font.Drawer{
		Dst:  r.text,
		Src:  image.Opaque,
		Face: basicfont.Face7x13,
		Dot:  fixed.P(0, glyphAscent),
	}
	d.DrawString(s)
	for ty := 0; ty < glyphH; ty++ {
		for tx := 0; tx < w; tx++ {
			if r.text.Pix[ty*r.text.Stride+tx] >= 0x80 {
				px, py := x+tx*scale, y+ty*scale
				r.fill(image.Rect(px, py, px+scale, py+scale), c)
			}
		}
	}
}

// fill paints rect (clipped to the picture) with c.
func (r *renderer) fill(rect image.Rectangle, c color.RGBA) {
	rect = rect.Intersect(r.img.Rect)
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		row := r.img.Pix[y*r.img.Stride:]
		for x := rect.Min.X; x < rect.Max.X; x++ {
			row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = c.R, c.G, c.B, 0xff
		}
	}
}

// darken dims rect (clipped to the picture) to a quarter of its brightness.
func (r *renderer) darken(rect image.Rectangle) {
	rect = rect.Intersect(r.img.Rect)
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		row := r.img.Pix[y*r.img.Stride:]
		for x := rect.Min.X; x < rect.Max.X; x++ {
			row[4*x] >>= 2
			row[4*x+1] >>= 2
			row[4*x+2] >>= 2
		}
	}
}

// disc paints a filled circle (clipped to the picture).
func (r *renderer) disc(cx, cy, rad int, c color.RGBA) {
	rect := image.Rect(cx-rad, cy-rad, cx+rad+1, cy+rad+1).Intersect(r.img.Rect)
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		row := r.img.Pix[y*r.img.Stride:]
		for x := rect.Min.X; x < rect.Max.X; x++ {
			if dx, dy := x-cx, y-cy; dx*dx+dy*dy <= rad*rad {
				row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = c.R, c.G, c.B, 0xff
			}
		}
	}
}

// hsv converts hue (degrees), saturation and value (0..1) to an opaque colour.
func hsv(h, s, v float64) color.RGBA {
	c := v * s
	hp := h / 60
	x := c * (1 - math.Abs(math.Mod(hp, 2)-1))
	var r, g, b float64
	switch {
	case hp < 1:
		r, g = c, x
	case hp < 2:
		r, g = x, c
	case hp < 3:
		g, b = c, x
	case hp < 4:
		g, b = x, c
	case hp < 5:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := v - c
	return color.RGBA{uint8((r + m) * 255), uint8((g + m) * 255), uint8((b + m) * 255), 0xff}
}
