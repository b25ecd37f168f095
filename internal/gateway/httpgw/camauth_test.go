package httpgw

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/icholy/digest"
)

// digestCamera is a scriptable Digest server: it changes its nonce, marking
// the old one stale, every `uses` accepted requests.
type digestCamera struct {
	mu         sync.Mutex
	nonce      int
	uses, used int
	qop        string
	challenges int
	bodies     []string
}

func (c *digestCamera) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	c.serve(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

func (c *digestCamera) nonceString() string { return "nonce-" + strings.Repeat("n", c.nonce+1) }

func (c *digestCamera) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stale := false
	if cred, err := digest.ParseCredentials(r.Header.Get("Authorization")); err == nil {
		want, _ := digest.Digest(&digest.Challenge{Realm: "cam", Nonce: cred.Nonce, QOP: []string{"auth"}},
			digest.Options{Method: r.Method, URI: r.URL.RequestURI(), Count: cred.Nc, Cnonce: cred.Cnonce,
				Username: "admin", Password: "pw"})
		switch {
		case want.Response != cred.Response || cred.QOP != "auth":
		case cred.Nonce != c.nonceString():
			stale = true
		default:
			b, _ := io.ReadAll(r.Body)
			c.bodies = append(c.bodies, string(b))
			if c.used++; c.used >= c.uses {
				c.nonce++
				c.used = 0
			}
			w.WriteHeader(200)
			return
		}
	}
	c.challenges++
	chal := digest.Challenge{Realm: "cam", Nonce: c.nonceString(), Stale: stale}
	w.Header().Set("WWW-Authenticate", chal.String()+`, qop="`+c.qop+`"`)
	w.WriteHeader(401)
}

func TestDigestStaleAndBody(t *testing.T) {
	cam := &digestCamera{uses: 3, qop: "auth-int, auth"}
	a := &cameraAuth{next: cam, user: "admin", pass: "pw"}
	for i := range 7 {
		body := "form=" + strings.Repeat("x", i)
		r := httptest.NewRequest("POST", "http://192.0.2.1/set?a=1", strings.NewReader(body))
		r.RequestURI = ""
		resp, err := a.RoundTrip(r)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v", i, resp.StatusCode, err)
		}
	}
	// The first request and one after each of the two nonce changes.
	if cam.challenges != 3 {
		t.Errorf("%d challenges, want 3", cam.challenges)
	}
	if len(cam.bodies) != 7 || cam.bodies[6] != "form=xxxxxx" {
		t.Errorf("bodies %q", cam.bodies)
	}
}

func TestDigestWrongPassword(t *testing.T) {
	cam := &digestCamera{uses: 100, qop: "auth"}
	a := &cameraAuth{next: cam, user: "admin", pass: "wrong"}
	resp, err := a.RoundTrip(httptest.NewRequest("GET", "http://192.0.2.1/", nil))
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("%v %v", resp.StatusCode, err)
	}
	// Asked, answered, refused: no loop.
	if cam.challenges != 2 {
		t.Errorf("%d challenges, want 2", cam.challenges)
	}
}

func TestCredentialsRedacted(t *testing.T) {
	c := &Credentials{Username: "admin", Password: "hunter2"}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "login", c, "value", *c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", *c, *c, *c, c), b.String()} {
		if strings.Contains(s, "hunter2") || !strings.Contains(s, "admin") {
			t.Errorf("printed %q", s)
		}
	}
}
