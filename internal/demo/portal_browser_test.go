package demo

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestPortalInBrowser drives headless Chromium at a phone's 360x740 through
// the demo's phone page: log in, the tiles' snapshots load, a tap plays the
// live stream (its frames change), the page fits the screen, the data used
// in this session grows, a hidden tab stops the stream, and silly URLs get
// a clear answer without disturbing the stream. Skipped, saying so, without
// Chromium unless PORTHOLE_BROWSER=require.
func TestPortalInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	bin := findChromium(t)
	p := startDemo(t, freePort(t), false)
	if p.Portal == "" {
		t.Fatalf("the demo printed no phone page URL:\n%s", strings.Join(p.lines, "\n"))
	}
	browser := startChromium(t, bin)
	tab := newTab(t, browser)
	if err := chromedp.Do(tab, chromedp.EmulateViewport(360, 740, chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)); err != nil {
		t.Fatal(err)
	}
	loginInBrowser(t, tab, p.Portal, p.Viewer, p.Password)

	// Tiles: every snapshot loaded.
	waitFor(t, tab, `location.pathname === '/' && document.querySelectorAll('.tile img').length > 0 &&
		[...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth > 0)`)
	if w := evaluate[float64](t, tab, `document.querySelector('.tile img').naturalWidth`); w > 320 {
		t.Errorf("a tile's snapshot is %v px wide; tiles ask for 320", w)
	}
	if w := evaluate[float64](t, tab, `document.documentElement.scrollWidth`); w > 360 {
		t.Errorf("the page is %v px wide on a 360 px screen: it scrolls sideways", w)
	}
	shot := screenshot(t, tab)
	if b := shot.Bounds(); b.Dx() != 360 || b.Dy() != 740 {
		t.Errorf("screenshot %v, want 360x740", b)
	}
	if share := colourful(shot); share < 0.05 {
		t.Errorf("the tiles show no picture: %.1f%% colourful pixels", 100*share)
	}
	// The session's figure is on the page.
	waitFor(t, tab, `+document.getElementById('usage').dataset.session > 0`)
	used := evaluate[float64](t, tab, `+document.getElementById('usage').dataset.session`)
	if txt := evaluate[string](t, tab, `document.getElementById('usage').textContent`); !strings.Contains(txt, "Data used this session") {
		t.Errorf("usage line %q", txt)
	}

	// Tap a tile: the live stream at the data saver preset.
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`.tile .shot`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, tab, `!document.getElementById('live').hidden && document.getElementById('live-img').naturalWidth > 0`)
	if q := evaluate[string](t, tab, `document.getElementById('live-img').src`); !strings.Contains(q, "width=320&fps=2") {
		t.Errorf("the live stream %s is not at the data saver preset", q)
	}
	first := screenshot(t, tab)
	if share := colourful(first); share < 0.1 {
		t.Errorf("the live picture is not on the screen: %.1f%% colourful", 100*share)
	}
	moved := func(what string) {
		t.Helper()
		start := time.Now()
		for differ(first, screenshot(t, tab)) <= 0.001 {
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%s: the live picture did not move in %v", what, time.Since(start))
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	moved("live")
	// The figure shows in the live view too.
	waitFor(t, tab, `document.getElementById('live-usage').textContent.includes('Data used this session')`)
	waitFor(t, tab, `+document.getElementById('usage').dataset.session > `+strconv.FormatFloat(used, 'f', 0, 64))

	// Bad input: clear answers; the stream is unaffected.
	for url, want := range map[string]string{
		"/cam/camera-web/mjpeg?fps=0":              "400 fps",
		"/cam/camera-web/mjpeg?width=100000":       "400 width",
		"/cam/nosuch/mjpeg":                        "404 No camera",
		"/cam/camera-web/snapshot.jpg?width=abc":   "400 width",
		"/api/usage?x=" + strings.Repeat("a", 100): "200 {",
	} {
		got, err := chromedp.Run(tab, chromedp.Evaluate[string](`fetch('`+url+`').then(r => r.text().then(t => r.status + ' ' + t))`, chromedp.EvalAwaitPromise))
		if err != nil || !strings.HasPrefix(got, strings.Fields(want)[0]) || !strings.Contains(got, strings.Fields(want)[1]) {
			t.Errorf("%s: %q (%v), want %q...", url, got, err, want)
		}
	}
	first = screenshot(t, tab)
	moved("after the bad requests")

	// A hidden tab ends the stream's request.
	evaluate[any](t, tab, `Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
		document.dispatchEvent(new Event('visibilitychange')); null`)
	if src := evaluate[any](t, tab, `document.getElementById('live-img').getAttribute('src')`); src != nil {
		t.Errorf("the stream still runs in a hidden tab: src %v", src)
	}
	evaluate[any](t, tab, `Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});
		document.dispatchEvent(new Event('visibilitychange')); null`)
	waitFor(t, tab, `!!document.getElementById('live-img').getAttribute('src')`)
}
