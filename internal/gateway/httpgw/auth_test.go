package httpgw

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func browser(r *http.Request) *http.Request {
	r.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	return r
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %q", CookieName, resp.Header.Values("Set-Cookie"))
	return nil
}

// postLogin sends the login form from the gateway's own page.
func (g *gw) postLogin(t *testing.T, name, pass, next string, cookie *http.Cookie) (*http.Response, string) {
	t.Helper()
	form := url.Values{"name": {name}, "password": {pass}, "next": {next}}
	r := browser(g.req(t, "POST", LoginPath, form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", g.base)
	if cookie != nil {
		r.AddCookie(cookie)
	}
	return g.do(t, r)
}

func TestLoginFlow(t *testing.T) {
	target, rec := camera(t, hello)
	g := start(t, Config{}, target)

	// A browser without a login is sent to the form, with where it wanted to go.
	resp, _ := g.do(t, browser(g.req(t, "GET", "/live/view?ch=1", "")))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != LoginPath+"?next="+url.QueryEscape("/live/view?ch=1") {
		t.Fatalf("unauthenticated browser: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := g.do(t, browser(g.req(t, "GET", resp.Header.Get("Location"), "")))
	if resp.StatusCode != 200 || !strings.Contains(body, `<form method="post" action="/.porthole/login">`) ||
		!strings.Contains(body, `value="/live/view?ch=1"`) || !strings.Contains(body, "viewport") {
		t.Fatalf("login page %d:\n%s", resp.StatusCode, body)
	}

	// Login CSRF: a POST from no page, or another site, is refused.
	form := url.Values{"name": {"alice"}, "password": {"alice-pw"}}.Encode()
	r := browser(g.req(t, "POST", LoginPath, form))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, _ := g.do(t, r); resp.StatusCode != http.StatusForbidden {
		t.Errorf("login POST without Origin/Referer: %d", resp.StatusCode)
	}
	r = browser(g.req(t, "POST", LoginPath, form))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", "https://evil.example")
	if resp, _ := g.do(t, r); resp.StatusCode != http.StatusForbidden {
		t.Errorf("login POST from another origin: %d", resp.StatusCode)
	}

	// Wrong password and unknown name: the same answer.
	resp1, body1 := g.postLogin(t, "alice", "nope", "/", nil)
	resp2, body2 := g.postLogin(t, "nobody", "nope", "/", nil)
	if resp1.StatusCode != 401 || resp2.StatusCode != 401 || !strings.Contains(body1, "wrong name or password") ||
		strings.ReplaceAll(body1, "alice", "") != strings.ReplaceAll(body2, "nobody", "") {
		t.Errorf("failed logins differ or are not refused: %d %d\n%s\n%s", resp1.StatusCode, resp2.StatusCode, body1, body2)
	}
	if len(resp1.Cookies()) != 0 {
		t.Errorf("failed login set cookies %q", resp1.Header.Values("Set-Cookie"))
	}

	// Locked out: 429, Retry-After, the time in the page.
	resp, body = g.postLogin(t, "mallory", "m-pw", "/", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "30" ||
		!strings.Contains(body, "too many attempts, try again in 30 s") {
		t.Errorf("locked login: %d Retry-After %q\n%s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}

	// The right password: a session cookie with the flags, and back to next.
	resp, _ = g.postLogin(t, "alice", "alice-pw", "/live/view?ch=1", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/live/view?ch=1" {
		t.Fatalf("login: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	c1 := sessionCookie(t, resp)
	if !c1.HttpOnly || c1.SameSite != http.SameSiteLaxMode || c1.Path != "/" || c1.Expires.Before(time.Now()) || c1.Secure {
		t.Errorf("cookie flags: %q", resp.Header.Get("Set-Cookie"))
	}
	r = browser(g.req(t, "GET", "/live/view?ch=1", ""))
	r.AddCookie(c1)
	resp, body = g.do(t, r)
	if resp.StatusCode != 200 || body != "camera says hello /live/view" {
		t.Fatalf("with the session: %d %q", resp.StatusCode, body)
	}
	if got := rec.last(t).Header.Get("Cookie"); strings.Contains(got, CookieName) {
		t.Errorf("the camera got Porthole's cookie: %q", got)
	}
	if !strings.Contains(g.audit.String(), "msg=open viewer=alice service=cam src=127.0.0.1") {
		t.Errorf("audit: %s", g.audit.String())
	}

	// Logging in again rotates: the old session ends.
	resp, _ = g.postLogin(t, "alice", "alice-pw", "/", c1)
	c2 := sessionCookie(t, resp)
	if c2.Value == c1.Value {
		t.Fatal("session not rotated")
	}
	if _, ok := g.auth.Session(c1.Value); ok {
		t.Error("the old session is still valid after a new login")
	}

	// Logout: GET asks, POST does it.
	r = browser(g.req(t, "GET", LogoutPath, ""))
	r.AddCookie(c2)
	if resp, body := g.do(t, r); resp.StatusCode != 200 || !strings.Contains(body, `action="/.porthole/logout"`) {
		t.Errorf("logout page: %d\n%s", resp.StatusCode, body)
	}
	if _, ok := g.auth.Session(c2.Value); !ok {
		t.Error("GET logout logged out")
	}
	r = browser(g.req(t, "POST", LogoutPath, ""))
	r.AddCookie(c2)
	resp, _ = g.do(t, r)
	if resp.StatusCode != http.StatusSeeOther || sessionCookie(t, resp).MaxAge >= 0 {
		t.Errorf("logout: %d %q", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
	if _, ok := g.auth.Session(c2.Value); ok {
		t.Error("session valid after logout")
	}
	r = browser(g.req(t, "GET", "/", ""))
	r.AddCookie(c2)
	if resp, _ := g.do(t, r); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("logged-out cookie: %d", resp.StatusCode)
	}
}

func TestSecureCookie(t *testing.T) {
	h, err := New(Config{Service: "cam", Target: "192.0.2.1:80", Auth: newFakeAuth()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if c := h.cookie("x", time.Now()); !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Errorf("cookie over TLS: %+v", c)
	}
}

func TestNoOpenRedirect(t *testing.T) {
	for next, want := range map[string]string{
		"/a/b?c=d":               "/a/b?c=d",
		"":                       "/",
		"//evil.example/":        "/",
		"/\\evil.example":        "/",
		"https://evil.example/x": "/",
		"evil":                   "/",
		"/.porthole/login":       "/",
		"/x?porthole_token=abc":  "/x",
		"/\r\nSet-Cookie: a=b":   "/",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
	target, _ := camera(t, hello)
	g := start(t, Config{}, target)
	resp, _ := g.postLogin(t, "alice", "alice-pw", "//evil.example/", nil)
	if resp.Header.Get("Location") != "/" {
		t.Errorf("login redirected to %q", resp.Header.Get("Location"))
	}
}

func TestBasic(t *testing.T) {
	target, rec := camera(t, hello)
	g := start(t, Config{}, target)

	resp, _ := g.do(t, g.req(t, "GET", "/x", ""))
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="Porthole cam", charset="UTF-8"` {
		t.Errorf("app without login: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	r := g.req(t, "GET", "/x", "")
	r.SetBasicAuth("alice", "alice-pw")
	resp, body := g.do(t, r)
	if resp.StatusCode != 200 || body != "camera says hello /x" {
		t.Fatalf("basic: %d %q", resp.StatusCode, body)
	}
	if a := rec.last(t).Header.Get("Authorization"); a != "" {
		t.Errorf("the camera got the viewer's Authorization %q", a)
	}
	r = g.req(t, "GET", "/x", "")
	r.SetBasicAuth("alice", "wrong")
	resp, body = g.do(t, r)
	if resp.StatusCode != 401 || !strings.Contains(body, "wrong name or password") || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Basic realm="Porthole cam"`) {
		t.Errorf("wrong basic: %d %q %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	r = g.req(t, "GET", "/x", "")
	r.SetBasicAuth("mallory", "m-pw")
	resp, body = g.do(t, r)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "30" || !strings.Contains(body, "try again in 30 s") {
		t.Errorf("locked basic: %d %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}

	// The viewer leaves: its connection's audit line says what it got.
	g.client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.audit.String(), "msg=close viewer=alice service=cam src=127.0.0.1 bytes_out=") {
		if time.Now().After(deadline) {
			t.Fatalf("no close event:\n%s", g.audit.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(g.audit.String(), "msg=login_failed name=mallory service=cam src=127.0.0.1 locked=true") {
		t.Errorf("audit:\n%s", g.audit.String())
	}
}

func TestLinkToken(t *testing.T) {
	target, rec := camera(t, hello)
	g := start(t, Config{}, target)
	resp, body := g.do(t, g.req(t, "GET", "/snap.jpg?porthole_token=good-token&ch=2", ""))
	if resp.StatusCode != 200 || body != "camera says hello /snap.jpg" {
		t.Fatalf("link: %d %q", resp.StatusCode, body)
	}
	if q := rec.last(t).URL.RawQuery; q != "ch=2" {
		t.Errorf("the camera got query %q", q)
	}
	// However it is spelled, the token never reaches the camera.
	if resp, _ := g.do(t, g.req(t, "GET", "/snap.jpg?%70orthole_token=good-token&ch=3", "")); resp.StatusCode != 200 {
		t.Errorf("encoded token: %d", resp.StatusCode)
	}
	if q := rec.last(t).URL.RawQuery; q != "ch=3" {
		t.Errorf("the camera got query %q", q)
	}
	resp, _ = g.do(t, g.req(t, "GET", "/snap.jpg?porthole_token=revoked", ""))
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("revoked link: %d", resp.StatusCode)
	}
}

func TestForgedCookie(t *testing.T) {
	target, _ := camera(t, hello)
	g := start(t, Config{}, target)
	for _, v := range []string{"sess-alice-x-forged", "expired"} {
		r := browser(g.req(t, "GET", "/", ""))
		r.AddCookie(&http.Cookie{Name: CookieName, Value: v})
		resp, _ := g.do(t, r)
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("cookie %q: %d", v, resp.StatusCode)
		}
		r = g.req(t, "GET", "/", "")
		r.AddCookie(&http.Cookie{Name: CookieName, Value: v})
		if resp, _ := g.do(t, r); resp.StatusCode != 401 {
			t.Errorf("cookie %q (app): %d", v, resp.StatusCode)
		}
	}
}

func TestViewersList(t *testing.T) {
	target, rec := camera(t, hello)
	g := start(t, Config{Viewers: []string{"bob"}}, target)
	r := browser(g.req(t, "GET", "/", ""))
	r.SetBasicAuth("alice", "alice-pw")
	resp, body := g.do(t, r)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "alice") || !strings.Contains(body, "may not watch cam") {
		t.Errorf("alice: %d\n%s", resp.StatusCode, body)
	}
	rec.mu.Lock()
	n := len(rec.reqs)
	rec.mu.Unlock()
	if n != 0 {
		t.Error("a refused viewer's request reached the camera")
	}
	r = g.req(t, "GET", "/", "")
	r.SetBasicAuth("bob", "bob-pw")
	if resp, _ := g.do(t, r); resp.StatusCode != 200 {
		t.Errorf("bob: %d", resp.StatusCode)
	}
}
