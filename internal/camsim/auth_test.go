package camsim

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/icholy/digest"
)

func TestNoAuthByDefault(t *testing.T) {
	rec := httptest.NewRecorder()
	New(small).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("without Auth: %d", rec.Code)
	}
}

func TestBasicAuth(t *testing.T) {
	cfg := small
	cfg.Auth, cfg.Username, cfg.Password = "basic", "admin", "secret"
	cam := New(cfg)
	h := cam.Handler()
	for _, tc := range []struct {
		user, pass string
		set        bool
		want       int
	}{{"", "", false, 401}, {"admin", "wrong", true, 401}, {"root", "secret", true, 401}, {"admin", "secret", true, 200}} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.set {
			r.SetBasicAuth(tc.user, tc.pass)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != tc.want {
			t.Errorf("%q/%q: %d, want %d", tc.user, tc.pass, rec.Code, tc.want)
		}
		if rec.Code == 401 && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("401 without a Basic challenge: %q", rec.Header().Get("WWW-Authenticate"))
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("healthz behind the login: %d", rec.Code)
	}
	if s := cam.AuthStats(); s.Challenges != 3 || s.Accepted != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestDigestAuth(t *testing.T) {
	for _, alg := range []string{"MD5", "SHA-256"} {
		t.Run(alg, func(t *testing.T) {
			cfg := small
			cfg.Auth, cfg.Username, cfg.Password, cfg.DigestAlgorithm = "digest", "admin", "secret", alg
			h := New(cfg).Handler()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			chal, err := digest.FindChallenge(rec.Header())
			if rec.Code != 401 || err != nil {
				t.Fatalf("first answer %d, challenge %v", rec.Code, err)
			}
			if !strings.EqualFold(chal.Algorithm, alg) || !chal.SupportsQOP("auth") {
				t.Fatalf("challenge %+v", chal)
			}
			try := func(pass string, nc int) int {
				cred, err := digest.Digest(chal, digest.Options{Method: "GET", URI: "/", Username: "admin", Password: pass, Count: nc})
				if err != nil {
					t.Fatal(err)
				}
				r := httptest.NewRequest("GET", "/", nil)
				r.Header.Set("Authorization", cred.String())
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				return rec.Code
			}
			if c := try("secret", 1); c != 200 {
				t.Errorf("right password: %d", c)
			}
			if c := try("secret", 1); c != 401 {
				t.Errorf("replayed nc: %d", c)
			}
			if c := try("secret", 2); c != 200 {
				t.Errorf("next nc: %d", c)
			}
			if c := try("wrong", 3); c != 401 {
				t.Errorf("wrong password: %d", c)
			}
			chal.Nonce = "0123456789abcdef"
			if c := try("secret", 1); c != 401 {
				t.Errorf("unknown nonce: %d", c)
			}
		})
	}
}
