package httpgw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Porthole's live view paths on the public port.
const (
	// MJPEGPath serves the camera's MJPEG stream (Config.MJPEGPath), shared
	// with every other viewer: ?fps= lowers the frame rate by dropping whole
	// frames, ?width= scales frames down.
	MJPEGPath = Prefix + "mjpeg"
	// SnapshotPath serves one JPEG (?width= as above): the running stream's
	// latest frame, else the camera's snapshot (Config.SnapshotPath).
	SnapshotPath = Prefix + "snapshot.jpg"
	// maxFPS bounds ?fps=.
	maxFPS = 30
	// partBoundary separates the frames sent to viewers.
	partBoundary = "porthole-mjpeg"
	// frameWriteTimeout drops a viewer that takes longer than this to take
	// one frame (a phone that lost its network without a word).
	frameWriteTimeout = 30 * time.Second
)

// liveParams are the query of MJPEGPath and SnapshotPath.
type liveParams struct {
	interval time.Duration // 0: the camera's rate
	width    int           // 0: as the camera sends it
}

// parseLive reads fps (when fps is true) and width; an error says what is
// wrong in words a viewer can act on. Other parameters (cache busters) are
// ignored.
func parseLive(q url.Values, fps bool) (liveParams, error) {
	var p liveParams
	if vs, ok := q["fps"]; ok && fps {
		if len(vs) != 1 {
			return p, errors.New("give fps once")
		}
		v, err := strconv.ParseFloat(vs[0], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > maxFPS {
			return p, fmt.Errorf("fps must be a number above 0 and at most %d (frames per second), not %q", maxFPS, vs[0])
		}
		p.interval = time.Duration(float64(time.Second) / v)
	}
	if vs, ok := q["width"]; ok {
		if len(vs) != 1 {
			return p, errors.New("give width once")
		}
		v, err := strconv.Atoi(vs[0])
		if err != nil || v < minWidth || v > maxWidth {
			return p, fmt.Errorf("width must be a whole number of pixels from %d to %d, not %q", minWidth, maxWidth, vs[0])
		}
		p.width = v
	}
	return p, nil
}

// serveLive answers MJPEGPath and SnapshotPath for an authenticated viewer.
func (h *Handler) serveLive(w http.ResponseWriter, r *http.Request, vc *viewerConn, viewer string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.page(w, r, http.StatusMethodNotAllowed, messageData{Title: "Method not allowed", Message: r.Method + " is not used here."})
		return
	}
	stream := r.URL.Path == MJPEGPath
	p, err := parseLive(r.URL.Query(), stream)
	if err != nil {
		h.page(w, r, http.StatusBadRequest, messageData{Title: "Bad request", Message: err.Error()})
		return
	}
	if stream {
		h.serveMJPEG(w, r, vc, viewer, p)
	} else {
		h.serveSnapshot(w, r, vc, p)
	}
}

// notConfigured answers a live path the service has no camera path for.
func (h *Handler) notConfigured(w http.ResponseWriter, r *http.Request, what, key string) {
	h.page(w, r, http.StatusNotFound, messageData{Title: "No " + what,
		Message: h.cfg.Service + " has no " + what + " configured (the service's " + key + ": key in agent.yaml)."})
}

// cameraFailed answers a viewer for whom the camera gave nothing.
func (h *Handler) cameraFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errCameraRefused) {
		h.page(w, r, http.StatusBadGateway, messageData{Title: "The camera refused the login",
			Message: "The camera refused the agent's login. The owner of this Porthole needs to check camera_login of " + h.cfg.Service + "."})
		return
	}
	if pe, ok := errors.AsType[*pathError](err); ok {
		h.page(w, r, http.StatusBadGateway, messageData{Title: "The camera did not give a picture",
			Message: "For " + pe.path + " " + pe.problem + ". The owner of this Porthole needs to check " + pe.key + ": of " + h.cfg.Service + "."})
		return
	}
	h.page(w, r, http.StatusBadGateway, messageData{Title: "The camera is not answering",
		Message: "Porthole could not get a picture from " + h.cfg.Service + ". It may be switched off or unplugged; try again in a moment."})
}

// firstFrame waits for s's first frame: at most MJPEGStallTimeout, and not
// past a failed attempt to reach the camera.
func (h *Handler) firstFrame(ctx context.Context, s *sub) (*frame, error) {
	t := time.NewTimer(h.cfg.MJPEGStallTimeout)
	defer t.Stop()
	for {
		if fr := s.take(); fr != nil {
			return fr, nil
		}
		select {
		case <-s.ready:
		case <-s.fail:
			return nil, h.mjpeg.failure()
		case <-t.C:
			return nil, fmt.Errorf("no frame within %v", h.cfg.MJPEGStallTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// serveMJPEG streams the shared camera stream to one viewer, until they
// leave, LiveTimeout passes or they reach their daily cap.
func (h *Handler) serveMJPEG(w http.ResponseWriter, r *http.Request, vc *viewerConn, viewer string, p liveParams) {
	if h.mjpeg == nil {
		h.notConfigured(w, r, "MJPEG stream", "mjpeg")
		return
	}
	ctx := r.Context()
	start := time.Now()
	if d := h.cfg.LiveTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	defer func() {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
			h.audit.Info("live_end", "viewer", viewer, "service", h.cfg.Service, "reason", "live_timeout",
				"live_timeout", h.cfg.LiveTimeout, "duration", time.Since(start).Round(time.Millisecond))
		}
	}()
	s, err := h.mjpeg.subscribe(vc, p.interval, h.cfg.QueueFrames)
	if err != nil {
		h.page(w, r, http.StatusServiceUnavailable, messageData{Title: "Shutting down", Message: "Porthole is stopping this service."})
		return
	}
	defer h.mjpeg.unsubscribe(s)
	if hook := h.testHookSub.Load(); hook != nil {
		(*hook)(s)
	}
	fr, err := h.firstFrame(ctx, s)
	if err != nil {
		if ctx.Err() == nil {
			h.cameraFailed(w, r, err)
		}
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "multipart/x-mixed-replace; boundary="+partBoundary)
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	// Each frame is followed by the next boundary so that a browser shows it
	// at once rather than when the next frame begins.
	if _, err := io.WriteString(w, "--"+partBoundary+"\r\n"); err != nil {
		return
	}
	for {
		if over, _ := h.cfg.Meter.Over(viewer); over {
			h.audit.Info("live_end", "viewer", viewer, "service", h.cfg.Service, "reason", "daily_cap",
				"duration", time.Since(start).Round(time.Millisecond))
			return
		}
		b, err := fr.sized(ctx, h.rz, p.width, false)
		if err == nil {
			// Deadlines are not supported by every gateway conn (tunnel streams).
			_ = rc.SetWriteDeadline(time.Now().Add(frameWriteTimeout))
			if _, err := fmt.Fprintf(w, "Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", len(b)); err != nil {
				return
			}
			if _, err := w.Write(b); err != nil {
				return
			}
			if _, err := io.WriteString(w, "\r\n--"+partBoundary+"\r\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		// errBusy or a frame that does not decode: this viewer skips it.
		if fr, err = s.pop(ctx); err != nil {
			return
		}
	}
}

// serveSnapshot answers one JPEG: the running stream's latest frame, else the
// camera's snapshot, else the first frame of a stream started for it.
func (h *Handler) serveSnapshot(w http.ResponseWriter, r *http.Request, vc *viewerConn, p liveParams) {
	ctx := r.Context()
	var fr *frame
	if h.mjpeg != nil {
		fr = h.mjpeg.latestFrame()
	}
	var err error
	switch {
	case fr != nil:
	case h.cfg.SnapshotPath != "":
		fr, err = h.cameraSnapshot(ctx)
	case h.mjpeg != nil:
		// The stream lingers after this, so a page refreshing snapshots every
		// few seconds keeps one camera connection.
		var s *sub
		if s, err = h.mjpeg.subscribe(vc, 0, 1); err == nil {
			fr, err = h.firstFrame(ctx, s)
			h.mjpeg.unsubscribe(s)
		}
	default:
		h.notConfigured(w, r, "snapshot", "snapshot")
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			if errors.Is(err, errCameraRefused) {
				if !h.rateLimited(&h.lastRefuseLog) {
					h.log.Warn("the camera refused the agent's login: check camera_login of this service",
						"target", h.cfg.Target, "camera_login_set", h.cfg.CameraLogin != nil)
				}
			} else if !h.rateLimited(&h.lastDialLog) {
				h.log.Warn("no snapshot from the camera", "target", h.cfg.Target, "err", err)
			}
			h.cameraFailed(w, r, err)
		}
		return
	}
	b, err := fr.sized(ctx, h.rz, p.width, true)
	if err != nil {
		if ctx.Err() == nil {
			h.cameraFailed(w, r, err)
		}
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "image/jpeg")
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// cameraSnapshot GETs the camera's snapshot path once.
func (h *Handler) cameraSnapshot(ctx context.Context) (*frame, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.cfg.Target+h.cfg.SnapshotPath, nil)
	if err != nil {
		return nil, err
	}
	req.Host = h.cfg.Target
	resp, err := h.camRT.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errCameraRefused
	case resp.StatusCode != http.StatusOK:
		return nil, &pathError{key: "snapshot", path: h.cfg.SnapshotPath, problem: "the camera answered " + resp.Status}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxFrame+1))
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	if len(b) > maxFrame {
		return nil, errFrameTooBig
	}
	fr, err := newFrame(b, h.cfg.Now())
	if err != nil {
		return nil, &pathError{key: "snapshot", path: h.cfg.SnapshotPath, problem: "the camera's answer is " + err.Error()}
	}
	return fr, nil
}

// pathError: the camera answered a configured path with something other
// than what the key promises; the owner's configuration is the likely cause.
type pathError struct {
	key, path, problem string
}

func (e *pathError) Error() string { return e.key + " " + e.path + ": " + e.problem }
