package httpgw

import (
	"bytes"
	"context"
	"errors"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"golang.org/x/image/draw"
)

// Ten viewers asking for the same width of one frame cost one resize.
func TestResizeOncePerWidth(t *testing.T) {
	fr, err := newFrame(testJPEG(t, 640, 360, 40), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rz := newResizer(2)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			b, err := fr.sized(context.Background(), rz, 320, true)
			if err != nil {
				t.Error(err)
				return
			}
			if c, err := jpeg.DecodeConfig(bytes.NewReader(b)); err != nil || c.Width != 320 || c.Height != 180 {
				t.Errorf("resized %dx%d, %v", c.Width, c.Height, err)
			}
		})
	}
	wg.Wait()
	if n := rz.count.Load(); n != 1 {
		t.Errorf("%d resizes for 10 viewers of one width, want 1", n)
	}
	if b, _ := fr.sized(context.Background(), rz, 640, false); !bytes.Equal(b, fr.jpeg) {
		t.Error("width equal to the frame's was resized")
	}
}

// With every slot busy a stream viewer skips the frame; a snapshot waits.
func TestResizeBusy(t *testing.T) {
	fr, err := newFrame(testJPEG(t, 64, 64, 40), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rz := newResizer(1)
	rz.sem <- struct{}{} // the one slot is taken
	if _, err := fr.sized(context.Background(), rz, 32, false); !errors.Is(err, errBusy) {
		t.Fatalf("busy: %v, want errBusy", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := fr.sized(ctx, rz, 32, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting snapshot: %v", err)
	}
	<-rz.sem
	if b, err := fr.sized(context.Background(), rz, 32, false); err != nil || len(b) == 0 {
		t.Fatalf("free slot: %v", err)
	}
	if len(rz.sem) != 0 {
		t.Error("slot not given back")
	}
}

// BenchmarkResize measures the CPU of one 640->320 px decode-scale-encode of
// the simulated camera's picture, with each scaler.
func BenchmarkResize(b *testing.B) {
	cam := camsim.New(camsim.Config{Width: 640, Height: 360})
	defer cam.Close()
	src, err := cam.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range []struct {
		name string
		s    draw.Scaler
	}{{"ApproxBiLinear", draw.ApproxBiLinear}, {"CatmullRom", draw.CatmullRom}} {
		b.Run(s.name, func(b *testing.B) {
			var out []byte
			for b.Loop() {
				if out, err = resizeWith(s.s, src, 320, 640, 360); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/frame")
			b.ReportMetric(float64(len(out)), "bytes/frame")
		})
	}
}

// BenchmarkMJPEGData measures what a viewer receives per minute at the phone
// page's presets, through the real handler from a simulated 640x360 camera
// at 10 fps: every byte of the multipart response is counted. One iteration
// is one frame; bytes/min = bytes per frame * fps * 60.
func BenchmarkMJPEGData(b *testing.B) {
	cam := camsim.New(camsim.Config{Width: 640, Height: 360, FPS: 10})
	srv := httptest.NewServer(cam.Handler())
	defer func() { srv.Close(); cam.Close() }()
	for _, p := range []struct {
		name  string
		query string
		fps   float64
	}{{"320px@2fps", "?width=320&fps=2", 2}, {"640px@10fps", "?fps=10", 10}, {"320px@10fps", "?width=320", 10}} {
		b.Run(p.name, func(b *testing.B) {
			g := start(b, Config{MJPEGPath: "/stream.mjpg"}, strings.TrimPrefix(srv.URL, "http://"))
			r := g.req(b, "GET", MJPEGPath+p.query, "")
			r.SetBasicAuth("alice", "alice-pw")
			resp, err := g.client.Do(r)
			if err != nil {
				b.Fatal(err)
			}
			defer resp.Body.Close()
			_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			cr := &countReader{r: resp.Body}
			mr := multipart.NewReader(cr, params["boundary"])
			next := func() {
				part, err := mr.NextPart()
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, part)
			}
			next() // headers and the first frame
			start := cr.n
			for b.Loop() {
				next()
			}
			perFrame := float64(cr.n-start) / float64(b.N)
			b.ReportMetric(perFrame, "bytes/frame")
			b.ReportMetric(perFrame*p.fps*60, "bytes/min")
		})
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var _ http.Handler = (*scriptedCam)(nil)
