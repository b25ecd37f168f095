package httpgw

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
)

func newMeter(t *testing.T, caps map[string]int64) *meter.Meter {
	t.Helper()
	m, err := meter.New(meter.Config{Caps: caps})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMeterCountsViewerBytes: what a viewer receives is counted to them on
// this service as it moves, the bytes of the request that logged them in
// included, and matches what the connection moved at its close.
func TestMeterCountsViewerBytes(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	m := newMeter(t, nil)
	g := start(t, Config{MJPEGPath: "/stream.mjpg", Meter: m}, cam.target)
	resp, body := g.do(t, func() *http.Request {
		r := g.req(t, "GET", SnapshotPath, "")
		r.SetBasicAuth("alice", "alice-pw")
		return r
	}())
	if resp.StatusCode != 200 || len(body) < 100 {
		t.Fatalf("snapshot: %d, %d bytes", resp.StatusCode, len(body))
	}
	// The counter moves just after the write; the client may read first.
	waitFor(t, "the snapshot counted", func() bool { return m.Viewer("alice").BytesOut >= int64(len(body)) })
	u := m.Viewer("alice")
	if u.BytesOut < int64(len(body)) || u.BytesIn < 50 || len(u.Services) != 1 || u.Services[0].Service != "cam" {
		t.Fatalf("after a %d-byte snapshot alice's figures are %+v", len(body), u)
	}
	// A stream counts while it runs, not only at its end.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := mjpegFrames(t, g.live(t, ctx, MJPEGPath))
	before := m.Viewer("alice").BytesOut
	for range 5 {
		f.skip()
	}
	if after := m.Viewer("alice").BytesOut; after-before < 5*100 {
		t.Errorf("5 frames added %d bytes to alice's figure", after-before)
	}
	if bob := m.Viewer("bob"); bob.BytesOut != 0 {
		t.Errorf("bob got %d bytes counted", bob.BytesOut)
	}
	// The audit's close event and the meter agree once every conn closed.
	cancel()
	g.stop()
	var sum int64
	for _, l := range strings.Split(g.audit.String(), "\n") {
		if strings.Contains(l, "msg=close") {
			sum += int64(auditInt(t, l, "bytes_out"))
		}
	}
	if got := m.Viewer("alice").BytesOut; got != sum {
		t.Errorf("meter %d bytes out, audit close events %d:\n%s", got, sum, g.audit.String())
	}
}

func auditInt(t *testing.T, line, key string) int {
	t.Helper()
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			var n int
			for _, c := range v {
				n = n*10 + int(c-'0')
			}
			return n
		}
	}
	t.Fatalf("no %s in %q", key, line)
	return 0
}

// TestDailyCap: a viewer who reaches the cap has their stream ended, gets
// 429 with when it resets for anything new, and the audit log says so; other
// viewers go on.
func TestDailyCap(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	m := newMeter(t, map[string]int64{"alice": 60_000})
	g := start(t, Config{MJPEGPath: "/stream.mjpg", Meter: m}, cam.target)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := g.live(t, ctx, MJPEGPath)
	f := mjpegFrames(t, resp)
	// The stream ends by itself once the cap is reached.
	var err error
	for range 10_000 {
		var p io.Reader
		if p, err = f.mr.NextPart(); err != nil {
			break
		}
		io.Copy(io.Discard, p)
	}
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("the stream did not end at the cap: %v", err)
	}
	if over, _ := m.Over("alice"); !over {
		t.Fatalf("the stream ended but alice is not over the cap: %+v", m.Viewer("alice"))
	}
	for _, path := range []string{MJPEGPath, SnapshotPath + "?width=100", "/"} {
		r := g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "alice-pw")
		resp, body := g.do(t, r)
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "daily cap") || !strings.Contains(body, "starts again at") ||
			resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s over the cap: %d %q (Retry-After %q)", path, resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
	// bob has no cap.
	r := g.req(t, "GET", SnapshotPath, "")
	r.SetBasicAuth("bob", "bob-pw")
	if resp, body := g.do(t, r); resp.StatusCode != 200 {
		t.Errorf("bob's snapshot: %d %s", resp.StatusCode, body)
	}
	waitFor(t, "the audit lines", func() bool {
		a := g.audit.String()
		return strings.Contains(a, "msg=cap_reached") || strings.Contains(a, "reason=daily_cap")
	})
	if a := g.audit.String(); !strings.Contains(a, "reason=daily_cap") {
		t.Errorf("no live_end with reason=daily_cap in the audit log:\n%s", a)
	}
}

// TestLiveTimeout: a stream ends after LiveTimeout (the audit log says
// why); a new one can start.
func TestLiveTimeout(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	const timeout = 500 * time.Millisecond
	g := start(t, Config{MJPEGPath: "/stream.mjpg", LiveTimeout: timeout}, cam.target)
	for range 2 {
		began := time.Now()
		f := mjpegFrames(t, g.live(t, context.Background(), MJPEGPath+"?fps=5"))
		var err error
		for err == nil {
			var p io.Reader
			if p, err = f.mr.NextPart(); err == nil {
				io.Copy(io.Discard, p)
			}
		}
		if d := time.Since(began); d < timeout {
			t.Errorf("the stream ended after %v, before live_timeout %v: %v", d, timeout, err)
		}
	}
	waitFor(t, "live_end", func() bool { return strings.Count(g.audit.String(), "reason=live_timeout") == 2 })
}

// TestSiteServeLive: a Site (the phone page) gets the viewer by ViewerOf and
// serves another service's live views in process; the bytes count on the
// Site's service, and the camera service's viewers list holds.
func TestSiteServeLive(t *testing.T) {
	cam := newLiveCam(t, camsim.Config{Width: 64, Height: 64, FPS: 20})
	var d net.Dialer
	camGW := start(t, Config{MJPEGPath: "/stream.mjpg", Viewers: []string{"alice"}, DialContext: d.DialContext}, cam.target)
	m := newMeter(t, nil)
	var site http.HandlerFunc = func(w http.ResponseWriter, r *http.Request) {
		viewer, _, ok := ViewerOf(r)
		if !ok {
			http.Error(w, "no viewer", 500)
			return
		}
		switch r.URL.Path {
		case "/who":
			io.WriteString(w, viewer)
		case "/snap":
			camGW.h.ServeLive(w, r, false)
		case "/stream":
			camGW.h.ServeLive(w, r, true)
		default:
			http.NotFound(w, r)
		}
	}
	g := start(t, Config{Service: "portal", Site: site, Meter: m}, "")
	get := func(user, path string) (*http.Response, string) {
		r := g.req(t, "GET", path, "")
		r.SetBasicAuth(user, user+"-pw")
		return g.do(t, r)
	}
	if resp, body := get("alice", "/who"); resp.StatusCode != 200 || body != "alice" {
		t.Errorf("/who: %d %q", resp.StatusCode, body)
	}
	resp, body := get("alice", "/snap?width=32")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("/snap: %d %q", resp.StatusCode, body)
	}
	waitFor(t, "the snapshot counted", func() bool { return m.Viewer("alice").BytesOut >= int64(len(body)) })
	if u := m.Viewer("alice"); len(u.Services) != 1 || u.Services[0].Service != "portal" {
		t.Errorf("alice's figures %+v: want the snapshot counted on portal", u)
	}
	if resp, body := get("bob", "/snap"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob, not on the camera's viewers list: %d %q", resp.StatusCode, body)
	}
	if resp, body := get("alice", "/stream?fps=0"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "fps") {
		t.Errorf("fps=0: %d %q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := g.req(t, "GET", "/stream?fps=5&width=32", "").WithContext(ctx)
	r.SetBasicAuth("alice", "alice-pw")
	sresp, err := g.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	f := mjpegFrames(t, sresp)
	if sz := f.next(); sz.X != 32 {
		t.Errorf("frame width %d, want 32", sz.X)
	}
}
