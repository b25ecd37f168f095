package camsim

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

const (
	// boundary separates the parts of the MJPEG stream.
	boundary = "porthole-frame"
	// streamWriteTimeout drops an MJPEG viewer that takes longer than this to accept a frame.
	streamWriteTimeout = 10 * time.Second
)

// page is the viewer's HTML page. The URLs are relative so it works behind any path prefix.
var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Name}}</title>
<style>
body { margin: 0; background: #111; color: #ddd; font-family: system-ui, sans-serif; text-align: center; }
h1 { font-size: 1.3em; font-weight: 600; margin: .6em; }
img { display: block; margin: 0 auto; max-width: 100%; height: auto; background: #000; }
a { color: #8cf; }
</style>
</head>
<body>
<h1>{{.Name}}</h1>
<img src="stream.mjpg" width="{{.Width}}" height="{{.Height}}" alt="live video of {{.Name}}">
<p>This is a Porthole simulated camera: live MJPEG at {{.FPS}} fps. <a href="snapshot.jpg">Snapshot (JPEG)</a></p>
</body>
</html>
`))

// Handler returns the camera's HTTP interface:
//
//	GET /              HTML page showing the live stream
//	GET /snapshot.jpg  one JPEG
//	GET /stream.mjpg   multipart/x-mixed-replace MJPEG stream at the configured FPS
//	GET /healthz       "ok"
//
// With Config.Auth every path but /healthz asks for the camera's login (Basic or
// Digest) as a real camera does: 401 with WWW-Authenticate.
//
// Streams end when the request's context ends or the camera is closed.
func (c *Camera) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", c.servePage)
	mux.HandleFunc("GET /snapshot.jpg", c.serveSnapshot)
	mux.HandleFunc("GET /stream.mjpg", c.serveStream)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	if c.auth != nil {
		return c.auth.wrap(mux)
	}
	return mux
}

func (c *Camera) servePage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	if err := page.Execute(w, c.cfg); err != nil {
		c.log.Debug("write page", "err", err)
	}
}

func (c *Camera) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	img, err := c.Snapshot()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "image/jpeg")
	h.Set("Content-Length", strconv.Itoa(len(img)))
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return
	}
	if _, err := w.Write(img); err != nil {
		c.log.Debug("write snapshot", "remote", r.RemoteAddr, "err", err)
	}
}

func (c *Camera) serveStream(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "multipart/x-mixed-replace; boundary="+boundary)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodHead {
		return
	}
	v, err := c.subscribe()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer v.close()

	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// Each frame is followed by the next boundary, so a client knows a frame is complete
	// when it arrives instead of one frame later.
	if _, err := io.WriteString(w, "--"+boundary+"\r\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}

	log := c.log.With("remote", r.RemoteAddr)
	log.Info("mjpeg viewer connected")
	sent := 0
	defer func() { log.Info("mjpeg viewer gone", "frames", sent) }()

	for {
		f, err := v.next(r.Context())
		if err != nil {
			return
		}
		// A viewer that stops reading blocks only its own handler, and only for a while.
		// ErrNotSupported (some wrapped writers) just means no deadline.
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if err := writePart(w, f); err != nil {
			log.Debug("write frame", "err", err)
			return
		}
		if err := rc.Flush(); err != nil {
			log.Debug("flush frame", "err", err)
			return
		}
		sent++
	}
}

// writePart writes one frame of the multipart MJPEG stream and the boundary after it.
func writePart(w io.Writer, f *frame) error {
	if _, err := fmt.Fprintf(w, "Content-Type: image/jpeg\r\nContent-Length: %d\r\nX-Frame: %d\r\n\r\n",
		len(f.jpeg), f.seq); err != nil {
		return err
	}
	if _, err := w.Write(f.jpeg); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\r\n--"+boundary+"\r\n")
	return err
}

// Serve serves Handler on ln until ctx ends or the camera is closed, then closes every
// connection, waits for the handlers and returns nil. Other failures are returned.
func (c *Camera) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var inflight handlerGroup
	h := c.Handler()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !inflight.enter() {
				http.Error(w, ErrClosed.Error(), http.StatusServiceUnavailable)
				return
			}
			defer inflight.leave()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-c.done:
			cancel()
		}
		// Streams never go idle, so close rather than Shutdown; request contexts are
		// already cancelled, so handlers return promptly.
		_ = srv.Close()
	}()

	c.log.Info("http listening", "addr", ln.Addr().String())
	err := srv.Serve(ln)
	cancel()
	<-stopped
	inflight.closeAndWait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("camsim: serve http: %w", err)
}

// handlerGroup counts running handlers and lets Serve wait for them without racing
// WaitGroup.Add against Wait.
type handlerGroup struct {
	wg sync.WaitGroup

	mu     sync.Mutex // guards closed
	closed bool
}

func (g *handlerGroup) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *handlerGroup) leave() { g.wg.Done() }

func (g *handlerGroup) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
