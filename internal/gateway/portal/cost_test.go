package portal

import (
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
)

// TestPresetDataCost measures what each preset of the phone page costs in
// mobile data against the simulated camera (640x360 and 1280x720 at 10
// fps), from the bytes of whole multipart frames as the viewer receives
// them, and logs MB per minute and per hour (the README quotes these; the
// 720p camera only with -v, where the figures are read).
// Tiles cost one 320 px snapshot per camera every TileInterval. The figures
// must grow from data saver to full.
func TestPresetDataCost(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	for _, size := range []struct{ w, h int }{{640, 360}, {1280, 720}} {
		if size.w > 640 && !testing.Verbose() {
			continue // slow under -race (720p resizes); -v to see the figures
		}
		t.Run(fmt.Sprintf("%dx%d", size.w, size.h), func(t *testing.T) {
			const camFPS = 10
			cam := camsim.New(camsim.Config{Width: size.w, Height: size.h, FPS: camFPS})
			srv := httptest.NewServer(cam.Handler())
			t.Cleanup(func() { srv.Close(); cam.Close() })
			s := startSiteFor(t, strings.TrimPrefix(srv.URL, "http://"))
			alice := s.login(t, "alice")

			// Tiles.
			var snap int
			for range 3 {
				_, b := get(t, alice, s.base+fmt.Sprintf("/cam/yard/snapshot.jpg?width=%d", TileWidth))
				snap += len(b)
			}
			tilesPerMin := float64(snap) / 3 * float64(time.Minute/(5*time.Second))
			t.Logf("%dx%d camera: tiles page %.2f MB/min per camera (a %d px snapshot every 5 s)", size.w, size.h, tilesPerMin/1e6, TileWidth)

			var last float64
			for _, p := range Presets {
				fps := float64(camFPS)
				if strings.Contains(p.Query, "fps=") {
					fmt.Sscanf(p.Query[strings.Index(p.Query, "fps=")+4:], "%g", &fps)
					fps = min(fps, camFPS)
				}
				perFrame := framesBytes(t, alice, s.base+"/cam/yard/mjpeg?"+p.Query, 4)
				perMin := perFrame * fps * 60
				t.Logf("%dx%d camera: preset %-6s (%s): %.1f kB a frame at %g fps = %.2f MB/min, %.0f MB/h, %.0f kbit/s",
					size.w, size.h, p.ID, p.Detail, perFrame/1e3, fps, perMin/1e6, perMin*60/1e6, perMin*8/60/1e3)
				if perMin <= last {
					t.Errorf("preset %s costs %.0f B/min, no more than the one before (%.0f)", p.ID, perMin, last)
				}
				last = perMin
			}
		})
	}
}

// framesBytes reads n frames of an MJPEG stream after the first and returns
// the mean bytes per frame on the wire (part headers and boundary included).
func framesBytes(t *testing.T, c *http.Client, url string, n int) float64 {
	t.Helper()
	// The stream's own bound, not the client's 20 s: under -race on a busy
	// machine, resizing 720p frames is slow.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	nc := *c
	nc.Timeout = 0
	resp, err := nc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cr := &countingReader{r: resp.Body}
	_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	mr := multipart.NewReader(cr, params["boundary"])
	next := func() {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		io.Copy(io.Discard, p)
	}
	next()
	start := cr.n
	for range n {
		next()
	}
	return float64(cr.n-start) / float64(n)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
