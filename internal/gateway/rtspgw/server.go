package rtspgw

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
)

// lockout is what Auth's errors implement when a name is locked out.
type lockout interface {
	error
	RetryAfter() time.Duration
}

// errRefused closes a viewer's connection after its answer (wrong password,
// forbidden): gortsplib closes a conn whose handler returned an error.
var errRefused = errors.New("viewer refused")

// serverHandler is the gortsplib Server's Handler: logins, paths and the
// upstream streams.
type serverHandler struct{ h *Handler }

var (
	_ gortsplib.ServerHandlerOnConnOpen         = (*serverHandler)(nil)
	_ gortsplib.ServerHandlerOnSessionClose     = (*serverHandler)(nil)
	_ gortsplib.ServerHandlerOnDescribe         = (*serverHandler)(nil)
	_ gortsplib.ServerHandlerOnSetup            = (*serverHandler)(nil)
	_ gortsplib.ServerHandlerOnPlay             = (*serverHandler)(nil)
	_ gortsplib.ServerHandlerOnStreamWriteError = (*serverHandler)(nil)
	_ gortsplib.ServerHandlerOnPacketsLost      = (*serverHandler)(nil)
	_ gortsplib.ServerHandlerOnDecodeError      = (*serverHandler)(nil)
)

// OnConnOpen ties gortsplib's conn to the viewer's.
func (s *serverHandler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	if vc, ok := ctx.Conn.NetConn().(*viewerConn); ok {
		ctx.Conn.SetUserData(vc)
	}
}

// OnSessionClose lets go of the session's camera stream.
func (s *serverHandler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	if j, ok := ctx.Session.UserData().(*joined); ok {
		if j.playing != nil {
			j.playing.playing.Add(-1)
		}
		j.r.u.leave(j.r)
	}
}

// OnDescribe answers with the camera's description, starting its session if
// none runs.
func (s *serverHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := s.h.authorize(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	u := s.h.streams[ctx.Path]
	if u == nil {
		return s.h.notFound(), nil, nil
	}
	st, err := u.describe()
	if err != nil {
		return s.h.cameraError(u, err), nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, st, nil
}

// joined is a viewer session's share of a camera session.
type joined struct {
	r       *run
	vc      *viewerConn // the conn that set it up, for drop counts
	playing *viewerConn // the conn whose playing count this session holds
}

// OnSetup joins the session to the camera's stream (once per session, for
// its first track).
func (s *serverHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Transport != gortsplib.TransportTCP {
		// gortsplib already refuses UDP (the server has no UDP listener).
		return &base.Response{StatusCode: base.StatusUnsupportedTransport}, nil, nil
	}
	if res, err := s.h.authorize(ctx.Conn, ctx.Request); res != nil {
		return res, nil, err
	}
	u := s.h.streams[ctx.Path]
	if u == nil {
		return s.h.notFound(), nil, nil
	}
	if j, ok := ctx.Session.UserData().(*joined); ok {
		return &base.Response{StatusCode: base.StatusOK}, j.r.stream, nil
	}
	r, err := u.join()
	if err != nil {
		return s.h.cameraError(u, err), nil, nil
	}
	vc, _ := ctx.Conn.UserData().(*viewerConn)
	ctx.Session.SetUserData(&joined{r: r, vc: vc})
	return &base.Response{StatusCode: base.StatusOK}, r.stream, nil
}

// OnPlay checks the login once more (the session's conn may be another).
func (s *serverHandler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	if res, err := s.h.authorize(ctx.Conn, ctx.Request); res != nil {
		return res, err
	}
	// Session callbacks run on the session's goroutine: j needs no lock.
	if j, ok := ctx.Session.UserData().(*joined); ok && j.playing == nil {
		if vc, ok := ctx.Conn.UserData().(*viewerConn); ok {
			vc.playing.Add(1)
			vc.playSince.CompareAndSwap(0, time.Now().UnixNano())
			j.playing = vc
		}
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnStreamWriteError is a viewer's full queue (packets dropped) or a failed
// write; the viewer is the only one to suffer.
func (s *serverHandler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	j, _ := ctx.Session.UserData().(*joined)
	if j == nil || j.vc == nil {
		return
	}
	if j.vc.dropped.Add(1) == 1 {
		s.h.log.Info("viewer too slow: packets dropped for this viewer only", "viewer", j.vc.viewerName(),
			"src", j.vc.remote.AddrPort().Addr(), "err", ctx.Error)
	}
}

// OnPacketsLost concerns recording sessions, which viewers cannot start.
func (s *serverHandler) OnPacketsLost(*gortsplib.ServerHandlerOnPacketsLostCtx) {}

// OnDecodeError is a viewer's malformed RTCP.
func (s *serverHandler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	s.h.log.Debug("malformed packet from viewer", "err", ctx.Error)
}

// authorize checks the request's viewer login. It returns nil if the viewer
// may watch, else the answer (and errRefused to close the conn after it).
func (h *Handler) authorize(sc *gortsplib.ServerConn, req *base.Request) (*base.Response, error) {
	vc, _ := sc.UserData().(*viewerConn)
	if vc == nil {
		return &base.Response{StatusCode: base.StatusInternalServerError}, errRefused
	}
	if name := vc.v.Authenticated; name != "" {
		// Known by how it arrived (a WireGuard peer's key): no login.
		if !h.allowed(name) {
			return &base.Response{StatusCode: base.StatusForbidden,
				StatusMessage: "Viewer " + name + " may not watch " + h.cfg.Service}, errRefused
		}
		if vc.identify(name, "") {
			h.audit.Info("open", "viewer", name, "service", h.cfg.Service, "src", vc.remote.AddrPort().Addr())
		}
		return nil, nil
	}
	hv := req.Header["Authorization"]
	if len(hv) != 1 {
		return h.challenge("Porthole viewer login required"), nil
	}
	if name, ok := vc.loggedIn(hv[0]); ok {
		return h.overCap(name)
	}
	var a headers.Authorization
	if err := a.Unmarshal(hv); err != nil || a.Method != headers.AuthMethodBasic || a.Username == "" {
		// Digest answers our Basic-only challenge with something we cannot
		// check (see the package doc): ask again.
		return h.challenge("Porthole viewer login required (Basic, over TLS)"), nil
	}
	src := vc.remote.AddrPort().Addr()
	name, err := h.cfg.Auth.Basic(h.ctx, a.Username, a.BasicPass, src)
	if err != nil {
		ra, locked := errors.AsType[lockout](err)
		h.audit.Info("login_failed", "name", a.Username, "service", h.cfg.Service, "src", src, "locked", locked)
		if locked {
			secs := retrySeconds(ra.RetryAfter())
			return &base.Response{StatusCode: base.StatusServiceUnavailable,
				StatusMessage: fmt.Sprintf("Too many failed logins, try again in %d s", secs),
				Header:        base.Header{"Retry-After": base.HeaderValue{strconv.Itoa(secs)}}}, errRefused
		}
		return h.challenge("Wrong viewer name or password"), errRefused
	}
	if !h.allowed(name) {
		return &base.Response{StatusCode: base.StatusForbidden,
			StatusMessage: "Viewer " + name + " may not watch " + h.cfg.Service}, errRefused
	}
	if vc.identify(name, hv[0]) {
		h.audit.Info("open", "viewer", name, "service", h.cfg.Service, "src", src)
	}
	return h.overCap(name)
}

// overCap is the answer to a viewer over the daily cap: 453 Not Enough
// Bandwidth, saying when video starts again; nil under it.
func (h *Handler) overCap(viewer string) (*base.Response, error) {
	over, resets := h.cfg.Meter.Over(viewer)
	if !over {
		return nil, nil
	}
	return &base.Response{StatusCode: base.StatusNotEnoughBandwidth,
		StatusMessage: "Daily data cap reached, video starts again at " + resets.Format("15:04 MST")}, errRefused
}

// challenge is a 401 asking for a Porthole viewer login.
func (h *Handler) challenge(msg string) *base.Response {
	return &base.Response{StatusCode: base.StatusUnauthorized, StatusMessage: msg,
		Header: base.Header{"WWW-Authenticate": base.HeaderValue{`Basic realm="` + h.realm + `"`}}}
}

func (h *Handler) notFound() *base.Response {
	msg := "No such stream: open /" + h.cfg.Service
	if h.cfg.LowPath != "" {
		msg += " or /" + h.cfg.Service + lowStream
	}
	return &base.Response{StatusCode: base.StatusNotFound, StatusMessage: msg}
}

// cameraError is the viewer's answer when the camera's stream could not be
// had. The camera's own challenge or headers never reach the viewer.
func (h *Handler) cameraError(u *upstream, err error) *base.Response {
	if errors.Is(err, errClosed) {
		return &base.Response{StatusCode: base.StatusServiceUnavailable, StatusMessage: "Porthole is stopping this service"}
	}
	res := &base.Response{StatusCode: base.StatusServiceUnavailable, StatusMessage: "The camera is not reachable"}
	level, what := "camera unreachable", "check target: and that the camera is on"
	if bad, ok := errors.AsType[liberrors.ErrClientBadStatusCode](err); ok {
		switch bad.Code {
		case base.StatusUnauthorized, base.StatusForbidden:
			res = &base.Response{StatusCode: base.StatusBadGateway, StatusMessage: "The camera refused the agent's login"}
			level, what = "camera refused the agent's login", "check camera_login"
		case base.StatusNotFound:
			res = &base.Response{StatusCode: base.StatusNotFound, StatusMessage: "The camera has no such stream"}
			level, what = "camera has no stream at this path", "check path: and low_path:"
		default:
			res = &base.Response{StatusCode: base.StatusBadGateway,
				StatusMessage: fmt.Sprintf("The camera answered %d", bad.Code)}
			level, what = "camera refused the stream", "check path: and the camera's RTSP settings"
		}
	}
	if !rateLimited(&h.lastCamLog) {
		h.log.Warn(level, "stream", u.name, "target", h.cfg.Target, "hint", what, "err", err)
	}
	return res
}

// retrySeconds rounds a lockout up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
