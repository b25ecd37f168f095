package httpgw

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/icholy/digest"
)

// maxReplayBody is the largest request body kept in memory so that a request
// can be sent again after the camera's 401; larger or unsized bodies are
// streamed and not retried.
const maxReplayBody = 64 << 10

// cameraAuth adds the camera's login to requests: Basic or Digest (RFC 7616,
// qop=auth, MD5 or SHA-256 and the others the digest package knows), as the
// camera's 401 asks. The last challenge is kept, so only the first request
// (and one after each nonce change) takes a 401 round trip. A request is sent
// again at most once; a 401 that remains goes back to the caller.
type cameraAuth struct {
	next       http.RoundTripper
	user, pass string

	mu    sync.Mutex        // guards the fields below
	basic bool              // the camera asked for Basic
	chal  *digest.Challenge // the camera's digest challenge; nil: none yet
	nc    int               // nonce count sent with chal
}

// sent says which login a request carried.
type sent struct {
	basic  bool
	nonce  string // digest: the nonce answered
	digest bool
}

func (a *cameraAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	body, replay, err := replayable(req)
	if err != nil {
		return nil, err
	}
	first := req.Clone(req.Context())
	first.Body = body
	s := a.authorize(first)
	resp, err := a.next.RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || replay == nil || !a.learn(resp.Header, s) {
		return resp, err
	}
	// Drain a little so the connection can be reused; the 401's body is small.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
	second := req.Clone(req.Context())
	second.Body = replay()
	a.authorize(second)
	return a.next.RoundTrip(second)
}

// replayable returns the body to send first and a function giving it again
// for a retry; nil when it can't be given again.
func replayable(req *http.Request) (io.ReadCloser, func() io.ReadCloser, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, func() io.ReadCloser { return http.NoBody }, nil
	}
	if req.ContentLength <= 0 || req.ContentLength > maxReplayBody {
		return req.Body, nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, maxReplayBody+1))
	req.Body.Close()
	if err != nil {
		return nil, nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), func() io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }, nil
}

// authorize sets req's Authorization from what the camera asked for last.
func (a *cameraAuth) authorize(req *http.Request) sent {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.chal != nil:
		a.nc++
		cred, err := digest.Digest(a.chal, digest.Options{Method: req.Method, URI: req.URL.RequestURI(),
			Count: a.nc, Username: a.user, Password: a.pass})
		if err != nil {
			return sent{}
		}
		req.Header.Set("Authorization", cred.String())
		return sent{digest: true, nonce: a.chal.Nonce}
	case a.basic:
		req.SetBasicAuth(a.user, a.pass)
		return sent{basic: true}
	}
	return sent{}
}

// learn keeps the camera's challenge and reports whether the request should
// be sent again: not when the camera refused the very login it asked for.
func (a *cameraAuth) learn(h http.Header, s sent) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if chal, err := digest.FindChallenge(h); err == nil {
		if s.digest && s.nonce == chal.Nonce && !chal.Stale {
			return false
		}
		// The digest package splits qop on commas without trimming; only qop=auth
		// is answered (auth-int would need the body hashed).
		qop := chal.QOP
		chal.QOP = nil
		for _, q := range qop {
			if strings.TrimSpace(q) == "auth" {
				chal.QOP = []string{"auth"}
			}
		}
		if len(qop) > 0 && chal.QOP == nil {
			return false
		}
		a.chal, a.nc, a.basic = chal, 0, false
		return true
	}
	for _, v := range h.Values("WWW-Authenticate") {
		if len(v) >= 6 && strings.EqualFold(v[:6], "basic ") {
			if s.basic {
				return false
			}
			a.chal, a.basic = nil, true
			return true
		}
	}
	return false
}

// CameraTransport returns a RoundTripper that logs in to a camera as its
// 401 asks (Basic or Digest) with user and pass, like the handler does: for
// checks of a camera_login outside a handler (porthole-agent doctor).
func CameraTransport(next http.RoundTripper, user, pass string) http.RoundTripper {
	return &cameraAuth{next: next, user: user, pass: pass}
}
