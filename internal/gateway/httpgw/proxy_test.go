package httpgw

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/porthole-dev/porthole/internal/camsim"
)

// simCamera serves a camsim camera with the given login on loopback.
func simCamera(t *testing.T, auth, alg string) (string, *camsim.Camera) {
	t.Helper()
	cam := camsim.New(camsim.Config{Width: 64, Height: 64, FPS: 30, Auth: auth, Username: "admin",
		Password: "cam-secret", DigestAlgorithm: alg})
	srv := httptest.NewServer(cam.Handler())
	t.Cleanup(func() { srv.Close(); cam.Close() })
	return strings.TrimPrefix(srv.URL, "http://"), cam
}

// readParts reads n parts of an MJPEG response.
func readParts(t *testing.T, resp *http.Response, n int) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/x-mixed-replace" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for i := range n {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		b, err := io.ReadAll(p)
		if err != nil || len(b) < 100 || b[0] != 0xff || b[1] != 0xd8 {
			t.Fatalf("part %d: %d bytes, %v", i, len(b), err)
		}
	}
}

func TestCameraLogin(t *testing.T) {
	for _, tc := range []struct{ auth, alg string }{{"basic", ""}, {"digest", "MD5"}, {"digest", "SHA-256"}} {
		t.Run(tc.auth+tc.alg, func(t *testing.T) {
			target, cam := simCamera(t, tc.auth, tc.alg)
			g := start(t, Config{CameraLogin: &Credentials{Username: "admin", Password: "cam-secret"}}, target)
			for range 4 {
				r := g.req(t, "GET", "/snapshot.jpg", "")
				r.SetBasicAuth("alice", "alice-pw")
				resp, body := g.do(t, r)
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || len(body) < 100 {
					t.Fatalf("snapshot: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
			}
			// The challenge is remembered: one 401 for all the requests.
			if s := cam.AuthStats(); s.Challenges != 1 || s.Accepted != 4 {
				t.Errorf("camera login stats %+v, want 1 challenge and 4 accepted", s)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r := g.req(t, "GET", "/stream.mjpg", "").WithContext(ctx)
			r.SetBasicAuth("alice", "alice-pw")
			resp, err := g.client.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("stream: %d", resp.StatusCode)
			}
			readParts(t, resp, 3)
		})
	}
}

func TestCameraRefusesLogin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		login *Credentials
	}{{"none", nil}, {"wrong", &Credentials{Username: "admin", Password: "guess"}}} {
		t.Run(tc.name, func(t *testing.T) {
			target, _ := simCamera(t, "digest", "MD5")
			g := start(t, Config{CameraLogin: tc.login}, target)
			for range 3 {
				r := browser(g.req(t, "GET", "/", ""))
				r.SetBasicAuth("alice", "alice-pw")
				resp, body := g.do(t, r)
				if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "The camera refused the agent&#39;s login") {
					t.Errorf("%d\n%s", resp.StatusCode, body)
				}
				if w := resp.Header.Values("WWW-Authenticate"); len(w) != 0 {
					t.Errorf("the viewer got the camera's challenge %q", w)
				}
			}
			if n := strings.Count(g.log.String(), "check camera_login"); n != 1 {
				t.Errorf("%d log lines about camera_login, want 1:\n%s", n, g.log.String())
			}
		})
	}
}

func TestMJPEGStreaming(t *testing.T) {
	target, _ := simCamera(t, "", "")
	g := start(t, Config{}, target)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := g.req(t, "GET", "/stream.mjpg?porthole_token=good-token", "").WithContext(ctx)
	resp, err := g.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	readParts(t, resp, 3)
	if st := g.l.Stats(); st.BytesOut < 300 || st.BytesIn == 0 {
		t.Errorf("gateway counters while streaming: %+v", st)
	}
}

func TestChunkedStreaming(t *testing.T) {
	release := make(chan struct{})
	target, _ := camera(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "second\n")
	})
	g := start(t, Config{}, target)
	r := g.req(t, "GET", "/events", "")
	r.SetBasicAuth("alice", "alice-pw")
	resp, err := g.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	// The camera holds back the rest until the first chunk has reached the viewer.
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk %q, %v", line, err)
	}
	close(release)
	line, err = br.ReadString('\n')
	if err != nil || line != "second\n" {
		t.Fatalf("second chunk %q, %v", line, err)
	}
}

// echoUpgrade is a camera answering WebSocket upgrades with an echo.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "websocket" {
		http.Error(w, "want an upgrade", 400)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	io.Copy(c, brw) // echo
}

// upgrade opens a WebSocket through the gateway and checks an echo round trip.
func upgrade(t *testing.T, g *gw) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := g.req(t, "GET", "/ws", "")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.SetBasicAuth("alice", "alice-pw")
	if err := r.Write(c); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, r)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, msg := range []string{"ping\n", "pong pong\n"} {
		io.WriteString(c, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo %q: %q %v", msg, got, err)
		}
	}
	return c, br
}

func TestWebSocket(t *testing.T) {
	target, rec := camera(t, echoUpgrade)
	g := start(t, Config{CameraLogin: &Credentials{Username: "admin", Password: "x"}}, target)
	upgrade(t, g)
	// The camera asked for no login, so none is sent; and never the viewer's.
	if a := rec.last(t).Header.Get("Authorization"); a != "" {
		t.Errorf("camera got Authorization %q", a)
	}
}

// Close ends every viewer's connection, hijacked ones too.
func TestCloseEndsWebSocket(t *testing.T) {
	target, _ := camera(t, echoUpgrade)
	g := start(t, Config{}, target)
	c, br := upgrade(t, g)
	g.h.Close()
	if b, err := io.ReadAll(br); err != nil {
		t.Errorf("WebSocket still open after Close: %v (read %q)", err, b)
	}
	c.Close()
}

func TestRewrite(t *testing.T) {
	var target string
	target, rec := camera(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/old":
			http.Redirect(w, r, "http://"+target+"/new?x=1", http.StatusFound)
		case "/away":
			http.Redirect(w, r, "http://other.example/", http.StatusFound)
		case "/rel":
			http.Redirect(w, r, "/new", http.StatusFound)
		default:
			hello(w, r)
		}
	})
	g := start(t, Config{}, target)
	public := strings.TrimPrefix(g.base, "http://")

	r := g.req(t, "POST", "/form?porthole_token=good-token", "a=b")
	r.Header.Set("Origin", g.base)
	r.Header.Set("Referer", g.base+"/page?porthole_token=good-token&y=2")
	r.Header.Set("X-Forwarded-For", "203.0.113.9")
	r.Header.Set("X-Real-IP", "203.0.113.9")
	r.Header.Set("Forwarded", "for=203.0.113.9")
	resp, _ := g.do(t, r)
	if resp.StatusCode != 200 {
		t.Fatalf("post: %d", resp.StatusCode)
	}
	got := rec.last(t)
	if got.Host != target || got.Header.Get("Origin") != "http://"+target || got.Header.Get("Referer") != "http://"+target+"/page?y=2" {
		t.Errorf("camera saw Host %q Origin %q Referer %q", got.Host, got.Header.Get("Origin"), got.Header.Get("Referer"))
	}
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip"} {
		if v := got.Header.Get(h); v != "" {
			t.Errorf("camera saw %s: %q", h, v)
		}
	}

	for path, want := range map[string]string{
		"/old":  "http://" + public + "/new?x=1",
		"/away": "http://other.example/",
		"/rel":  "/new",
	} {
		r := g.req(t, "GET", path, "")
		r.SetBasicAuth("alice", "alice-pw")
		resp, _ := g.do(t, r)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
			t.Errorf("%s: %d Location %q, want %q", path, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
}

func TestCameraCookiesStayHome(t *testing.T) {
	target, rec := camera(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			http.SetCookie(w, &http.Cookie{Name: "camsession", Value: "cam-token-123", Path: "/", HttpOnly: true})
		}
		hello(w, r)
	})
	g := start(t, Config{}, target)
	login := func(name, pass string) *http.Cookie {
		resp, _ := g.postLogin(t, name, pass, "/", nil)
		return sessionCookie(t, resp)
	}
	alice, bob := login("alice", "alice-pw"), login("bob", "bob-pw")
	get := func(c *http.Cookie, path string) *http.Response {
		r := g.req(t, "GET", path, "")
		r.AddCookie(c)
		r.AddCookie(&http.Cookie{Name: "ui_lang", Value: "en"}) // one a camera page set by script
		resp, _ := g.do(t, r)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		return resp
	}
	if resp := get(alice, "/login"); len(resp.Header.Values("Set-Cookie")) != 0 {
		t.Errorf("the viewer got the camera's cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	get(alice, "/next")
	if c := rec.last(t).Header.Get("Cookie"); !strings.Contains(c, "camsession=cam-token-123") || !strings.Contains(c, "ui_lang=en") || strings.Contains(c, CookieName) {
		t.Errorf("alice's second request carried Cookie %q", c)
	}
	get(bob, "/next")
	// A valid session wins over an Authorization header (a camera page's own
	// script with the camera's login): no failed viewer login is counted.
	r0 := g.req(t, "GET", "/next", "")
	r0.AddCookie(bob)
	r0.SetBasicAuth("admin", "camera-pw")
	if resp, _ := g.do(t, r0); resp.StatusCode != 200 || strings.Contains(g.audit.String(), "login_failed") {
		t.Errorf("session with a camera Authorization: %d\n%s", resp.StatusCode, g.audit.String())
	}
	if c := rec.last(t).Header.Get("Cookie"); strings.Contains(c, "camsession") {
		t.Errorf("bob's request carried alice's camera cookie: %q", c)
	}
	// Logout forgets the jar.
	r := g.req(t, "POST", LogoutPath, "")
	r.AddCookie(alice)
	g.do(t, r)
	if g.h.jars.lookup("session\x00"+alice.Value) != nil {
		t.Error("jar kept after logout")
	}
}

func TestJarsBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	j := newJars(3, time.Hour, func() time.Time { return now })
	for _, k := range []string{"a", "b", "c"} {
		j.get(k)
		now = now.Add(time.Minute)
	}
	j.get("a") // a is fresh again; b is the least recently used
	now = now.Add(time.Minute)
	j.get("d")
	if j.lookup("b") != nil || j.lookup("a") == nil || j.len() != 3 {
		t.Errorf("after the limit: b=%v a=%v len=%d", j.lookup("b") != nil, j.lookup("a") != nil, j.len())
	}
	now = now.Add(2 * time.Hour)
	j.get("e")
	if j.len() != 1 {
		t.Errorf("idle jars kept: %d", j.len())
	}
}

func TestCameraOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close() // nothing listens there now
	g := start(t, Config{}, target)
	for range 2 {
		r := browser(g.req(t, "GET", "/", ""))
		r.SetBasicAuth("alice", "alice-pw")
		resp, body := g.do(t, r)
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "The camera is not answering") {
			t.Errorf("%d\n%s", resp.StatusCode, body)
		}
	}
	if n := strings.Count(g.log.String(), "the camera is not answering"); n != 1 {
		t.Errorf("%d log lines, want 1:\n%s", n, g.log.String())
	}
}

func TestCameraHangs(t *testing.T) {
	target, _ := camera(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	g := start(t, Config{ResponseHeaderTimeout: 100 * time.Millisecond}, target)
	r := g.req(t, "GET", "/", "")
	r.SetBasicAuth("alice", "alice-pw")
	resp, body := g.do(t, r)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "The camera is not answering") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

func TestSlowHeaders(t *testing.T) {
	target, _ := camera(t, hello)
	g := start(t, Config{ReadHeaderTimeout: 100 * time.Millisecond}, target)
	c, err := net.Dial("tcp", strings.TrimPrefix(g.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("the slow client was not closed: %v (read %q)", err, b)
	}
}
