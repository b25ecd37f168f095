package httpgw

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Porthole's own names on the public port.
const (
	// Prefix is reserved: paths under it are Porthole's and never reach the camera.
	Prefix     = "/.porthole/"
	LoginPath  = Prefix + "login"
	LogoutPath = Prefix + "logout"
	// CookieName is the session cookie; it never reaches the camera.
	CookieName = "porthole_session"
	// TokenParam is the query parameter carrying a link token; stripped
	// before proxying.
	TokenParam = "porthole_token"
)

// maxLoginForm bounds the login form's body.
const maxLoginForm = 8 << 10

// identity is who a request is from.
type identity struct {
	viewer  string
	jarKey  string // the camera-cookie jar of this viewer
	session string // the session ID, for cookie users
	host    string // the public host the viewer used
}

type identityKey struct{}

// lockout is the error of a locked-out login.
type lockout interface {
	error
	RetryAfter() time.Duration
}

func (h *Handler) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

// serveHTTP is every request of every viewer: Porthole's pages, or the
// viewer's identity, the service's viewer list, then the camera.
func (h *Handler) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.enter() {
		h.page(w, r, http.StatusServiceUnavailable, messageData{Title: "Shutting down", Message: "Porthole is stopping this service."})
		return
	}
	defer h.wg.Done()
	vc, _ := r.Context().Value(viewerKey{}).(*viewerConn)
	if vc == nil {
		http.Error(w, "no viewer", http.StatusInternalServerError)
		return
	}
	src := vc.v.Addr.Addr()
	live := h.cfg.Site == nil && (r.URL.Path == MJPEGPath || r.URL.Path == SnapshotPath)
	if strings.HasPrefix(r.URL.Path, Prefix) && !live {
		h.servePorthole(w, r, src)
		return
	}
	id, ok := identity{}, false
	if vc.v.Authenticated != "" {
		// Known by how it arrived (a WireGuard peer's key): no login page.
		id, ok = identity{viewer: vc.v.Authenticated, jarKey: "peer\x00" + vc.v.Authenticated}, true
	} else {
		id, ok = h.identify(w, r, src)
	}
	if !ok {
		return
	}
	if !h.allowed(id.viewer) {
		h.page(w, r, http.StatusForbidden, messageData{Title: "Not allowed",
			Message: "You are logged in as " + id.viewer + ", who may not watch " + h.cfg.Service + ". Ask the camera's owner to add you, or log in as someone else.",
			Logout:  id.session != ""})
		return
	}
	if vc.identify(id) {
		h.audit.Info("open", "viewer", id.viewer, "service", h.cfg.Service, "src", src)
	}
	id.host = r.Host
	r = r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
	if h.cfg.Site != nil {
		h.cfg.Site.ServeHTTP(w, r)
		return
	}
	if h.overCap(w, r, id.viewer) {
		return
	}
	if live {
		h.serveLive(w, r, vc, id.viewer)
		return
	}
	h.proxy.ServeHTTP(w, r)
}

// identify finds the request's viewer: a link token, the session cookie or
// Basic credentials, in this order. A valid session wins over an
// Authorization header, which a camera page's own script may send with the
// camera's login: it must not count as a failed viewer login (lockout). Without
// an identity it answers the request and returns false.
func (h *Handler) identify(w http.ResponseWriter, r *http.Request, src netip.Addr) (identity, bool) {
	if r.URL.RawQuery != "" {
		if tok := r.URL.Query().Get(TokenParam); tok != "" {
			viewer, ok := h.cfg.Auth.Link(tok)
			if !ok {
				h.page(w, r, http.StatusForbidden, messageData{Title: "Link not valid",
					Message: "This link has been revoked or has expired. Ask for a new one, or log in.", Login: true})
				return identity{}, false
			}
			return identity{viewer: viewer, jarKey: "link\x00" + viewer + "\x00" + src.String()}, true
		}
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		if viewer, ok := h.cfg.Auth.Session(c.Value); ok {
			return identity{viewer: viewer, jarKey: "session\x00" + c.Value, session: c.Value}, true
		}
		h.jars.drop("session\x00" + c.Value)
		http.SetCookie(w, h.cookie("", time.Unix(0, 0)))
	}
	if name, pass, ok := r.BasicAuth(); ok {
		viewer, err := h.cfg.Auth.Basic(r.Context(), name, pass, src)
		if err != nil {
			h.loginFailed(name, src, err)
			if ra, ok := errors.AsType[lockout](err); ok {
				h.tooMany(w, r, ra.RetryAfter())
				return identity{}, false
			}
			h.challenge(w, r, "wrong name or password")
			return identity{}, false
		}
		return identity{viewer: viewer, jarKey: "basic\x00" + viewer + "\x00" + src.String()}, true
	}
	h.challenge(w, r, "")
	return identity{}, false
}

// challenge asks for a login: browsers are sent to the form, apps get 401
// with Porthole's own realm (never the camera's).
func (h *Handler) challenge(w http.ResponseWriter, r *http.Request, msg string) {
	if msg == "" && wantsHTML(r) && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		http.Redirect(w, r, LoginPath+"?next="+url.QueryEscape(safeNext(r.URL.RequestURI())), http.StatusSeeOther)
		return
	}
	if msg == "" {
		msg = "log in with a Porthole viewer's name and password"
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="Porthole `+strings.ReplaceAll(h.cfg.Service, `"`, "")+`", charset="UTF-8"`)
	h.page(w, r, http.StatusUnauthorized, messageData{Title: "Login required", Message: msg, Login: true})
}

// tooMany answers a locked-out login.
func (h *Handler) tooMany(w http.ResponseWriter, r *http.Request, d time.Duration) {
	secs := retrySeconds(d)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	h.page(w, r, http.StatusTooManyRequests, messageData{Title: "Too many attempts",
		Message: "too many attempts, try again in " + strconv.Itoa(secs) + " s"})
}

func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

func (h *Handler) loginFailed(name string, src netip.Addr, err error) {
	_, locked := errors.AsType[lockout](err)
	h.audit.Info("login_failed", "name", name, "service", h.cfg.Service, "src", src, "locked", locked)
}

// servePorthole serves Porthole's own paths.
func (h *Handler) servePorthole(w http.ResponseWriter, r *http.Request, src netip.Addr) {
	switch {
	case r.URL.Path == LoginPath && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.loginForm(w, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
	case r.URL.Path == LoginPath && r.Method == http.MethodPost:
		h.login(w, r, src)
	case r.URL.Path == LogoutPath && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.page(w, r, http.StatusOK, messageData{Title: "Log out", Message: "Log out of " + h.cfg.Service + "?", Logout: true})
	case r.URL.Path == LogoutPath && r.Method == http.MethodPost:
		if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
			viewer, _ := h.cfg.Auth.Session(c.Value)
			h.cfg.Auth.Logout(c.Value)
			h.jars.drop("session\x00" + c.Value)
			h.cfg.Meter.EndSession(c.Value)
			h.audit.Info("logout", "viewer", viewer, "service", h.cfg.Service, "src", src)
		}
		http.SetCookie(w, h.cookie("", time.Unix(0, 0)))
		http.Redirect(w, r, LoginPath, http.StatusSeeOther)
	case r.URL.Path == LoginPath || r.URL.Path == LogoutPath:
		w.Header().Set("Allow", "GET, HEAD, POST")
		h.page(w, r, http.StatusMethodNotAllowed, messageData{Title: "Method not allowed", Message: r.Method + " is not used here."})
	default:
		h.page(w, r, http.StatusNotFound, messageData{Title: "Not found", Message: "Porthole has no page " + r.URL.Path + "."})
	}
}

// login checks the form and starts a session. Login CSRF is refused by
// requiring the POST's Origin (or, when a browser sends none, its Referer) to
// be this very host: browsers always send one of them on a form POST.
func (h *Handler) login(w http.ResponseWriter, r *http.Request, src netip.Addr) {
	if !sameOrigin(r) {
		h.page(w, r, http.StatusForbidden, messageData{Title: "Login refused",
			Message: "The login form must be sent from this site's own login page.", Login: true})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	if err := r.ParseForm(); err != nil {
		h.page(w, r, http.StatusBadRequest, messageData{Title: "Bad request", Message: "The login form could not be read.", Login: true})
		return
	}
	name, pass, next := r.PostForm.Get("name"), r.PostForm.Get("password"), safeNext(r.PostForm.Get("next"))
	id, expires, err := h.cfg.Auth.Login(r.Context(), name, pass, src)
	if err != nil {
		h.loginFailed(name, src, err)
		d := loginData{Next: next, Name: name, Error: "wrong name or password"}
		status := http.StatusUnauthorized
		if ra, ok := errors.AsType[lockout](err); ok {
			secs := retrySeconds(ra.RetryAfter())
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			d.Error = "too many attempts, try again in " + strconv.Itoa(secs) + " s"
			status = http.StatusTooManyRequests
		}
		h.loginForm(w, status, d)
		return
	}
	// Rotation: the session the browser came with ends here.
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" && c.Value != id {
		h.cfg.Auth.Logout(c.Value)
		h.jars.drop("session\x00" + c.Value)
	}
	h.audit.Info("login", "viewer", name, "service", h.cfg.Service, "src", src)
	http.SetCookie(w, h.cookie(id, expires))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// cookie is the session cookie; an empty value with a past expiry deletes it.
func (h *Handler) cookie(value string, expires time.Time) *http.Cookie {
	c := &http.Cookie{Name: CookieName, Value: value, Path: "/", Expires: expires,
		Secure: !h.cfg.PlainHTTP, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if value == "" {
		c.MaxAge = -1
	}
	return c
}

// sameOrigin reports whether a POST comes from a page of the host it is sent to.
func sameOrigin(r *http.Request) bool {
	ref := r.Header.Get("Origin")
	if ref == "" || ref == "null" {
		ref = r.Header.Get("Referer")
	}
	if ref == "" {
		return false
	}
	u, err := url.Parse(ref)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// safeNext returns next if it is a path on this host, "/" otherwise: the
// login must not redirect anywhere else (open redirect).
func safeNext(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\\\r\n\t\x00") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.HasPrefix(u.Path, Prefix) {
		return "/"
	}
	// A link token in next would end up in the viewer's history; drop it.
	if q := u.Query(); q.Has(TokenParam) {
		q.Del(TokenParam)
		u.RawQuery = q.Encode()
		return u.RequestURI()
	}
	return next
}
