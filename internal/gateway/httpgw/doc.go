// Package httpgw is the gateway Handler of service kind http: a reverse proxy
// from the public port to a camera's (or NVR's) web UI and HTTP streams,
// behind a Porthole viewer login.
//
// Each gateway Viewer is one HTTP/1.1 connection, fed to one http.Server per
// Handler through a channel listener. A request is served when it carries a
// viewer identity, checked in this order:
//
//	porthole_token=  a link token in the query (embeds; stripped before proxying)
//	porthole_session the cookie set by the login form at /.porthole/login
//	Authorization    Basic with a viewer's name and password (apps, curl)
//
// Without one, browsers (Accept: text/html) are sent to the login form, others
// get 401 with Porthole's own Basic realm. Paths under /.porthole/ are
// Porthole's and never reach the camera. The session cookie is HttpOnly,
// SameSite=Lax and Secure (unless Config.PlainHTTP); a login rotates it. The
// login form is guarded against login CSRF by its Origin (or Referer), which
// must name the host it is posted to; its next= is only ever a local path.
//
// What the camera sees: the request with Porthole's cookie and the viewer's
// Authorization removed, Host, Origin and Referer rewritten to the camera's
// address, no X-Forwarded-* or Forwarded header (the camera learns nothing of
// the viewer; it sees the agent's address), and the agent's camera_login
// (Basic or Digest, whichever the camera's 401 asks for; the challenge is
// remembered so that not every request takes a 401 round trip).
//
// What the viewer sees: the camera's answers, streamed as they come
// (FlushInterval -1: MJPEG and endless chunked bodies are never buffered), with
// camera redirects rewritten to the public host, and without the camera's
// WWW-Authenticate challenge (a 401 from the camera becomes Porthole's 502 page
// "the camera refused the agent's login": a browser must never prompt for the
// camera's password) and without its Set-Cookie: camera cookies stay in a
// server-side jar per viewer session and are replayed upstream, so the
// camera's session token never leaves home.
//
// Live views for browsers and phones (Config.MJPEGPath, Config.SnapshotPath),
// behind the same login and viewer list:
//
//	/.porthole/mjpeg?fps=2&width=320   the camera's MJPEG, thinned and scaled
//	/.porthole/snapshot.jpg?width=320  one JPEG
//
// All viewers of a service share one GET of the camera's MJPEG (a fanout),
// opened by the first and closed MJPEGLinger after the last; it reconnects
// with backoff when the camera hangs up or sends no frame for
// MJPEGStallTimeout. Each viewer has a queue of QueueFrames whole frames that
// drops its oldest when full, so a viewer that reads slowly or not at all
// never holds up the camera or the others and costs bounded memory. fps
// (above 0, at most 30) drops whole frames and never re-encodes; width (16 to
// 3840, never upscaled) decodes, scales and encodes at quality 70, at most
// MaxResizes at once per service: a stream viewer whose frame finds every
// slot busy skips that frame rather than queue work. A resized frame is kept
// with the frame, so any number of viewers at one width cost one resize. A
// snapshot is the running stream's latest frame, else a GET of the camera's
// snapshot, else the first frame of a stream started for it (which then
// lingers, so a page refreshing snapshots keeps one camera connection).
package httpgw
