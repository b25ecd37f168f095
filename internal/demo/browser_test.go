package demo

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestDemoPageInBrowser opens the URL the demo prints in headless Chromium and
// checks, on the screenshot, that the camera's MJPEG picture is on the page: the
// page is dark and the picture is a bright colour gradient, so without it almost no
// pixel is colourful. Skipped, saying so, when no Chromium is installed, unless
// PORTHOLE_BROWSER=require (.ci/run installs Debian's and sets it); PORTHOLE_DEMO_PORT picks the public port (to see the test
// fail on a port browsers refuse, such as 10080).
func TestDemoPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	var bin string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if os.Getenv("PORTHOLE_BROWSER") == "require" {
			t.Fatal("no chromium on PATH and PORTHOLE_BROWSER=require")
		}
		t.Skip("BROWSER TEST SKIPPED: no chromium on PATH (apt-get install chromium)")
	}
	port := freePort(t)
	if p, err := strconv.Atoi(os.Getenv("PORTHOLE_DEMO_PORT")); err == nil {
		port = uint16(p)
	}
	url := startDemo(t, port)

	dir := t.TempDir()
	shot := filepath.Join(dir, "page.png")
	bctx, bcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer bcancel()
	// The flags of a quiet, offline headless run (no sandbox: tests may run as root).
	out, err := exec.CommandContext(bctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=900,700",
		"--virtual-time-budget=3000", "--screenshot="+shot, url).CombinedOutput()
	f, ferr := os.Open(shot)
	if ferr != nil {
		t.Fatalf("chromium made no screenshot of %s (%v): %s", url, err, out)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	var colourful, all int
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			hi, lo := max(r, g, bl)>>8, min(r, g, bl)>>8
			if hi-lo > 60 {
				colourful++
			}
			all++
		}
	}
	share := float64(colourful) / float64(all)
	t.Logf("%s in Chromium: %.0f%% of the screenshot is colourful", url, 100*share)
	if share < 0.15 {
		t.Errorf("the camera picture is not on the page at %s: %.1f%% colourful pixels (chromium said: %s)", url, 100*share, out)
	}
}
