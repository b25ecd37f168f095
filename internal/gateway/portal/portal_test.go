package portal

import (
	"context"
	"encoding/json"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
	"github.com/porthole-dev/porthole/internal/gateway"
	"github.com/porthole-dev/porthole/internal/gateway/access"
	"github.com/porthole-dev/porthole/internal/gateway/httpgw"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
)

// site is a portal behind httpgw's login on loopback, with two cameras:
// "yard" (an http service with MJPEG, every viewer) and "door" (rtsp, only
// alice), and "garage" (http, only alice).
type site struct {
	base  string
	meter *meter.Meter
}

func startSite(t *testing.T) *site {
	t.Helper()
	cam := camsim.New(camsim.Config{Width: 160, Height: 90, FPS: 10})
	srv := httptest.NewServer(cam.Handler())
	t.Cleanup(func() { srv.Close(); cam.Close() })
	return startSiteFor(t, strings.TrimPrefix(srv.URL, "http://"))
}

// startSiteFor is startSite with the cameras at target (host:port).
func startSiteFor(t *testing.T, target string) *site {
	t.Helper()

	hashes := map[string]string{}
	for _, v := range []string{"alice", "bob"} {
		h, err := access.HashPassword(v + "-pw")
		if err != nil {
			t.Fatal(err)
		}
		hashes[v] = h
	}
	store, err := access.New(access.Config{Viewers: hashes})
	if err != nil {
		t.Fatal(err)
	}
	m, err := meter.New(meter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	camera := func(name string, viewers []string) *httpgw.Handler {
		h, err := httpgw.New(httpgw.Config{Service: name, Target: target, Auth: store, Viewers: viewers, PlainHTTP: true,
			MJPEGPath: "/stream.mjpg", DialContext: d.DialContext, Meter: m, LiveTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	p, err := New(Config{Meter: m, Cameras: []Camera{
		{Name: "yard", Live: camera("yard", nil)},
		{Name: "door", RTSPPort: 10322, Viewers: []string{"alice"}},
		{Name: "garage", Live: camera("garage", []string{"alice"})},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ph, err := httpgw.New(httpgw.Config{Service: "portal", Site: p, Auth: store, PlainHTTP: true, Meter: m})
	if err != nil {
		t.Fatal(err)
	}
	anyRule, _ := gateway.ParsePolicy([]string{"any"})
	l, err := gateway.Listen(gateway.Config{Service: "portal", Handler: ph, Policy: anyRule, Addr: "127.0.0.1:0",
		Dial: func(context.Context, netip.AddrPort) (gateway.Conn, error) { return nil, net.ErrClosed }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Serve(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		ph.Close()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		l.Shutdown(sctx)
	})
	return &site{base: "http://" + l.Addr().String(), meter: m}
}

// login logs name in with the form and returns a client with the session.
func (s *site) login(t *testing.T, name string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	r, _ := http.NewRequest("POST", s.base+httpgw.LoginPath, strings.NewReader(url.Values{"name": {name}, "password": {name + "-pw"}, "next": {"/"}}.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", s.base)
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/" {
		t.Fatalf("login as %s ended at %s with %d", name, resp.Request.URL, resp.StatusCode)
	}
	return c
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPageTilesAndHeaders(t *testing.T) {
	s := startSite(t)
	// No login: browsers go to the form, scripts get 401.
	noJar := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, _ := http.NewRequest("GET", s.base+"/", nil)
	r.Header.Set("Accept", "text/html")
	if resp, err := noJar.Do(r); err != nil || resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), httpgw.LoginPath) {
		t.Errorf("the page without login: %v %v", resp, err)
	}
	if resp, _ := get(t, noJar, s.base+"/api/usage"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/api/usage without login: %d", resp.StatusCode)
	}

	alice := s.login(t, "alice")
	resp, body := get(t, alice, s.base+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != CSP {
		t.Fatalf("page: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	host := strings.TrimPrefix(s.base, "http://")
	hostOnly, _, _ := net.SplitHostPort(host)
	for _, want := range []string{`data-name="yard"`, `data-name="garage"`, `data-name="door"`,
		`src="/cam/yard/snapshot.jpg?width=320"`, `data-mjpeg="/cam/yard/mjpeg"`,
		"rtsps://" + hostOnly + ":10322/door", `data-live-timeout="60"`, `data-query="width=320&amp;fps=2"`,
		`<script src="/portal.js"`, `name="viewport"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") || strings.Contains(body, "http://") && strings.Contains(body, "src=\"http") {
		t.Error("the page has inline script or style, or an external asset: the CSP would block it")
	}
	bob := s.login(t, "bob")
	_, body = get(t, bob, s.base+"/")
	if !strings.Contains(body, `data-name="yard"`) || strings.Contains(body, "garage") || strings.Contains(body, "door") {
		t.Errorf("bob's page shows cameras he may not watch, or not yard:\n%s", body)
	}
	for _, p := range []string{"/portal.js", "/portal.css"} {
		if resp, b := get(t, alice, s.base+p); resp.StatusCode != 200 || len(b) < 100 {
			t.Errorf("%s: %d, %d bytes", p, resp.StatusCode, len(b))
		}
	}
}

func TestLiveThroughPortal(t *testing.T) {
	s := startSite(t)
	alice := s.login(t, "alice")
	resp, body := get(t, alice, s.base+"/cam/yard/snapshot.jpg?width=80")
	if resp.StatusCode != 200 {
		t.Fatalf("snapshot: %d %s", resp.StatusCode, body)
	}
	img, err := jpeg.Decode(strings.NewReader(body))
	if err != nil || img.Bounds().Dx() != 80 {
		t.Fatalf("snapshot: %v, %v", err, img)
	}

	// Bad input: a clear answer each, and the others unaffected.
	bob := s.login(t, "bob")
	for _, c := range []struct {
		who    *http.Client
		path   string
		status int
		says   string
	}{
		{alice, "/cam/yard/mjpeg?fps=0", 400, "fps"},
		{alice, "/cam/yard/mjpeg?width=100000", 400, "width"},
		{alice, "/cam/yard/snapshot.jpg?width=100000", 400, "width"},
		{alice, "/cam/nosuch/mjpeg", 404, `No camera "nosuch"`},
		{alice, "/cam/door/snapshot.jpg", 404, "RTSP link"},
		{bob, "/cam/garage/snapshot.jpg", 404, `No camera "garage"`},
		{alice, "/cam/yard/other", 404, "Not found"},
		{alice, "/../etc/passwd", 404, ""},
	} {
		resp, body := get(t, c.who, s.base+c.path)
		if resp.StatusCode != c.status || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %q, want %d saying %q", c.path, resp.StatusCode, body, c.status, c.says)
		}
	}
	r, _ := http.NewRequest("POST", s.base+"/api/usage", nil)
	if resp, err := alice.Do(r); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/usage: %v %v", resp, err)
	}

	// The stream at the data saver preset, and the session's figure grows.
	usage := func() Usage {
		_, b := get(t, alice, s.base+"/api/usage")
		var u Usage
		if err := json.Unmarshal([]byte(b), &u); err != nil {
			t.Fatalf("usage %q: %v", b, err)
		}
		return u
	}
	before := usage()
	if before.Viewer != "alice" || before.Session <= 0 {
		t.Errorf("usage before the stream: %+v", before)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.base+"/cam/yard/mjpeg?"+Presets[0].Query, nil)
	sresp, err := alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	_, params, _ := mime.ParseMediaType(sresp.Header.Get("Content-Type"))
	mr := multipart.NewReader(sresp.Body, params["boundary"])
	var total int
	for range 3 {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(part)
		if err != nil || img.Bounds().Dx() > 320 {
			t.Fatalf("frame: %v %v", err, img)
		}
		total++
	}
	deadline := time.Now().Add(10 * time.Second)
	for after := usage(); after.Session <= before.Session+1000; after = usage() {
		if time.Now().After(deadline) {
			t.Fatalf("3 frames later the session's figure went from %d to %d", before.Session, after.Session)
		}
	}
	if u := s.meter.Viewer("alice"); len(u.Services) != 1 || u.Services[0].Service != "portal" {
		t.Errorf("alice's figures %+v: want everything on the portal's service", u)
	}
}
