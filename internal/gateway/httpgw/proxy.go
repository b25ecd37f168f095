package httpgw

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/porthole-dev/porthole/internal/gateway"
)

// errCameraRefused: the camera answered 401 to the agent's login (or to no login).
var errCameraRefused = errors.New("camera refused the agent's login")

func (h *Handler) transport() *http.Transport {
	return &http.Transport{
		Proxy:               nil, // never an environment proxy: the camera is on the LAN
		DialContext:         h.dialCamera,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		// A camera that takes the connection and never answers must not
		// leave the viewer waiting forever.
		ResponseHeaderTimeout: h.cfg.ResponseHeaderTimeout,
		// Bodies pass as the camera sent them.
		DisableCompression: true,
	}
}

// dialCamera reaches the camera whatever addr says: with Config.DialContext,
// or with the gateway's dialer of the viewer the request is for.
func (h *Handler) dialCamera(ctx context.Context, network, _ string) (net.Conn, error) {
	if h.cfg.DialContext != nil {
		ctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
		defer cancel()
		return h.cfg.DialContext(ctx, network, h.cfg.Target)
	}
	vc, ok := ctx.Value(viewerKey{}).(*viewerConn)
	if !ok {
		return nil, errors.New("httpgw: no viewer to dial the camera for")
	}
	c, err := vc.v.DialBackend(ctx)
	if err != nil {
		return nil, err
	}
	if nc, ok := c.(net.Conn); ok {
		return nc, nil
	}
	return backendConn{Conn: c}, nil
}

// backendConn is a gateway.Conn without addresses or deadlines as a net.Conn.
type backendConn struct{ gateway.Conn }

func (backendConn) LocalAddr() net.Addr              { return chanAddr{} }
func (backendConn) RemoteAddr() net.Addr             { return chanAddr{} }
func (backendConn) SetDeadline(time.Time) error      { return nil }
func (backendConn) SetReadDeadline(time.Time) error  { return nil }
func (backendConn) SetWriteDeadline(time.Time) error { return nil }

func (h *Handler) newProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      h.camRT,
		FlushInterval:  -1, // MJPEG and endless chunked bodies go out as they come
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.proxyError,
	}
}

// cameraURL is the camera's origin.
func (h *Handler) cameraURL() *url.URL {
	return &url.URL{Scheme: "http", Host: h.cfg.Target, Path: "/"}
}

// rewrite turns the viewer's request into the camera's. ReverseProxy has
// already removed hop-by-hop headers, Forwarded and X-Forwarded-*; none are
// added: the camera learns nothing about the viewer.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	id, _ := pr.In.Context().Value(identityKey{}).(identity)
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = h.cfg.Target
	out.Host = h.cfg.Target
	// Only a query that holds the token is re-encoded: the camera gets the
	// others exactly as the viewer sent them.
	if out.URL.RawQuery != "" {
		if q := out.URL.Query(); q.Has(TokenParam) {
			q.Del(TokenParam)
			out.URL.RawQuery = q.Encode()
		}
	}
	hd := out.Header
	hd.Del("Authorization")
	hd.Del("X-Real-Ip")

	// Cookies: the viewer's own (those a camera page set with script), never
	// Porthole's, then the camera's from the jar, which win.
	var fromJar []*http.Cookie
	if jar := h.jars.lookup(id.jarKey); jar != nil {
		fromJar = jar.Cookies(h.cameraURL())
	}
	names := map[string]bool{}
	for _, c := range fromJar {
		names[c.Name] = true
	}
	viewers := out.Cookies()
	hd.Del("Cookie")
	for _, c := range viewers {
		if !strings.HasPrefix(c.Name, "porthole_") && !names[c.Name] {
			out.AddCookie(c)
		}
	}
	for _, c := range fromJar {
		out.AddCookie(c)
	}

	if o := hd.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err == nil && strings.EqualFold(u.Host, pr.In.Host) {
			hd.Set("Origin", "http://"+h.cfg.Target)
		}
	}
	if ref := hd.Get("Referer"); ref != "" {
		if u, err := url.Parse(ref); err == nil && strings.EqualFold(u.Host, pr.In.Host) {
			u.Scheme, u.Host = "http", h.cfg.Target
			if q := u.Query(); q.Has(TokenParam) {
				q.Del(TokenParam)
				u.RawQuery = q.Encode()
			}
			hd.Set("Referer", u.String())
		} else {
			hd.Del("Referer") // a foreign page's address is none of the camera's business
		}
	}
}

// modifyResponse keeps the camera's login matters and cookies at home and
// points its redirects at the public host.
func (h *Handler) modifyResponse(resp *http.Response) error {
	if resp.StatusCode == http.StatusUnauthorized {
		return errCameraRefused
	}
	id, _ := resp.Request.Context().Value(identityKey{}).(identity)
	hd := resp.Header
	if cs := resp.Cookies(); len(cs) > 0 {
		h.jars.get(id.jarKey).SetCookies(h.cameraURL(), cs)
	}
	hd.Del("Set-Cookie")
	hd.Del("WWW-Authenticate")
	if loc := hd.Get("Location"); loc != "" {
		if u, err := url.Parse(loc); err == nil && u.IsAbs() && h.isCamera(u) && id.host != "" {
			u.Scheme = "https"
			if h.cfg.PlainHTTP {
				u.Scheme = "http"
			}
			u.Host = id.host
			hd.Set("Location", u.String())
		}
	}
	return nil
}

// isCamera reports whether u points at the camera's address.
func (h *Handler) isCamera(u *url.URL) bool {
	if u.Scheme != "http" && u.Scheme != "https" {
		return false
	}
	if strings.EqualFold(u.Host, h.cfg.Target) {
		return true
	}
	host, port, _ := net.SplitHostPort(h.cfg.Target)
	def := map[string]string{"http": "80", "https": "443"}[u.Scheme]
	return u.Port() == "" && port == def && strings.EqualFold(u.Hostname(), strings.Trim(host, "[]"))
}

// proxyError answers what the camera could not: never a hang, never the
// camera's own challenge.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the viewer left
	}
	if errors.Is(err, errCameraRefused) {
		if !h.rateLimited(&h.lastRefuseLog) {
			h.log.Warn("the camera refused the agent's login: check camera_login of this service",
				"target", h.cfg.Target, "camera_login_set", h.cfg.CameraLogin != nil)
		}
		h.page(w, r, http.StatusBadGateway, messageData{Title: "The camera refused the login",
			Message: "The camera refused the agent's login. The owner of this Porthole needs to check camera_login of " + h.cfg.Service + "."})
		return
	}
	if !h.rateLimited(&h.lastDialLog) {
		h.log.Warn("the camera is not answering", "target", h.cfg.Target, "err", err)
	}
	h.page(w, r, http.StatusBadGateway, messageData{Title: "The camera is not answering",
		Message: "Porthole could not reach " + h.cfg.Service + ". It may be switched off or unplugged; try again in a moment."})
}
