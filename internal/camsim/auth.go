package camsim

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/icholy/digest"
)

// maxNonces bounds the digest nonces a camera remembers; the oldest is forgotten
// first, and a client using it gets a fresh challenge with stale=true.
const maxNonces = 1024

// maxNonceUses is how many answers one nonce is good for; then it is stale.
const maxNonceUses = 4096

// authState checks the camera's HTTP login, Basic or Digest, as Config.Auth says.
type authState struct {
	scheme         string // "basic" or "digest"; anything else refuses everyone
	user, password string
	algorithm      string
	realm          string

	challenges atomic.Int64 // 401s sent
	accepted   atomic.Int64 // requests let through

	mu     sync.Mutex                  // guards the fields below
	nonces map[string]map[int]struct{} // issued nonce -> nc values seen
	order  []string                    // nonces in issue order, for eviction
}

func newAuthState(cfg Config) *authState {
	return &authState{
		scheme: strings.ToLower(cfg.Auth), user: cfg.Username, password: cfg.Password,
		algorithm: strings.ToUpper(cfg.DigestAlgorithm), realm: cfg.Name,
		nonces: map[string]map[int]struct{}{},
	}
}

// AuthStats counts what the camera's login did: Challenges are 401 answers,
// Accepted the requests it let through. Both zero without Config.Auth.
type AuthStats struct{ Challenges, Accepted int64 }

// AuthStats returns the login counters (tests use them to see that a proxy
// reuses a digest challenge instead of taking a 401 per request).
func (c *Camera) AuthStats() AuthStats {
	if c.auth == nil {
		return AuthStats{}
	}
	return AuthStats{Challenges: c.auth.challenges.Load(), Accepted: c.auth.accepted.Load()}
}

// wrap puts the login in front of h.
func (a *authState) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			h.ServeHTTP(w, r)
			return
		}
		ok, stale := a.check(r)
		if ok {
			a.accepted.Add(1)
			h.ServeHTTP(w, r)
			return
		}
		a.challenges.Add(1)
		switch a.scheme {
		case "basic":
			w.Header().Set("WWW-Authenticate", `Basic realm="`+a.realm+`", charset="UTF-8"`)
		case "digest":
			chal := digest.Challenge{Realm: a.realm, Nonce: a.newNonce(), Opaque: "camsim",
				Algorithm: a.algorithm, QOP: []string{"auth"}, Stale: stale}
			w.Header().Set("WWW-Authenticate", chal.String())
		default:
			http.Error(w, "camsim: unknown Auth "+strconv.Quote(a.scheme), http.StatusInternalServerError)
			return
		}
		http.Error(w, "401 unauthorized", http.StatusUnauthorized)
	})
}

// check reports whether r carries the camera's login; stale is set for a
// correct digest answer to a nonce the camera no longer knows.
func (a *authState) check(r *http.Request) (ok, stale bool) {
	h := r.Header.Get("Authorization")
	switch a.scheme {
	case "basic":
		u, p, ok := r.BasicAuth()
		return ok && equal(u, a.user) && equal(p, a.password), false
	case "digest":
		if !digest.IsDigest(h) {
			return false, false
		}
		cred, err := digest.ParseCredentials(h)
		if err != nil || cred.Username != a.user || cred.Realm != a.realm || cred.QOP != "auth" ||
			!strings.EqualFold(cred.Algorithm, a.algorithm) || cred.URI != r.URL.RequestURI() {
			return false, false
		}
		want, err := digest.Digest(&digest.Challenge{Realm: a.realm, Nonce: cred.Nonce, Opaque: cred.Opaque,
			Algorithm: a.algorithm, QOP: []string{"auth"}}, digest.Options{
			Method: r.Method, URI: cred.URI, Count: cred.Nc, Username: a.user, Password: a.password, Cnonce: cred.Cnonce,
		})
		if err != nil || !equal(want.Response, cred.Response) {
			return false, false
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		seen, known := a.nonces[cred.Nonce]
		if !known || len(seen) >= maxNonceUses {
			return false, true
		}
		// A repeated nc is a replayed answer. Clients with requests in flight
		// may send them out of order, so only repeats are refused.
		if _, dup := seen[cred.Nc]; dup {
			return false, false
		}
		seen[cred.Nc] = struct{}{}
		return true, false
	}
	return false, false
}

func (a *authState) newNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	n := hex.EncodeToString(b[:])
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.order) >= maxNonces {
		delete(a.nonces, a.order[0])
		a.order = a.order[1:]
	}
	a.nonces[n] = map[int]struct{}{}
	a.order = append(a.order, n)
	return n
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
