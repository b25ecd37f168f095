package httpgw

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Over TLS (as the gateway serves it: v.Conn a *tls.Conn) the cookie is
// Secure and camera redirects point at https.
func TestOverTLS(t *testing.T) {
	var target string
	target, _ = camera(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "http://"+target+"/new", http.StatusFound)
			return
		}
		hello(w, r)
	})
	// Borrow httptest's certificate and a client that trusts it.
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	certs, client := ts.TLS.Certificates, ts.Client()
	ts.Close()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(raw, &tls.Config{Certificates: certs, NextProtos: []string{"http/1.1"}})
	g := startWith(t, Config{}, target, ln, client.Transport.(*http.Transport))

	resp, _ := g.postLogin(t, "alice", "alice-pw", "/old", nil)
	c := sessionCookie(t, resp)
	if !c.Secure || !c.HttpOnly {
		t.Errorf("cookie over TLS: %q", resp.Header.Get("Set-Cookie"))
	}
	r := g.req(t, "GET", "/old", "")
	r.AddCookie(c)
	resp, _ = g.do(t, r)
	if want := g.base + "/new"; resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
		t.Errorf("redirect over TLS: %d %q, want %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if !strings.HasPrefix(g.base, "https://") || resp.TLS == nil {
		t.Error("not served over TLS")
	}
}
