package demo

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemoLoginInBrowser drives headless Chromium as a viewer would: open the
// printed https:// URL (a self-signed certificate, which the browser is told to
// accept), land on Porthole's login page, log in with the printed viewer and
// password, and see the camera's moving picture; through the relay and through
// the agent's own (direct) listener. A wrong password gets the login page again
// with its error and no picture.
//
// The picture is checked on screenshots: the page is dark and the picture a
// bright colour gradient, so without it almost no pixel is colourful; and two
// screenshots taken apart differ, since the picture moves. Skipped, saying so,
// when no Chromium is installed, unless PORTHOLE_BROWSER=require (.ci/run
// installs Debian's and sets it); PORTHOLE_DEMO_PORT picks the public port (to
// see the test fail on a port browsers refuse, such as 10080).
func TestDemoLoginInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	bin := findChromium(t)
	port := freePort(t)
	if p, err := strconv.Atoi(os.Getenv("PORTHOLE_DEMO_PORT")); err == nil {
		port = uint16(p)
	}
	p := startDemo(t, port, true)
	browser := startChromium(t, bin)

	t.Run("relay", func(t *testing.T) { watchAfterLogin(t, browser, p.URL, p.Viewer, p.Password) })
	t.Run("direct", func(t *testing.T) { watchAfterLogin(t, browser, p.Direct, p.Viewer, p.Password) })
	t.Run("wrong password", func(t *testing.T) {
		tab := newTab(t, browser)
		loginInBrowser(t, tab, p.URL, p.Viewer, p.Password+"x")
		got := waitFor(t, tab, `(() => { const e = document.querySelector('.err');
			return location.pathname === '/.porthole/login' && e ? e.textContent : ''; })()`)
		if !strings.Contains(got, "wrong name or password") {
			t.Errorf("login page error %q, want \"wrong name or password\"", got)
		}
		if n := evaluate[int](t, tab, `document.images.length`); n != 0 {
			t.Errorf("the login page after a wrong password has %d images; want no picture", n)
		}
		if share := colourful(screenshot(t, tab)); share >= 0.15 {
			t.Errorf("the login page after a wrong password is %.0f%% colourful: the picture shows?", 100*share)
		}
	})
}

// watchAfterLogin logs in at url and checks that the camera's picture is on
// the page and moves.
func watchAfterLogin(t *testing.T, browser context.Context, url, name, password string) {
	tab := newTab(t, browser)
	loginInBrowser(t, tab, url, name, password)
	// The MJPEG image has its first frame: naturalWidth is set.
	waitFor(t, tab, `location.pathname === '/' && document.images.length > 0 && document.images[0].naturalWidth > 0`)
	first := screenshot(t, tab)
	share := colourful(first)
	t.Logf("%s in Chromium after the login: %.0f%% of the screenshot is colourful", url, 100*share)
	if share < 0.15 {
		t.Errorf("the camera picture is not on the page at %s: %.1f%% colourful pixels", url, 100*share)
	}
	// The picture moves: some later screenshot differs (10 frames a second,
	// with a frame counter and a clock). Polled with a deadline rather than
	// one sleep, so a slow machine doesn't fail it.
	start := time.Now()
	for {
		if d := differ(first, screenshot(t, tab)); d > 0.001 {
			t.Logf("%s: a screenshot %v later differs in %.1f%% of its pixels", url, time.Since(start).Round(time.Millisecond), 100*d)
			return
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the picture at %s did not move in %v", url, time.Since(start))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// loginInBrowser opens url, expects Porthole's login page, and sends the form.
func loginInBrowser(t *testing.T, tab context.Context, url, name, password string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	loc, err := chromedp.Run(tab, chromedp.Location())
	if err != nil || !strings.Contains(loc, "/.porthole/login") {
		t.Fatalf("opening %s landed on %q (%v), want the login page", url, loc, err)
	}
	if err := chromedp.Do(tab,
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.SendKeys(chromedp.ID("password"), password),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
	); err != nil {
		t.Fatalf("login form at %s: %v", loc, err)
	}
}

// waitFor evaluates expr until it is truthy and returns it as a string
// (true becomes "true"). Errors while the page navigates are retried.
func waitFor(t *testing.T, tab context.Context, expr string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	var lastErr error
	for time.Now().Before(deadline) {
		v, err := chromedp.Run(tab, chromedp.Evaluate[any](expr))
		lastErr = err
		if err == nil {
			last = fmt.Sprint(v)
			if v != nil && v != false && v != "" && v != 0.0 {
				return last
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	loc, _ := chromedp.Run(tab, chromedp.Location())
	t.Fatalf("at %s, %s stayed %q (%v)", loc, expr, last, lastErr)
	return ""
}

func evaluate[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// screenshot captures the tab as RGBA pixels (the checks below read them
// directly: image.At per pixel is slow under -race).
func screenshot(t *testing.T, tab context.Context) *image.RGBA {
	t.Helper()
	b, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if rgba, ok := img.(*image.RGBA); ok {
		return rgba
	}
	rgba := image.NewRGBA(img.Bounds())
	draw.Draw(rgba, rgba.Bounds(), img, img.Bounds().Min, draw.Src)
	return rgba
}

// colourful is the share of img's pixels (every other one each way) whose
// channels differ by more than 60 of 255: the test picture's gradient.
func colourful(img *image.RGBA) float64 {
	var n, all int
	eachPixel(img, func(p []uint8) {
		if max(p[0], p[1], p[2])-min(p[0], p[1], p[2]) > 60 {
			n++
		}
		all++
	})
	return float64(n) / float64(all)
}

// differ is the share of pixels (every other one each way) where a and b
// differ by more than 16 of 255 in some channel; 1 when their sizes differ.
func differ(a, b *image.RGBA) float64 {
	if a.Bounds() != b.Bounds() {
		return 1
	}
	var n, all int
	r := a.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			off := a.PixOffset(x, y)
			for c := off; c < off+3; c++ {
				if max(a.Pix[c], b.Pix[c])-min(a.Pix[c], b.Pix[c]) > 16 {
					n++
					break
				}
			}
			all++
		}
	}
	return float64(n) / float64(all)
}

// eachPixel calls f with the R, G, B, A bytes of every other pixel each way.
func eachPixel(img *image.RGBA, f func(p []uint8)) {
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y += 2 {
		for x := r.Min.X; x < r.Max.X; x += 2 {
			off := img.PixOffset(x, y)
			f(img.Pix[off : off+4])
		}
	}
}

func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("PORTHOLE_BROWSER") == "require" {
		t.Fatal("no chromium on PATH and PORTHOLE_BROWSER=require")
	}
	t.Skip("BROWSER TEST SKIPPED: no chromium on PATH (apt-get install chromium)")
	return ""
}

// lockedBuffer collects Chromium's output, written by chromedp's goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startChromium starts one headless Chromium for the test (a quiet, offline
// run; no sandbox, since tests may run as root; the demo's self-signed
// certificate accepted) and returns its context; it ends with the test.
func startChromium(t *testing.T, bin string) context.Context {
	out := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("ignore-certificate-errors", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(900, 700), chromedp.CombinedOutput(out))
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		bcancel()
		acancel()
		cancel()
		if t.Failed() {
			t.Logf("chromium said:\n%s", out)
		}
	})
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v\n%s", bin, err, out)
	}
	return bctx
}

// newTab opens a tab in a fresh browser context (no cookies of other tabs).
func newTab(t *testing.T, browser context.Context) context.Context {
	tab, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	return tab
}
