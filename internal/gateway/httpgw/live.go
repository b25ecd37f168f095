package httpgw

import (
	"context"
	"fmt"
	"github.com/porthole-dev/porthole/internal/gateway/meter"
	"net/http"
	"strconv"
	"time"
)

// DefaultLiveTimeout is the agent's live_timeout when a service does not
// set one: a live stream ends after this long and the viewer starts it again.
const DefaultLiveTimeout = 30 * time.Minute

// ViewerOf returns who sent a request that a Config.Site serves: the viewer's
// name and login session ("" for Basic and link users). ok is false for a
// request that did not come through a Handler's login.
func ViewerOf(r *http.Request) (viewer, session string, ok bool) {
	id, ok := r.Context().Value(identityKey{}).(identity)
	return id.viewer, id.session, ok && id.viewer != ""
}

// Allowed reports whether viewer may watch this service (its viewers list).
func (h *Handler) Allowed(viewer string) bool { return h.allowed(viewer) }

// HasLive reports which live views the service has: snapshots (from the
// camera's snapshot or its stream) and the MJPEG stream.
func (h *Handler) HasLive() (snapshot, mjpeg bool) {
	return h.cfg.SnapshotPath != "" || h.mjpeg != nil, h.mjpeg != nil
}

// LiveTimeout is Config.LiveTimeout.
func (h *Handler) LiveTimeout() time.Duration { return h.cfg.LiveTimeout }

// ServeLive serves one live view of this service's camera in process, for a
// request that another Handler's Site got (the phone page): stream selects
// MJPEGPath, else SnapshotPath, with the request's fps= and width=. The
// viewer is the one ViewerOf names, checked against this service's viewers
// list and their daily cap; the bytes count on the connection they came in
// on (the page's service). The camera is reached with Config.DialContext,
// which must be set: the page's own connection has no camera to dial.
func (h *Handler) ServeLive(w http.ResponseWriter, r *http.Request, stream bool) {
	if !h.enter() {
		h.page(w, r, http.StatusServiceUnavailable, messageData{Title: "Shutting down", Message: "Porthole is stopping this service."})
		return
	}
	defer h.wg.Done()
	id, ok := r.Context().Value(identityKey{}).(identity)
	vc, _ := r.Context().Value(viewerKey{}).(*viewerConn)
	if !ok || id.viewer == "" || vc == nil {
		http.Error(w, "no viewer", http.StatusInternalServerError)
		return
	}
	if !h.allowed(id.viewer) {
		h.page(w, r, http.StatusForbidden, messageData{Title: "Not allowed",
			Message: "You are logged in as " + id.viewer + ", who may not watch " + h.cfg.Service + "."})
		return
	}
	if h.cfg.DialContext == nil {
		h.page(w, r, http.StatusInternalServerError, messageData{Title: "Not set up",
			Message: h.cfg.Service + " cannot be watched from here (no DialContext: a bug of the agent)."})
		return
	}
	if h.overCap(w, r, id.viewer) {
		return
	}
	// The stream ends with this service too, not only with the page's.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(h.ctx, cancel)
	defer stop()
	r = r.Clone(ctx)
	r.URL.Path = SnapshotPath
	if stream {
		r.URL.Path = MJPEGPath
	}
	h.serveLive(w, r, vc, id.viewer)
}

// overCap answers 429 when viewer has used up today's data cap, saying when
// it resets, and reports whether it did.
func (h *Handler) overCap(w http.ResponseWriter, r *http.Request, viewer string) bool {
	over, resets := h.cfg.Meter.Over(viewer)
	if !over {
		return false
	}
	u := h.cfg.Meter.Viewer(viewer)
	wait := max(time.Until(resets), time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(wait)))
	h.page(w, r, http.StatusTooManyRequests, messageData{Title: "Daily data cap reached",
		Message: fmt.Sprintf("%s has used %s today, the daily cap of %s. Video starts again at %s (in %s).",
			viewer, meter.FormatBytes(u.Today), meter.FormatBytes(u.Cap), resets.Format("15:04 MST"), wait.Round(time.Minute))})
	return true
}
